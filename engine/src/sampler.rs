//! Token sampling from one row of logits, as OpenAI's parameters define it.
//!
//! Pure and deterministic for a given seed, so the same request samples the
//! same tokens on every node that runs it, and an audit can replay it.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Below this temperature sampling is argmax (OpenAI's `temperature: 0`).
const GREEDY_BELOW: f32 = 1e-5;

/// Tokens whose probability is below this are never kept by nucleus sampling;
/// skipping them keeps the sort short on a 50k vocabulary.
const NEGLIGIBLE: f32 = 1e-9;

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

/// One sequence's sampler: its parameters, random stream and token counts.
pub struct Sampler {
    params: SamplingParams,
    rng: StdRng,
    counts: std::collections::HashMap<u32, u32>,
    scratch: Vec<f32>,
}

impl Sampler {
    /// A sampler for one sequence; `stream` separates the choices of one
    /// seeded request (choice `i` uses `seed + i`).
    pub fn new(params: SamplingParams, stream: u64) -> Self {
        let rng = match params.seed {
            Some(seed) => StdRng::seed_from_u64(seed.wrapping_add(stream)),
            None => StdRng::from_os_rng(),
        };
        Self {
            params,
            rng,
            counts: Default::default(),
            scratch: Vec::new(),
        }
    }

    /// Picks the next token from the model's raw logits and remembers it for
    /// the penalties.
    pub fn sample(&mut self, logits: &[f32]) -> u32 {
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
        let token = if p.is_greedy() {
            argmax(row)
        } else {
            let u: f32 = self.rng.random();
            draw(row, p.temperature, p.top_p, u)
        };
        *self.counts.entry(token).or_default() += 1;
        token
    }
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

/// Draws from softmax(row / temperature) restricted to the top-`top_p` mass,
/// with `u` uniform in [0, 1).
pub fn draw(row: &[f32], temperature: f32, top_p: f32, u: f32) -> u32 {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let probs: Vec<f32> = row
        .iter()
        .map(|l| ((l - max) / temperature).exp())
        .collect();
    let total: f32 = probs.iter().sum();
    if top_p >= 1.0 {
        let mut target = u * total;
        for (i, p) in probs.iter().enumerate() {
            target -= p;
            if target < 0.0 {
                return i as u32;
            }
        }
        return argmax(row);
    }
    let floor = NEGLIGIBLE * total;
    let mut order: Vec<u32> = (0..probs.len() as u32)
        .filter(|&i| probs[i as usize] > floor)
        .collect();
    order.sort_unstable_by(|a, b| {
        probs[*b as usize]
            .total_cmp(&probs[*a as usize])
            .then(a.cmp(b))
    });
    let mut kept = 0usize;
    let mut mass = 0.0f32;
    for &i in &order {
        mass += probs[i as usize];
        kept += 1;
        if mass >= top_p * total {
            break;
        }
    }
    let mut target = u * mass;
    for &i in &order[..kept] {
        target -= probs[i as usize];
        if target < 0.0 {
            return i;
        }
    }
    order[kept - 1]
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
    fn draw_follows_the_cumulative_distribution() {
        // Probabilities 1/4, 1/4, 1/2 at temperature 1.
        let row = [0.0, 0.0, 2f32.ln()];
        assert_eq!(draw(&row, 1.0, 1.0, 0.0), 0);
        assert_eq!(draw(&row, 1.0, 1.0, 0.3), 1);
        assert_eq!(draw(&row, 1.0, 1.0, 0.6), 2);
        assert_eq!(draw(&row, 1.0, 1.0, 0.999), 2);
    }

    #[test]
    fn top_p_keeps_the_smallest_set_reaching_the_mass() {
        let row = [0.0, 0.0, 2f32.ln()];
        // Top 50% is token 2 alone.
        for u in [0.0, 0.5, 0.99] {
            assert_eq!(draw(&row, 1.0, 0.5, u), 2);
        }
        // Top 60% adds token 0 (ties go to the lower id).
        let picks: std::collections::BTreeSet<u32> = (0..100)
            .map(|i| draw(&row, 1.0, 0.6, i as f32 / 100.0))
            .collect();
        assert_eq!(picks, [0, 2].into_iter().collect());
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
}
