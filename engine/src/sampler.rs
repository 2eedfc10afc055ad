//! Token sampling from one row of logits, as OpenAI's parameters define it.
//!
//! Pure and deterministic for a given seed, so the same request samples the
//! same tokens on every node that runs it, and an audit can replay it.
//!
//! Sampling is Gumbel-max: each token's scaled logit gets independent
//! Gumbel noise, keyed by (seed, choice, step, token id), and the best
//! score wins, which draws exactly from softmax(logits / temperature). Unlike
//! walking a cumulative distribution with one uniform draw, a replay on
//! slightly different logits (another machine's rounding) only disagrees
//! where two noisy scores nearly tie, and the gap says how near: the same
//! kind of margin as a greedy near-tie.

/// Below this temperature sampling is argmax (OpenAI's `temperature: 0`).
const GREEDY_BELOW: f32 = 1e-5;

/// Tokens whose probability is below this are never kept by nucleus sampling;
/// skipping them keeps the sort short on a 50k vocabulary.
const NEGLIGIBLE: f32 = 1e-9;

/// Tokens whose scaled logit is this far below the best are never drawn
/// (a chance below e^-30 each); skipping them keeps a step cheap.
const FAR_BELOW: f32 = 30.0;

/// The margin reported for a claimed token that could not be drawn at all.
pub const UNDRAWABLE: f32 = 1.0e3;

/// Sampling settings of one request.
#[derive(Clone, Debug, PartialEq)]
pub struct SamplingParams {
    /// 0 is greedy.
    pub temperature: f32,
    /// Nucleus mass; 1 keeps every token.
    pub top_p: f32,
    /// Subtracted once per earlier occurrence of a token in the completion.
    pub frequency_penalty: f32,
    /// Subtracted once if a token occurred in the completion.
    pub presence_penalty: f32,
    /// Added to the logits of the listed tokens.
    pub logit_bias: Vec<(u32, f32)>,
    /// Fixes the random stream; `None` draws a fresh seed.
    pub seed: Option<u64>,
}

impl Default for SamplingParams {
    fn default() -> Self {
        Self {
            temperature: 1.0,
            top_p: 1.0,
            frequency_penalty: 0.0,
            presence_penalty: 0.0,
            logit_bias: Vec::new(),
            seed: None,
        }
    }
}

impl SamplingParams {
    /// Whether this samples by argmax alone.
    pub fn is_greedy(&self) -> bool {
        self.temperature < GREEDY_BELOW
    }
}

/// One sequence's sampler: its parameters, noise key, step and token counts.
pub struct Sampler {
    params: SamplingParams,
    key: u64,
    step: u64,
    counts: std::collections::HashMap<u32, u32>,
    scratch: Vec<f32>,
}

impl Sampler {
    /// A sampler for one sequence; `stream` separates the choices of one
    /// seeded request (choice `i` uses `seed + i`).
    pub fn new(params: SamplingParams, stream: u64) -> Self {
        let seed = params.seed.unwrap_or_else(rand::random);
        Self {
            params,
            key: mix(seed ^ mix(stream.wrapping_add(0x5EED))),
            step: 0,
            counts: Default::default(),
            scratch: Vec::new(),
        }
    }

    /// Moves the sampler to generation step `step` (the draw for the
    /// `step`-th generated token), as when a pipeline's last stage takes over
    /// a sequence mid-way. Penalty counts are not rebuilt.
    pub fn skip_to(&mut self, step: u64) {
        self.step = step;
    }

    /// Picks the next token from the model's raw logits and remembers it for
    /// the penalties.
    pub fn sample(&mut self, logits: &[f32]) -> u32 {
        let token = self.pick(logits, None).token;
        *self.counts.entry(token).or_default() += 1;
        token
    }

    /// Replays one step of a generation that chose `claimed`: picks as
    /// [`Sampler::sample`] would from `logits` (drawing the same random number),
    /// says how near `claimed` came to being picked, then counts `claimed`,
    /// not the pick, for the penalties, as the generating sampler did.
    pub fn replay(&mut self, logits: &[f32], claimed: u32) -> Replayed {
        let replayed = self.pick(logits, Some(claimed));
        *self.counts.entry(claimed).or_default() += 1;
        replayed
    }

