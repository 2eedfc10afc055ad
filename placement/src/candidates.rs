//! One placement per strategy, or the reason (with numbers) it does not fit.

use crate::cost::{speeds, step_seconds};
use crate::memory::{
    check_fits, pack_greedy, pack_proportional, reserve_bytes, usable_bytes, usage, Layout, Load,
    Site, STREAM_BUFFERS,
};
use crate::model::{Hardware, ModelProfile, Workload};
use crate::placement::{
    Device, Placement, ALL_GPU, CPU_ONLY, GPU_PREFIX_CPU_OFFLOAD, STREAM_FROM_HOST,
};
use crate::units;

/// A strategy's outcome: a placement that fits, or why it does not.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Candidate {
    /// One of [`crate::STRATEGIES`].
    pub strategy: &'static str,
    /// The placement, or the reason it does not fit.
    pub outcome: Result<Placement, String>,
}

/// Validated inputs plus what every strategy derives from them.
pub(crate) struct Inputs<'a> {
    model: &'a ModelProfile,
    workload: &'a Workload,
    hw: &'a Hardware,
    /// GPU ordinals fastest first: the order layer runs are filled in.
    order: Vec<usize>,
    /// KV bytes one layer holds for the workload.
    kv: u64,
}

const NO_GPU: &str = "no GPU";

impl<'a> Inputs<'a> {
    /// Prepares inputs that `model::validate` accepted.
    pub(crate) fn new(model: &'a ModelProfile, workload: &'a Workload, hw: &'a Hardware) -> Self {
        let mut order: Vec<usize> = (0..hw.gpus.len()).collect();
        // Fastest first, so a prefix that does not fill every GPU lands on the
        // best ones; equal GPUs keep ordinal order.
        order.sort_by(|&a, &b| {
            let (ga, gb) = (&hw.gpus[a], &hw.gpus[b]);
            gb.mem_bandwidth_bytes_per_s
                .total_cmp(&ga.mem_bandwidth_bytes_per_s)
                .then(gb.flops_per_s.total_cmp(&ga.flops_per_s))
                .then(a.cmp(&b))
        });
        Inputs {
            model,
            workload,
            hw,
            order,
            kv: workload.kv_bytes_per_layer(model),
        }
    }

    /// Every strategy, in [`crate::STRATEGIES`] order.
    pub(crate) fn candidates(&self) -> [Candidate; 4] {
        [
            self.candidate(ALL_GPU, self.all_gpu()),
            self.candidate(GPU_PREFIX_CPU_OFFLOAD, self.gpu_prefix_cpu_offload()),
            self.candidate(STREAM_FROM_HOST, self.stream_from_host()),
            self.candidate(CPU_ONLY, Ok(self.cpu_only())),
        ]
    }

    fn candidate(&self, strategy: &'static str, layout: Result<Layout, String>) -> Candidate {
        Candidate {
            strategy,
            outcome: layout.and_then(|l| self.finish(strategy, &l)),
        }
    }

    fn layer_count(&self) -> usize {
        self.model.layers.len()
    }

    fn free_vram(&self, g: usize) -> u64 {
        self.hw.gpus.get(g).map_or(0, |gpu| gpu.free_vram_bytes)
    }

    /// VRAM bytes of layers `0..n` as packing items: weights plus KV, with the embedding on the first and optionally the head on the last.
    fn prefix_items(&self, n: usize, with_head: bool) -> Vec<u64> {
        let mut items: Vec<u64> = self.model.layers[..n]
            .iter()
            .map(|l| l.weight_bytes.saturating_add(self.kv))
            .collect();
        if let Some(first) = items.first_mut() {
            *first = first.saturating_add(self.model.embedding_bytes);
        }
        if with_head {
            if let Some(last) = items.last_mut() {
                *last = last.saturating_add(self.model.head_bytes);
            }
        }
        items
    }

    /// Packs `items` into the GPUs `bins` (in order, with capacities `caps`) and builds the layout.
    ///
    /// Both a split proportional to capacity (which spreads memory headroom
    /// evenly) and a fill-in-order split are tried; proportional wins unless it
    /// is slower, which happens only when the GPUs differ in speed.
    fn split(
        &self,
        items: &[u64],
        bins: &[usize],
        caps: &[u64],
        build: impl Fn(&[usize]) -> Layout,
    ) -> Option<Layout> {
        let to_gpus = |packed: Vec<usize>| -> Vec<usize> {
            packed
                .into_iter()
                .filter_map(|b| bins.get(b).copied())
                .collect()
        };
        let greedy = build(&to_gpus(pack_greedy(items, caps)?));
        let Some(proportional) = pack_proportional(items, caps) else {
            return Some(greedy);
        };
        let proportional = build(&to_gpus(proportional));
        if self.batch_step(&proportional) <= self.batch_step(&greedy) {
            Some(proportional)
        } else {
            Some(greedy)
        }
    }

