//! From per-token measures to a verdict with a stated false-positive bound.
//!
//! Five tests, each a count of positions an honest node explains only by
//! rare accidents:
//!
//! * **Replay misses.** For greedy and seeded requests the reference replays
//!   the request's sampler. An honest node picks the replayed token except
//!   where rounding moves a near-tie; such misses come with a small margin
//!   and are excused. What remains for an honest node are re-tokenization
//!   accidents (the returned text splits into other tokens than the node
//!   generated), at a per-token rate of at most `honest_miss_rate`.
//! * **Log-prob gaps.** Where the node reported log-probs, each must match
//!   the reference's within `logprob_tolerance`; an honest node differs only
//!   by the numeric path (prefill vs decode, thread count, GPU), and at
//!   re-tokenization accidents.
//! * **Alternatives.** Nodes report each token's best alternatives too
//!   (`top_logprobs`). Sorted, they must match the reference's best
//!   log-probs rank by rank within `alternatives_tolerance`: sorting moves
//!   no value by more than the largest log-prob difference, so near-ties
//!   that rounding swaps do not matter. A node that computed its answer in
//!   another context (a dropped system prompt, a cut history) often agrees
//!   on the token it picked, confidently, but not on what it passed over.
//! * **Shape.** Sorting hides which token got which log-prob. Where the
//!   reference can name tokens' bytes, each reported alternative is paired
//!   with the reference's log-prob of the same token, and the variance of
//!   their differences must stay within `shape_tolerance`
//!   ([`Position::shape_gap`]). A shift common to all of them cancels, so
//!   what counts is the node preferring other tokens than the reference,
//!   the mark a changed context leaves even where every sorted value lines
//!   up (a dropped "You are a helpful assistant." moves little else).
//!
//! * **Rival context.** Where the request has a system prompt and the
//!   answer shows the marks of a changed context (shape or alternatives
//!   counts at a fifth of their limits), the reference scores the answer a
//!   second time, after the request without its system prompt
//!   ([`crate::rival`]). A position errs where the node's report, centred,
//!   is nearer the rival's log-probs than the claimed context's. Rounding
//!   gets there only by moving the report half the distance between the two
//!   along that one line, so each position has its own honest rate, a
//!   normal's tail at `rival_share * apart / rival_noise` (at least
//!   `honest_rival_floor`); positions where that rate exceeds
//!   `rival_max_rate` say too little and are left out.
//!
//! If each honest position errs with conditional probability at most `r`
//! whatever came before, the count of errors is stochastically dominated by
//! Binomial(n, r) (Poisson-binomial where each position has its own `r`).
//! A test fails the node only when its count reaches the smallest `k` whose
//! tail is within the test's share of `alpha`, so an honest node fails an
//! audit with probability at most `alpha` (Bonferroni over the six tests:
//! the decisive one takes `0.1 alpha`, the rival one `0.05 alpha`, each
//! count `0.2125 alpha`). Nothing here depends on the node's model being
//! good, only on it being the model it claims.
//!
//! The sixth test weighs how wrong a position is, not only whether it is:
//!
//! * **Decisive positions.** A replay miss by more than `decisive_tolerance`
//!   logits, or a reported log-prob (of the token or an alternative) off by
//!   more than that many nats, is
//!   beyond anything rounding does (honest gaps stay under a nat), and where
//!   the pick would write other text than the answer has, no re-tokenization
//!   accident explains it either. Such positions are counted only while the
//!   audit's tokens are surely the node's own: in the node's own split,
//!   everywhere; in the tokenizer's, up to the first position where another
//!   split of the same text was within reach. An honest node
//!   errs so at a per-token rate of at most `honest_decisive_rate`, so one
//!   such position fails an answer. This is what catches a lie that moves a
//!   single token of an answer, far: a dropped system prompt's first word.

use serde::{Deserialize, Serialize};
use tollgate_engine::Replayed;

pub use crate::binomial::{binomial_tails, limit, limit_each};
use crate::position::Position;

/// How the request asked tokens to be chosen.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Argmax (temperature 0).
    Greedy,
    /// Sampled with a seed and a sampler the reference can replay.
    Seeded,
    /// Sampled without a replayable draw: only the log-prob test applies.
    Unreplayable,
}

