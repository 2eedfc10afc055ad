//! Choosing among the candidates and explaining every loser.

use std::cmp::Ordering;

use crate::candidates::{Candidate, Inputs};
use crate::error::PlacementError;
use crate::model::{validate, Hardware, ModelProfile, Workload};
use crate::placement::{Placement, Plan, Rejected};
use crate::units;

/// Relative difference in predicted speed below which two placements count as equally fast.
pub const SPEED_TIE_TOLERANCE: f64 = 1e-9;

/// Places `model` for `workload` on `hw`: the fastest fitting strategy, with every other one explained.
///
/// Errors on inputs the cost model cannot price, and with
/// [`PlacementError::NothingFits`] when no strategy fits, not even CPU RAM alone.
pub fn plan(
    model: &ModelProfile,
    workload: &Workload,
    hw: &Hardware,
) -> Result<Plan, PlacementError> {
    validate(model, workload, hw)?;
    let candidates = Inputs::new(model, workload, hw).candidates();
    let best = candidates
        .iter()
        .enumerate()
        .filter_map(|(i, c)| c.outcome.as_ref().ok().map(|p| (i, p)))
        .min_by(|a, b| rank(a.1, b.1).then(a.0.cmp(&b.0)))
        .map(|(i, _)| i);
    let mut chosen = None;
    let mut losers = Vec::with_capacity(candidates.len());
    for (i, c) in candidates.into_iter().enumerate() {
        match c.outcome {
            Ok(p) if Some(i) == best => chosen = Some(p),
            outcome => losers.push(Candidate {
                strategy: c.strategy,
                outcome,
            }),
        }
    }
    let Some(chosen) = chosen else {
        return Err(PlacementError::NothingFits {
            rejected: losers.into_iter().map(|c| reject(c, None, 0)).collect(),
        });
    };
    let rejected = losers
        .into_iter()
        .map(|c| reject(c, Some(&chosen), workload.batch))
        .collect();
    Ok(Plan { chosen, rejected })
}

impl Plan {
    /// The fastest fitting placement whose strategy is not in `excluded` (an engine that cannot stream excludes [`crate::STREAM_FROM_HOST`]).
    pub fn best_excluding(&self, excluded: &[&str]) -> Option<&Placement> {
        // min_by keeps the first of equals: the chosen one, then strategy order.
        std::iter::once(&self.chosen)
            .chain(self.rejected.iter().filter_map(|r| r.placement.as_ref()))
            .filter(|p| !excluded.contains(&p.strategy.as_str()))
            .min_by(|a, b| rank(a, b))
    }
}

/// Orders placements best first: faster at the workload's batch, then fewer layers in CPU RAM.
fn rank(a: &Placement, b: &Placement) -> Ordering {
    if tied(
        a.predicted_batch_tokens_per_s,
        b.predicted_batch_tokens_per_s,
    ) {
        a.cpu_layers().cmp(&b.cpu_layers())
    } else {
        b.predicted_batch_tokens_per_s
            .total_cmp(&a.predicted_batch_tokens_per_s)
    }
}

fn tied(a: f64, b: f64) -> bool {
    (a - b).abs() <= SPEED_TIE_TOLERANCE * a.abs().max(b.abs())
}

/// Turns a losing candidate into its explanation, relative to the winner when there is one.
fn reject(c: Candidate, winner: Option<&Placement>, batch: u64) -> Rejected {
    match (c.outcome, winner) {
        (Err(reason), _) => Rejected {
            placement: None,
            strategy: c.strategy.to_string(),
            reason,
        },
        (Ok(p), Some(w)) => Rejected {
            reason: slower_reason(&p, w, batch),
            strategy: c.strategy.to_string(),
            placement: Some(p),
        },
        // Unreachable: a fitting candidate always yields a winner.
        (Ok(p), None) => Rejected {
            reason: "not chosen".into(),
            strategy: c.strategy.to_string(),
            placement: Some(p),
        },
    }
}

