//! Why the planner produced no plan.

use crate::model::MIN_RATE_PER_S;
use crate::placement::Rejected;

/// Inputs the planner refuses, or hardware on which nothing fits.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum PlacementError {
    /// The profile lists no transformer layers.
    #[error("model has no layers")]
    NoLayers,
    /// A layer with zero weight bytes: the GGUF reader most likely missed its tensors.
    #[error("layer {index} has zero weight bytes")]
    EmptyLayer {
        /// Index of the first such layer.
        index: usize,
    },
    /// `Workload::batch` was 0.
    #[error("workload batch must be at least 1")]
    ZeroBatch,
    /// A bandwidth or compute rate that is not finite or is implausibly small.
    #[error("{what} is {value}; expected a finite per-second rate of at least {MIN_RATE_PER_S:e} (bytes/s or FLOP/s, not GB/s)")]
    BadRate {
        /// Which field, e.g. "GPU 0 (RTX 4090) mem_bandwidth_bytes_per_s".
        what: String,
        /// The value given.
        value: f64,
    },
    /// No strategy fits, not even CPU RAM alone.
    #[error("no placement fits: {}", summary(.rejected))]
    NothingFits {
        /// Every strategy with the reason it does not fit.
        rejected: Vec<Rejected>,
    },
}

fn summary(rejected: &[Rejected]) -> String {
    rejected
        .iter()
        .map(|r| format!("{}: {}", r.strategy, r.reason))
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_fits_lists_every_reason() {
        let e = PlacementError::NothingFits {
            rejected: vec![
                Rejected {
                    placement: None,
                    strategy: "all-gpu".into(),
                    reason: "no GPU".into(),
                },
                Rejected {
                    placement: None,
                    strategy: "cpu-only".into(),
                    reason: "needs 9.0 GB of host RAM, has 4.0 GB free".into(),
                },
            ],
        };
        assert_eq!(
            e.to_string(),
            "no placement fits: all-gpu: no GPU; cpu-only: needs 9.0 GB of host RAM, has 4.0 GB free"
        );
    }

    #[test]
    fn bad_rate_names_the_field_and_the_units() {
        let e = PlacementError::BadRate {
            what: "host flops_per_s".into(),
            value: 2.0,
        };
        assert_eq!(
            e.to_string(),
            "host flops_per_s is 2; expected a finite per-second rate of at least 1e6 (bytes/s or FLOP/s, not GB/s)"
        );
    }
}