    fn pick(&mut self, logits: &[f32], claimed: Option<u32>) -> Replayed {
        let p = &self.params;
        let penalised =
            !self.counts.is_empty() && (p.frequency_penalty != 0.0 || p.presence_penalty != 0.0);
        let adjusted = penalised || !p.logit_bias.is_empty();
        let row: &[f32] = if adjusted {
            self.scratch.clear();
            self.scratch.extend_from_slice(logits);
            for &(id, bias) in &p.logit_bias {
                if let Some(l) = self.scratch.get_mut(id as usize) {
                    *l += bias;
                }
            }
            for (&id, &n) in &self.counts {
                if let Some(l) = self.scratch.get_mut(id as usize) {
                    *l -= n as f32 * p.frequency_penalty + p.presence_penalty;
                }
            }
            &self.scratch
        } else {
            logits
        };
        let step = self.step;
        self.step += 1;
        let replayed = if p.is_greedy() {
            // Generation needs only the argmax; the runner-up costs a second
            // pass over the vocabulary, paid by replays alone.
            let (token, runner_up) = match claimed {
                Some(_) => ranked_argmax(row),
                None => (argmax(row), None),
            };
            let margin = claimed.map_or(0.0, |c| {
                row[token as usize] - row.get(c as usize).copied().unwrap_or(f32::NEG_INFINITY)
            });
            Replayed {
                token,
                margin,
                runner_up,
            }
        } else {
            gumbel_ranked(row, p.temperature, p.top_p, mix(self.key ^ step), claimed)
        };
        let margin = replayed.margin;
        Replayed {
            margin: if margin.is_nan() {
                UNDRAWABLE
            } else {
                margin.min(UNDRAWABLE)
            },
            ..replayed
        }
    }
}

/// What replaying one sampling step says about the token a node claims it drew.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Replayed {
    /// The token the replayed sampler picks.
    pub token: u32,
    /// How far the claimed token was from being picked, 0 when it was: the
    /// gap, in logits, between the pick's score and the claimed token's (for
    /// sampled steps, the Gumbel-noised scores times the temperature);
    /// [`UNDRAWABLE`] when the claimed token could not be drawn at all. A
    /// node whose logits differ from the reference's by rounding only ever
    /// misses with a small margin.
    pub margin: f32,
    /// The token that came second, and by how much (same units as `margin`):
    /// where the two nearly tie, a node on other hardware may have drawn it.
    #[serde(default)]
    pub runner_up: Option<(u32, f32)>,
}

/// The highest logit's id, ties to the lower id.
pub fn argmax(row: &[f32]) -> u32 {
    let mut best = 0usize;
    for (i, v) in row.iter().enumerate() {
        if *v > row[best] {
            best = i;
        }
    }
    best as u32
}

/// SplitMix64's finaliser: a well-mixed 64-bit hash.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Standard Gumbel noise for `token` under the step's `key`.
fn gumbel(key: u64, token: u32) -> f32 {
    // 53 random bits into (0, 1).
    let u = ((mix(key ^ u64::from(token).wrapping_mul(0xA24B_AED4_963E_E407)) >> 11) as f64 + 0.5)
        / (1u64 << 53) as f64;
    -(-u.ln()).ln() as f32
}

/// The tokens `draw` may pick: the nucleus of the top-`top_p` mass, or with
/// `top_p >= 1` every token not hopelessly far below the best.
fn drawable(row: &[f32], temperature: f32, top_p: f32) -> Vec<u32> {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if top_p >= 1.0 {
        return (0..row.len() as u32)
            .filter(|&i| (row[i as usize] - max) / temperature > -FAR_BELOW)
            .collect();
    }
    let probs: Vec<f32> = row
        .iter()
        .map(|l| ((l - max) / temperature).exp())
        .collect();
    let total: f32 = probs.iter().sum();
    let floor = NEGLIGIBLE * total;
    let mut order: Vec<u32> = (0..probs.len() as u32)
        .filter(|&i| probs[i as usize] > floor)
        .collect();
    order.sort_unstable_by(|a, b| {
        probs[*b as usize]
            .total_cmp(&probs[*a as usize])
            .then(a.cmp(b))
    });
    let mut mass = 0.0f32;
    let mut kept = order.len();
    for (n, &i) in order.iter().enumerate() {
        mass += probs[i as usize];
        if mass >= top_p * total {
            kept = n + 1;
            break;
        }
    }
    order.truncate(kept.max(1));
    order
}

/// Draws from softmax(row / temperature), restricted to the top-`top_p`
/// mass, by Gumbel-max under the step's noise `key`; also returns how far
/// `claimed` was from winning, in logits (0 when it won).
pub fn gumbel_max(
    row: &[f32],
    temperature: f32,
    top_p: f32,
    key: u64,
    claimed: Option<u32>,
) -> (u32, f32) {
    let r = gumbel_ranked(row, temperature, top_p, key, claimed);
    (r.token, r.margin)
}