    fn batch_step(&self, layout: &Layout) -> f64 {
        step_seconds(
            self.model,
            self.workload,
            self.hw,
            layout,
            self.workload.batch,
        )
    }

    /// Every layer resident on GPUs.
    fn all_gpu(&self) -> Result<Layout, String> {
        if self.order.is_empty() {
            return Err(NO_GPU.into());
        }
        let caps: Vec<u64> = self
            .order
            .iter()
            .map(|&g| usable_bytes(self.free_vram(g)))
            .collect();
        let items = self.prefix_items(self.layer_count(), true);
        self.split(&items, &self.order, &caps, |gpus| Layout {
            layers: gpus.iter().map(|&g| Site::Gpu(g)).collect(),
            embedding: gpus.first().map_or(Device::Cpu, |&g| Device::Gpu(g)),
            head: gpus.last().map_or(Device::Cpu, |&g| Device::Gpu(g)),
        })
        .ok_or_else(|| self.all_gpu_shortfall())
    }

    fn all_gpu_shortfall(&self) -> String {
        let layers = self.layer_count() as u64;
        let load = Load {
            weights: self
                .model
                .layer_weight_bytes()
                .saturating_add(self.model.embedding_bytes)
                .saturating_add(self.model.head_bytes),
            kv: self.kv.saturating_mul(layers),
            buffers: 0,
        };
        let reserve = self.order.iter().fold(0u64, |sum, &g| {
            sum.saturating_add(reserve_bytes(self.free_vram(g)))
        });
        let free = self
            .order
            .iter()
            .fold(0u64, |sum, &g| sum.saturating_add(self.free_vram(g)));
        let need = load.total().saturating_add(reserve);
        let names: Vec<String> = (0..self.hw.gpus.len()).map(|g| g.to_string()).collect();
        let which = match names.as_slice() {
            [one] => format!("GPU {one}"),
            many => format!("GPUs {}", many.join("+")),
        };
        let mut reason = format!(
            "needs {} on {which} ({}), has {} free",
            units::bytes(need),
            load.describe(reserve),
            units::bytes(free)
        );
        if need <= free {
            reason.push_str("; the layers do not split into contiguous runs that fit each GPU");
        }
        reason
    }

    /// The longest prefix of layers that fits on the GPUs, the rest computed on the CPU.
    fn gpu_prefix_cpu_offload(&self) -> Result<Layout, String> {
        if self.order.is_empty() {
            return Err(NO_GPU.into());
        }
        let layers = self.layer_count();
        if layers < 2 {
            return Err("a one-layer model has no prefix to keep apart from the rest".into());
        }
        let caps: Vec<u64> = self
            .order
            .iter()
            .map(|&g| usable_bytes(self.free_vram(g)))
            .collect();
        // Fits is not monotone in n (the head rides with the last GPU layer),
        // so scan down from the longest strict prefix.
        for n in (1..layers).rev() {
            let items = self.prefix_items(n, true);
            let found = self.split(&items, &self.order, &caps, |gpus| Layout {
                layers: gpus
                    .iter()
                    .map(|&g| Site::Gpu(g))
                    .chain(std::iter::repeat_n(Site::Cpu, layers - gpus.len()))
                    .collect(),
                embedding: gpus.first().map_or(Device::Cpu, |&g| Device::Gpu(g)),
                head: gpus.last().map_or(Device::Cpu, |&g| Device::Gpu(g)),
            });
            if let Some(layout) = found {
                return Ok(layout);
            }
        }
        Err(self.first_layer_shortfall())
    }

    fn first_layer_shortfall(&self) -> String {
        let load = Load {
            weights: self
                .model
                .layers
                .first()
                .map_or(0, |l| l.weight_bytes)
                .saturating_add(self.model.embedding_bytes)
                .saturating_add(self.model.head_bytes),
            kv: self.kv,
            buffers: 0,
        };
        let (g, free) = self
            .order
            .iter()
            .map(|&g| (g, self.free_vram(g)))
            .max_by_key(|&(g, free)| (free, std::cmp::Reverse(g)))
            .unwrap_or((0, 0));
        let reserve = reserve_bytes(free);
        format!(
            "needs {} on one GPU for layer 0 with the embedding and head ({}), the roomiest, GPU {g}, has {} free",
            units::bytes(load.total().saturating_add(reserve)),
            load.describe(reserve),
            units::bytes(free)
        )
    }