/// The audit's tolerances and error budget.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Thresholds {
    /// Bound on the probability that an honest node fails one audit.
    pub alpha: f64,
    /// Assumed per-token rate of unexcused replay misses of an honest node.
    pub honest_miss_rate: f64,
    /// Assumed per-token rate of log-prob gaps beyond tolerance of an honest node.
    pub honest_gap_rate: f64,
    /// A replay miss by at most this gap in logits (between the pick's and
    /// the claimed token's scores, Gumbel noise included when sampled) is a
    /// near-tie that rounding explains: excused.
    pub tie_tolerance: f32,
    /// Reported log-probs may differ from the reference's by this much (nats).
    pub logprob_tolerance: f32,
    /// Reported alternatives, sorted, may differ from the reference's best
    /// log-probs rank by rank by this much (nats).
    pub alternatives_tolerance: f32,
    /// Assumed per-token rate of alternatives beyond tolerance of an honest
    /// node.
    pub honest_alternatives_rate: f64,
    /// The variance of paired alternatives' log-prob differences may reach
    /// this much (nats squared).
    pub shape_tolerance: f32,
    /// Assumed per-token rate of shape gaps beyond tolerance of an honest
    /// node.
    pub honest_shape_rate: f64,
    /// Fewer completion tokens than this say too little: inconclusive.
    pub min_tokens: usize,
    /// A replay miss by more than this many logits, or a reported log-prob
    /// off by more than this many nats, where the text is aligned, is more
    /// than rounding can do: decisive.
    pub decisive_tolerance: f32,
    /// Assumed per-token rate of decisive positions of an honest node.
    pub honest_decisive_rate: f64,
    /// A report leans to the rival context ([`crate::rival`]) where it went
    /// more than this share of the way from the claimed context's log-probs
    /// to the rival's (one half: it is nearer the rival).
    pub rival_share: f32,
    /// How far honest rounding moves a report along any one line, as the
    /// spread of a normal distribution (nats): a report leans by rounding
    /// alone with at most that normal's tail beyond the lean's distance.
    pub rival_noise: f32,
    /// The least per-token rate at which an honest report is assumed to
    /// lean, however far apart the contexts (rounding's tail is heavier
    /// than a normal's).
    pub honest_rival_floor: f64,
    /// Tokens an honest report leans at more often than this say too
    /// little to count.
    pub rival_max_rate: f64,
    /// The rival context is scored (a second pass) only where no test
    /// failed the answer and the shape or alternatives test counted at
    /// least this share of its limit.
    pub rival_after: f64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Self {
            alpha: 1e-6,
            honest_miss_rate: 0.002,
            honest_gap_rate: 0.002,
            tie_tolerance: 0.5,
            logprob_tolerance: 0.5,
            // Honest CPU nodes (two thread counts and batch sizes, 23,485
            // positions) exceeded 0.4 at 1.9% of positions, at most 1.34.
            alternatives_tolerance: 0.4,
            honest_alternatives_rate: 0.06,
            // Honest nodes (llama.cpp at two thread counts and mistralrs,
            // 560 answers, 26,365 positions) exceeded 0.035 at 2.8% of
            // positions. Tighter settings catch more dropped system prompts
            // but leave honest nodes less room for numerics not seen here:
            // these keep the room the other tests leave (`make
            // bench-verify` prints it).
            shape_tolerance: 0.035,
            honest_shape_rate: 0.05,
            min_tokens: 8,
            decisive_tolerance: 4.0,
            honest_decisive_rate: 1e-10,
            rival_share: 0.5,
            // Honest nodes (llama.cpp at two thread counts, unfused
            // attention and mistralrs; 260 answers, 12,257 tokens) leaned
            // along the line with a spread of 0.12, and at every distance
            // apart less often than this assumes: a report leans at
            // 0.5 * apart / 0.2 of a normal's spread.
            rival_noise: 0.2,
            honest_rival_floor: 0.01,
            rival_max_rate: 0.3,
            rival_after: 0.2,
        }
    }
}

/// An audit's outcome.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The answer is what the claimed model gives.
    Pass,
    /// The answer is not what the claimed model gives.
    Fail,
    /// Too little to judge (too short, nothing replayable or reported).
    Inconclusive,
}

/// One test's count against its limit.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Count {
    /// Positions the test looked at.
    pub checked: usize,
    /// Positions that erred.
    pub errors: usize,
    /// The count at which the test fails the node.
    pub limit: usize,
}

impl Count {
    /// Whether the errors reach the limit.
    pub fn failed(&self) -> bool {
        self.checked > 0 && self.errors >= self.limit
    }
}

/// The verdict on one completion, with the statistics behind it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    /// Pass, fail or inconclusive.
    pub outcome: Outcome,
    /// Why, in words.
    pub reasons: Vec<String>,
    /// Completion tokens audited.
    pub tokens: usize,
    /// How tokens were chosen.
    pub mode: Mode,
    /// Replay misses beyond the near-tie tolerance.
    pub replay: Count,
    /// Reported log-probs beyond tolerance.
    pub logprobs: Count,
    /// Positions whose reported alternatives are beyond tolerance.
    #[serde(default)]
    pub alternatives: Count,
    /// Positions whose paired alternatives' shape is beyond tolerance.
    #[serde(default)]
    pub shape: Count,
    /// Positions wrong beyond what rounding does, where the text is aligned.
    #[serde(default)]
    pub decisive: Count,
    /// Positions whose report leans to the rival context; the limit is
    /// Poisson-binomial, each position at its own honest rate.
    #[serde(default)]
    pub rival: Count,
    /// Mean reference probability of the claimed tokens.
    pub mean_ref_prob: f64,
    /// Share of claimed tokens that are the reference's argmax.
    pub greedy_agreement: f64,
    /// Mean speculative acceptance min(1, p_ref / q_node), where reported.
    pub mean_acceptance: Option<f64>,
    /// Bound on the probability that an honest node gets `fail` here.
    pub false_positive_bound: f64,
    /// The test over the node's recent audits pooled, where it ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pooled: Option<crate::history::Pooled>,
}

