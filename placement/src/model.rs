//! What the planner is told: the model's sizes, the load to hold, the hardware.
//!
//! Every size is in bytes and every rate is per second (bytes/s, FLOP/s), so
//! that the planner never guesses a unit; [`validate`] refuses rates too small
//! to be anything but a unit mistake (GB/s passed where bytes/s belong).

use serde::{Deserialize, Serialize};

use crate::error::PlacementError;

/// Smallest accepted bandwidth or compute rate, per second: below this the caller almost certainly passed GB/s or TFLOP/s.
pub const MIN_RATE_PER_S: f64 = 1e6;

/// Sizes of one model, as read from its GGUF file by the engine.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelProfile {
    /// One entry per transformer block, in execution order.
    pub layers: Vec<LayerCost>,
    /// Token embedding bytes; kept on the first layer's device (a GPU or the CPU).
    pub embedding_bytes: u64,
    /// Final norm plus LM head bytes; kept on the last GPU used, else the CPU.
    pub head_bytes: u64,
    /// K+V cache bytes for one token in one layer (all KV heads, at the cache dtype).
    pub kv_bytes_per_token_per_layer: u64,
    /// Approximate FLOPs to push one token through one layer (about 2 × the layer's parameters).
    pub flops_per_token_per_layer: u64,
}

/// Sizes of one transformer block.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LayerCost {
    /// Bytes of all the block's weight tensors as stored (quantized size).
    pub weight_bytes: u64,
}

/// What the node must hold at once: KV cache for `batch` sequences of `context_tokens` each.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Workload {
    /// Context length each sequence may reach (prompt plus completion).
    pub context_tokens: u64,
    /// Sequences decoded together in one step; at least 1.
    pub batch: u64,
}

/// One GPU, with its measured speeds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Gpu {
    /// Human-readable name, e.g. "NVIDIA GeForce RTX 4090".
    pub name: String,
    /// VRAM free for this model (after the driver and other processes).
    pub free_vram_bytes: u64,
    /// Device memory bandwidth in bytes/s.
    pub mem_bandwidth_bytes_per_s: f64,
    /// Sustained compute in FLOP/s at the dtype the kernels use.
    pub flops_per_s: f64,
    /// Measured host-to-device copy speed in bytes/s (PCIe generation and width show here).
    pub h2d_bandwidth_bytes_per_s: f64,
}

/// The host CPU and its RAM.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Host {
    /// RAM free for this model.
    pub free_ram_bytes: u64,
    /// Achievable RAM read bandwidth in bytes/s.
    pub mem_bandwidth_bytes_per_s: f64,
    /// Sustained CPU compute in FLOP/s over the threads the engine uses.
    pub flops_per_s: f64,
}

/// Everything the node can place layers on.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Hardware {
    /// GPUs by device ordinal (the index is what [`crate::Device::Gpu`] names); may be empty.
    pub gpus: Vec<Gpu>,
    /// The host.
    pub host: Host,
}

impl ModelProfile {
    /// Sum of all layers' weight bytes (embedding and head excluded).
    pub fn layer_weight_bytes(&self) -> u64 {
        self.layers
            .iter()
            .fold(0u64, |sum, l| sum.saturating_add(l.weight_bytes))
    }
}

impl Workload {
    /// KV-cache bytes one layer needs for the whole workload (saturates instead of overflowing).
    pub fn kv_bytes_per_layer(&self, model: &ModelProfile) -> u64 {
        model
            .kv_bytes_per_token_per_layer
            .saturating_mul(self.context_tokens)
            .saturating_mul(self.batch)
    }

    /// KV-cache bytes one layer reads per step for one sequence at full context.
    pub fn kv_bytes_per_sequence_per_layer(&self, model: &ModelProfile) -> u64 {
        model
            .kv_bytes_per_token_per_layer
            .saturating_mul(self.context_tokens)
    }
}

/// Refuses inputs the cost model cannot price: no layers, empty layers, batch 0, unit-mistake rates.
pub(crate) fn validate(
    model: &ModelProfile,
    workload: &Workload,
    hw: &Hardware,
) -> Result<(), PlacementError> {
    if model.layers.is_empty() {
        return Err(PlacementError::NoLayers);
    }
    // A weightless layer would make a step free and the predicted speed infinite.
    if let Some(index) = model.layers.iter().position(|l| l.weight_bytes == 0) {
        return Err(PlacementError::EmptyLayer { index });
    }
    if workload.batch == 0 {
        return Err(PlacementError::ZeroBatch);
    }
    check_rate(
        "host mem_bandwidth_bytes_per_s",
        hw.host.mem_bandwidth_bytes_per_s,
    )?;
    check_rate("host flops_per_s", hw.host.flops_per_s)?;
    for (i, gpu) in hw.gpus.iter().enumerate() {
        check_rate_of(
            i,
            gpu,
            "mem_bandwidth_bytes_per_s",
            gpu.mem_bandwidth_bytes_per_s,
        )?;
        check_rate_of(i, gpu, "flops_per_s", gpu.flops_per_s)?;
        check_rate_of(
            i,
            gpu,
            "h2d_bandwidth_bytes_per_s",
            gpu.h2d_bandwidth_bytes_per_s,
        )?;
    }
    Ok(())
}

