//! The planner on realistic cards, PCIe generations and model sizes.

mod common;

use common::*;
use tollgate_placement::{
    plan, Device, Hardware, Host, LayerSpan, PlacementError, Plan, ALL_GPU, CPU_ONLY,
    GPU_PREFIX_CPU_OFFLOAD, STREAM_FROM_HOST,
};

fn planned(
    m: &tollgate_placement::ModelProfile,
    w: &tollgate_placement::Workload,
    hw: &Hardware,
) -> Plan {
    let p = plan(m, w, hw).unwrap_or_else(|e| panic!("no plan: {e}"));
    check_plan(&p, m, w, hw);
    p
}

fn spans(p: &Plan) -> Vec<(Device, usize)> {
    p.chosen
        .spans()
        .iter()
        .map(|s| (s.device, s.count))
        .collect()
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs())
}

#[test]
fn llama_8b_fits_entirely_on_a_16gb_card_at_8k_context() {
    let (m, w, hw) = (
        llama_8b_q4(),
        workload(8192, 1),
        machine(vec![card_16gb(PCIE4)]),
    );
    let p = planned(&m, &w, &hw);
    assert_eq!(p.chosen.strategy, ALL_GPU);
    assert_eq!(spans(&p), vec![(Device::Gpu(0), 32)]);
    assert_eq!(
        (p.chosen.embedding, p.chosen.head),
        (Device::Gpu(0), Device::Gpu(0))
    );
    assert_eq!(p.chosen.cpu_bytes, 0);
    // 4.5 GB of weights + 1.07 GB of KV (8192 tokens x 4 KB x 32 layers) + 750 MB reserve.
    assert_eq!(
        p.chosen.gpu_bytes,
        vec![4_500_000_000 + 8192 * LLAMA_KV * 32 + 750_000_000]
    );
    // Memory-bound: layers, head and KV read once per token at 450 GB/s; the embedding is a row lookup.
    let bytes_read = 32.0 * 125e6 + 250e6 + (8192 * LLAMA_KV * 32) as f64;
    assert!(close(p.chosen.predicted_tokens_per_s, 450e9 / bytes_read));
    for r in &p.rejected {
        assert!(
            r.reason.starts_with("slower: "),
            "{}: {}",
            r.strategy,
            r.reason
        );
    }
}

#[test]
fn llama_70b_on_a_24gb_card_keeps_the_longest_prefix_on_gpu_and_offloads_the_rest() {
    let (m, w) = (llama_70b_q4(), workload(4096, 1));
    let hw = machine(vec![card_24gb(PCIE4)]);
    let p = planned(&m, &w, &hw);
    assert_eq!(p.chosen.strategy, GPU_PREFIX_CPU_OFFLOAD);
    // Usable VRAM 22.5 GB - 5 % = 21.375 GB; embedding and head take 1.4 GB,
    // each layer 470 MB + 16.8 MB of KV: floor(19.975 / 0.4868) = 41 layers.
    let per_layer = 470 * MB + 4096 * LLAMA_KV;
    let fit = ((22_500 * MB - 1_125 * MB - 1_400 * MB) / per_layer) as usize;
    assert_eq!(fit, 41);
    assert_eq!(
        spans(&p),
        vec![(Device::Gpu(0), fit), (Device::Cpu, 80 - fit)]
    );
    assert_eq!(
        (p.chosen.embedding, p.chosen.head),
        (Device::Gpu(0), Device::Gpu(0))
    );

    let all_gpu = rejected(&p, ALL_GPU);
    assert_eq!(all_gpu.placement, None);
    assert_eq!(
        all_gpu.reason,
        "needs 41.5 GB on GPU 0 (weights 39.0 GB + KV 1.3 GB + reserve 1.1 GB), has 22.5 GB free"
    );
    assert!(rejected(&p, STREAM_FROM_HOST)
        .reason
        .starts_with("slower: "));

    // Between computing everything on the CPU and a card big enough for all of it.
    let cpu_only = speed_of(&p, CPU_ONLY).expect("cpu-only fits in 64 GB");
    let mut big = card_24gb(PCIE4);
    big.free_vram_bytes = 200 * GB;
    let hypothetical = planned(&m, &w, &machine(vec![big]));
    assert_eq!(hypothetical.chosen.strategy, ALL_GPU);
    let offload = p.chosen.predicted_tokens_per_s;
    assert!(cpu_only < offload && offload < hypothetical.chosen.predicted_tokens_per_s);
    // Roughly half the layers on the GPU, so roughly twice cpu-only, far below all-gpu.
    assert!(offload > 1.8 * cpu_only, "{offload} vs {cpu_only}");
    assert!(offload < 0.2 * hypothetical.chosen.predicted_tokens_per_s);
}

