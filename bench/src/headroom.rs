//! How much farther from the reference honest nodes could be and still pass:
//! the margin that numerics this run has not seen (GPU kernels, half-precision
//! activations) may use before an audit punishes an honest node.
//!
//! Dividing every tolerance by `factor` judges each honest deviation (a replay
//! miss's margin, a log-prob's gap, an alternative's gap) as if it were
//! `factor` times larger; the shape gap, a variance, by `factor` squared; a
//! lean to the rival context must go `1 / factor` as far, judged against
//! rounding `1 / factor` as wide (so each token's honest rate stays what
//! it was). Counts only grow with the factor, so the answers
//! that pass at a factor pass at every smaller one.

use tollgate_verify::history::with_pooled;
use tollgate_verify::stats::{judge, Mode, Outcome};
use tollgate_verify::{History, Position, Thresholds};

/// One node's audited answers, in the order it gave them.
pub type NodeAnswers = [(Vec<Position>, Mode)];

/// The factors tried, smallest first.
pub const FACTORS: &[f32] = &[
    1.0, 1.05, 1.1, 1.15, 1.2, 1.25, 1.3, 1.4, 1.5, 1.75, 2.0, 2.5, 3.0,
];

/// `t` with every tolerance divided by `factor`.
pub fn magnified(t: &Thresholds, factor: f32) -> Thresholds {
    Thresholds {
        tie_tolerance: t.tie_tolerance / factor,
        logprob_tolerance: t.logprob_tolerance / factor,
        alternatives_tolerance: t.alternatives_tolerance / factor,
        decisive_tolerance: t.decisive_tolerance / factor,
        shape_tolerance: t.shape_tolerance / (factor * factor),
        rival_share: t.rival_share / factor,
        rival_noise: t.rival_noise / factor,
        ..t.clone()
    }
}

/// The first audit to fail at some factor: why, alone or pooled with the
/// node's earlier ones.
#[derive(Debug, PartialEq)]
pub struct Failure {
    /// The factor at which it failed.
    pub factor: f32,
    /// The verdict's reasons.
    pub reasons: Vec<String>,
}

/// How far honest deviations could grow with every audit still passing.
#[derive(Debug, PartialEq)]
pub struct Headroom {
    /// The largest factor in [`FACTORS`] at which every answer passes, alone
    /// and pooled; 0 when one fails already as it is.
    pub factor: f32,
    /// What fails at the next factor; `None` when all pass at the largest.
    pub next: Option<Failure>,
}

/// Whether every node's answers pass at `factor`, alone and pooled as the
/// gateway pools them; the reasons of the first that fails otherwise.
fn first_failure(nodes: &[&NodeAnswers], t: &Thresholds, factor: f32) -> Option<Vec<String>> {
    let t = magnified(t, factor);
    for answers in nodes {
        let mut history = History::<()>::default();
        for (positions, mode) in answers.iter() {
            let verdict = judge(positions, *mode, &t);
            let pooled = history.observe(&verdict, (), &t);
            let verdict = with_pooled(verdict, pooled, &t);
            if verdict.outcome == Outcome::Fail {
                return Some(verdict.reasons);
            }
        }
    }
    None
}

/// The honest nodes' headroom under `t`.
pub fn headroom(nodes: &[&NodeAnswers], t: &Thresholds) -> Headroom {
    let mut passed = 0.0;
    for &factor in FACTORS {
        if let Some(reasons) = first_failure(nodes, t, factor) {
            return Headroom {
                factor: passed,
                next: Some(Failure { factor, reasons }),
            };
        }
        passed = factor;
    }
    Headroom {
        factor: passed,
        next: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A greedy position whose reported alternatives are `gap` off the
    /// reference's, everything else exact.
    fn position(gap: f32) -> Position {
        Position {
            claimed: 1,
            ref_logprob: -0.1,
            ref_best: 1,
            ref_best_logprob: -0.1,
            replayed: Some(tollgate_engine::Replayed {
                token: 1,
                margin: 0.0,
                runner_up: None,
            }),
            reported_logprob: Some(-0.1),
            other_split: false,
            reported_top: vec![-0.1, -2.0 - gap],
            ref_top: vec![-0.1, -2.0],
            paired: Vec::new(),
            unpaired: 0,
            rival: Vec::new(),
        }
    }

    fn answer(gaps: &[f32]) -> (Vec<Position>, Mode) {
        (gaps.iter().map(|&g| position(g)).collect(), Mode::Greedy)
    }

    #[test]
    fn magnifying_divides_every_tolerance() {
        let t = Thresholds::default();
        let m = magnified(&t, 2.0);
        assert_eq!(m.tie_tolerance, t.tie_tolerance / 2.0);
        assert_eq!(m.logprob_tolerance, t.logprob_tolerance / 2.0);
        assert_eq!(m.alternatives_tolerance, t.alternatives_tolerance / 2.0);
        assert_eq!(m.decisive_tolerance, t.decisive_tolerance / 2.0);
        assert_eq!(m.shape_tolerance, t.shape_tolerance / 4.0);
        assert_eq!(m.rival_share, t.rival_share / 2.0);
        // A token as far apart keeps its honest rate.
        let rate = tollgate_verify::stats::honest_rival_rate;
        assert!((rate(0.6, &m) - rate(0.6, &t)).abs() < 1e-12);
        assert_eq!(m.alpha, t.alpha);
        assert_eq!(m.honest_alternatives_rate, t.honest_alternatives_rate);
    }

    #[test]
    fn exact_answers_pass_at_every_factor() {
        let a = answer(&[0.0; 48]);
        let h = headroom(&[&[a][..]], &Thresholds::default());
        assert_eq!(
            h,
            Headroom {
                factor: 3.0,
                next: None
            }
        );
    }

    #[test]
    fn the_factor_stops_where_the_alternatives_count_reaches_its_limit() {
        let t = Thresholds::default();
        let n = 48;
        let needed = tollgate_verify::stats::limit(
            n,
            t.honest_alternatives_rate,
            t.alpha * tollgate_verify::stats::COUNT_SHARE,
        );
        // `needed` positions whose alternatives are off by 0.3: within the
        // 0.4 tolerance until magnified past 4/3, so a factor of 1.3 passes
        // and 1.4 fails.
        let mut gaps = vec![0.0; n];
        gaps[..needed].fill(0.3);
        let h = headroom(&[&[answer(&gaps)][..]], &t);
        assert_eq!(h.factor, 1.3);
        let next = h.next.expect("fails at 1.4");
        assert_eq!(next.factor, 1.4);
        assert!(!next.reasons.is_empty());
        // One position fewer stays under the limit at every factor.
        gaps[needed - 1] = 0.0;
        assert_eq!(headroom(&[&[answer(&gaps)][..]], &t).factor, 3.0);
    }

    #[test]
    fn an_answer_failing_as_it_is_leaves_no_headroom() {
        let t = Thresholds::default();
        let gaps = [t.decisive_tolerance + 1.0; 48];
        let h = headroom(&[&[answer(&gaps)][..]], &t);
        assert_eq!(h.factor, 0.0);
        assert_eq!(h.next.map(|f| f.factor), Some(1.0));
    }
}
