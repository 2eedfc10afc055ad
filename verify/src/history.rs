//! Evidence across a node's audits: one test over its recent answers pooled.
//!
//! A subtle cheat (a dropped system prompt, a truncated context) moves only
//! a few tokens of each answer, often fewer than one audit's limit; but it
//! moves them in every answer, while an honest node's rare errors stay rare.
//! So after each audit the node's recent audits are pooled: their error
//! counts are summed and tested against Binomial(pooled positions, r), the
//! same assumption one audit rests on.
//!
//! The pooled test runs again after every audit, so its error budget is
//! spent as `alpha_j = alpha / (j (j + 1))` at the node's `j`-th audit. These
//! sum to `alpha` over the node's whole life: an honest node is failed by
//! the pooled test, ever, with probability at most `alpha`.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use crate::stats::{limit, Count, Outcome, Thresholds, Verdict};

/// Audits pooled by default: enough for a cheat that errs on a few tokens
/// per answer to add up, few enough that the evidence bundle stays small.
pub const WINDOW: usize = 16;

/// The pooled test after one audit.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Pooled {
    /// The node's audits so far, this one included (the `j` of `alpha_j`).
    pub audit: u64,
    /// Audits pooled (the most recent ones).
    pub pooled: usize,
    /// Replay misses over the pooled audits.
    pub replay: Count,
    /// Log-prob gaps over the pooled audits.
    pub logprobs: Count,
    /// This test's share of the false-positive budget, `alpha_j`.
    pub alpha: f64,
}

impl Pooled {
    /// Whether the pooled counts reach a limit.
    pub fn failed(&self) -> bool {
        self.replay.failed() || self.logprobs.failed()
    }

    /// Why the pooled test failed, in words.
    pub fn reasons(&self, t: &Thresholds) -> Vec<String> {
        let mut reasons = Vec::new();
        if self.replay.failed() {
            reasons.push(format!(
                "over its last {} audits, {} of {} tokens are not what the claimed model picks (limit {})",
                self.pooled, self.replay.errors, self.replay.checked, self.replay.limit
            ));
        }
        if self.logprobs.failed() {
            reasons.push(format!(
                "over its last {} audits, {} of {} reported log-probs differ from the claimed model's by more than {} (limit {})",
                self.pooled,
                self.logprobs.errors,
                self.logprobs.checked,
                t.logprob_tolerance,
                self.logprobs.limit
            ));
        }
        reasons
    }
}

struct Entry<T> {
    replay: (usize, usize),
    logprobs: (usize, usize),
    item: T,
}

/// A node's recent audits, each with what the caller keeps of it (the
/// claim and its scores, for evidence).
pub struct History<T> {
    window: VecDeque<Entry<T>>,
    capacity: usize,
    audits: u64,
}

impl<T> Default for History<T> {
    fn default() -> Self {
        Self::with_window(WINDOW)
    }
}

impl<T> History<T> {
    /// Pools the last `capacity` audits (at least one).
    pub fn with_window(capacity: usize) -> Self {
        Self {
            window: VecDeque::new(),
            capacity: capacity.max(1),
            audits: 0,
        }
    }

    /// Audits observed so far.
    pub fn audits(&self) -> u64 {
        self.audits
    }

    /// What the pooled audits kept, oldest first.
    pub fn items(&self) -> impl Iterator<Item = &T> {
        self.window.iter().map(|e| &e.item)
    }

    /// Adds one audit's verdict and runs the pooled test.
    pub fn observe(&mut self, verdict: &Verdict, item: T, t: &Thresholds) -> Pooled {
        self.audits += 1;
        if self.window.len() == self.capacity {
            self.window.pop_front();
        }
        self.window.push_back(Entry {
            replay: (verdict.replay.checked, verdict.replay.errors),
            logprobs: (verdict.logprobs.checked, verdict.logprobs.errors),
            item,
        });
        let j = self.audits as f64;
        let alpha = t.alpha / (j * (j + 1.0));
        let sum = |f: fn(&Entry<T>) -> (usize, usize)| {
            self.window
                .iter()
                .map(f)
                .fold((0, 0), |(c, e), (dc, de)| (c + dc, e + de))
        };
        let count = |(checked, errors): (usize, usize), rate: f64| Count {
            checked,
            errors,
            limit: limit(checked, rate, alpha / 2.0),
        };
        Pooled {
            audit: self.audits,
            pooled: self.window.len(),
            replay: count(sum(|e| e.replay), t.honest_miss_rate),
            logprobs: count(sum(|e| e.logprobs), t.honest_gap_rate),
            alpha,
        }
    }
}

