//! From per-token measures to a verdict with a stated false-positive bound.
//!
//! Three tests, each a count of positions an honest node explains only by
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
//!
//! If each honest position errs with conditional probability at most `r`
//! whatever came before, the count of errors is stochastically dominated by
//! Binomial(n, r). A test fails the node only when its count reaches the
//! smallest `k` with `P[Binomial(n, r) >= k] <= 0.3 alpha`, so an honest
//! node fails an audit with probability at most `alpha` (Bonferroni over the
//! four tests, the decisive one taking `0.1 alpha`). Nothing here depends
//! on the node's model being good, only on it being the model it claims.
//!
//! The fourth test weighs how wrong a position is, not only whether it is:
//!
//! * **Decisive positions.** A replay miss by more than `decisive_tolerance`
//!   logits, or a reported log-prob (of the token or an alternative) off by
//!   more than that many nats, is
//!   beyond anything rounding does (honest gaps stay under a nat), and where
//!   the pick would write other text than the answer has, no re-tokenization
//!   accident explains it either. Such positions are counted only while the
//!   audit's tokens are surely the node's own: up to the first position
//!   where another split of the same text was within reach. An honest node
//!   errs so at a per-token rate of at most `honest_decisive_rate`, so one
//!   such position fails an answer. This is what catches a lie that moves a
//!   single token of an answer, far: a dropped system prompt's first word.

use serde::{Deserialize, Serialize};
use tollgate_engine::Replayed;

pub use crate::binomial::{binomial_tails, limit};
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
    /// Fewer completion tokens than this say too little: inconclusive.
    pub min_tokens: usize,
    /// A replay miss by more than this many logits, or a reported log-prob
    /// off by more than this many nats, where the text is aligned, is more
    /// than rounding can do: decisive.
    pub decisive_tolerance: f32,
    /// Assumed per-token rate of decisive positions of an honest node.
    pub honest_decisive_rate: f64,
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
            min_tokens: 8,
            decisive_tolerance: 4.0,
            honest_decisive_rate: 1e-10,
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
    /// Positions wrong beyond what rounding does, where the text is aligned.
    #[serde(default)]
    pub decisive: Count,
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
/// the four tests): one position fails there at any share, so the three
/// counts keep the rest, and with it their limits on short answers.
const DECISIVE_SHARE: f64 = 0.1;