/// The decisive test's share of the false-positive budget (Bonferroni over
/// the six tests): one position fails there at any share, so the four
/// counts keep most of the rest, and with it their limits on short answers.
const DECISIVE_SHARE: f64 = 0.1;

/// The rival test's share: where it applies, a cheat leans at most tokens,
/// so its limit barely moves with the share.
const RIVAL_SHARE: f64 = 0.05;

/// Each count test's share of the false-positive budget.
pub const COUNT_SHARE: f64 = (1.0 - DECISIVE_SHARE - RIVAL_SHARE) / 4.0;

/// Judges a completion from its per-token measures.
pub fn judge(positions: &[Position], mode: Mode, t: &Thresholds) -> Verdict {
    let n = positions.len();
    let tolerance = t.tie_tolerance;
    let replays = mode != Mode::Unreplayable;
    let replayed: Vec<&Replayed> = positions
        .iter()
        .filter(|_| replays)
        .filter_map(|p| p.replayed.as_ref())
        .collect();
    let misses = positions
        .iter()
        .filter(|p| replays && p.miss_beyond(tolerance))
        .count();
    let replay = Count {
        checked: replayed.len(),
        errors: misses,
        limit: limit(replayed.len(), t.honest_miss_rate, t.alpha * COUNT_SHARE),
    };
    let gaps: Vec<f32> = positions.iter().filter_map(Position::logprob_gap).collect();
    let logprobs = Count {
        checked: gaps.len(),
        errors: gaps.iter().filter(|&&g| g > t.logprob_tolerance).count(),
        limit: limit(gaps.len(), t.honest_gap_rate, t.alpha * COUNT_SHARE),
    };
    let tops: Vec<f32> = positions.iter().filter_map(Position::top_gap).collect();
    let alternatives = Count {
        checked: tops.len(),
        errors: tops
            .iter()
            .filter(|&&g| g > t.alternatives_tolerance)
            .count(),
        limit: limit(
            tops.len(),
            t.honest_alternatives_rate,
            t.alpha * COUNT_SHARE,
        ),
    };
    let shapes: Vec<f32> = positions.iter().filter_map(Position::shape_gap).collect();
    let shape = Count {
        checked: shapes.len(),
        errors: shapes.iter().filter(|&&g| g > t.shape_tolerance).count(),
        limit: limit(shapes.len(), t.honest_shape_rate, t.alpha * COUNT_SHARE),
    };
    let decisive = decisive_count(positions, replays, t);
    let rival = rival_count(positions, t);
    let mean = |xs: &mut dyn Iterator<Item = f64>| {
        let (sum, count) = xs.fold((0.0, 0usize), |(s, c), x| (s + x, c + 1));
        (count > 0).then(|| sum / count as f64)
    };
    let mean_ref_prob = mean(&mut positions.iter().map(Position::ref_prob)).unwrap_or(0.0);
    let greedy_agreement =
        mean(
            &mut positions
                .iter()
                .map(|p| if p.greedy_agrees() { 1.0 } else { 0.0 }),
        )
        .unwrap_or(0.0);
    let mean_acceptance = mean(&mut positions.iter().filter_map(Position::acceptance));

    let mut reasons = Vec::new();
    if replay.failed() {
        reasons.push(format!(
            "{} of {} tokens are not what the claimed model picks for this request (limit {})",
            replay.errors, replay.checked, replay.limit
        ));
    }
    if logprobs.failed() {
        reasons.push(format!(
            "{} of {} reported log-probs differ from the claimed model's by more than {} (limit {})",
            logprobs.errors, logprobs.checked, t.logprob_tolerance, logprobs.limit
        ));
    }
    if alternatives.failed() {
        reasons.push(format!(
            "at {} of {} tokens the reported alternatives differ from the claimed model's best by more than {} (limit {})",
            alternatives.errors, alternatives.checked, t.alternatives_tolerance, alternatives.limit
        ));
    }
    if shape.failed() {
        reasons.push(format!(
            "at {} of {} tokens the node weighs its alternatives otherwise than the claimed model (variance of the differences beyond {}; limit {})",
            shape.errors, shape.checked, t.shape_tolerance, shape.limit
        ));
    }
    if rival.failed() {
        reasons.push(format!(
            "at {} of {} tokens the reported log-probs are nearer what the claimed model gives the request without its system prompt than with it (limit {})",
            rival.errors, rival.checked, rival.limit
        ));
    }
    if decisive.failed() {
        reasons.push(format!(
            "{} of {} tokens are off by more than {} (a pick's logits or a reported log-prob) where no other split of the text explains it (limit {})",
            decisive.errors, decisive.checked, t.decisive_tolerance, decisive.limit
        ));
    }
    let outcome = if !reasons.is_empty() {
        Outcome::Fail
    } else if n < t.min_tokens {
        reasons.push(format!(
            "{n} completion tokens are fewer than the {} an audit needs",
            t.min_tokens
        ));
        Outcome::Inconclusive
    } else if replay.checked == 0 && logprobs.checked == 0 {
        reasons.push("neither replayable sampling nor reported log-probs to check".into());
        Outcome::Inconclusive
    } else {
        Outcome::Pass
    };
    Verdict {
        outcome,
        reasons,
        tokens: n,
        mode,
        replay,
        logprobs,
        alternatives,
        shape,
        decisive,
        rival,
        mean_ref_prob,
        greedy_agreement,
        mean_acceptance,
        false_positive_bound: t.alpha,
        pooled: None,
    }
}