/// One audit's verdict with the pooled test folded in: a failed pooled
/// test fails an answer its own audit passed (or could not decide).
pub fn with_pooled(mut verdict: Verdict, pooled: Pooled, t: &Thresholds) -> Verdict {
    if verdict.outcome != Outcome::Fail && pooled.failed() {
        verdict.outcome = Outcome::Fail;
        verdict.reasons = pooled.reasons(t);
    }
    verdict.pooled = Some(pooled);
    verdict
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::position::Position;
    use crate::stats::{binomial_tails, judge, Mode};
    use tollgate_engine::Replayed;

    /// A greedy answer of `n` tokens with `misses` wide replay misses.
    fn answer(n: usize, misses: usize) -> Verdict {
        let ps: Vec<Position> = (0..n as u32)
            .map(|i| Position {
                claimed: i,
                ref_logprob: -0.1,
                ref_best: i,
                ref_best_logprob: -0.1,
                replayed: Some(Replayed {
                    token: if (i as usize) < misses { i + 1 } else { i },
                    margin: 3.0,
                    runner_up: None,
                }),
                reported_logprob: None,
                other_split: false,
                reported_top: Vec::new(),
                ref_top: Vec::new(),
                paired: Vec::new(),
                unpaired: 0,
                rival: Vec::new(),
            })
            .collect();
        judge(&ps, Mode::Greedy, &Thresholds::default())
    }

    #[test]
    fn a_few_misses_in_every_answer_add_up() {
        let t = Thresholds::default();
        let mut h = History::default();
        let mut caught_at = None;
        for j in 1..=WINDOW as u64 {
            let v = answer(48, 3);
            assert_eq!(
                v.outcome,
                Outcome::Pass,
                "one answer alone is under its limit"
            );
            let pooled = h.observe(&v, j, &t);
            assert_eq!(pooled.audit, j);
            let v = with_pooled(v, pooled, &t);
            if v.outcome == Outcome::Fail && caught_at.is_none() {
                caught_at = Some(j);
                assert!(v.reasons[0].contains("over its last"), "{:?}", v.reasons);
            }
        }
        let at = caught_at.expect("3 misses per 48 tokens is 30x the honest rate");
        assert!(at <= 3, "caught at audit {at}");
        assert_eq!(
            h.items().copied().collect::<Vec<_>>(),
            (1..=16).collect::<Vec<_>>()
        );
    }

    #[test]
    fn an_honest_rate_of_errors_never_fails_over_many_audits() {
        // One miss every 10 answers of 48 tokens (0.2%, the assumed honest
        // rate) for a thousand audits.
        let t = Thresholds::default();
        let mut h = History::default();
        for j in 0..1000u32 {
            let v = answer(48, usize::from(j % 10 == 0));
            let p = h.observe(&v, (), &t);
            assert!(!p.failed(), "failed at audit {}: {p:?}", j + 1);
            assert!(p.pooled <= WINDOW);
        }
        assert_eq!(h.audits(), 1000);
    }

    #[test]
    fn the_budget_sums_to_alpha() {
        let t = Thresholds::default();
        let mut h = History::with_window(2);
        let spent: f64 = (0..10_000)
            .map(|_| h.observe(&answer(8, 0), (), &t).alpha)
            .sum();
        assert!(spent < t.alpha && spent > 0.99 * t.alpha, "{spent}");
    }

    #[test]
    fn a_failed_answer_keeps_its_own_reasons() {
        let t = Thresholds::default();
        let mut h = History::default();
        let v = answer(48, 20);
        assert_eq!(v.outcome, Outcome::Fail);
        let reasons = v.reasons.clone();
        let p = h.observe(&v, (), &t);
        let v = with_pooled(v, p, &t);
        assert_eq!(v.reasons, reasons);
        assert!(v.pooled.is_some());
    }

    #[test]
    fn tails_stay_sane_for_long_pools() {
        let tails = binomial_tails(20_000, 0.002);
        assert!(tails[40] > 0.4 && tails[40] < 0.6, "the median is 40");
        assert!(tails[100] < 1e-12);
    }
}