fn check_rate_of(index: usize, gpu: &Gpu, field: &str, value: f64) -> Result<(), PlacementError> {
    check_rate(&format!("GPU {index} ({}) {field}", gpu.name), value)
}

fn check_rate(what: &str, value: f64) -> Result<(), PlacementError> {
    // An infinite rate would price every step at zero seconds.
    if value.is_finite() && value >= MIN_RATE_PER_S {
        Ok(())
    } else {
        Err(PlacementError::BadRate {
            what: what.to_string(),
            value,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model(layers: &[u64]) -> ModelProfile {
        ModelProfile {
            layers: layers
                .iter()
                .map(|&weight_bytes| LayerCost { weight_bytes })
                .collect(),
            embedding_bytes: 10,
            head_bytes: 10,
            kv_bytes_per_token_per_layer: 4,
            flops_per_token_per_layer: 100,
        }
    }

    fn hw() -> Hardware {
        Hardware {
            gpus: vec![Gpu {
                name: "g".into(),
                free_vram_bytes: 1 << 30,
                mem_bandwidth_bytes_per_s: 1e12,
                flops_per_s: 1e14,
                h2d_bandwidth_bytes_per_s: 25e9,
            }],
            host: Host {
                free_ram_bytes: 1 << 34,
                mem_bandwidth_bytes_per_s: 50e9,
                flops_per_s: 1e12,
            },
        }
    }

    const WL: Workload = Workload {
        context_tokens: 8,
        batch: 2,
    };

    #[test]
    fn accepts_sane_inputs() {
        assert_eq!(validate(&model(&[1, 2]), &WL, &hw()), Ok(()));
    }

    #[test]
    fn refuses_empty_model_and_weightless_layer() {
        assert_eq!(
            validate(&model(&[]), &WL, &hw()),
            Err(PlacementError::NoLayers)
        );
        assert_eq!(
            validate(&model(&[5, 0, 5]), &WL, &hw()),
            Err(PlacementError::EmptyLayer { index: 1 })
        );
    }

    #[test]
    fn refuses_batch_zero() {
        let wl = Workload {
            context_tokens: 8,
            batch: 0,
        };
        assert_eq!(
            validate(&model(&[1]), &wl, &hw()),
            Err(PlacementError::ZeroBatch)
        );
    }

    #[test]
    fn refuses_rates_that_look_like_wrong_units_or_are_not_numbers() {
        for bad in [0.0, -1.0, 450.0, f64::NAN, f64::INFINITY] {
            let mut h = hw();
            h.gpus[0].mem_bandwidth_bytes_per_s = bad;
            match validate(&model(&[1]), &WL, &h) {
                Err(PlacementError::BadRate { what, .. }) => {
                    assert_eq!(what, "GPU 0 (g) mem_bandwidth_bytes_per_s")
                }
                other => panic!("{bad}: {other:?}"),
            }
        }
        let mut h = hw();
        h.host.flops_per_s = 2.0;
        assert!(matches!(
            validate(&model(&[1]), &WL, &h),
            Err(PlacementError::BadRate { what, .. }) if what == "host flops_per_s"
        ));
        let mut h = hw();
        h.gpus[0].h2d_bandwidth_bytes_per_s = 25.0;
        assert!(validate(&model(&[1]), &WL, &h).is_err());
    }

    #[test]
    fn kv_sizes_multiply_and_saturate() {
        let m = model(&[1]);
        assert_eq!(WL.kv_bytes_per_layer(&m), 4 * 8 * 2);
        assert_eq!(WL.kv_bytes_per_sequence_per_layer(&m), 4 * 8);
        let huge = Workload {
            context_tokens: u64::MAX,
            batch: 3,
        };
        assert_eq!(huge.kv_bytes_per_layer(&m), u64::MAX);
    }

    #[test]
    fn layer_weight_sum_saturates() {
        assert_eq!(model(&[3, 4]).layer_weight_bytes(), 7);
        assert_eq!(model(&[u64::MAX, 4]).layer_weight_bytes(), u64::MAX);
    }
}
