//! Realistic model and hardware profiles, and the invariants every plan must satisfy.
#![allow(dead_code)] // each test binary uses a different subset

use std::collections::{BTreeMap, BTreeSet};

use tollgate_placement::{
    Device, Gpu, Hardware, Host, LayerCost, ModelProfile, Placement, Plan, Workload, STRATEGIES,
};

pub const GB: u64 = 1_000_000_000;
pub const MB: u64 = 1_000_000;

/// Host-to-device bandwidth measured on PCIe 3.0 x16.
pub const PCIE3: f64 = 12e9;
/// ... on PCIe 4.0 x16.
pub const PCIE4: f64 = 25e9;
/// ... on PCIe 5.0 x16.
pub const PCIE5: f64 = 50e9;

/// KV bytes per token per layer with 8 KV heads of 128 dims at f16 (Llama 3 8B and 70B).
pub const LLAMA_KV: u64 = 8 * 128 * 2 * 2;

fn uniform(
    layers: usize,
    layer: u64,
    embedding: u64,
    head: u64,
    kv: u64,
    flops: u64,
) -> ModelProfile {
    ModelProfile {
        layers: vec![
            LayerCost {
                weight_bytes: layer
            };
            layers
        ],
        embedding_bytes: embedding,
        head_bytes: head,
        kv_bytes_per_token_per_layer: kv,
        flops_per_token_per_layer: flops,
    }
}

/// Llama 3 8B at Q4: 32 layers of 125 MB, 4.5 GB in all.
pub fn llama_8b_q4() -> ModelProfile {
    uniform(32, 125 * MB, 250 * MB, 250 * MB, LLAMA_KV, 436_000_000)
}

/// Llama 3 70B at Q4: 80 layers of 470 MB, 39 GB in all.
pub fn llama_70b_q4() -> ModelProfile {
    uniform(80, 470 * MB, 600 * MB, 800 * MB, LLAMA_KV, 1_720_000_000)
}

/// SmolLM2 135M at Q4_1: 30 layers of 2.2 MB, tied 18 MB embedding counted as both embedding and head.
pub fn smollm_135m() -> ModelProfile {
    uniform(30, 2_200_000, 18 * MB, 18 * MB, 3 * 64 * 2 * 2, 6_800_000)
}

pub fn gpu(name: &str, free: u64, bw: f64, flops: f64, h2d: f64) -> Gpu {
    Gpu {
        name: name.into(),
        free_vram_bytes: free,
        mem_bandwidth_bytes_per_s: bw,
        flops_per_s: flops,
        h2d_bandwidth_bytes_per_s: h2d,
    }
}

/// A 16 GB consumer card: 15 GB free, 450 GB/s.
pub fn card_16gb(h2d: f64) -> Gpu {
    gpu("16 GB consumer", 15 * GB, 450e9, 80e12, h2d)
}

/// A 24 GB card: 22.5 GB free, 1 TB/s.
pub fn card_24gb(h2d: f64) -> Gpu {
    gpu("24 GB", 22_500 * MB, 1000e9, 160e12, h2d)
}

/// An 80 GB card: 78 GB free, 2 TB/s.
pub fn card_80gb(h2d: f64) -> Gpu {
    gpu("80 GB", 78 * GB, 2000e9, 400e12, h2d)
}

/// A desktop host: 64 GB RAM at 50 GB/s, 1 TFLOP/s.
pub fn host_64gb() -> Host {
    Host {
        free_ram_bytes: 64 * GB,
        mem_bandwidth_bytes_per_s: 50e9,
        flops_per_s: 1e12,
    }
}

pub fn machine(gpus: Vec<Gpu>) -> Hardware {
    Hardware {
        gpus,
        host: host_64gb(),
    }
}

pub fn workload(context_tokens: u64, batch: u64) -> Workload {
    Workload {
        context_tokens,
        batch,
    }
}

/// Bytes the placement should use per GPU and in RAM, derived independently of the crate's accounting.
pub fn expected_bytes(
    p: &Placement,
    m: &ModelProfile,
    w: &Workload,
    hw: &Hardware,
) -> (Vec<u64>, u64) {
    let kv = m.kv_bytes_per_token_per_layer * w.context_tokens * w.batch;
    let mut gpus = vec![0u64; hw.gpus.len()];
    let mut cpu = 0u64;
    let mut biggest_in_ram = 0;
    for (layer, device) in m.layers.iter().zip(&p.layers) {
        match device {
            Device::Gpu(g) => gpus[*g] += layer.weight_bytes + kv,
            Device::Cpu => {
                cpu += layer.weight_bytes;
                biggest_in_ram = biggest_in_ram.max(layer.weight_bytes);
                match p.stream_gpu {
                    Some(s) => gpus[s] += kv,
                    None => cpu += kv,
                }
            }
        }
    }
    if let Some(s) = p.stream_gpu {
        gpus[s] += 2 * biggest_in_ram;
    }
    for (device, bytes) in [(p.embedding, m.embedding_bytes), (p.head, m.head_bytes)] {
        match device {
            Device::Gpu(g) => gpus[g] += bytes,
            Device::Cpu => cpu += bytes,
        }
    }
    // max(5 % of free, 512 MiB), written out here rather than taken from the crate.
    let reserve = |free: u64| ((u128::from(free) * 5 / 100) as u64).max(512 << 20);
    let with_reserve = |used: u64, free: u64| if used == 0 { 0 } else { used + reserve(free) };
    let gpus = gpus
        .iter()
        .zip(&hw.gpus)
        .map(|(&used, g)| with_reserve(used, g.free_vram_bytes))
        .collect();
    (gpus, with_reserve(cpu, hw.host.free_ram_bytes))
}

