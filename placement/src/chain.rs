//! Pipelines across nodes: which node runs which span of a model's layers.
//!
//! A chain is an ordered list of stages, each a node and a contiguous span
//! of layers. Inside a node the span is laid out by [`crate::plan`] (GPUs,
//! CPU offload, streaming), which also predicts its memory-bound decode
//! speed; prefill is priced separately as compute: `prompt × FLOPs / rate`
//! of the device each layer runs on, so fast-compute and fast-memory nodes
//! are told apart.
//!
//! Between stages, every token pays the hop's round trip (answers travel
//! back along the chain) and the hidden state's bytes over its bandwidth;
//! the gateway's hop to the first stage counts too. A request of `prompt`
//! tokens and `output` tokens then takes
//! `prefill + (output - 1) × decode_step`, and its tokens/s is
//! `output / that`.
//!
//! [`plan_chain`] searches node orders up to `max_stages` long and, for
//! each order, the best split of the layers (a dynamic program over layer
//! boundaries), under a price cap by a Lagrangian penalty on price.
//! [`memory_proportional`] (spans sized by node memory, as exo does) and
//! [`throughput_balanced`] (spans sized by node speed, routed by latency,
//! as Petals does) are the baselines it is compared with.

use std::ops::Range;

use serde::{Deserialize, Serialize};

use crate::model::{Hardware, ModelProfile, Workload};
use crate::placement::Device;

/// A node that can run a stage.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChainNode {
    /// Its name.
    pub id: String,
    /// What it has.
    pub hardware: Hardware,
    /// Its price per token for each layer it runs (fee-token units).
    pub price_per_layer_token: f64,
}

/// Links between the gateway and the nodes, and between nodes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Network {
    /// Round trip between node i and node j, seconds.
    pub rtt_s: Vec<Vec<f64>>,
    /// Bandwidth from node i to node j, bytes/s.
    pub bandwidth: Vec<Vec<f64>>,
    /// Round trip from the gateway to each node, seconds.
    pub gateway_rtt_s: Vec<f64>,
}

/// The request a chain is planned for.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChainRequest {
    /// Prompt tokens.
    pub prompt_tokens: u64,
    /// Generated tokens.
    pub output_tokens: u64,
    /// Bytes of one token's hidden state on the wire (hidden size × codec bytes).
    pub hidden_bytes_per_token: u64,
}

/// One stage of a planned chain.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChainStage {
    /// Index of the node in the planner's input.
    pub node: usize,
    /// The layers it runs.
    pub layers: Range<usize>,
    /// Its predicted seconds per decoded token.
    pub decode_s: f64,
    /// Its predicted seconds of prefill.
    pub prefill_s: f64,
}

/// A chain with its predicted speed and price.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Chain {
    /// The stages in order.
    pub stages: Vec<ChainStage>,
    /// Seconds per decoded token, network included.
    pub decode_step_s: f64,
    /// Seconds to the first token.
    pub prefill_s: f64,
    /// Output tokens per second over the whole request.
    pub tokens_per_s: f64,
    /// Price per token (sum over stages of layers × price).
    pub price_per_token: f64,
}

/// Why no chain was planned.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ChainError {
    /// The model fits on no chain of these nodes (or none within the cap).
    #[error("no chain of these nodes holds the model{0}")]
    NoChain(&'static str),
    /// Inputs that do not describe a cluster.
    #[error("invalid input: {0}")]
    Invalid(String),
}

/// (decode seconds per token, prefill seconds) of one span on one node.
type SpanCost = Option<(f64, f64)>;

/// Each (node, span)'s predicted costs, computed once.
struct StageCosts {
    layers: usize,
    /// `[node][start][end]`, None when the span does not fit the node.
    cost: Vec<Vec<Vec<SpanCost>>>,
}

impl StageCosts {
    fn new(model: &ModelProfile, nodes: &[ChainNode], req: &ChainRequest) -> Self {
        let n = model.layers.len();
        let cost = nodes
            .iter()
            .map(|node| {
                (0..n)
                    .map(|a| {
                        (0..=n)
                            .map(|b| {
                                (b > a)
                                    .then(|| stage_cost(model, node, a..b, req))
                                    .flatten()
                            })
                            .collect()
                    })
                    .collect()
            })
            .collect();
        Self { layers: n, cost }
    }

    fn get(&self, node: usize, span: &Range<usize>) -> Option<(f64, f64)> {
        self.cost[node]
            .get(span.start)?
            .get(span.end)
            .copied()
            .flatten()
    }
}