fn slower_reason(p: &Placement, w: &Placement, batch: u64) -> String {
    let (mine, theirs) = (
        p.predicted_batch_tokens_per_s,
        w.predicted_batch_tokens_per_s,
    );
    if !tied(mine, theirs) {
        let (mine, theirs) = units::rate_pair(mine, theirs);
        return format!(
            "slower: {mine} tok/s vs {theirs} tok/s for {} at batch {batch}",
            w.strategy
        );
    }
    let speed = units::rate(theirs);
    if p.cpu_layers() != w.cpu_layers() {
        format!(
            "as fast as {} ({speed} tok/s at batch {batch}) but keeps {} layers in CPU RAM vs {}",
            w.strategy,
            p.cpu_layers(),
            w.cpu_layers()
        )
    } else {
        format!(
            "as fast as {} ({speed} tok/s at batch {batch}) and {} comes first in the tie order",
            w.strategy, w.strategy
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::placement::Device;

    fn placement(strategy: &str, batch_tps: f64, cpu_layers: usize) -> Placement {
        let mut layers = vec![Device::Gpu(0); 4];
        for d in layers.iter_mut().rev().take(cpu_layers) {
            *d = Device::Cpu;
        }
        Placement {
            layers,
            embedding: Device::Gpu(0),
            head: Device::Gpu(0),
            predicted_tokens_per_s: batch_tps,
            predicted_batch_tokens_per_s: batch_tps,
            gpu_bytes: vec![1],
            cpu_bytes: 0,
            strategy: strategy.into(),
            stream_gpu: None,
        }
    }

    #[test]
    fn faster_wins_then_fewer_cpu_layers() {
        let fast = placement("a", 48.0, 3);
        let slow = placement("b", 12.1, 0);
        assert_eq!(rank(&fast, &slow), Ordering::Less);
        assert_eq!(rank(&slow, &fast), Ordering::Greater);
        let tie_more_cpu = placement("c", 48.0 * (1.0 + 1e-12), 4);
        assert_eq!(rank(&fast, &tie_more_cpu), Ordering::Less);
        assert_eq!(rank(&fast, &placement("d", 48.0, 3)), Ordering::Equal);
    }

    #[test]
    fn reasons_quote_both_speeds_or_the_tie_break() {
        let winner = placement("all-gpu", 48.0, 0);
        assert_eq!(
            slower_reason(&placement("cpu-only", 12.1, 4), &winner, 8),
            "slower: 12.1 tok/s vs 48.0 tok/s for all-gpu at batch 8"
        );
        assert_eq!(
            slower_reason(&placement("x", 48.0, 2), &winner, 1),
            "as fast as all-gpu (48.0 tok/s at batch 1) but keeps 2 layers in CPU RAM vs 0"
        );
        assert_eq!(
            slower_reason(&placement("x", 48.0, 0), &winner, 1),
            "as fast as all-gpu (48.0 tok/s at batch 1) and all-gpu comes first in the tie order"
        );
        // Near-equal speeds get enough digits to differ.
        assert_eq!(
            slower_reason(&placement("x", 47.99, 0), &winner, 1),
            "slower: 47.99 tok/s vs 48.00 tok/s for all-gpu at batch 1"
        );
    }

    #[test]
    fn best_excluding_skips_strategies_and_misfits() {
        let plan = Plan {
            chosen: placement("stream-from-host", 30.0, 3),
            rejected: vec![
                Rejected {
                    placement: None,
                    strategy: "all-gpu".into(),
                    reason: "needs more".into(),
                },
                Rejected {
                    placement: Some(placement("gpu-prefix+cpu-offload", 13.0, 2)),
                    strategy: "gpu-prefix+cpu-offload".into(),
                    reason: "slower".into(),
                },
                Rejected {
                    placement: Some(placement("cpu-only", 7.0, 4)),
                    strategy: "cpu-only".into(),
                    reason: "slower".into(),
                },
            ],
        };
        let best = |ex: &[&str]| plan.best_excluding(ex).map(|p| p.strategy.clone());
        assert_eq!(best(&[]), Some("stream-from-host".into()));
        assert_eq!(
            best(&["stream-from-host"]),
            Some("gpu-prefix+cpu-offload".into())
        );
        assert_eq!(
            best(&["stream-from-host", "gpu-prefix+cpu-offload"]),
            Some("cpu-only".into())
        );
        assert_eq!(
            best(&["stream-from-host", "gpu-prefix+cpu-offload", "cpu-only"]),
            None
        );
    }

    #[test]
    fn misfits_keep_their_own_reason_and_no_placement() {
        let r = reject(
            Candidate {
                strategy: "all-gpu",
                outcome: Err("no GPU".into()),
            },
            None,
            1,
        );
        assert_eq!(
            r,
            Rejected {
                placement: None,
                strategy: "all-gpu".into(),
                reason: "no GPU".into()
            }
        );
    }
}
