//! Properties of `plan` over random models, workloads and hardware.

mod common;

use common::{check_plan, GB, MB};
use proptest::prelude::*;
use tollgate_placement::{
    plan, reserve_bytes, Device, Gpu, Hardware, Host, LayerCost, ModelProfile, PlacementError,
    Workload,
};

fn model() -> impl Strategy<Value = ModelProfile> {
    (
        prop::collection::vec(1..2_000 * MB, 1..48),
        0..2 * GB,
        0..2 * GB,
        0..16_384u64,
        1_000_000..4_000_000_000u64,
    )
        .prop_map(|(layers, embedding, head, kv, flops)| ModelProfile {
            layers: layers
                .into_iter()
                .map(|weight_bytes| LayerCost { weight_bytes })
                .collect(),
            embedding_bytes: embedding,
            head_bytes: head,
            kv_bytes_per_token_per_layer: kv,
            flops_per_token_per_layer: flops,
        })
}

fn workload() -> impl Strategy<Value = Workload> {
    // Log-uniform context (1 to 128k tokens) so short and long contexts are equally common.
    let context = (0..=17u32, 0..1_000u64).prop_map(|(e, jitter)| (1u64 << e) + jitter % (1 << e));
    let batch = prop_oneof![Just(1u64), 2..=64u64];
    (context, batch).prop_map(|(context_tokens, batch)| Workload {
        context_tokens,
        batch,
    })
}

fn host() -> impl Strategy<Value = Host> {
    (0..512 * GB, 20e9..300e9, 1e11..3e12).prop_map(|(free, bw, flops)| Host {
        free_ram_bytes: free,
        mem_bandwidth_bytes_per_s: bw,
        flops_per_s: flops,
    })
}

/// A GPU at least as fast as the host in both bandwidth and compute (true of any real card).
fn gpu(host: &Host, speed: f64, free: u64, h2d: f64) -> Gpu {
    Gpu {
        name: format!("x{speed:.1}"),
        free_vram_bytes: free,
        mem_bandwidth_bytes_per_s: host.mem_bandwidth_bytes_per_s * speed,
        flops_per_s: host.flops_per_s * speed * 10.0,
        h2d_bandwidth_bytes_per_s: h2d,
    }
}

/// Hardware whose GPUs may differ in speed, memory and link.
fn mixed_hardware() -> impl Strategy<Value = Hardware> {
    (
        host(),
        prop::collection::vec((1.0..50.0f64, 0..100 * GB, 8e9..64e9), 0..4),
    )
        .prop_map(|(host, gpus)| Hardware {
            gpus: gpus
                .into_iter()
                .map(|(speed, free, h2d)| gpu(&host, speed, free, h2d))
                .collect(),
            host,
        })
}

/// Hardware with 1 to 3 GPUs that share one speed (the usual multi-GPU box) but differ in memory and link.
fn uniform_hardware() -> impl Strategy<Value = Hardware> {
    (
        host(),
        1.0..50.0f64,
        prop::collection::vec((0..100 * GB, 8e9..64e9), 1..4),
    )
        .prop_map(|(host, speed, gpus)| Hardware {
            gpus: gpus
                .into_iter()
                .map(|(free, h2d)| gpu(&host, speed, free, h2d))
                .collect(),
            host,
        })
}

/// Bytes that cpu-only would need: every weight and all the KV, plus the reserve.
fn cpu_only_bytes(m: &ModelProfile, w: &Workload, free: u64) -> u64 {
    let weights: u64 =
        m.layers.iter().map(|l| l.weight_bytes).sum::<u64>() + m.embedding_bytes + m.head_bytes;
    let kv = m.kv_bytes_per_token_per_layer * w.context_tokens * w.batch * m.layers.len() as u64;
    weights + kv + reserve_bytes(free)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    /// Every plan assigns every layer, fits every device, prices finite positive speeds and explains the rest.
    #[test]
    fn plans_are_complete_fit_and_explain_themselves(
        m in model(), w in workload(), hw in mixed_hardware()
    ) {
        match plan(&m, &w, &hw) {
            Ok(p) => check_plan(&p, &m, &w, &hw),
            Err(PlacementError::NothingFits { rejected }) => {
                // Only when even cpu-only is over RAM, and every strategy says why.
                prop_assert!(cpu_only_bytes(&m, &w, hw.host.free_ram_bytes) > hw.host.free_ram_bytes);
                prop_assert_eq!(rejected.len(), 4);
                prop_assert!(rejected.iter().all(|r| r.placement.is_none() && !r.reason.is_empty()));
            }
            Err(e) => prop_assert!(false, "unexpected error {}", e),
        }
    }

    /// Without GPUs the plan is cpu-only whenever the model fits in RAM.
    #[test]
    fn without_gpus_every_layer_is_on_the_cpu(m in model(), w in workload(), host in host()) {
        let hw = Hardware { gpus: vec![], host };
        if let Ok(p) = plan(&m, &w, &hw) {
            check_plan(&p, &m, &w, &hw);
            prop_assert!(p.chosen.layers.iter().all(|d| *d == Device::Cpu));
            prop_assert_eq!(p.chosen.cpu_bytes, cpu_only_bytes(&m, &w, hw.host.free_ram_bytes));
        }
    }

    /// Adding VRAM to any GPU never lowers the chosen batch throughput, and never breaks a plan.
    #[test]
    fn more_vram_never_lowers_batch_throughput(
        m in model(),
        w in workload(),
        hw in uniform_hardware(),
        which in any::<prop::sample::Index>(),
        extra in 1..80 * GB,
    ) {
        let mut more = hw.clone();
        let g = which.index(more.gpus.len());
        more.gpus[g].free_vram_bytes += extra;
        if let Ok(before) = plan(&m, &w, &hw) {
            let after = plan(&m, &w, &more);
            prop_assert!(after.is_ok(), "{:?}", after);
            if let Ok(after) = after {
                check_plan(&after, &m, &w, &more);
                let (b, a) = (
                    before.chosen.predicted_batch_tokens_per_s,
                    after.chosen.predicted_batch_tokens_per_s,
                );
                prop_assert!(a >= b * (1.0 - 1e-9), "{} -> {}: {} then {}", b, a, before.chosen.strategy, after.chosen.strategy);
            }
        }
    }

    /// Adding RAM never lowers the chosen batch throughput either.
    #[test]
    fn more_ram_never_lowers_batch_throughput(
        m in model(), w in workload(), hw in mixed_hardware(), extra in 1..256 * GB,
    ) {
        let mut more = hw.clone();
        more.host.free_ram_bytes += extra;
        if let Ok(before) = plan(&m, &w, &hw) {
            let after = plan(&m, &w, &more).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert!(
                after.chosen.predicted_batch_tokens_per_s
                    >= before.chosen.predicted_batch_tokens_per_s * (1.0 - 1e-9)
            );
        }
    }

    /// The plan is a pure function of its inputs.
    #[test]
    fn planning_is_deterministic(m in model(), w in workload(), hw in mixed_hardware()) {
        prop_assert_eq!(plan(&m, &w, &hw), plan(&m, &w, &hw));
    }
}