/// A span of `model` on `node`: (decode seconds per token, prefill seconds).
fn stage_cost(
    model: &ModelProfile,
    node: &ChainNode,
    span: Range<usize>,
    req: &ChainRequest,
) -> Option<(f64, f64)> {
    let sub = ModelProfile {
        layers: model.layers[span.clone()].to_vec(),
        embedding_bytes: if span.start == 0 {
            model.embedding_bytes
        } else {
            0
        },
        head_bytes: if span.end == model.layers.len() {
            model.head_bytes
        } else {
            0
        },
        ..model.clone()
    };
    let workload = Workload {
        context_tokens: req.prompt_tokens + req.output_tokens,
        batch: 1,
    };
    let plan = crate::plan(&sub, &workload, &node.hardware).ok()?;
    let placed = &plan.chosen;
    let decode_s = 1.0 / placed.predicted_tokens_per_s.max(f64::MIN_POSITIVE);
    let hw = &node.hardware;
    let flops = model.flops_per_token_per_layer as f64 * req.prompt_tokens as f64;
    let prefill_s = placed
        .layers
        .iter()
        .map(|d| {
            let rate = match d {
                Device::Gpu(g) => hw
                    .gpus
                    .get(*g)
                    .map_or(hw.host.flops_per_s, |g| g.flops_per_s),
                Device::Cpu => placed
                    .stream_gpu
                    .and_then(|g| hw.gpus.get(g))
                    .map_or(hw.host.flops_per_s, |g| g.flops_per_s),
            };
            flops / rate
        })
        .sum::<f64>();
    Some((decode_s, prefill_s))
}

fn check(
    model: &ModelProfile,
    nodes: &[ChainNode],
    net: &Network,
    req: &ChainRequest,
) -> Result<(), ChainError> {
    let n = nodes.len();
    if model.layers.is_empty() || nodes.is_empty() || req.output_tokens == 0 {
        return Err(ChainError::Invalid(
            "a model with layers, at least one node and one output token are needed".into(),
        ));
    }
    let square = |m: &Vec<Vec<f64>>| m.len() == n && m.iter().all(|r| r.len() == n);
    if !square(&net.rtt_s) || !square(&net.bandwidth) || net.gateway_rtt_s.len() != n {
        return Err(ChainError::Invalid(format!(
            "the network must describe all {n} nodes"
        )));
    }
    if net
        .bandwidth
        .iter()
        .flatten()
        .any(|b| b.is_nan() || *b <= 0.0)
        || net
            .rtt_s
            .iter()
            .flatten()
            .chain(&net.gateway_rtt_s)
            .any(|r| r.is_nan() || *r < 0.0)
    {
        return Err(ChainError::Invalid(
            "bandwidths must be positive and round trips not negative".into(),
        ));
    }
    Ok(())
}

/// Prices a given chain of (node, span) stages.
pub fn evaluate(
    model: &ModelProfile,
    nodes: &[ChainNode],
    net: &Network,
    req: &ChainRequest,
    stages: &[(usize, Range<usize>)],
) -> Result<Chain, ChainError> {
    check(model, nodes, net, req)?;
    let tiled = stages.first().is_some_and(|s| s.1.start == 0)
        && stages.last().is_some_and(|s| s.1.end == model.layers.len())
        && stages.windows(2).all(|w| w[0].1.end == w[1].1.start)
        && stages.iter().all(|s| s.0 < nodes.len() && !s.1.is_empty());
    if !tiled {
        return Err(ChainError::Invalid(
            "stages must tile the layers in order on known nodes".into(),
        ));
    }
    let mut out = Vec::with_capacity(stages.len());
    for (node, span) in stages {
        let (decode_s, prefill_s) =
            stage_cost(model, &nodes[*node], span.clone(), req).ok_or(ChainError::NoChain(""))?;
        out.push(ChainStage {
            node: *node,
            layers: span.clone(),
            decode_s,
            prefill_s,
        });
    }
    Ok(price(out, nodes, net, req))
}

/// Network cost of a node order: (per decoded token, for the prefill).
fn links(order: &[usize], net: &Network, req: &ChainRequest) -> (f64, f64) {
    let mut per_token = net.gateway_rtt_s[order[0]];
    let mut prefill = per_token;
    for w in order.windows(2) {
        let (a, b) = (w[0], w[1]);
        let bytes = req.hidden_bytes_per_token as f64;
        per_token += net.rtt_s[a][b] + bytes / net.bandwidth[a][b];
        prefill += net.rtt_s[a][b] + bytes * req.prompt_tokens as f64 / net.bandwidth[a][b];
    }
    (per_token, prefill)
}

