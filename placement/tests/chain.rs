//! The chain planner on synthetic clusters: it never loses to the
//! baselines it is compared with, keeps to its price cap, and avoids links
//! it does not need.

use tollgate_placement::chain::{
    evaluate, memory_proportional, plan_chain, proportional, throughput_balanced, ChainError,
    ChainNode, ChainRequest, Network,
};
use tollgate_placement::{Gpu, Hardware, Host, LayerCost, ModelProfile};

const GB: u64 = 1 << 30;

/// A model of `layers` blocks of 0.5 GB.
fn model(layers: usize) -> ModelProfile {
    ModelProfile {
        layers: vec![
            LayerCost {
                weight_bytes: GB / 2
            };
            layers
        ],
        embedding_bytes: GB / 2,
        head_bytes: GB / 2,
        kv_bytes_per_token_per_layer: 4096,
        flops_per_token_per_layer: 1_700_000_000,
    }
}

/// A node with one GPU of `vram_gb` at `tb_s` TB/s, and 32 GB of RAM.
fn node(id: &str, vram_gb: u64, tb_s: f64, price: f64) -> ChainNode {
    ChainNode {
        id: id.into(),
        hardware: Hardware {
            gpus: vec![Gpu {
                name: id.into(),
                free_vram_bytes: vram_gb * GB,
                mem_bandwidth_bytes_per_s: tb_s * 1e12,
                flops_per_s: tb_s * 60e12,
                h2d_bandwidth_bytes_per_s: 25e9,
            }],
            host: Host {
                free_ram_bytes: 32 * GB,
                mem_bandwidth_bytes_per_s: 50e9,
                flops_per_s: 1e12,
            },
        },
        price_per_layer_token: price,
    }
}

/// Every pair `rtt_ms` apart (the gateway too), 1 Gbit/s links.
fn flat(n: usize, rtt_ms: f64) -> Network {
    Network {
        rtt_s: vec![vec![rtt_ms / 1e3; n]; n],
        bandwidth: vec![vec![125e6; n]; n],
        gateway_rtt_s: vec![rtt_ms / 1e3; n],
    }
}

fn request() -> ChainRequest {
    ChainRequest {
        prompt_tokens: 512,
        output_tokens: 128,
        hidden_bytes_per_token: 16 * 1024,
    }
}

#[test]
fn proportional_spans_tile_and_give_everyone_a_layer() {
    assert_eq!(proportional(10, &[1.0, 1.0]), vec![0..5, 5..10]);
    assert_eq!(proportional(10, &[3.0, 1.0]), vec![0..7, 7..10]);
    assert_eq!(proportional(4, &[100.0, 0.0, 0.0]), vec![0..2, 2..3, 3..4]);
    assert_eq!(proportional(2, &[1.0, 1.0, 1.0]), vec![0..1, 1..2]);
    for n in 1..40 {
        for w in [vec![1.0], vec![2.0, 1.0, 5.0], vec![0.1, 9.0, 3.3, 1.0]] {
            let spans = proportional(n, &w);
            assert_eq!(spans.first().unwrap().start, 0);
            assert_eq!(spans.last().unwrap().end, n);
            assert!(spans
                .windows(2)
                .all(|p| p[0].end == p[1].start && !p[0].is_empty()));
        }
    }
}

#[test]
fn a_node_that_holds_the_model_alone_serves_it_alone() {
    let nodes = vec![node("small", 16, 0.7, 1.0), node("big", 80, 3.3, 1.0)];
    let c = plan_chain(&model(40), &nodes, &flat(2, 50.0), &request(), None, 2).unwrap();
    assert_eq!(c.stages.len(), 1, "{c:?}");
    assert_eq!(c.stages[0].node, 1);
    assert_eq!(c.stages[0].layers, 0..40);
}

