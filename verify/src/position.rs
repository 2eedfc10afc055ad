//! What an audit knows about one completion token, and the measures read
//! from it.

use serde::{Deserialize, Serialize};
use tollgate_engine::Replayed;

use crate::rival::Lean;

/// What the audit knows about one completion token.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Position {
    /// The token the re-tokenized completion has here.
    pub claimed: u32,
    /// The reference's log-prob of it.
    pub ref_logprob: f32,
    /// The reference's most likely token.
    pub ref_best: u32,
    /// The log-prob of that token.
    pub ref_best_logprob: f32,
    /// What the replayed sampler picked, for greedy and seeded requests.
    pub replayed: Option<Replayed>,
    /// The log-prob the node reported for this token, where it reported one
    /// that lines up with this position.
    pub reported_logprob: Option<f32>,
    /// Whether another token the node may have drawn here (the replayed
    /// pick, or a runner-up within the tie tolerance) spells the same text:
    /// from here on the node's split of the text may differ from the audit's,
    /// and later positions may be scored on other tokens than the node saw.
    /// Unknown (older records, a reference without token bytes) is `true`.
    #[serde(default = "unknown_split")]
    pub other_split: bool,
    /// The log-probs of the alternatives the node reported here, as given.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reported_top: Vec<f32>,
    /// The reference's best log-probs here, best first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ref_top: Vec<f32>,
    /// The node's reported alternatives that the reference also ranks among
    /// its best, each as (reported log-prob, reference log-prob) of the same
    /// token. Empty where the reference cannot name tokens' bytes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub paired: Vec<(f32, f32)>,
    /// The node's reported alternatives that the reference ranks nowhere
    /// among its best (spelled like none of those tokens).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub unpaired: usize,
    /// Where the request has a rival context ([`crate::rival`]): the node's
    /// reported alternatives that both contexts rank among their best, each
    /// as (reported, claimed context's, rival context's) log-prob.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rival: Vec<[f32; 3]>,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

fn unknown_split() -> bool {
    true
}

impl Position {
    /// The reference probability of the claimed token.
    pub fn ref_prob(&self) -> f64 {
        f64::from(self.ref_logprob).exp()
    }

    /// Whether the claimed token is the reference's argmax.
    pub fn greedy_agrees(&self) -> bool {
        self.claimed == self.ref_best
    }

    /// Speculative acceptance of the claimed token as a draft from the
    /// node's reported distribution: min(1, p_ref / q_node).
    pub fn acceptance(&self) -> Option<f64> {
        self.reported_logprob
            .map(|q| f64::from(self.ref_logprob - q).exp().min(1.0))
    }

    /// Whether the replayed sampler picked another token, by more than
    /// `tolerance` logits.
    pub fn miss_beyond(&self, tolerance: f32) -> bool {
        self.replayed
            .is_some_and(|r| r.token != self.claimed && r.margin > tolerance)
    }

    /// How far off this position is as the decisive test sees it: the largest
    /// of the replay miss's margin (where replays count, and the pick spells
    /// other text; an undrawable claim may be a nucleus boundary that
    /// rounding moved, so it does not count), the log-prob gap and the
    /// alternatives' gap; 0 when none applies.
    pub fn decisive_off(&self, replays: bool) -> f32 {
        let miss = self
            .replayed
            .filter(|r| replays && !self.other_split && r.token != self.claimed)
            .map(|r| r.margin)
            .filter(|&m| m < tollgate_engine::sampler::UNDRAWABLE);
        miss.into_iter()
            .chain(self.logprob_gap())
            .chain(self.top_gap())
            .fold(0.0, f32::max)
    }

    /// How far the node's reported alternatives are from the reference's
    /// best log-probs, rank by rank (each side sorted, best first). Sorting
    /// moves no value by more than the largest difference over the
    /// vocabulary, so rounding that swaps near-tied tokens moves this no
    /// more than it moves any log-prob. None where either side has none;
    /// a non-number reported is infinitely far.
    pub fn top_gap(&self) -> Option<f32> {
        if self.reported_top.is_empty() || self.ref_top.is_empty() {
            return None;
        }
        if self.reported_top.iter().any(|v| v.is_nan()) {
            return Some(f32::INFINITY);
        }
        let mut reported = self.reported_top.clone();
        reported.sort_by(|a, b| b.total_cmp(a));
        Some(
            reported
                .iter()
                .zip(&self.ref_top)
                .map(|(r, f)| (r - f).abs())
                .fold(0.0, f32::max),
        )
    }

