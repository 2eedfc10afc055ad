//! The inputs of one routing decision: the request and the nodes that could serve it.

use crate::price::Prices;

/// What the router knows about one node that serves the requested model.
#[derive(Clone, Debug, PartialEq)]
pub struct Candidate {
    /// Node id.
    pub node: String,
    /// Who is paid for the node's work (its provider's address); None = the node stands alone.
    pub provider: Option<String>,
    /// Region the node runs in.
    pub region: String,
    /// Hardware class, e.g. "cpu", "consumer-gpu", "datacenter-gpu".
    pub hardware: String,
    /// The node's asking prices.
    pub prices: Prices,
    /// Trust score from audits, 0.0..=1.0.
    pub trust: f64,
    /// Measured decode speed (EWMA); None = not measured yet.
    pub tokens_per_s: Option<f64>,
    /// Measured time to first token in ms (EWMA); None = not measured yet.
    pub ttft_ms: Option<f64>,
    /// Recent error rate, 0.0..=1.0.
    pub error_rate: f64,
    /// False when the circuit is open or health checks fail.
    pub healthy: bool,
}

impl Candidate {
    /// Whose share a concentration cap counts this node's work in: its provider, else the node itself.
    pub fn provider_key(&self) -> &str {
        self.provider.as_deref().unwrap_or(&self.node)
    }

    /// Decode speed if it is a usable measurement (non-finite or negative counts as unmeasured).
    pub fn measured_tokens_per_s(&self) -> Option<f64> {
        usable(self.tokens_per_s)
    }

    /// Time to first token if it is a usable measurement (non-finite or negative counts as unmeasured).
    pub fn measured_ttft_ms(&self) -> Option<f64> {
        usable(self.ttft_ms)
    }
}

// A NaN from a broken EWMA must not sort ahead of real measurements.
fn usable(x: Option<f64>) -> Option<f64> {
    x.filter(|v| v.is_finite() && *v >= 0.0)
}

/// The facts of one request that routing may look at.
#[derive(Clone, Debug)]
pub struct RouteRequest<'a> {
    /// Requested model name.
    pub model: &'a str,
    /// Calling account id.
    pub account: &'a str,
    /// Request headers with lowercase names.
    pub headers: &'a [(String, String)],
    /// Estimated prompt tokens.
    pub prompt_tokens: u64,
    /// What the request may produce, for cost estimates.
    pub max_output_tokens: u64,
    /// The most the caller will pay (auction strategy); None = no cap.
    pub max_price: Option<Prices>,
    /// Seed for the weighted strategy's draw, so a decision is reproducible (the gateway passes a hash of the request id).
    pub seed: u64,
}

impl RouteRequest<'_> {
    /// Estimated cost of this request at the given prices (prompt plus the full output allowance).
    pub fn estimate(&self, prices: &Prices) -> u128 {
        prices.cost(self.prompt_tokens, self.max_output_tokens)
    }

    /// The caller's bid: what `max_price` comes to for this request, if set.
    pub fn bid(&self) -> Option<u128> {
        self.max_price.as_ref().map(|p| self.estimate(p))
    }
}
