//! `GET /node/info`: what a node says about itself.

use alloy_primitives::Address;
use serde::{Deserialize, Serialize};

/// A node's self-description. Routing uses it; audits trust none of it
/// beyond the model hash, which pins the reference model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// The model id clients name.
    pub model: String,
    /// sha256 of the GGUF file served.
    pub model_sha256: String,
    /// Transformer layers served, as `[start, end)`; None while the node
    /// serves the whole model without reading its layer count.
    pub layers: Option<[u32; 2]>,
    /// Hardware the node runs on.
    pub hardware: Hardware,
    /// The inference library (`llama.cpp` or `mistralrs`): whether seeded
    /// sampling uses Tollgate's own sampler, which audits can replay.
    #[serde(default)]
    pub runtime: String,
    /// Where each layer runs, in words.
    pub placement: String,
    /// The placement planner's answer for this node: the chosen placement
    /// with its predicted tokens/s, and each rejected alternative with why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<tollgate_placement::Plan>,
    /// Asking price per 1M input tokens (decimal fee-token units).
    pub price_in_per_1m: String,
    /// Asking price per 1M output tokens.
    pub price_out_per_1m: String,
    /// Region label.
    pub region: String,
    /// The signing address of the node's key.
    pub address: Address,
}

/// The machine a node runs on.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Hardware {
    /// Hardware class label ("cpu", "consumer-gpu", "datacenter-gpu").
    pub class: String,
    /// CPU threads available.
    pub cpu_threads: u32,
    /// GPUs (empty without the `cuda` feature).
    pub gpus: Vec<String>,
}