#[test]
fn llama_70b_fits_one_80gb_card_with_room_for_4_sequences_of_8k() {
    let (m, w) = (llama_70b_q4(), workload(8192, 4));
    let hw = machine(vec![card_80gb(PCIE5)]);
    let p = planned(&m, &w, &hw);
    assert_eq!(p.chosen.strategy, ALL_GPU);
    assert_eq!(spans(&p), vec![(Device::Gpu(0), 80)]);
    // 39 GB weights + 10.7 GB KV + 3.9 GB reserve.
    assert_eq!(
        p.chosen.gpu_bytes,
        vec![39 * GB + 8192 * 4 * LLAMA_KV * 80 + 3_900_000_000]
    );
    assert!(p.chosen.predicted_batch_tokens_per_s > 3.0 * p.chosen.predicted_tokens_per_s);
}

#[test]
fn two_24gb_cards_split_llama_70b_evenly_when_the_kv_fits() {
    let m = llama_70b_q4();
    let hw = machine(vec![card_24gb(PCIE4), card_24gb(PCIE4)]);
    // 39 GB weights + 1.3 GB KV fit in 2 x 21.4 GB usable.
    let p = planned(&m, &workload(4096, 1), &hw);
    assert_eq!(p.chosen.strategy, ALL_GPU);
    assert_eq!(spans(&p), vec![(Device::Gpu(0), 40), (Device::Gpu(1), 40)]);
    assert_eq!(
        (p.chosen.embedding, p.chosen.head),
        (Device::Gpu(0), Device::Gpu(1))
    );
    // A split costs nothing in the model: as fast as one card holding everything.
    let mut big = card_24gb(PCIE4);
    big.free_vram_bytes = 200 * GB;
    let one = planned(&m, &workload(4096, 1), &machine(vec![big]));
    assert!(close(
        p.chosen.predicted_tokens_per_s,
        one.chosen.predicted_tokens_per_s
    ));

    // Four sequences need 5.4 GB of KV: 46.6 GB in all, so a few layers go to the CPU.
    let p = planned(&m, &workload(4096, 4), &hw);
    assert_eq!(p.chosen.strategy, GPU_PREFIX_CPU_OFFLOAD);
    assert_eq!(
        rejected(&p, ALL_GPU).reason,
        "needs 46.6 GB on GPUs 0+1 (weights 39.0 GB + KV 5.4 GB + reserve 2.2 GB), has 45.0 GB free"
    );
    let s = spans(&p);
    assert_eq!(s.len(), 3, "{s:?}");
    assert_eq!(
        (s[0].0, s[1].0, s[2].0),
        (Device::Gpu(0), Device::Gpu(1), Device::Cpu)
    );
    assert!((1..=6).contains(&s[2].1), "{s:?}");
    assert_eq!(p.chosen.head, Device::Gpu(1));
}

