//! Memory accounting: what a layout puts on each device, the reserve every
//! used device keeps back, and packing contiguous layer runs into GPUs.

use crate::model::{Hardware, ModelProfile, Workload};
use crate::placement::Device;
use crate::units;

/// Percentage of a device's free memory kept back for activations, scratch buffers and allocator slack.
pub const RESERVE_PERCENT: u64 = 5;
/// Smallest reserve kept back on a used device, however small it is (CUDA context, cuBLAS workspace).
pub const RESERVE_MIN_BYTES: u64 = 512 * 1024 * 1024;
/// Layer-sized copy buffers on a streaming GPU: one layer computes while the next one arrives.
pub const STREAM_BUFFERS: u64 = 2;

/// Bytes kept back on a device with `free` bytes free: max(5 % of free, 512 MiB).
pub fn reserve_bytes(free: u64) -> u64 {
    // Multiply before dividing so usable bytes never shrink as free bytes grow
    // (free / 100 * 5 jumps by 5 at every multiple of 100).
    let percent = u128::from(free) * u128::from(RESERVE_PERCENT) / 100;
    u64::try_from(percent)
        .unwrap_or(u64::MAX)
        .max(RESERVE_MIN_BYTES)
}

/// Bytes a placement may use on a device with `free` bytes free.
pub(crate) fn usable_bytes(free: u64) -> u64 {
    free.saturating_sub(reserve_bytes(free))
}

/// Where one layer lives and where it runs; finer than [`Device`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Site {
    /// Resident in this GPU's VRAM, computed there, KV there.
    Gpu(usize),
    /// In host RAM, computed on the CPU, KV in RAM.
    Cpu,
    /// In host RAM, copied to this GPU every step and computed there; KV on that GPU.
    Streamed(usize),
}

impl Site {
    /// Where the weights live, as reported to callers.
    pub(crate) fn device(self) -> Device {
        match self {
            Site::Gpu(g) => Device::Gpu(g),
            Site::Cpu | Site::Streamed(_) => Device::Cpu,
        }
    }
}

/// A complete assignment, before it is priced.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Layout {
    /// One site per layer.
    pub layers: Vec<Site>,
    /// Device of the token embedding.
    pub embedding: Device,
    /// Device of the final norm and LM head.
    pub head: Device,
}

impl Layout {
    /// The GPU that computes streamed layers, if any layer is streamed.
    pub(crate) fn stream_gpu(&self) -> Option<usize> {
        self.layers.iter().find_map(|s| match s {
            Site::Streamed(g) => Some(*g),
            _ => None,
        })
    }
}

/// Bytes by kind on one device (before the reserve).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Load {
    /// Layer, embedding and head weights.
    pub weights: u64,
    /// KV cache.
    pub kv: u64,
    /// Streaming copy buffers.
    pub buffers: u64,
}

impl Load {
    /// All bytes of this load.
    pub(crate) fn total(&self) -> u64 {
        self.weights
            .saturating_add(self.kv)
            .saturating_add(self.buffers)
    }

    /// Bytes including the device's reserve; an unused device reserves nothing.
    pub(crate) fn with_reserve(&self, free: u64) -> u64 {
        match self.total() {
            0 => 0,
            t => t.saturating_add(reserve_bytes(free)),
        }
    }

    fn add_weights(&mut self, n: u64) {
        self.weights = self.weights.saturating_add(n);
    }

    fn add_kv(&mut self, n: u64) {
        self.kv = self.kv.saturating_add(n);
    }

    /// "weights 40.0 GB + KV 2.7 GB + reserve 1.1 GB": how a need adds up.
    pub(crate) fn describe(&self, reserve: u64) -> String {
        let mut parts = vec![format!("weights {}", units::bytes(self.weights))];
        if self.kv > 0 {
            parts.push(format!("KV {}", units::bytes(self.kv)));
        }
        if self.buffers > 0 {
            parts.push(format!("copy buffers {}", units::bytes(self.buffers)));
        }
        parts.push(format!("reserve {}", units::bytes(reserve)));
        parts.join(" + ")
    }
}

/// What a layout puts on each GPU and in host RAM.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Usage {
    /// One load per GPU ordinal.
    pub gpus: Vec<Load>,
    /// Host RAM.
    pub cpu: Load,
}