/// Each count test's share of the false-positive budget.
pub const COUNT_SHARE: f64 = (1.0 - DECISIVE_SHARE) / 3.0;

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
    let decisive = decisive_count(positions, replays, t);
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
        decisive,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn pos(claimed: u32, replayed: Option<(u32, f32)>, reported: Option<f32>) -> Position {
        Position {
            claimed,
            ref_logprob: -0.1,
            ref_best: replayed.map_or(claimed, |r| r.0),
            ref_best_logprob: -0.05,
            replayed: replayed.map(|(token, margin)| Replayed {
                token,
                margin,
                runner_up: None,
            }),
            reported_logprob: reported,
            other_split: false,
            reported_top: Vec::new(),
            ref_top: Vec::new(),
        }
    }

    #[test]
    fn honest_greedy_passes_and_excuses_near_ties() {
        let mut ps: Vec<Position> = (0..32).map(|i| pos(i, Some((i, 0.0)), None)).collect();
        // Three near-ties (rounding) and one re-tokenization accident.
        for i in [3, 9, 20] {
            ps[i].replayed = Some(Replayed {
                token: 999,
                margin: 0.01,
                runner_up: None,
            });
        }
        ps[25].replayed = Some(Replayed {
            token: 999,
            margin: 6.0,
            runner_up: None,
        });
        ps[25].other_split = true;
        let v = judge(&ps, Mode::Greedy, &Thresholds::default());
        assert_eq!(v.outcome, Outcome::Pass, "{v:?}");
        assert_eq!(v.replay.errors, 1);
        assert_eq!((v.decisive.errors, v.decisive.checked), (0, 26));
        assert_eq!(v.replay.checked, 32);
        assert!(v.reasons.is_empty());
    }

    #[test]
    fn many_wide_misses_fail() {
        let ps: Vec<Position> = (0..32)
            .map(|i| {
                if i % 3 == 0 {
                    pos(i, Some((i + 1, 3.0)), None)
                } else {
                    pos(i, Some((i, 0.0)), None)
                }
            })
            .collect();
        let v = judge(&ps, Mode::Greedy, &Thresholds::default());
        assert_eq!(v.outcome, Outcome::Fail);
        assert_eq!(v.replay.errors, 11);
        assert!(v.reasons[0].contains("11 of 32"), "{:?}", v.reasons);
        // Seeded requests are judged the same way.
        let v = judge(&ps, Mode::Seeded, &Thresholds::default());
        assert_eq!(v.outcome, Outcome::Fail);
        let near: Vec<Position> = ps
            .iter()
            .map(|p| Position {
                replayed: p.replayed.map(|r| Replayed {
                    margin: r.margin.min(0.01),
                    ..r
                }),
                ..p.clone()
            })
            .collect();
        assert_eq!(
            judge(&near, Mode::Seeded, &Thresholds::default()).outcome,
            Outcome::Pass
        );
    }

    #[test]
    fn fabricated_logprobs_fail_and_honest_ones_pass() {
        let honest: Vec<Position> = (0..40).map(|i| pos(i, None, Some(-0.1 + 0.01))).collect();
        let v = judge(&honest, Mode::Unreplayable, &Thresholds::default());
        assert_eq!(v.outcome, Outcome::Pass);
        assert_eq!(v.logprobs.checked, 40);
        assert!((v.mean_acceptance.unwrap() - (-0.01f64).exp()).abs() < 1e-6);
        let forged: Vec<Position> = (0..40).map(|i| pos(i, None, Some(-3.0))).collect();
        let v = judge(&forged, Mode::Unreplayable, &Thresholds::default());
        assert_eq!(v.outcome, Outcome::Fail);
        assert_eq!(
            v.mean_acceptance,
            Some(1.0),
            "claiming less certainty is always accepted"
        );
        assert!(v.reasons[0].contains("reported log-probs"));
        // A NaN log-prob is a gap, not a pass.
        let nan: Vec<Position> = (0..40).map(|i| pos(i, None, Some(f32::NAN))).collect();
        assert_eq!(
            judge(&nan, Mode::Unreplayable, &Thresholds::default()).outcome,
            Outcome::Fail
        );
    }

    #[test]
    fn too_little_is_inconclusive_not_a_pass() {
        let short: Vec<Position> = (0..4).map(|i| pos(i, Some((i, 0.0)), None)).collect();
        let v = judge(&short, Mode::Greedy, &Thresholds::default());
        assert_eq!(v.outcome, Outcome::Inconclusive);
        let nothing: Vec<Position> = (0..40).map(|i| pos(i, Some((i + 1, 5.0)), None)).collect();
        let v = judge(&nothing, Mode::Unreplayable, &Thresholds::default());
        assert_eq!(
            v.outcome,
            Outcome::Inconclusive,
            "replays are ignored when unreplayable"
        );
        assert_eq!(v.replay.checked, 0);
        // But a short answer that is plainly wrong still fails.
        let wrong: Vec<Position> = (0..4).map(|i| pos(i, Some((i + 1, 5.0)), None)).collect();
        let t = Thresholds {
            honest_miss_rate: 0.001,
            ..Default::default()
        };
        assert_eq!(judge(&wrong, Mode::Greedy, &t).outcome, Outcome::Fail);
    }

    /// A greedy answer of 48 tokens, all picked as the reference picks.
    fn clean(n: u32) -> Vec<Position> {
        (0..n).map(|i| pos(i, Some((i, 0.0)), Some(-0.1))).collect()
    }

    fn far_miss(p: &mut Position, margin: f32) {
        p.replayed = Some(Replayed {
            token: 999,
            margin,
            runner_up: None,
        });
    }

    #[test]
    fn one_far_miss_where_the_text_is_aligned_fails_the_answer() {
        // A dropped system prompt: the first word is another one, by far;
        // teacher-forced on it, the rest agrees.
        let mut ps = clean(48);
        far_miss(&mut ps[0], 7.5);
        let v = judge(&ps, Mode::Greedy, &Thresholds::default());
        assert_eq!(v.outcome, Outcome::Fail, "{v:?}");
        assert_eq!((v.decisive.errors, v.decisive.limit), (1, 1));
        assert_eq!(v.replay.errors, 1, "far below the count test's limit");
        assert!(!v.replay.failed());
        assert!(v.reasons[0].contains("more than 4"), "{:?}", v.reasons);
        // Seeded answers alike.
        assert_eq!(
            judge(&ps, Mode::Seeded, &Thresholds::default()).outcome,
            Outcome::Fail
        );
        // A miss within the decisive tolerance is only counted.
        far_miss(&mut ps[0], 3.9);
        assert_eq!(
            judge(&ps, Mode::Greedy, &Thresholds::default()).outcome,
            Outcome::Pass
        );
    }

    #[test]
    fn far_misses_after_another_split_was_within_reach_are_only_counted() {
        let mut ps = clean(48);
        far_miss(&mut ps[30], 9.0);
        // The pick at 30 spells the same text: a split, not other words.
        ps[30].other_split = true;
        let v = judge(&ps, Mode::Greedy, &Thresholds::default());
        assert_eq!(
            (v.outcome, v.decisive.errors, v.decisive.checked),
            (Outcome::Pass, 0, 31)
        );
        // A split within reach at 10: the node may have seen other tokens
        // from there on, so a far miss at 30 proves nothing.
        ps[30].other_split = false;
        ps[10].other_split = true;
        let v = judge(&ps, Mode::Greedy, &Thresholds::default());
        assert_eq!((v.outcome, v.decisive.checked), (Outcome::Pass, 11));
        // Before it, it does.
        far_miss(&mut ps[9], 9.0);
        assert_eq!(
            judge(&ps, Mode::Greedy, &Thresholds::default()).outcome,
            Outcome::Fail
        );
    }

    #[test]
    fn an_undrawable_claim_or_an_unreplayable_miss_is_not_decisive() {
        let mut ps = clean(48);
        // Rounding can move a nucleus boundary past the claimed token.
        far_miss(&mut ps[3], tollgate_engine::sampler::UNDRAWABLE);
        assert_eq!(
            judge(&ps, Mode::Seeded, &Thresholds::default())
                .decisive
                .errors,
            0
        );
        far_miss(&mut ps[3], 9.0);
        let v = judge(&ps, Mode::Unreplayable, &Thresholds::default());
        assert_eq!((v.outcome, v.decisive.errors), (Outcome::Pass, 0));
    }

    #[test]
    fn one_far_reported_log_prob_fails_the_answer() {
        // The node's own context made its token certain; the claimed one's
        // makes it unlikely.
        let mut ps: Vec<Position> = (0..40).map(|i| pos(i, None, Some(-0.1))).collect();
        ps[0].reported_logprob = Some(-0.1 + 0.2);
        assert_eq!(
            judge(&ps, Mode::Unreplayable, &Thresholds::default()).outcome,
            Outcome::Pass
        );
        ps[5].reported_logprob = Some(-6.0);
        let v = judge(&ps, Mode::Unreplayable, &Thresholds::default());
        assert_eq!(
            (v.outcome, v.decisive.errors, v.logprobs.errors),
            (Outcome::Fail, 1, 1)
        );
        // Unknown alignment (an old record) judges no position decisive.
        for p in &mut ps {
            p.other_split = true;
        }
        let v = judge(&ps, Mode::Unreplayable, &Thresholds::default());
        assert_eq!((v.outcome, v.decisive.checked), (Outcome::Pass, 1));
    }

    /// A position whose node reported `top` as its alternatives where the
    /// reference's best are -0.1, -2.5, -3.0, -4.0, -6.0.
    fn with_alternatives(mut p: Position, top: &[f32]) -> Position {
        p.ref_top = vec![-0.1, -2.5, -3.0, -4.0, -6.0];
        p.reported_top = top.to_vec();
        p
    }

    #[test]
    fn alternatives_from_another_context_fail_the_answer() {
        let honest = [-0.12, -2.6, -2.95, -4.1, -5.9];
        // Another context: as sure of the token, other runners-up.
        let other = [-0.1, -1.9, -3.6, -4.5, -5.2];
        let answer = |off: usize| -> Vec<Position> {
            (0..48)
                .map(|i| {
                    let top = if i < off { &other } else { &honest };
                    with_alternatives(pos(i as u32, Some((i as u32, 0.0)), Some(-0.1)), top)
                })
                .collect()
        };
        let t = Thresholds::default();
        let v = judge(&answer(0), Mode::Greedy, &t);
        assert_eq!(
            (v.outcome, v.alternatives.checked, v.alternatives.errors),
            (Outcome::Pass, 48, 0)
        );
        // Honest nodes exceed the tolerance now and then: a few such
        // positions are within what rounding does.
        let few = t.honest_alternatives_rate * 48.0;
        let v = judge(&answer(few.ceil() as usize), Mode::Greedy, &t);
        assert_eq!(v.outcome, Outcome::Pass);
        let limit = v.alternatives.limit;
        assert!(limit > few.ceil() as usize && limit < 48, "{limit}");
        let v = judge(&answer(limit), Mode::Greedy, &t);
        assert_eq!(v.outcome, Outcome::Fail);
        assert!(v.alternatives.failed() && !v.logprobs.failed() && !v.replay.failed());
        assert!(v.reasons[0].contains("alternatives"), "{:?}", v.reasons);
        // Without alternatives reported the test has nothing to check.
        let bare: Vec<Position> = (0..48)
            .map(|i| pos(i, Some((i, 0.0)), Some(-0.1)))
            .collect();
        let v = judge(&bare, Mode::Greedy, &t);
        assert_eq!((v.outcome, v.alternatives.checked), (Outcome::Pass, 0));
    }

    #[test]
    fn one_alternative_far_off_where_the_text_is_aligned_is_decisive() {
        let honest = [-0.12, -2.6, -2.95, -4.1, -5.9];
        let mut ps: Vec<Position> = (0..40)
            .map(|i| with_alternatives(pos(i, None, Some(-0.1)), &honest))
            .collect();
        ps[7].reported_top = vec![-0.1, -2.5, -3.0, -4.0, -10.5];
        let v = judge(&ps, Mode::Unreplayable, &Thresholds::default());
        assert_eq!((v.outcome, v.decisive.errors), (Outcome::Fail, 1));
        assert!((ps[7].decisive_off(false) - 4.5).abs() < 1e-5);
    }

    #[test]
    fn the_four_tests_share_the_false_positive_budget() {
        let t = Thresholds::default();
        // One decisive position fails answers of up to a thousand tokens.
        let decisive = t.alpha * DECISIVE_SHARE;
        assert_eq!(limit(1000, t.honest_decisive_rate, decisive), 1);
        assert_eq!(limit(1100, t.honest_decisive_rate, decisive), 2);
        let v = judge(&clean(48), Mode::Greedy, &t);
        assert_eq!(v.replay.limit, limit(48, t.honest_miss_rate, t.alpha * 0.3));
        assert_eq!(
            v.logprobs.limit,
            limit(48, t.honest_gap_rate, t.alpha * 0.3)
        );
        assert!((DECISIVE_SHARE + 3.0 * COUNT_SHARE - 1.0).abs() < 1e-12);
        assert!((v.false_positive_bound - t.alpha).abs() < 1e-18);
        // Old records without the test still read.
        let mut json = serde_json::to_value(&v).expect("verdict serializes");
        json.as_object_mut().expect("an object").remove("decisive");
        json.as_object_mut()
            .expect("an object")
            .remove("alternatives");
        let old: Verdict = serde_json::from_value(json).expect("an old verdict reads");
        assert_eq!(old.decisive, Count::default());
        assert_eq!(old.alternatives, Count::default());
        let p: Position = serde_json::from_value(serde_json::json!({
            "claimed": 1, "ref_logprob": -0.1, "ref_best": 1, "ref_best_logprob": -0.1,
            "replayed": null, "reported_logprob": null
        }))
        .expect("an old position reads");
        assert!(p.other_split, "unknown alignment is the careful default");
        assert!(p.reported_top.is_empty() && p.ref_top.is_empty());
    }

    #[test]
    fn per_token_measures() {
        let p = Position {
            claimed: 5,
            ref_logprob: (0.25f32).ln(),
            ref_best: 7,
            ref_best_logprob: (0.5f32).ln(),
            replayed: None,
            reported_logprob: Some((0.5f32).ln()),
            other_split: false,
            reported_top: Vec::new(),
            ref_top: Vec::new(),
        };
        assert!((p.ref_prob() - 0.25).abs() < 1e-6);
        assert!(!p.greedy_agrees());
        assert!((p.acceptance().unwrap() - 0.5).abs() < 1e-6);
        assert!((p.logprob_gap().unwrap() - 2f32.ln()).abs() < 1e-6);
        assert_eq!(p.top_gap(), None, "no alternatives reported");
        let v = judge(&[p], Mode::Greedy, &Thresholds::default());
        assert_eq!(v.greedy_agreement, 0.0);
        assert!((v.mean_ref_prob - 0.25).abs() < 1e-6);
    }
}