#[test]
fn a_huge_context_pushes_layers_off_the_gpu() {
    let m = llama_8b_q4();
    let hw = machine(vec![card_16gb(PCIE4)]);
    let mut previous = usize::MAX;
    for context in [8_192, 32_768, 65_536, 98_304, 131_072] {
        let p = planned(&m, &workload(context, 1), &hw);
        let on_gpu = p.chosen.gpu_layers(0);
        assert!(on_gpu <= previous, "{context}: {on_gpu} > {previous}");
        previous = on_gpu;
    }
    let p = planned(&m, &workload(131_072, 1), &hw);
    // 128k tokens x 4 KB x 32 layers = 17.2 GB of KV alone, more than the card.
    assert_eq!(p.chosen.strategy, GPU_PREFIX_CPU_OFFLOAD);
    assert_eq!(spans(&p), vec![(Device::Gpu(0), 20), (Device::Cpu, 12)]);
    assert!(rejected(&p, ALL_GPU).reason.contains("KV 17.2 GB"));
    // Streaming would need every layer's KV on the GPU.
    let stream = rejected(&p, STREAM_FROM_HOST);
    assert_eq!(stream.placement, None);
    assert!(
        stream.reason.starts_with(
            "needs 18.4 GB on GPU 0 for the head, the KV cache of all 32 streamed layers"
        ),
        "{}",
        stream.reason
    );
}

#[test]
fn faster_pcie_makes_streaming_win_at_large_batch_but_not_at_batch_one() {
    let m = llama_70b_q4();
    let chosen = |h2d: f64, batch: u64| {
        let p = planned(&m, &workload(1024, batch), &machine(vec![card_24gb(h2d)]));
        (p.chosen.strategy.clone(), p)
    };
    // One sequence: the CPU reads a layer at 50 GB/s, faster than (or as fast as) any link copies it.
    for h2d in [PCIE3, PCIE4, PCIE5] {
        let (strategy, p) = chosen(h2d, 1);
        assert_eq!(strategy, GPU_PREFIX_CPU_OFFLOAD, "at {h2d}");
        assert!(rejected(&p, STREAM_FROM_HOST)
            .reason
            .starts_with("slower: "));
    }
    // Sixteen sequences: CPU compute grows with the batch, a copy is paid once per step.
    assert_eq!(chosen(PCIE3, 16).0, GPU_PREFIX_CPU_OFFLOAD);
    let (strategy, p) = chosen(PCIE4, 16);
    assert_eq!(strategy, STREAM_FROM_HOST);
    assert_eq!(p.chosen.stream_gpu, Some(0));
    assert_eq!(p.chosen.head, Device::Gpu(0));
    assert_eq!(chosen(PCIE5, 16).0, STREAM_FROM_HOST);
    // An engine that cannot stream falls back to the offload placement.
    let fallback = p.best_excluding(&[STREAM_FROM_HOST]).expect("offload fits");
    assert_eq!(fallback.strategy, GPU_PREFIX_CPU_OFFLOAD);
    assert_eq!(
        Some(fallback),
        rejected(&p, GPU_PREFIX_CPU_OFFLOAD).placement.as_ref()
    );
    // PCIe 5 is needed at batch 8.
    assert_eq!(chosen(PCIE4, 8).0, GPU_PREFIX_CPU_OFFLOAD);
    assert_eq!(chosen(PCIE5, 8).0, STREAM_FROM_HOST);
    // Streaming speed follows the link; the offload alternative does not care.
    let stream_speed = |h2d| speed_of(&chosen(h2d, 16).1, STREAM_FROM_HOST).expect("fits");
    let offload_speed = |h2d| speed_of(&chosen(h2d, 16).1, GPU_PREFIX_CPU_OFFLOAD).expect("fits");
    assert!(stream_speed(PCIE3) < stream_speed(PCIE4) && stream_speed(PCIE4) < stream_speed(PCIE5));
    assert_eq!(offload_speed(PCIE3), offload_speed(PCIE5));
}

#[test]
fn streamed_layers_keep_their_kv_on_the_gpu_and_weights_in_ram() {
    let m = llama_70b_q4();
    let w = workload(1024, 16);
    let p = planned(&m, &w, &machine(vec![card_24gb(PCIE5)]));
    assert_eq!(p.chosen.strategy, STREAM_FROM_HOST);
    let streamed = p.chosen.cpu_layers() as u64;
    assert!(streamed > 40, "{streamed}");
    let kv = 1024 * 16 * LLAMA_KV;
    // RAM: streamed weights plus its reserve (5 % of 64 GB); no KV, it lives on the GPU.
    assert_eq!(p.chosen.cpu_bytes, streamed * 470 * MB + 3_200 * MB);
    // GPU: resident layers with KV, KV of streamed layers, embedding, head, 2 copy buffers, reserve.
    let resident = 80 - streamed;
    assert_eq!(
        p.chosen.gpu_bytes,
        vec![resident * 470 * MB + 80 * kv + 1_400 * MB + 2 * 470 * MB + 1_125 * MB]
    );
}

