//! The speed model: seconds per decode step of a layout (see the crate docs).
//!
//! Each layer costs the larger of its memory time (bytes read / bandwidth of
//! the device that computes it) and its compute time (FLOPs / FLOP rate): a
//! roofline per layer. Layers run one after another, so a step is their sum.

use crate::memory::{Layout, Site};
use crate::model::{Hardware, ModelProfile, Workload};
use crate::placement::Device;

/// Predicted decode speeds of one layout.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Speeds {
    /// Tokens/s of one sequence.
    pub single: f64,
    /// Aggregate tokens/s over the workload's batch.
    pub batch: f64,
}

/// Single-stream and batch speeds of `layout`.
pub(crate) fn speeds(
    model: &ModelProfile,
    workload: &Workload,
    hw: &Hardware,
    layout: &Layout,
) -> Speeds {
    Speeds {
        single: 1.0 / step_seconds(model, workload, hw, layout, 1),
        batch: workload.batch as f64 / step_seconds(model, workload, hw, layout, workload.batch),
    }
}

#[derive(Clone, Copy)]
struct Rates {
    bytes_per_s: f64,
    flops_per_s: f64,
}

impl Rates {
    fn roofline(self, bytes: f64, flops: f64) -> f64 {
        (bytes / self.bytes_per_s).max(flops / self.flops_per_s)
    }
}

fn host_rates(hw: &Hardware) -> Rates {
    Rates {
        bytes_per_s: hw.host.mem_bandwidth_bytes_per_s,
        flops_per_s: hw.host.flops_per_s,
    }
}

fn gpu_rates(hw: &Hardware, g: usize) -> Rates {
    // The planner only builds layouts with valid ordinals; host rates keep a
    // bad one from panicking, and the property tests check ordinals.
    hw.gpus.get(g).map_or_else(
        || host_rates(hw),
        |gpu| Rates {
            bytes_per_s: gpu.mem_bandwidth_bytes_per_s,
            flops_per_s: gpu.flops_per_s,
        },
    )
}

fn device_rates(hw: &Hardware, device: Device) -> Rates {
    match device {
        Device::Gpu(g) => gpu_rates(hw, g),
        Device::Cpu => host_rates(hw),
    }
}

/// Seconds for one decode step of `batch` sequences, each at the workload's full context.
pub(crate) fn step_seconds(
    model: &ModelProfile,
    workload: &Workload,
    hw: &Hardware,
    layout: &Layout,
    batch: u64,
) -> f64 {
    let b = batch as f64;
    // Pessimistic on purpose: every sequence is priced at the context the
    // node is sized for, so the prediction is what a full node delivers.
    let kv_read = workload.kv_bytes_per_sequence_per_layer(model) as f64 * b;
    let layer_flops = model.flops_per_token_per_layer as f64 * b;
    let mut seconds = 0.0;
    for (layer, site) in model.layers.iter().zip(&layout.layers) {
        let weights = layer.weight_bytes as f64;
        seconds += match *site {
            Site::Gpu(g) => gpu_rates(hw, g).roofline(weights + kv_read, layer_flops),
            Site::Cpu => host_rates(hw).roofline(weights + kv_read, layer_flops),
            Site::Streamed(g) => {
                // Double buffering overlaps the copy with computing the
                // previous layer, so the slower of the two sets the pace; a
                // copy cannot outrun the RAM it reads from.
                let link = hw
                    .gpus
                    .get(g)
                    .map_or(hw.host.mem_bandwidth_bytes_per_s, |gpu| {
                        gpu.h2d_bandwidth_bytes_per_s
                    })
                    .min(hw.host.mem_bandwidth_bytes_per_s);
                let compute = gpu_rates(hw, g).roofline(weights + kv_read, layer_flops);
                compute.max(weights / link)
            }
        };
    }
    seconds + head_seconds(model, hw, layout.head, b)
}