/// Adds up a layout's bytes per device; sites naming a GPU beyond `gpu_count` are a caller bug and are counted nowhere.
pub(crate) fn usage(
    model: &ModelProfile,
    workload: &Workload,
    gpu_count: usize,
    layout: &Layout,
) -> Usage {
    let mut gpus = vec![Load::default(); gpu_count];
    let mut cpu = Load::default();
    let kv = workload.kv_bytes_per_layer(model);
    let mut biggest_streamed = 0u64;
    for (layer, site) in model.layers.iter().zip(&layout.layers) {
        match *site {
            Site::Gpu(g) => {
                if let Some(load) = gpus.get_mut(g) {
                    load.add_weights(layer.weight_bytes);
                    load.add_kv(kv);
                }
            }
            Site::Cpu => {
                cpu.add_weights(layer.weight_bytes);
                cpu.add_kv(kv);
            }
            Site::Streamed(g) => {
                // Weights stay in (pinned) RAM; the GPU computes, so the KV lives there.
                cpu.add_weights(layer.weight_bytes);
                if let Some(load) = gpus.get_mut(g) {
                    load.add_kv(kv);
                }
                biggest_streamed = biggest_streamed.max(layer.weight_bytes);
            }
        }
    }
    if let Some(load) = layout.stream_gpu().and_then(|g| gpus.get_mut(g)) {
        load.buffers = biggest_streamed.saturating_mul(STREAM_BUFFERS);
    }
    for (device, bytes) in [
        (layout.embedding, model.embedding_bytes),
        (layout.head, model.head_bytes),
    ] {
        match device {
            Device::Gpu(g) => {
                if let Some(load) = gpus.get_mut(g) {
                    load.add_weights(bytes);
                }
            }
            Device::Cpu => cpu.add_weights(bytes),
        }
    }
    Usage { gpus, cpu }
}

/// Bytes per GPU and in RAM, reserves included, or why the usage exceeds some device.
pub(crate) fn check_fits(usage: &Usage, hw: &Hardware) -> Result<(Vec<u64>, u64), String> {
    let mut gpu_bytes = Vec::with_capacity(usage.gpus.len());
    for (g, (load, gpu)) in usage.gpus.iter().zip(&hw.gpus).enumerate() {
        let need = load.with_reserve(gpu.free_vram_bytes);
        if need > gpu.free_vram_bytes {
            return Err(format!(
                "needs {} on GPU {g} ({}), has {} free",
                units::bytes(need),
                load.describe(reserve_bytes(gpu.free_vram_bytes)),
                units::bytes(gpu.free_vram_bytes)
            ));
        }
        gpu_bytes.push(need);
    }
    let free = hw.host.free_ram_bytes;
    let cpu_bytes = usage.cpu.with_reserve(free);
    if cpu_bytes > free {
        return Err(format!(
            "needs {} of host RAM ({}), has {} free",
            units::bytes(cpu_bytes),
            usage.cpu.describe(reserve_bytes(free)),
            units::bytes(free)
        ));
    }
    Ok((gpu_bytes, cpu_bytes))
}

/// Packs `items` in order into bins in order, filling each bin before moving on; returns each item's bin.
///
/// For contiguous runs this packs the most items into every prefix of bins,
/// which is why the largest prefix that fits anywhere fits this way.
pub(crate) fn pack_greedy(items: &[u64], caps: &[u64]) -> Option<Vec<usize>> {
    let mut bins = Vec::with_capacity(items.len());
    let mut bin = 0;
    let mut load = 0u64;
    for &item in items {
        loop {
            let cap = *caps.get(bin)?;
            match load.checked_add(item) {
                Some(next) if next <= cap => {
                    load = next;
                    break;
                }
                _ => {
                    bin += 1;
                    load = 0;
                }
            }
        }
        bins.push(bin);
    }
    Some(bins)
}