#[test]
fn two_cards_stream_through_one_and_keep_resident_layers_on_both() {
    let m = llama_70b_q4();
    let w = workload(1024, 32);
    let hw = machine(vec![card_24gb(PCIE5), card_24gb(PCIE5)]);
    let p = planned(&m, &w, &hw);
    assert_eq!(p.chosen.strategy, STREAM_FROM_HOST);
    // Equal links: the later card streams, so its run comes last, right before the streamed layers.
    assert_eq!(p.chosen.stream_gpu, Some(1));
    let s = spans(&p);
    assert_eq!(s.len(), 3, "{s:?}");
    assert_eq!(
        (s[0].0, s[1].0, s[2].0),
        (Device::Gpu(0), Device::Gpu(1), Device::Cpu)
    );
    assert_eq!(p.chosen.head, Device::Gpu(1));
}

#[test]
fn unequal_cards_put_the_prefix_on_the_faster_one_first() {
    let hw = machine(vec![card_16gb(PCIE4), card_24gb(PCIE4)]);
    // 8B fits on the fast card alone; splitting onto the slow card would only slow it down.
    let p = planned(&llama_8b_q4(), &workload(4096, 1), &hw);
    assert_eq!(p.chosen.strategy, ALL_GPU);
    assert_eq!(spans(&p), vec![(Device::Gpu(1), 32)]);
    assert_eq!(p.chosen.gpu_bytes[0], 0);
    // 70B needs both cards and the CPU: fast card first, then the slow one, then RAM.
    let p = planned(&llama_70b_q4(), &workload(4096, 1), &hw);
    assert_eq!(p.chosen.strategy, GPU_PREFIX_CPU_OFFLOAD);
    let s = spans(&p);
    assert_eq!(
        (s[0].0, s[1].0, s[2].0),
        (Device::Gpu(1), Device::Gpu(0), Device::Cpu)
    );
    assert_eq!(p.chosen.embedding, Device::Gpu(1));
    assert_eq!(p.chosen.head, Device::Gpu(0));
}

#[test]
fn without_a_gpu_every_layer_is_on_the_cpu() {
    for m in [llama_8b_q4(), smollm_135m()] {
        let p = planned(&m, &workload(4096, 1), &machine(vec![]));
        assert_eq!(p.chosen.strategy, CPU_ONLY);
        assert!(p.chosen.layers.iter().all(|d| *d == Device::Cpu));
        assert_eq!(
            (p.chosen.embedding, p.chosen.head),
            (Device::Cpu, Device::Cpu)
        );
        assert!(p.chosen.gpu_bytes.is_empty());
        assert_eq!(
            p.chosen.spans(),
            vec![LayerSpan {
                device: Device::Cpu,
                start: 0,
                count: m.layers.len()
            }]
        );
        for r in &p.rejected {
            assert_eq!((r.reason.as_str(), &r.placement), ("no GPU", &None));
        }
    }
    // At 50 GB/s the 8B model reads 4.5 GB + 0.5 GB of KV per token: 10 tok/s.
    let p = planned(&llama_8b_q4(), &workload(4096, 1), &machine(vec![]));
    let bytes = 32.0 * 125e6 + 250e6 + (4096 * LLAMA_KV * 32) as f64;
    assert!(close(p.chosen.predicted_tokens_per_s, 50e9 / bytes));
}