/// [`gumbel_max`] with the runner-up.
fn gumbel_ranked(
    row: &[f32],
    temperature: f32,
    top_p: f32,
    key: u64,
    claimed: Option<u32>,
) -> Replayed {
    let score = |i: u32| row[i as usize] / temperature + gumbel(key, i);
    let better = |a: (u32, f32), b: (u32, f32)| a.1 > b.1 || (a.1 == b.1 && a.0 < b.0);
    let mut best: Option<(u32, f32)> = None;
    let mut second: Option<(u32, f32)> = None;
    let mut claimed_score = None;
    for i in drawable(row, temperature, top_p) {
        let s = score(i);
        if claimed == Some(i) {
            claimed_score = Some(s);
        }
        if best.is_none_or(|b| better((i, s), b)) {
            second = best;
            best = Some((i, s));
        } else if second.is_none_or(|b| better((i, s), b)) {
            second = Some((i, s));
        }
    }
    let Some((token, best_score)) = best else {
        return Replayed {
            token: argmax(row),
            margin: claimed.map_or(0.0, |_| UNDRAWABLE),
            runner_up: None,
        };
    };
    let margin = match (claimed, claimed_score) {
        (None, _) => 0.0,
        (Some(c), _) if c == token => 0.0,
        (Some(_), Some(s)) => (best_score - s) * temperature,
        (Some(_), None) => UNDRAWABLE,
    };
    Replayed {
        token,
        margin,
        runner_up: second.map(|(t, s)| (t, (best_score - s) * temperature)),
    }
}