#[test]
fn the_planner_never_loses_to_exo_or_petals() {
    // Clusters of 16, 24 and 80 GB cards at 10-150 ms, a 40 GB model.
    let shapes: Vec<Vec<(u64, f64)>> = vec![
        vec![(16, 0.7), (16, 0.7), (24, 1.0), (80, 2.0)],
        vec![(24, 1.0), (16, 0.7), (16, 0.7)],
        vec![(80, 3.3), (16, 0.7), (24, 1.0), (24, 1.0)],
    ];
    for (k, shape) in shapes.iter().enumerate() {
        let nodes: Vec<ChainNode> = shape
            .iter()
            .enumerate()
            .map(|(i, &(v, bw))| node(&format!("n{i}"), v, bw, 1.0))
            .collect();
        let n = nodes.len();
        let mut net = flat(n, 10.0);
        for i in 0..n {
            for j in 0..n {
                net.rtt_s[i][j] = if i == j {
                    0.0
                } else {
                    (10.0 + 35.0 * ((i + j + k) % 5) as f64) / 1e3
                };
            }
            net.gateway_rtt_s[i] = (10.0 + 20.0 * i as f64) / 1e3;
        }
        let m = model(80);
        let ours = plan_chain(&m, &nodes, &net, &request(), None, n).unwrap();
        for (name, base) in [
            ("exo", memory_proportional(&m, &nodes, &net, &request())),
            ("petals", throughput_balanced(&m, &nodes, &net, &request())),
        ] {
            if let Ok(b) = base {
                assert!(
                    ours.tokens_per_s >= b.tokens_per_s * (1.0 - 1e-9),
                    "cluster {k}: ours {} < {name} {}",
                    ours.tokens_per_s,
                    b.tokens_per_s
                );
            }
        }
        // What the planner predicts is what evaluating its chain says.
        let stages: Vec<_> = ours
            .stages
            .iter()
            .map(|s| (s.node, s.layers.clone()))
            .collect();
        let again = evaluate(&m, &nodes, &net, &request(), &stages).unwrap();
        assert!((again.tokens_per_s - ours.tokens_per_s).abs() < 1e-9 * ours.tokens_per_s);
    }
}

#[test]
fn a_price_cap_trades_speed_for_price_and_an_impossible_cap_is_an_error() {
    let nodes = vec![
        node("fast-dear", 80, 3.3, 10.0),
        node("slow-cheap", 80, 0.7, 1.0),
    ];
    let net = flat(2, 20.0);
    let m = model(40);
    let free = plan_chain(&m, &nodes, &net, &request(), None, 2).unwrap();
    assert_eq!(free.stages[0].node, 0, "the fast node, price aside");
    let capped = plan_chain(&m, &nodes, &net, &request(), Some(100.0), 2).unwrap();
    assert!(capped.price_per_token <= 100.0, "{capped:?}");
    assert!(capped.tokens_per_s < free.tokens_per_s);
    assert_eq!(
        plan_chain(&m, &nodes, &net, &request(), Some(1.0), 2).unwrap_err(),
        ChainError::NoChain(" within the price cap")
    );
}

#[test]
fn a_far_node_is_left_out_when_near_ones_suffice() {
    let nodes = vec![
        node("near-a", 24, 1.0, 1.0),
        node("near-b", 24, 1.0, 1.0),
        node("far", 24, 1.0, 1.0),
    ];
    let mut net = flat(3, 10.0);
    for i in 0..3 {
        net.rtt_s[i][2] = 0.150;
        net.rtt_s[2][i] = 0.150;
    }
    net.gateway_rtt_s[2] = 0.150;
    // 36 layers of 0.5 GB: two 24 GB cards hold it.
    let c = plan_chain(&model(36), &nodes, &net, &request(), None, 3).unwrap();
    assert!(c.stages.iter().all(|s| s.node != 2), "{c:?}");
}

#[test]
fn inputs_that_describe_no_cluster_are_refused() {
    let nodes = vec![node("a", 24, 1.0, 1.0)];
    let bad_net = flat(2, 10.0);
    assert!(matches!(
        plan_chain(&model(4), &nodes, &bad_net, &request(), None, 1),
        Err(ChainError::Invalid(_))
    ));
    assert!(matches!(
        evaluate(&model(4), &nodes, &flat(1, 1.0), &request(), &[(0, 0..3)]),
        Err(ChainError::Invalid(_))
    ));
    let mut zero = flat(1, 1.0);
    zero.bandwidth[0][0] = 0.0;
    assert!(plan_chain(&model(4), &nodes, &zero, &request(), None, 1).is_err());
}