fn price(stages: Vec<ChainStage>, nodes: &[ChainNode], net: &Network, req: &ChainRequest) -> Chain {
    let order: Vec<usize> = stages.iter().map(|s| s.node).collect();
    let (net_token, net_prefill) = links(&order, net, req);
    let decode_step_s = stages.iter().map(|s| s.decode_s).sum::<f64>() + net_token;
    let prefill_s = stages.iter().map(|s| s.prefill_s).sum::<f64>() + net_prefill;
    let total = prefill_s + (req.output_tokens.saturating_sub(1)) as f64 * decode_step_s;
    let price_per_token = stages
        .iter()
        .map(|s| s.layers.len() as f64 * nodes[s.node].price_per_layer_token)
        .sum();
    Chain {
        stages,
        decode_step_s,
        prefill_s,
        tokens_per_s: req.output_tokens as f64 / total,
        price_per_token,
    }
}

/// The fastest chain of at most `max_stages` distinct nodes whose price per
/// token is at most `price_cap`.
pub fn plan_chain(
    model: &ModelProfile,
    nodes: &[ChainNode],
    net: &Network,
    req: &ChainRequest,
    price_cap: Option<f64>,
    max_stages: usize,
) -> Result<Chain, ChainError> {
    check(model, nodes, net, req)?;
    let costs = StageCosts::new(model, nodes, req);
    let max_stages = max_stages.clamp(1, nodes.len().min(model.layers.len()));
    let best_at = |lambda: f64| best_chain(&costs, nodes, net, req, max_stages, lambda);
    let unconstrained = best_at(0.0).ok_or(ChainError::NoChain(""))?;
    let Some(cap) = price_cap else {
        return Ok(unconstrained);
    };
    if unconstrained.price_per_token <= cap {
        return Ok(unconstrained);
    }
    // Raise the price's weight until the best chain fits the cap; keep the
    // fastest that did.
    let (mut lo, mut hi) = (0.0f64, 1.0f64);
    let mut fitting = None;
    for _ in 0..40 {
        match best_at(hi) {
            Some(c) if c.price_per_token <= cap => {
                fitting = Some(c);
                break;
            }
            Some(_) => hi *= 4.0,
            None => break,
        }
    }
    let mut fitting = fitting.ok_or(ChainError::NoChain(" within the price cap"))?;
    for _ in 0..30 {
        let mid = (lo + hi) / 2.0;
        match best_at(mid) {
            Some(c) if c.price_per_token <= cap => {
                hi = mid;
                if c.tokens_per_s > fitting.tokens_per_s {
                    fitting = c;
                }
            }
            _ => lo = mid,
        }
    }
    Ok(fitting)
}

/// Over every order of up to `max_stages` distinct nodes, the split that
/// minimises request time + `lambda` × price.
fn best_chain(
    costs: &StageCosts,
    nodes: &[ChainNode],
    net: &Network,
    req: &ChainRequest,
    max_stages: usize,
    lambda: f64,
) -> Option<Chain> {
    let mut best: Option<(f64, Chain)> = None;
    let mut order = Vec::with_capacity(max_stages);
    let mut used = vec![false; nodes.len()];
    search(
        costs, nodes, net, req, max_stages, lambda, &mut order, &mut used, &mut best,
    );
    best.map(|b| b.1)
}

#[allow(clippy::too_many_arguments)]
fn search(
    costs: &StageCosts,
    nodes: &[ChainNode],
    net: &Network,
    req: &ChainRequest,
    max_stages: usize,
    lambda: f64,
    order: &mut Vec<usize>,
    used: &mut [bool],
    best: &mut Option<(f64, Chain)>,
) {
    if !order.is_empty() {
        if let Some(stages) = split(costs, nodes, req, order, lambda) {
            let chain = price(stages, nodes, net, req);
            let score =
                req.output_tokens as f64 / chain.tokens_per_s + lambda * chain.price_per_token;
            if best.as_ref().is_none_or(|b| score < b.0) {
                *best = Some((score, chain));
            }
        }
    }
    if order.len() == max_stages {
        return;
    }
    for n in 0..nodes.len() {
        if used[n] {
            continue;
        }
        used[n] = true;
        order.push(n);
        search(
            costs, nodes, net, req, max_stages, lambda, order, used, best,
        );
        order.pop();
        used[n] = false;
    }
}