/// The positions whose tokens are surely the node's own: through the first
/// one where another split of the text was within reach.
pub fn aligned(positions: &[Position]) -> &[Position] {
    let end = positions
        .iter()
        .position(|p| p.other_split)
        .map_or(positions.len(), |at| at + 1);
    &positions[..end]
}

/// The decisive test: positions wrong beyond rounding, counted while the
/// audit's tokens are surely the node's (through the first position where
/// another split of the text was within reach).
fn decisive_count(positions: &[Position], replays: bool, t: &Thresholds) -> Count {
    let aligned = aligned(positions).len();
    Count {
        checked: aligned,
        errors: positions[..aligned]
            .iter()
            .filter(|p| p.decisive_off(replays) > t.decisive_tolerance)
            .count(),
        limit: limit(aligned, t.honest_decisive_rate, t.alpha * DECISIVE_SHARE),
    }
}

/// Whether an audit's verdict so far calls for the rival pass: no test
/// failed it, but the shape or alternatives test counted at least
/// `rival_after` of its limit (the marks a changed context leaves).
pub fn rival_wanted(verdict: &Verdict, t: &Thresholds) -> bool {
    verdict.outcome != Outcome::Fail
        && [&verdict.shape, &verdict.alternatives]
            .iter()
            .any(|c| c.checked > 0 && c.errors as f64 >= t.rival_after * c.limit as f64)
}

/// The rate at which an honest report leans to the rival context at a
/// token where the two contexts are `apart` nats apart: rounding must move
/// it `rival_share * apart` along that one line.
pub fn honest_rival_rate(apart: f32, t: &Thresholds) -> f64 {
    let z = f64::from(t.rival_share * apart / t.rival_noise);
    normal_tail(z).max(t.honest_rival_floor)
}

/// `P[Z > z]` for a standard normal Z (Numerical Recipes' erfc, relative
/// error below 1.2e-7).
fn normal_tail(z: f64) -> f64 {
    let x = z / std::f64::consts::SQRT_2;
    let a = x.abs();
    let u = 1.0 / (1.0 + 0.5 * a);
    let poly = -a * a - 1.265_512_23
        + u * (1.000_023_68
            + u * (0.374_091_96
                + u * (0.096_784_18
                    + u * (-0.186_288_06
                        + u * (0.278_868_07
                            + u * (-1.135_203_98
                                + u * (1.488_515_87 + u * (-0.822_152_23 + u * 0.170_872_77))))))));
    let erfc = u * poly.exp();
    0.5 * if x >= 0.0 { erfc } else { 2.0 - erfc }
}

/// The rival test: tokens whose report leans to the rival context, among
/// those where the contexts are far enough apart that an honest report
/// leans at most at `rival_max_rate`; each counts at its own honest rate.
fn rival_count(positions: &[Position], t: &Thresholds) -> Count {
    let (rates, leaning): (Vec<f64>, Vec<bool>) = positions
        .iter()
        .filter_map(Position::rival_lean)
        .map(|lean| (honest_rival_rate(lean.apart, t), lean.leans(t.rival_share)))
        .filter(|&(rate, _)| rate <= t.rival_max_rate)
        .unzip();
    Count {
        checked: rates.len(),
        errors: leaning.iter().filter(|&&l| l).count(),
        limit: limit_each(&rates, t.alpha * RIVAL_SHARE),
    }
}

#[cfg(test)]
mod tests;