#[test]
fn a_model_bigger_than_ram_and_vram_is_an_error_that_explains_each_strategy() {
    let hw = Hardware {
        gpus: vec![card_16gb(PCIE4)],
        host: Host {
            free_ram_bytes: 16 * GB,
            ..host_64gb()
        },
    };
    let err = plan(&llama_70b_q4(), &workload(4096, 1), &hw).expect_err("39 GB > 15 + 16 GB");
    let PlacementError::NothingFits { rejected } = &err else {
        panic!("{err}");
    };
    let strategies: Vec<&str> = rejected.iter().map(|r| r.strategy.as_str()).collect();
    assert_eq!(strategies, tollgate_placement::STRATEGIES);
    assert!(rejected.iter().all(|r| r.placement.is_none()));
    assert!(
        rejected[0].reason.ends_with("has 15.0 GB free"),
        "{}",
        rejected[0].reason
    );
    for r in &rejected[1..] {
        assert!(r.reason.contains("of host RAM"), "{}", r.reason);
        assert!(r.reason.ends_with("has 16.0 GB free"), "{}", r.reason);
    }
    let text = err.to_string();
    assert!(
        text.starts_with("no placement fits: all-gpu: needs "),
        "{text}"
    );
    assert!(
        text.contains("; cpu-only: needs 41.1 GB of host RAM"),
        "{text}"
    );
}

#[test]
fn the_135m_model_fits_anywhere() {
    let m = smollm_135m();
    let w = workload(2048, 8);
    for gpu in [card_16gb(PCIE3), card_24gb(PCIE4), card_80gb(PCIE5)] {
        let p = planned(&m, &w, &machine(vec![gpu]));
        assert_eq!(p.chosen.strategy, ALL_GPU);
        // 102 MB of weights + 377 MB of KV, plus the 512 MiB minimum or 5 % reserve.
        assert!(p.chosen.gpu_bytes[0] < 5 * GB);
    }
    // A 2 GB box without a GPU runs it on the CPU.
    let small = Hardware {
        gpus: vec![],
        host: Host {
            free_ram_bytes: 2 * GB,
            mem_bandwidth_bytes_per_s: 20e9,
            flops_per_s: 1e11,
        },
    };
    let p = planned(&m, &w, &small);
    assert_eq!(p.chosen.strategy, CPU_ONLY);
    assert!(p.chosen.cpu_bytes <= 2 * GB);
}

#[test]
fn invalid_inputs_are_refused_before_planning() {
    let hw = machine(vec![card_24gb(PCIE4)]);
    assert_eq!(
        plan(&llama_8b_q4(), &workload(4096, 0), &hw),
        Err(PlacementError::ZeroBatch)
    );
    let mut gb_per_s = hw.clone();
    gb_per_s.gpus[0].mem_bandwidth_bytes_per_s = 1000.0;
    assert!(matches!(
        plan(&llama_8b_q4(), &workload(4096, 1), &gb_per_s),
        Err(PlacementError::BadRate { .. })
    ));
}

#[test]
fn a_plan_round_trips_through_json() {
    let (m, w) = (llama_70b_q4(), workload(1024, 16));
    let p = planned(&m, &w, &machine(vec![card_24gb(PCIE5)]));
    let json = serde_json::to_string(&p).expect("serializes");
    assert!(json.contains("\"strategy\":\"stream-from-host\""), "{json}");
    assert!(json.contains("\"stream_gpu\":0"));
    let back: Plan = serde_json::from_str(&json).expect("parses");
    // serde_json's default float parsing may be one ulp off; compare speeds
    // closely and everything else exactly.
    let speeds = |p: &tollgate_placement::Placement| {
        [p.predicted_tokens_per_s, p.predicted_batch_tokens_per_s]
    };
    let flatten = |plan: &Plan| {
        let mut all = vec![plan.chosen.clone()];
        all.extend(plan.rejected.iter().filter_map(|r| r.placement.clone()));
        all
    };
    for (a, b) in flatten(&back).iter().zip(flatten(&p).iter()) {
        for (x, y) in speeds(a).into_iter().zip(speeds(b)) {
            assert!(close(x, y), "{x} vs {y}");
        }
    }
    let strip = |mut plan: Plan| {
        let zero = |p: &mut tollgate_placement::Placement| {
            p.predicted_tokens_per_s = 0.0;
            p.predicted_batch_tokens_per_s = 0.0;
        };
        zero(&mut plan.chosen);
        plan.rejected
            .iter_mut()
            .filter_map(|r| r.placement.as_mut())
            .for_each(zero);
        plan
    };
    assert_eq!(strip(back), strip(p));
}