/// Packs `items` in order into bins in order, each bin taking a share proportional to its capacity.
///
/// An item goes to the bin whose share its midpoint falls in; `None` when
/// rounding to whole items overfills some bin.
pub(crate) fn pack_proportional(items: &[u64], caps: &[u64]) -> Option<Vec<usize>> {
    let total: u128 = items.iter().map(|&i| u128::from(i)).sum();
    let cap_total: u128 = caps.iter().map(|&c| u128::from(c)).sum();
    if cap_total == 0 {
        return None;
    }
    // Bin k's share ends at total * cum_k / cap_total; compare doubled midpoints
    // in integers so no float rounding can reorder bins.
    let mut ends = Vec::with_capacity(caps.len());
    let mut cum = 0u128;
    for &c in caps {
        cum += u128::from(c);
        ends.push(2 * total * cum);
    }
    let mut bins = Vec::with_capacity(items.len());
    let mut loads = vec![0u128; caps.len()];
    let mut start = 0u128;
    for &item in items {
        let end = start + u128::from(item);
        let midpoint2 = (start + end) * cap_total;
        let bin = ends
            .iter()
            .position(|&e| midpoint2 < e)
            .or_else(|| caps.iter().rposition(|&c| c > 0))?;
        loads[bin] += u128::from(item);
        bins.push(bin);
        start = end;
    }
    let fits = loads.iter().zip(caps).all(|(&l, &c)| l <= u128::from(c));
    fits.then_some(bins)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Gpu, Host, LayerCost};

    const GIB: u64 = 1 << 30;

    #[test]
    fn reserve_is_five_percent_or_512_mib() {
        assert_eq!(reserve_bytes(0), RESERVE_MIN_BYTES);
        assert_eq!(reserve_bytes(8 * GIB), RESERVE_MIN_BYTES);
        assert_eq!(reserve_bytes(80_000_000_000), 4_000_000_000);
        assert_eq!(usable_bytes(80_000_000_000), 76_000_000_000);
        assert_eq!(usable_bytes(100), 0);
        assert_eq!(usable_bytes(u64::MAX), u64::MAX - u64::MAX / 20);
    }

    #[test]
    fn usable_bytes_never_shrink_as_free_bytes_grow() {
        let edges = [RESERVE_MIN_BYTES * 20, 80_000_000_000, 22_500_000_000];
        for edge in edges {
            for free in edge - 300..edge + 300 {
                assert!(usable_bytes(free + 1) >= usable_bytes(free), "at {free}");
            }
        }
    }

    fn model() -> ModelProfile {
        ModelProfile {
            layers: [100, 200, 300, 400]
                .map(|weight_bytes| LayerCost { weight_bytes })
                .to_vec(),
            embedding_bytes: 7,
            head_bytes: 11,
            kv_bytes_per_token_per_layer: 2,
            flops_per_token_per_layer: 1,
        }
    }

    const WL: Workload = Workload {
        context_tokens: 5,
        batch: 3,
    };

    #[test]
    fn usage_follows_each_site() {
        let layout = Layout {
            layers: vec![Site::Gpu(1), Site::Gpu(0), Site::Cpu, Site::Cpu],
            embedding: Device::Gpu(1),
            head: Device::Gpu(0),
        };
        let u = usage(&model(), &WL, 2, &layout);
        let kv = 2 * 5 * 3;
        assert_eq!(
            u.gpus[1],
            Load {
                weights: 107,
                kv,
                buffers: 0
            }
        );
        assert_eq!(
            u.gpus[0],
            Load {
                weights: 211,
                kv,
                buffers: 0
            }
        );
        assert_eq!(
            u.cpu,
            Load {
                weights: 700,
                kv: 2 * kv,
                buffers: 0
            }
        );
    }

    #[test]
    fn streamed_layers_keep_weights_in_ram_and_kv_plus_buffers_on_the_gpu() {
        let layout = Layout {
            layers: vec![
                Site::Gpu(0),
                Site::Streamed(0),
                Site::Streamed(0),
                Site::Cpu,
            ],
            embedding: Device::Gpu(0),
            head: Device::Gpu(0),
        };
        let u = usage(&model(), &WL, 1, &layout);
        assert_eq!(layout.stream_gpu(), Some(0));
        assert_eq!(u.gpus[0].weights, 100 + 7 + 11);
        assert_eq!(u.gpus[0].kv, 3 * 30);
        assert_eq!(u.gpus[0].buffers, 2 * 300);
        assert_eq!(u.cpu.weights, 200 + 300 + 400);
        assert_eq!(u.cpu.kv, 30);
    }

    fn hw(free_vram: u64, free_ram: u64) -> Hardware {
        Hardware {
            gpus: vec![Gpu {
                name: "g".into(),
                free_vram_bytes: free_vram,
                mem_bandwidth_bytes_per_s: 1e12,
                flops_per_s: 1e14,
                h2d_bandwidth_bytes_per_s: 25e9,
            }],
            host: Host {
                free_ram_bytes: free_ram,
                mem_bandwidth_bytes_per_s: 50e9,
                flops_per_s: 1e12,
            },
        }
    }

    #[test]
    fn check_fits_adds_reserves_only_on_used_devices() {
        let usage = Usage {
            gpus: vec![Load {
                weights: GIB,
                kv: 0,
                buffers: 0,
            }],
            cpu: Load::default(),
        };
        let (gpu, cpu) = check_fits(&usage, &hw(2 * GIB, 64 * GIB)).expect("fits");
        assert_eq!(gpu, vec![GIB + RESERVE_MIN_BYTES]);
        assert_eq!(cpu, 0);
    }

    #[test]
    fn check_fits_explains_the_shortfall() {
        let usage = Usage {
            gpus: vec![Load {
                weights: 21_000_000_000,
                kv: 2_700_000_000,
                buffers: 0,
            }],
            cpu: Load::default(),
        };
        assert_eq!(
            check_fits(&usage, &hw(22_500_000_000, 64 * GIB)),
            Err("needs 24.8 GB on GPU 0 (weights 21.0 GB + KV 2.7 GB + reserve 1.1 GB), has 22.5 GB free".into())
        );
        let usage = Usage {
            gpus: vec![Load::default()],
            cpu: Load {
                weights: 9_000_000_000,
                kv: 0,
                buffers: 0,
            },
        };
        assert_eq!(
            check_fits(&usage, &hw(GIB, 4_000_000_000)),
            Err(
                "needs 9.5 GB of host RAM (weights 9.0 GB + reserve 536.9 MB), has 4.0 GB free"
                    .into()
            )
        );
    }

    #[test]
    fn greedy_fills_each_bin_before_the_next() {
        assert_eq!(pack_greedy(&[3, 3, 3, 3], &[7, 7]), Some(vec![0, 0, 1, 1]));
        assert_eq!(pack_greedy(&[3, 3, 3], &[2, 9]), Some(vec![1, 1, 1]));
        assert_eq!(pack_greedy(&[3, 3, 3], &[5, 5]), None);
        assert_eq!(pack_greedy(&[], &[]), Some(vec![]));
        assert_eq!(pack_greedy(&[1], &[]), None);
        assert_eq!(
            pack_greedy(&[u64::MAX, 1], &[u64::MAX, 1]),
            Some(vec![0, 1])
        );
    }

    #[test]
    fn proportional_splits_by_capacity() {
        // Equal bins share equally instead of filling the first.
        assert_eq!(
            pack_proportional(&[3, 3, 3, 3], &[100, 100]),
            Some(vec![0, 0, 1, 1])
        );
        // A bin twice as large takes twice the share.
        assert_eq!(
            pack_proportional(&[1, 1, 1, 1, 1, 1], &[20, 10]),
            Some(vec![0, 0, 0, 0, 1, 1])
        );
        // Empty bins are skipped; a midpoint exactly on a boundary goes to the later bin.
        assert_eq!(
            pack_proportional(&[1, 1, 1], &[0, 10, 0, 10]),
            Some(vec![1, 3, 3])
        );
        assert_eq!(pack_proportional(&[1], &[0, 0]), None);
        // Rounding to whole items can overfill a tight bin; the caller falls back to greedy.
        assert_eq!(pack_proportional(&[5, 5], &[4, 6]), None);
        assert_eq!(pack_greedy(&[5, 5], &[4, 6]), None);
        assert_eq!(pack_proportional(&[4, 6], &[4, 6]), Some(vec![0, 1]));
    }

    #[test]
    fn both_packers_keep_items_contiguous_and_within_caps() {
        let items = [5u64, 1, 9, 2, 2, 7, 3, 8, 1, 4];
        let caps = [13u64, 0, 20, 17];
        for bins in [pack_greedy(&items, &caps), pack_proportional(&items, &caps)]
            .into_iter()
            .flatten()
        {
            assert!(bins.windows(2).all(|w| w[0] <= w[1]), "{bins:?}");
            for (b, &cap) in caps.iter().enumerate() {
                let load: u64 = items
                    .iter()
                    .zip(&bins)
                    .filter(|(_, &x)| x == b)
                    .map(|(i, _)| i)
                    .sum();
                assert!(load <= cap, "bin {b}: {load} > {cap}");
            }
        }
        assert!(pack_greedy(&items, &caps).is_some());
    }
}