/// The best split of the layers over `order` (each node at least one
/// layer): dynamic programming over layer boundaries.
fn split(
    costs: &StageCosts,
    nodes: &[ChainNode],
    req: &ChainRequest,
    order: &[usize],
    lambda: f64,
) -> Option<Vec<ChainStage>> {
    let n = costs.layers;
    let k = order.len();
    if k > n {
        return None;
    }
    let tokens = req.output_tokens.saturating_sub(1) as f64;
    let stage_score = |i: usize, span: &Range<usize>| -> Option<f64> {
        let node = order[i];
        let (decode, prefill) = costs.get(node, span)?;
        Some(
            prefill
                + tokens * decode
                + lambda
                    * span.len() as f64
                    * nodes[node].price_per_layer_token
                    * req.output_tokens as f64,
        )
    };
    // f[i][l]: best score with the first i stages covering layers [0, l).
    let mut f = vec![vec![f64::INFINITY; n + 1]; k + 1];
    let mut from = vec![vec![0usize; n + 1]; k + 1];
    f[0][0] = 0.0;
    for i in 1..=k {
        for l in i..=n - (k - i) {
            for a in (i - 1)..l {
                if !f[i - 1][a].is_finite() {
                    continue;
                }
                if let Some(s) = stage_score(i - 1, &(a..l)) {
                    let total = f[i - 1][a] + s;
                    if total < f[i][l] {
                        f[i][l] = total;
                        from[i][l] = a;
                    }
                }
            }
        }
    }
    if !f[k][n].is_finite() {
        return None;
    }
    let mut stages = Vec::with_capacity(k);
    let mut l = n;
    for i in (1..=k).rev() {
        let a = from[i][l];
        let (decode_s, prefill_s) = costs.get(order[i - 1], &(a..l))?;
        stages.push(ChainStage {
            node: order[i - 1],
            layers: a..l,
            decode_s,
            prefill_s,
        });
        l = a;
    }
    stages.reverse();
    Some(stages)
}

/// Splits `n` layers over `weights` in proportion, at least one layer each
/// (largest remainders first).
pub fn proportional(n: usize, weights: &[f64]) -> Vec<Range<usize>> {
    let k = weights.len().min(n);
    let total: f64 = weights[..k].iter().sum();
    let extra = n - k;
    let shares: Vec<f64> = weights[..k]
        .iter()
        .map(|w| {
            if total > 0.0 {
                w / total * extra as f64
            } else {
                extra as f64 / k as f64
            }
        })
        .collect();
    let mut counts: Vec<usize> = shares.iter().map(|s| 1 + s.floor() as usize).collect();
    let left = n - counts.iter().sum::<usize>();
    let mut order: Vec<usize> = (0..k).collect();
    order.sort_by(|&a, &b| {
        (shares[b] - shares[b].floor()).total_cmp(&(shares[a] - shares[a].floor()))
    });
    for &i in order.iter().cycle().take(left) {
        counts[i] += 1;
    }
    let mut at = 0;
    counts
        .into_iter()
        .map(|c| {
            let r = at..at + c;
            at += c;
            r
        })
        .collect()
}

fn memory_of(hw: &Hardware) -> f64 {
    let vram: u64 = hw.gpus.iter().map(|g| g.free_vram_bytes).sum();
    if vram > 0 {
        vram as f64
    } else {
        hw.host.free_ram_bytes as f64
    }
}

fn speed_of(hw: &Hardware) -> f64 {
    let gpu: f64 = hw.gpus.iter().map(|g| g.mem_bandwidth_bytes_per_s).sum();
    if gpu > 0.0 {
        gpu
    } else {
        hw.host.mem_bandwidth_bytes_per_s
    }
}

/// exo's layout: every node, in the given order, with layers in proportion
/// to its memory.
pub fn memory_proportional(
    model: &ModelProfile,
    nodes: &[ChainNode],
    net: &Network,
    req: &ChainRequest,
) -> Result<Chain, ChainError> {
    let weights: Vec<f64> = nodes.iter().map(|n| memory_of(&n.hardware)).collect();
    let spans = proportional(model.layers.len(), &weights);
    let stages: Vec<(usize, Range<usize>)> = spans.into_iter().enumerate().collect();
    evaluate(model, nodes, net, req, &stages)
}

/// Petals's layout: spans in proportion to each node's speed, the chain
/// routed from the gateway to the nearest unvisited node each hop.
pub fn throughput_balanced(
    model: &ModelProfile,
    nodes: &[ChainNode],
    net: &Network,
    req: &ChainRequest,
) -> Result<Chain, ChainError> {
    check(model, nodes, net, req)?;
    let mut order = Vec::with_capacity(nodes.len());
    let mut at: Option<usize> = None;
    while order.len() < nodes.len().min(model.layers.len()) {
        let rtt = |j: usize| at.map_or(net.gateway_rtt_s[j], |i| net.rtt_s[i][j]);
        let Some(next) = (0..nodes.len())
            .filter(|j| !order.contains(j))
            .min_by(|&a, &b| rtt(a).total_cmp(&rtt(b)))
        else {
            break;
        };
        order.push(next);
        at = Some(next);
    }
    let weights: Vec<f64> = order
        .iter()
        .map(|&i| speed_of(&nodes[i].hardware))
        .collect();
    let spans = proportional(model.layers.len(), &weights);
    let stages: Vec<(usize, Range<usize>)> = order.into_iter().zip(spans).collect();
    evaluate(model, nodes, net, req, &stages)
}
