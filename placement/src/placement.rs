//! What the planner answers: a placement per strategy, the chosen one and why
//! the others lost. These types appear verbatim in a node's `/node/info`.

use serde::{Deserialize, Serialize};

/// Where a layer's weights live.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Device {
    /// In the VRAM of the GPU with this ordinal (index into `Hardware::gpus`).
    Gpu(usize),
    /// In host RAM (computed on the CPU, or on `Placement::stream_gpu` when that is set).
    Cpu,
}

/// Strategy name: every layer resident on GPUs.
pub const ALL_GPU: &str = "all-gpu";
/// Strategy name: as many layers as fit on GPUs, the rest computed on the CPU.
pub const GPU_PREFIX_CPU_OFFLOAD: &str = "gpu-prefix+cpu-offload";
/// Strategy name: a GPU-resident prefix, the rest kept in RAM and copied to a GPU every step.
pub const STREAM_FROM_HOST: &str = "stream-from-host";
/// Strategy name: every layer in RAM, computed on the CPU.
pub const CPU_ONLY: &str = "cpu-only";
/// Every strategy the planner tries, in the order it breaks exact ties.
pub const STRATEGIES: [&str; 4] = [ALL_GPU, GPU_PREFIX_CPU_OFFLOAD, STREAM_FROM_HOST, CPU_ONLY];

/// One way to lay the model out, with its predicted speed and memory use.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Placement {
    /// Device of each layer, one per `ModelProfile::layers` entry; each GPU holds one contiguous run.
    pub layers: Vec<Device>,
    /// Device of the token embedding (the first layer's device).
    pub embedding: Device,
    /// Device of the final norm and LM head (the last GPU used, else the CPU).
    pub head: Device,
    /// Predicted decode tokens/s of one sequence at the workload's context.
    pub predicted_tokens_per_s: f64,
    /// Predicted aggregate decode tokens/s over `Workload::batch` sequences.
    pub predicted_batch_tokens_per_s: f64,
    /// Bytes used per GPU (weights, KV cache, copy buffers, and the reserve when the GPU is used at all).
    pub gpu_bytes: Vec<u64>,
    /// Bytes used in host RAM (same accounting as `gpu_bytes`).
    pub cpu_bytes: u64,
    /// Which strategy produced this placement (one of [`STRATEGIES`]).
    pub strategy: String,
    /// For stream-from-host: the GPU that computes the `Device::Cpu` layers by copying their weights in each step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_gpu: Option<usize>,
}

/// A run of consecutive layers on one device.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerSpan {
    /// Where the run lives.
    pub device: Device,
    /// Index of its first layer.
    pub start: usize,
    /// How many layers it holds (at least 1).
    pub count: usize,
}

impl Placement {
    /// Consecutive runs of layers on one device, in layer order: the shape a device map takes.
    pub fn spans(&self) -> Vec<LayerSpan> {
        let mut spans: Vec<LayerSpan> = Vec::new();
        for (i, &device) in self.layers.iter().enumerate() {
            match spans.last_mut() {
                Some(last) if last.device == device => last.count += 1,
                _ => spans.push(LayerSpan {
                    device,
                    start: i,
                    count: 1,
                }),
            }
        }
        spans
    }

    /// Layers whose weights stay in host RAM.
    pub fn cpu_layers(&self) -> usize {
        self.layers.iter().filter(|d| **d == Device::Cpu).count()
    }

    /// Layers resident on GPU `gpu`.
    pub fn gpu_layers(&self, gpu: usize) -> usize {
        self.layers
            .iter()
            .filter(|d| **d == Device::Gpu(gpu))
            .count()
    }
}

/// The planner's answer: the fastest placement that fits, and every alternative with the reason it lost.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    /// The placement to apply.
    pub chosen: Placement,
    /// Every other strategy, in [`STRATEGIES`] order.
    pub rejected: Vec<Rejected>,
}

/// A strategy that was not chosen.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Rejected {
    /// Its placement when it fits (and merely lost on speed); `None` when it does not fit.
    pub placement: Option<Placement>,
    /// Which strategy (one of [`STRATEGIES`]).
    pub strategy: String,
    /// Why, with numbers: "needs 21.3 GB on GPU 0 (...), has 15.5 GB free" or "slower: 12.1 tok/s vs 48.0 tok/s ...".
    pub reason: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn placement(layers: Vec<Device>) -> Placement {
        Placement {
            layers,
            embedding: Device::Cpu,
            head: Device::Cpu,
            predicted_tokens_per_s: 1.0,
            predicted_batch_tokens_per_s: 1.0,
            gpu_bytes: vec![0, 0],
            cpu_bytes: 0,
            strategy: CPU_ONLY.into(),
            stream_gpu: None,
        }
    }

    #[test]
    fn spans_group_consecutive_layers() {
        use Device::*;
        let p = placement(vec![Gpu(1), Gpu(1), Gpu(0), Cpu, Cpu, Cpu]);
        assert_eq!(
            p.spans(),
            vec![
                LayerSpan {
                    device: Gpu(1),
                    start: 0,
                    count: 2
                },
                LayerSpan {
                    device: Gpu(0),
                    start: 2,
                    count: 1
                },
                LayerSpan {
                    device: Cpu,
                    start: 3,
                    count: 3
                },
            ]
        );
        assert_eq!(p.cpu_layers(), 3);
        assert_eq!(p.gpu_layers(1), 2);
        assert_eq!(p.gpu_layers(0), 1);
        assert_eq!(p.gpu_layers(7), 0);
        assert!(placement(vec![]).spans().is_empty());
    }

    #[test]
    fn json_shape_is_stable_and_round_trips() {
        let mut p = placement(vec![Device::Gpu(0), Device::Cpu]);
        let json = serde_json::to_string(&p).expect("serializes");
        assert!(json.contains("\"layers\":[{\"gpu\":0},\"cpu\"]"), "{json}");
        assert!(!json.contains("stream_gpu"), "{json}");
        assert_eq!(
            serde_json::from_str::<Placement>(&json).ok(),
            Some(p.clone())
        );
        p.stream_gpu = Some(0);
        let json = serde_json::to_string(&p).expect("serializes");
        assert!(json.contains("\"stream_gpu\":0"), "{json}");
        assert_eq!(serde_json::from_str::<Placement>(&json).ok(), Some(p));
    }
}
