//! A node's trust: a Beta posterior over its audit outcomes.
//!
//! The prior comes from the operator's configured trust (its mean) with the
//! weight of a couple of audits, so a configured score is a starting belief
//! that evidence quickly overrides. A failed audit weighs as much as many
//! passes: one proven lie outweighs a run of honest answers, which a cheat
//! that is honest only at first would otherwise bank on.

use serde::{Deserialize, Serialize};

use crate::stats::Outcome;

/// How many passes one failure outweighs.
pub const FAILURE_WEIGHT: f64 = 20.0;

/// How many audits the configured prior is worth.
pub const PRIOR_WEIGHT: f64 = 2.0;

/// Beta(alpha, beta) over "this node answers honestly".
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Trust {
    /// Prior plus passes.
    pub alpha: f64,
    /// Prior plus weighted failures.
    pub beta: f64,
    /// Audits that passed.
    pub passed: u64,
    /// Audits that failed.
    pub failed: u64,
    /// Audits that could not decide.
    pub inconclusive: u64,
}

impl Trust {
    /// A node the operator starts at `prior` (0..=1).
    pub fn new(prior: f64) -> Self {
        let prior = if prior.is_nan() {
            0.0
        } else {
            prior.clamp(0.0, 1.0)
        };
        Self {
            alpha: prior * PRIOR_WEIGHT,
            beta: (1.0 - prior) * PRIOR_WEIGHT,
            passed: 0,
            failed: 0,
            inconclusive: 0,
        }
    }

    /// A node the operator starts at `prior` after these audits (what a
    /// database shared by several gateways counted).
    pub fn from_counts(prior: f64, passed: u64, failed: u64, inconclusive: u64) -> Self {
        let mut t = Self::new(prior);
        t.alpha += passed as f64;
        t.beta += failed as f64 * FAILURE_WEIGHT;
        t.passed = passed;
        t.failed = failed;
        t.inconclusive = inconclusive;
        t
    }

    /// Folds in one audit.
    pub fn record(&mut self, outcome: Outcome) {
        match outcome {
            Outcome::Pass => {
                self.alpha += 1.0;
                self.passed += 1;
            }
            Outcome::Fail => {
                self.beta += FAILURE_WEIGHT;
                self.failed += 1;
            }
            Outcome::Inconclusive => self.inconclusive += 1,
        }
    }

    /// The posterior mean, what routing's `min_trust` compares against.
    pub fn score(&self) -> f64 {
        let total = self.alpha + self.beta;
        if total <= 0.0 {
            0.0
        } else {
            self.alpha / total
        }
    }

    /// Audits that decided something.
    pub fn audits(&self) -> u64 {
        self.passed + self.failed + self.inconclusive
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_rebuild_what_recording_one_by_one_builds() {
        let mut one_by_one = Trust::new(0.7);
        for o in [
            Outcome::Pass,
            Outcome::Fail,
            Outcome::Pass,
            Outcome::Inconclusive,
        ] {
            one_by_one.record(o);
        }
        assert_eq!(Trust::from_counts(0.7, 2, 1, 1), one_by_one);
    }

    #[test]
    fn the_prior_is_the_configured_trust() {
        assert_eq!(Trust::new(1.0).score(), 1.0);
        assert!((Trust::new(0.3).score() - 0.3).abs() < 1e-12);
        assert_eq!(Trust::new(7.0).score(), 1.0, "clamped");
        assert_eq!(
            Trust::new(f64::NAN).score(),
            0.0,
            "a broken prior trusts nothing"
        );
        assert_eq!(Trust::new(0.0).score(), 0.0);
    }

    #[test]
    fn one_failure_outweighs_many_passes() {
        let mut t = Trust::new(1.0);
        for _ in 0..10 {
            t.record(Outcome::Pass);
        }
        assert_eq!(t.score(), 1.0);
        t.record(Outcome::Fail);
        assert!(t.score() < 0.4, "{}", t.score());
        let before = t.score();
        t.record(Outcome::Inconclusive);
        assert_eq!(t.score(), before, "inconclusive audits move nothing");
        assert_eq!(
            (t.passed, t.failed, t.inconclusive, t.audits()),
            (10, 1, 1, 12)
        );
        // Honesty earns trust back, slowly.
        for _ in 0..40 {
            t.record(Outcome::Pass);
        }
        assert!(t.score() > 0.7 && t.score() < 0.75, "{}", t.score());
    }

    #[test]
    fn passes_raise_a_low_prior() {
        let mut t = Trust::new(0.5);
        let mut last = t.score();
        for _ in 0..5 {
            t.record(Outcome::Pass);
            assert!(t.score() > last);
            last = t.score();
        }
    }
}