    /// A GPU-resident prefix; the rest stays in RAM and is copied to the fastest-linked GPU every step.
    fn stream_from_host(&self) -> Result<Layout, String> {
        let Some(s) = self.stream_target() else {
            return Err(NO_GPU.into());
        };
        let layers = self.layer_count();
        // Resident layers fill GPUs fastest first like everywhere else; the
        // streaming GPU may hold a resident run anywhere in that order, as the
        // streamed layers are reported in RAM and each GPU's run stays contiguous.
        for n in (0..layers).rev() {
            let preload = self.streaming_load(n);
            let Some(room_s) = usable_bytes(self.free_vram(s)).checked_sub(preload.total()) else {
                continue;
            };
            let caps: Vec<u64> = self
                .order
                .iter()
                .map(|&g| {
                    if g == s {
                        room_s
                    } else {
                        usable_bytes(self.free_vram(g))
                    }
                })
                .collect();
            let items = self.prefix_items(n, false);
            let found = self.split(&items, &self.order, &caps, |gpus| Layout {
                layers: gpus
                    .iter()
                    .map(|&g| Site::Gpu(g))
                    .chain(std::iter::repeat_n(Site::Streamed(s), layers - gpus.len()))
                    .collect(),
                // With nothing resident the first layer's weights are in RAM, and so is the embedding.
                embedding: gpus.first().map_or(Device::Cpu, |&g| Device::Gpu(g)),
                head: Device::Gpu(s),
            });
            if let Some(layout) = found {
                return Ok(layout);
            }
        }
        let load = self.streaming_load(0);
        let free = self.free_vram(s);
        let reserve = reserve_bytes(free);
        Err(format!(
            "needs {} on GPU {s} for the head, the KV cache of all {layers} streamed layers and {STREAM_BUFFERS} layer copy buffers ({}), has {} free",
            units::bytes(load.total().saturating_add(reserve)),
            load.describe(reserve),
            units::bytes(free)
        ))
    }

    /// The GPU with the fastest host link; among equals the slowest GPU, since
    /// streamed layers are paced by the link and the faster GPUs are better
    /// spent on resident layers.
    fn stream_target(&self) -> Option<usize> {
        let link = |g: usize| self.hw.gpus[g].h2d_bandwidth_bytes_per_s;
        // `order` is fastest first and max_by keeps the last of equal maxima.
        self.order
            .iter()
            .copied()
            .max_by(|&a, &b| link(a).total_cmp(&link(b)))
    }

    /// What the streaming GPU holds besides resident layers when layers `n..` are streamed.
    fn streaming_load(&self, n: usize) -> Load {
        let streamed = &self.model.layers[n..];
        let biggest = streamed.iter().map(|l| l.weight_bytes).max().unwrap_or(0);
        Load {
            weights: self.model.head_bytes,
            kv: self.kv.saturating_mul(streamed.len() as u64),
            buffers: biggest.saturating_mul(STREAM_BUFFERS),
        }
    }

    /// Everything in RAM, computed on the CPU.
    fn cpu_only(&self) -> Layout {
        Layout {
            layers: vec![Site::Cpu; self.layer_count()],
            embedding: Device::Cpu,
            head: Device::Cpu,
        }
    }