/// Everything that must hold for any placement the planner returns.
pub fn check_placement(p: &Placement, m: &ModelProfile, w: &Workload, hw: &Hardware) {
    assert_eq!(p.layers.len(), m.layers.len(), "every layer assigned");
    assert_eq!(p.gpu_bytes.len(), hw.gpus.len());
    for d in p.layers.iter().chain([&p.embedding, &p.head]) {
        if let Device::Gpu(g) = d {
            assert!(*g < hw.gpus.len(), "GPU ordinal {g} out of range");
        }
    }
    // Each device holds one contiguous run.
    let spans = p.spans();
    let devices: BTreeSet<String> = spans.iter().map(|s| format!("{:?}", s.device)).collect();
    assert_eq!(
        devices.len(),
        spans.len(),
        "interleaved devices: {:?}",
        p.layers
    );
    // Embedding with the first layer; head on the last GPU used (streamed layers run on the stream GPU).
    assert_eq!(p.embedding, p.layers[0], "embedding follows layer 0");
    let last_gpu = p.stream_gpu.or_else(|| {
        p.layers.iter().rev().find_map(|d| match d {
            Device::Gpu(g) => Some(*g),
            Device::Cpu => None,
        })
    });
    assert_eq!(
        p.head,
        last_gpu.map_or(Device::Cpu, Device::Gpu),
        "head on the last GPU used"
    );
    // Memory: reported bytes match an independent count and fit every device.
    let (gpu_bytes, cpu_bytes) = expected_bytes(p, m, w, hw);
    assert_eq!(p.gpu_bytes, gpu_bytes, "GPU bytes of {}", p.strategy);
    assert_eq!(p.cpu_bytes, cpu_bytes, "CPU bytes of {}", p.strategy);
    for (used, g) in p.gpu_bytes.iter().zip(&hw.gpus) {
        assert!(
            *used <= g.free_vram_bytes,
            "{used} > {} on {}",
            g.free_vram_bytes,
            g.name
        );
    }
    assert!(p.cpu_bytes <= hw.host.free_ram_bytes);
    // Speeds are usable numbers, and batching never lowers throughput.
    for s in [p.predicted_tokens_per_s, p.predicted_batch_tokens_per_s] {
        assert!(s.is_finite() && s > 0.0, "speed {s}");
    }
    assert!(p.predicted_batch_tokens_per_s >= p.predicted_tokens_per_s * (1.0 - 1e-9));
    if w.batch == 1 {
        assert_eq!(p.predicted_batch_tokens_per_s, p.predicted_tokens_per_s);
    }
    assert!(STRATEGIES.contains(&p.strategy.as_str()));
    assert_eq!(p.stream_gpu.is_some(), p.strategy == "stream-from-host");
}

/// Checks a plan: chosen and rejected cover each strategy once, reasons explain, the chosen is fastest.
pub fn check_plan(plan: &Plan, m: &ModelProfile, w: &Workload, hw: &Hardware) {
    check_placement(&plan.chosen, m, w, hw);
    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    *seen.entry(plan.chosen.strategy.as_str()).or_default() += 1;
    for r in &plan.rejected {
        *seen.entry(r.strategy.as_str()).or_default() += 1;
        match &r.placement {
            Some(p) => {
                check_placement(p, m, w, hw);
                assert_eq!(p.strategy, r.strategy);
                assert!(
                    r.reason.starts_with("slower: ") || r.reason.starts_with("as fast as "),
                    "{}: {}",
                    r.strategy,
                    r.reason
                );
                assert!(r.reason.contains(&plan.chosen.strategy), "{}", r.reason);
                assert!(
                    p.predicted_batch_tokens_per_s
                        <= plan.chosen.predicted_batch_tokens_per_s * (1.0 + 1e-9),
                    "rejected {} is faster than chosen {}",
                    r.strategy,
                    plan.chosen.strategy
                );
            }
            None => assert!(
                r.reason == "no GPU"
                    || r.reason.starts_with("needs ")
                    || r.reason.starts_with("a one-layer model"),
                "{}: {}",
                r.strategy,
                r.reason
            ),
        }
    }
    let expected: BTreeMap<&str, usize> = STRATEGIES.iter().map(|s| (*s, 1)).collect();
    assert_eq!(seen, expected, "each strategy exactly once");
    let order: Vec<&str> = plan.rejected.iter().map(|r| r.strategy.as_str()).collect();
    let mut sorted = order.clone();
    sorted.sort_by_key(|s| STRATEGIES.iter().position(|x| x == s));
    assert_eq!(order, sorted, "rejected in strategy order");
}

/// Finds the rejected entry for `strategy`.
pub fn rejected<'a>(plan: &'a Plan, strategy: &str) -> &'a tollgate_placement::Rejected {
    plan.rejected
        .iter()
        .find(|r| r.strategy == strategy)
        .unwrap_or_else(|| panic!("{strategy} not in rejected"))
}

/// Speed of `strategy` in the plan, whether chosen or rejected (None when it does not fit).
pub fn speed_of(plan: &Plan, strategy: &str) -> Option<f64> {
    if plan.chosen.strategy == strategy {
        return Some(plan.chosen.predicted_batch_tokens_per_s);
    }
    rejected(plan, strategy)
        .placement
        .as_ref()
        .map(|p| p.predicted_batch_tokens_per_s)
}