    /// How differently the node weighs its alternatives against each other
    /// than the reference does: the variance, over [`Self::paired`], of the
    /// reported minus the reference log-prob. A shift common to all of them
    /// (another normalisation) cancels; what remains is which tokens the
    /// node found likelier than the reference did, token by token, which a
    /// changed context moves although the best log-probs, sorted, may still
    /// line up. An alternative the reference ranks nowhere among its best
    /// (an honest node's are there but at 0.2-0.4% of positions) and a
    /// non-number reported are infinitely far; fewer than two pairs
    /// otherwise say nothing (None).
    pub fn shape_gap(&self) -> Option<f32> {
        if self.unpaired > 0 || self.paired.iter().any(|(r, _)| r.is_nan()) {
            return Some(f32::INFINITY);
        }
        if self.paired.len() < 2 {
            return None;
        }
        let n = self.paired.len() as f32;
        let mean = self.paired.iter().map(|(r, f)| r - f).sum::<f32>() / n;
        Some(
            self.paired
                .iter()
                .map(|(r, f)| (r - f - mean).powi(2))
                .sum::<f32>()
                / n,
        )
    }

    /// Where the node's report sits between the claimed context and the
    /// rival one ([`Lean`]); `None` without a rival, or without two tokens
    /// both rank.
    pub fn rival_lean(&self) -> Option<Lean> {
        Lean::of(&self.rival)
    }

    /// |reported - reference| log-prob of the claimed token.
    pub fn logprob_gap(&self) -> Option<f32> {
        self.reported_logprob
            .map(|q| (q - self.ref_logprob).abs())
            .map(|g| if g.is_nan() { f32::INFINITY } else { g })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A position the node reported exactly, without alternatives.
    fn bare() -> Position {
        Position {
            claimed: 1,
            ref_logprob: -0.1,
            ref_best: 1,
            ref_best_logprob: -0.1,
            replayed: None,
            reported_logprob: Some(-0.1),
            other_split: false,
            reported_top: Vec::new(),
            ref_top: Vec::new(),
            paired: Vec::new(),
            unpaired: 0,
            rival: Vec::new(),
        }
    }

    #[test]
    fn alternatives_are_compared_rank_by_rank() {
        let mut p = bare();
        p.ref_top = vec![-0.1, -2.5, -3.0, -4.0, -6.0];
        assert_eq!(p.top_gap(), None, "the node reported none");
        // Rounding swapped two near-tied alternatives: their values, sorted,
        // still line up.
        p.reported_top = vec![-0.1, -3.01, -2.5, -4.0, -6.0];
        assert!(p.top_gap().is_some_and(|g| (g - 0.01).abs() < 1e-5));
        // Unsorted reports are sorted; fewer than asked compare as many.
        p.reported_top = vec![-2.5, -0.1];
        assert_eq!(p.top_gap(), Some(0.0));
        // Another context's distribution: the same best token, other
        // alternatives.
        p.reported_top = vec![-0.1, -1.0, -3.0, -4.0, -6.0];
        assert!(p.top_gap().is_some_and(|g| (g - 1.5).abs() < 1e-5));
        p.reported_top = vec![-0.1, f32::NAN];
        assert_eq!(p.top_gap(), Some(f32::INFINITY));
    }

    #[test]
    fn the_shape_gap_is_the_variance_of_paired_differences() {
        let mut p = Position {
            paired: vec![(-0.1, -0.1)],
            ..bare()
        };
        assert_eq!(p.shape_gap(), None, "one pair has no shape");
        // Every log-prob shifted alike (another normalisation): no gap.
        p.paired = vec![(-0.3, -0.1), (-2.7, -2.5), (-4.2, -4.0)];
        assert!(p.shape_gap().is_some_and(|g| g < 1e-9));
        // Two alternatives traded 0.2 nats: differences +0.2 and -0.2 about
        // a mean of 0, variance 0.04 * 2 / 3.
        p.paired = vec![(-0.1, -0.1), (-2.3, -2.5), (-3.2, -3.0)];
        assert!(p.shape_gap().is_some_and(|g| (g - 0.08 / 3.0).abs() < 1e-6));
        p.paired.push((f32::NAN, -5.0));
        assert_eq!(p.shape_gap(), Some(f32::INFINITY));
        // An alternative the reference ranks nowhere among its best.
        p.paired = vec![(-0.1, -0.1)];
        p.unpaired = 1;
        assert_eq!(p.shape_gap(), Some(f32::INFINITY));
    }
}