    /// Checks memory on every device and prices the layout.
    fn finish(&self, strategy: &str, layout: &Layout) -> Result<Placement, String> {
        let used = usage(self.model, self.workload, self.hw.gpus.len(), layout);
        let (gpu_bytes, cpu_bytes) = check_fits(&used, self.hw)?;
        let speed = speeds(self.model, self.workload, self.hw, layout);
        Ok(Placement {
            layers: layout.layers.iter().map(|s| s.device()).collect(),
            embedding: layout.embedding,
            head: layout.head,
            predicted_tokens_per_s: speed.single,
            predicted_batch_tokens_per_s: speed.batch,
            gpu_bytes,
            cpu_bytes,
            strategy: strategy.to_string(),
            stream_gpu: layout.stream_gpu(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Gpu, Host, LayerCost};

    fn gpu(bw: f64, flops: f64, h2d: f64) -> Gpu {
        Gpu {
            name: format!("{bw}"),
            free_vram_bytes: 10_000_000_000,
            mem_bandwidth_bytes_per_s: bw,
            flops_per_s: flops,
            h2d_bandwidth_bytes_per_s: h2d,
        }
    }

    fn hw(gpus: Vec<Gpu>) -> Hardware {
        Hardware {
            gpus,
            host: Host {
                free_ram_bytes: 64_000_000_000,
                mem_bandwidth_bytes_per_s: 50e9,
                flops_per_s: 1e12,
            },
        }
    }

    fn model() -> ModelProfile {
        ModelProfile {
            layers: [10, 20, 30]
                .map(|weight_bytes| LayerCost { weight_bytes })
                .to_vec(),
            embedding_bytes: 1,
            head_bytes: 2,
            kv_bytes_per_token_per_layer: 1,
            flops_per_token_per_layer: 1,
        }
    }

    const WL: Workload = Workload {
        context_tokens: 2,
        batch: 2,
    };

    #[test]
    fn gpus_fill_fastest_first_and_equal_ones_in_ordinal_order() {
        let h = hw(vec![
            gpu(450e9, 80e12, 25e9),
            gpu(2000e9, 400e12, 25e9),
            gpu(1000e9, 160e12, 25e9),
            gpu(1000e9, 200e12, 25e9),
            gpu(450e9, 80e12, 25e9),
        ]);
        let m = model();
        assert_eq!(Inputs::new(&m, &WL, &h).order, vec![1, 3, 2, 0, 4]);
    }

    #[test]
    fn streaming_goes_to_the_fastest_link_then_the_slowest_gpu() {
        let m = model();
        let h = hw(vec![gpu(1000e9, 1e14, 25e9), gpu(450e9, 1e14, 25e9)]);
        assert_eq!(Inputs::new(&m, &WL, &h).stream_target(), Some(1));
        let h = hw(vec![gpu(1000e9, 1e14, 50e9), gpu(450e9, 1e14, 25e9)]);
        assert_eq!(Inputs::new(&m, &WL, &h).stream_target(), Some(0));
        assert_eq!(Inputs::new(&m, &WL, &hw(vec![])).stream_target(), None);
    }

    #[test]
    fn prefix_items_carry_kv_embedding_and_head() {
        let m = model();
        let h = hw(vec![]);
        let inputs = Inputs::new(&m, &WL, &h);
        // KV per layer: 1 byte x 2 tokens x 2 sequences.
        assert_eq!(inputs.prefix_items(3, true), vec![15, 24, 36]);
        assert_eq!(inputs.prefix_items(2, false), vec![15, 24]);
        assert_eq!(inputs.prefix_items(1, true), vec![17]);
        assert!(inputs.prefix_items(0, true).is_empty());
    }

    #[test]
    fn streaming_state_is_head_kv_and_two_buffers_of_the_biggest_streamed_layer() {
        let m = model();
        let h = hw(vec![]);
        let inputs = Inputs::new(&m, &WL, &h);
        assert_eq!(
            inputs.streaming_load(1),
            Load {
                weights: 2,
                kv: 8,
                buffers: 60
            }
        );
        assert_eq!(inputs.streaming_load(3).total(), 2);
    }

    #[test]
    fn without_gpus_only_cpu_only_fits() {
        let m = model();
        let h = hw(vec![]);
        let c = Inputs::new(&m, &WL, &h).candidates();
        for c in &c[..3] {
            assert_eq!(c.outcome, Err(NO_GPU.to_string()), "{}", c.strategy);
        }
        let p = c[3].outcome.as_ref().expect("cpu-only fits");
        assert_eq!(p.layers, vec![Device::Cpu; 3]);
    }

    #[test]
    fn a_one_layer_model_has_no_offload_split() {
        let mut m = model();
        m.layers.truncate(1);
        let h = hw(vec![gpu(1000e9, 1e14, 25e9)]);
        let c = Inputs::new(&m, &WL, &h).candidates();
        assert_eq!(
            c[0].outcome.as_ref().map(|p| p.layers.clone()),
            Ok(vec![Device::Gpu(0)])
        );
        assert!(matches!(&c[1].outcome, Err(r) if r.starts_with("a one-layer model")));
        // Streaming the only layer still fits: the GPU holds head, KV and buffers.
        let streamed = c[2].outcome.as_ref().expect("streaming fits");
        assert_eq!(streamed.layers, vec![Device::Cpu]);
        assert_eq!(streamed.embedding, Device::Cpu);
        assert_eq!(streamed.head, Device::Gpu(0));
        assert_eq!(streamed.stream_gpu, Some(0));
    }

    #[test]
    fn proportional_split_wins_on_equal_gpus_and_fill_in_order_on_unequal_ones() {
        let mut m = model();
        m.layers = vec![
            LayerCost {
                weight_bytes: 1_000_000_000
            };
            4
        ];
        let equal = hw(vec![gpu(1000e9, 1e14, 25e9), gpu(1000e9, 1e14, 25e9)]);
        let p = Inputs::new(&m, &WL, &equal).candidates()[0].outcome.clone();
        use Device::Gpu as G;
        assert_eq!(p.map(|p| p.layers), Ok(vec![G(0), G(0), G(1), G(1)]));
        let unequal = hw(vec![gpu(450e9, 1e14, 25e9), gpu(1000e9, 1e14, 25e9)]);
        let p = Inputs::new(&m, &WL, &unequal).candidates()[0]
            .outcome
            .clone();
        assert_eq!(p.map(|p| p.layers), Ok(vec![G(1); 4]));
    }
}