/// The LM head is one large matmul: read once per step, with as many FLOPs per byte as an average layer.
fn head_seconds(model: &ModelProfile, hw: &Hardware, device: Device, batch: f64) -> f64 {
    let mean_layer_bytes = model.layer_weight_bytes() as f64 / model.layers.len().max(1) as f64;
    let head = model.head_bytes as f64;
    let flops = if mean_layer_bytes > 0.0 {
        model.flops_per_token_per_layer as f64 * head / mean_layer_bytes
    } else {
        0.0
    };
    device_rates(hw, device).roofline(head, flops * batch)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Gpu, Host, LayerCost};

    fn model(layers: usize) -> ModelProfile {
        ModelProfile {
            layers: vec![
                LayerCost {
                    weight_bytes: 1_000_000_000
                };
                layers
            ],
            embedding_bytes: 500_000_000,
            head_bytes: 0,
            kv_bytes_per_token_per_layer: 0,
            flops_per_token_per_layer: 2_000_000_000,
        }
    }

    fn hw() -> Hardware {
        Hardware {
            gpus: vec![Gpu {
                name: "g".into(),
                free_vram_bytes: 1 << 40,
                mem_bandwidth_bytes_per_s: 1e12,
                flops_per_s: 1e14,
                h2d_bandwidth_bytes_per_s: 25e9,
            }],
            host: Host {
                free_ram_bytes: 1 << 40,
                mem_bandwidth_bytes_per_s: 50e9,
                flops_per_s: 1e12,
            },
        }
    }

    fn layout(sites: Vec<Site>, head: Device) -> Layout {
        Layout {
            embedding: sites.first().map_or(Device::Cpu, |s| s.device()),
            layers: sites,
            head,
        }
    }

    const ONE: Workload = Workload {
        context_tokens: 0,
        batch: 1,
    };

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-9 * a.abs().max(b.abs())
    }

    #[test]
    fn gpu_layer_is_memory_bound_at_batch_one() {
        let l = layout(vec![Site::Gpu(0)], Device::Gpu(0));
        // 1 GB at 1 TB/s = 1 ms; 2 GFLOP at 100 TFLOP/s = 0.02 ms.
        assert!(close(step_seconds(&model(1), &ONE, &hw(), &l, 1), 1e-3));
    }

    #[test]
    fn cpu_layer_turns_compute_bound_as_batch_grows() {
        let l = layout(vec![Site::Cpu], Device::Cpu);
        // Memory: 1 GB at 50 GB/s = 20 ms. Compute: 2 GFLOP x batch at 1 TFLOP/s.
        assert!(close(step_seconds(&model(1), &ONE, &hw(), &l, 1), 0.02));
        assert!(close(step_seconds(&model(1), &ONE, &hw(), &l, 10), 0.02));
        assert!(close(step_seconds(&model(1), &ONE, &hw(), &l, 32), 0.064));
    }

    #[test]
    fn streamed_layer_pays_the_link_once_per_step() {
        let l = layout(vec![Site::Streamed(0)], Device::Gpu(0));
        // 1 GB over 25 GB/s PCIe = 40 ms, whatever the batch.
        assert!(close(step_seconds(&model(1), &ONE, &hw(), &l, 1), 0.04));
        assert!(close(step_seconds(&model(1), &ONE, &hw(), &l, 64), 0.04));
        // A link faster than host RAM is capped by the RAM (50 GB/s -> 20 ms).
        let mut fast = hw();
        fast.gpus[0].h2d_bandwidth_bytes_per_s = 200e9;
        assert!(close(step_seconds(&model(1), &ONE, &fast, &l, 1), 0.02));
    }

    #[test]
    fn kv_reads_scale_with_context_and_batch() {
        let mut m = model(1);
        m.kv_bytes_per_token_per_layer = 1_000;
        let wl = Workload {
            context_tokens: 1_000_000,
            batch: 4,
        };
        let l = layout(vec![Site::Gpu(0)], Device::Gpu(0));
        // 1 GB weights + 1 GB KV per sequence: 2 GB at batch 1, 5 GB at batch 4.
        assert!(close(step_seconds(&m, &wl, &hw(), &l, 1), 2e-3));
        assert!(close(step_seconds(&m, &wl, &hw(), &l, 4), 5e-3));
        let s = speeds(&m, &wl, &hw(), &l);
        assert!(close(s.single, 500.0));
        assert!(close(s.batch, 800.0));
    }

    #[test]
    fn head_is_read_on_its_device_and_embedding_is_free() {
        let mut m = model(2);
        m.head_bytes = 1_000_000_000;
        let on_gpu = layout(vec![Site::Gpu(0), Site::Gpu(0)], Device::Gpu(0));
        assert!(close(step_seconds(&m, &ONE, &hw(), &on_gpu, 1), 3e-3));
        let on_cpu = layout(vec![Site::Gpu(0), Site::Gpu(0)], Device::Cpu);
        assert!(close(
            step_seconds(&m, &ONE, &hw(), &on_cpu, 1),
            2e-3 + 0.02
        ));
        // The head does an average layer's FLOPs per byte: compute-bound at batch 32 on CPU.
        assert!(close(
            step_seconds(&m, &ONE, &hw(), &on_cpu, 32),
            2e-3 + 0.064
        ));
    }

    #[test]
    fn speeds_are_reciprocals_of_step_time() {
        let l = layout(vec![Site::Gpu(0), Site::Cpu], Device::Cpu);
        let wl = Workload {
            context_tokens: 0,
            batch: 8,
        };
        let s = speeds(&model(2), &wl, &hw(), &l);
        assert!(close(s.single, 1.0 / (1e-3 + 0.02)));
        // CPU layer: max(20 ms, 16 ms) at batch 8; GPU layer ~1 ms.
        assert!(close(s.batch, 8.0 / (1e-3 + 0.02)));
    }
}