/// The best and second-best logits' ids (ties to the lower id), with the
/// second's gap to the best.
fn ranked_argmax(row: &[f32]) -> (u32, Option<(u32, f32)>) {
    let best = argmax(row);
    let mut second: Option<u32> = None;
    for (i, v) in row.iter().enumerate() {
        let i = i as u32;
        if i != best && second.is_none_or(|s| *v > row[s as usize]) {
            second = Some(i);
        }
    }
    (
        best,
        second.map(|s| (s, row[best as usize] - row[s as usize])),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(temperature: f32, top_p: f32, seed: u64) -> SamplingParams {
        SamplingParams {
            temperature,
            top_p,
            seed: Some(seed),
            ..Default::default()
        }
    }

    #[test]
    fn greedy_is_argmax_with_ties_to_the_lower_id() {
        assert_eq!(argmax(&[1.0, 3.0, 3.0, 2.0]), 1);
        let mut s = Sampler::new(params(0.0, 1.0, 1), 0);
        assert_eq!(s.sample(&[0.0, 5.0, 1.0]), 1);
    }

    #[test]
    fn gumbel_max_draws_from_the_softmax() {
        // Probabilities 1/4, 1/4, 1/2 at temperature 1.
        let row = [0.0, 0.0, 2f32.ln()];
        let mut counts = [0usize; 3];
        let n = 40_000;
        for key in 0..n {
            counts[gumbel_max(&row, 1.0, 1.0, mix(key), None).0 as usize] += 1;
        }
        for (c, p) in counts.iter().zip([0.25, 0.25, 0.5]) {
            let freq = *c as f64 / n as f64;
            assert!((freq - p).abs() < 0.01, "{counts:?}");
        }
        // Temperature 0.5 squares the odds: 1/6, 1/6, 4/6.
        let hot = (0..n)
            .filter(|&k| gumbel_max(&row, 0.5, 1.0, mix(k), None).0 == 2)
            .count() as f64
            / n as f64;
        assert!((hot - 4.0 / 6.0).abs() < 0.01, "{hot}");
    }

    #[test]
    fn top_p_keeps_the_smallest_set_reaching_the_mass() {
        let row = [0.0, 0.0, 2f32.ln()];
        // Top 50% is token 2 alone.
        for key in 0..100 {
            assert_eq!(gumbel_max(&row, 1.0, 0.5, key, None).0, 2);
        }
        // Top 60% adds token 0 (ties go to the lower id).
        let picks: std::collections::BTreeSet<u32> = (0..200)
            .map(|k| gumbel_max(&row, 1.0, 0.6, mix(k), None).0)
            .collect();
        assert_eq!(picks, [0, 2].into_iter().collect());
        // Hopeless tokens are never drawn.
        let far = [0.0, -100.0];
        assert!((0..500).all(|k| gumbel_max(&far, 1.0, 1.0, mix(k), None).0 == 0));
    }

    #[test]
    fn low_temperature_sharpens_and_seed_reproduces() {
        let row: Vec<f32> = (0..50).map(|i| (i % 7) as f32 * 0.3).collect();
        let run = |seed| {
            let mut s = Sampler::new(params(0.8, 0.95, seed), 0);
            (0..64).map(|_| s.sample(&row)).collect::<Vec<_>>()
        };
        assert_eq!(run(7), run(7));
        assert_ne!(run(7), run(8));
        let mut cold = Sampler::new(params(0.01, 1.0, 3), 0);
        // Near zero temperature only the best logit (1.8, shared by several
        // ids) is ever drawn.
        assert!((0..32).all(|_| row[cold.sample(&row) as usize] == row[argmax(&row) as usize]));
    }

    #[test]
    fn choices_of_one_seeded_request_differ() {
        let row = vec![0.0f32; 1000];
        let a: Vec<u32> = {
            let mut s = Sampler::new(params(1.0, 1.0, 5), 0);
            (0..16).map(|_| s.sample(&row)).collect()
        };
        let b: Vec<u32> = {
            let mut s = Sampler::new(params(1.0, 1.0, 5), 1);
            (0..16).map(|_| s.sample(&row)).collect()
        };
        assert_ne!(a, b);
    }

    #[test]
    fn bias_and_penalties_move_the_argmax() {
        let row = [1.0, 2.0, 0.0];
        let mut biased = Sampler::new(
            SamplingParams {
                temperature: 0.0,
                logit_bias: vec![(2, 10.0)],
                ..Default::default()
            },
            0,
        );
        assert_eq!(biased.sample(&row), 2);
        let mut penalised = Sampler::new(
            SamplingParams {
                temperature: 0.0,
                frequency_penalty: 0.6,
                presence_penalty: 0.5,
                ..Default::default()
            },
            0,
        );
        assert_eq!(penalised.sample(&row), 1, "no history yet");
        assert_eq!(penalised.sample(&row), 0, "1 is penalised by 1.1 once seen");
        assert_eq!(penalised.sample(&row), 1, "0 now pays the same");
        assert_eq!(penalised.sample(&row), 1, "2 - 1.7 still beats 1 - 1.1");
    }

    #[test]
    fn replay_of_a_seeded_generation_picks_the_same_tokens() {
        let rows: Vec<Vec<f32>> = (0..40)
            .map(|t| {
                (0..64)
                    .map(|i| ((i * 7 + t * 3) % 11) as f32 * 0.4)
                    .collect()
            })
            .collect();
        for (temperature, top_p) in [(0.0, 1.0), (0.7, 1.0), (0.7, 0.9), (1.3, 0.5)] {
            let p = SamplingParams {
                frequency_penalty: 0.4,
                presence_penalty: 0.2,
                ..params(temperature, top_p, 11)
            };
            let mut generating = Sampler::new(p.clone(), 2);
            let drawn: Vec<u32> = rows.iter().map(|r| generating.sample(r)).collect();
            let mut replaying = Sampler::new(p, 2);
            for (row, &t) in rows.iter().zip(&drawn) {
                let r = replaying.replay(row, t);
                assert_eq!((r.token, r.margin), (t, 0.0));
                let (second, gap) = r.runner_up.expect("64 tokens have a runner-up");
                assert!(second != t && gap >= 0.0);
            }
        }
    }

    #[test]
    fn a_replayed_miss_says_how_far_the_claim_was() {
        // Greedy: the logit gap.
        let mut s = Sampler::new(params(0.0, 1.0, 1), 0);
        assert_eq!(
            s.replay(&[0.0, 2.5, 1.0], 2),
            Replayed {
                token: 1,
                margin: 1.5,
                runner_up: Some((2, 1.5)),
            }
        );
        // Sampled: the gap between Gumbel-noised scores, in logits.
        let row = [0.0, 0.0, 2f32.ln()];
        for k in 0..50 {
            let key = mix(k);
            let (pick, none) = gumbel_max(&row, 0.7, 1.0, key, None);
            assert_eq!(none, 0.0);
            assert_eq!(gumbel_max(&row, 0.7, 1.0, key, Some(pick)), (pick, 0.0));
            let other = (pick + 1) % 3;
            let (again, margin) = gumbel_max(&row, 0.7, 1.0, key, Some(other));
            assert_eq!(again, pick);
            let want = (row[pick as usize] / 0.7 + gumbel(key, pick)
                - row[other as usize] / 0.7
                - gumbel(key, other))
                * 0.7;
            assert!(
                margin > 0.0 && (margin - want).abs() < 1e-4,
                "{margin} vs {want}"
            );
            assert_eq!(gumbel_max(&row, 0.7, 1.0, key, Some(9)).1, UNDRAWABLE);
        }
        // Outside the nucleus a claim is undrawable.
        assert_eq!(gumbel_max(&row, 1.0, 0.5, 3, Some(0)), (2, UNDRAWABLE));
        // A tiny logit change moves the pick only with a tiny margin.
        let mut flips = 0;
        for k in 0..2000 {
            let key = mix(k);
            let a = gumbel_max(&row, 0.7, 1.0, key, None).0;
            let nudged = [0.0, 0.001, 2f32.ln()];
            let (b, margin) = gumbel_max(&nudged, 0.7, 1.0, key, Some(a));
            if a != b {
                flips += 1;
                assert!(margin < 0.01, "{margin}");
            }
        }
        assert!(flips < 20, "{flips} of 2000 draws moved");
    }
}
