//! The output of routing: an ordered route list plus the reasons for every exclusion.
//!
//! Serialized to JSON this is the "explain" view, so every part says why.

use serde::ser::{SerializeStruct, Serializer};
use serde::Serialize;

use crate::model::Strategy;
use crate::price::{format_atto, Price};

/// The outcome of routing one request: routes to try in order, and why the others were left out.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Decision {
    /// Matched policy's name, or "default" when none matched.
    pub policy: String,
    /// The strategy that ordered the routes.
    pub strategy: Strategy,
    /// Nodes to try, best first; fallbacks last.
    pub routes: Vec<Route>,
    /// Candidates left out, each with the first reason that excluded it.
    pub rejected: Vec<Rejection>,
}

impl Decision {
    /// Node ids of the routes, in the order to try them.
    pub fn nodes(&self) -> impl Iterator<Item = &str> {
        self.routes.iter().map(|r| r.node.as_str())
    }
}

/// One node to try, with why it is there.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Route {
    /// Node id.
    pub node: String,
    /// Why this node is here and at this rank, human-readable, e.g. "cheapest: est. cost 0.000123 for 100 in / 256 out tokens", "fallback #1", "weighted draw: weight 3 of 4".
    pub reasons: Vec<String>,
    /// True when the node came from the policy's fallback list, not the ranking.
    pub fallback: bool,
    /// Estimated cost in atto-units for the request's prompt and full output allowance.
    pub estimated_cost: u128,
}

/// A candidate that will not be tried, and why.
#[derive(Clone, Debug, PartialEq)]
pub struct Rejection {
    /// Node id.
    pub node: String,
    /// The first reason that excluded it.
    pub reason: RejectReason,
}

// Hand-written so the explain JSON carries the sentence as well as the numbers.
impl Serialize for Rejection {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut s = serializer.serialize_struct("Rejection", 3)?;
        s.serialize_field("node", &self.node)?;
        s.serialize_field("reason", &self.reason)?;
        s.serialize_field("message", &self.reason.to_string())?;
        s.end()
    }
}

/// Why a candidate was excluded from the ranking.
#[derive(Clone, Debug, PartialEq, Serialize, thiserror::Error)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum RejectReason {
    /// Circuit open or failing health checks; never routed to, not even as a fallback.
    #[error("node is unhealthy (circuit open or failing health checks)")]
    Unhealthy,
    /// The policy allows only some regions and this is not one of them.
    #[error("region {region:?} is not in the policy's allowed regions")]
    RegionNotAllowed {
        /// The node's region.
        region: String,
    },
    /// The policy denies this region.
    #[error("region {region:?} is in the policy's denied regions")]
    RegionDenied {
        /// The node's region.
        region: String,
    },
    /// The node asks more than the policy's price cap.
    #[error("{which} price {price} per 1M tokens is above the policy's cap of {cap}")]
    PriceAboveCap {
        /// "input" or "output".
        which: String,
        /// The node's price.
        price: Price,
        /// The policy's cap.
        cap: Price,
    },
    /// The node's trust score is below the policy's minimum.
    #[error("trust {trust} is below the policy's minimum of {min}")]
    TrustBelowMin {
        /// The node's trust.
        trust: f64,
        /// The policy's minimum.
        min: f64,
    },
    /// The node's hardware class is not in the policy's list.
    #[error("hardware class {hardware:?} is not in the policy's allowed hardware")]
    HardwareNotAllowed {
        /// The node's hardware class.
        hardware: String,
    },
    /// The node's measured speed is below the policy's minimum.
    #[error("measured {tokens_per_s} tokens/s is below the policy's minimum of {min}")]
    TooSlow {
        /// The node's measured speed.
        tokens_per_s: f64,
        /// The policy's minimum.
        min: f64,
    },
    /// Auction: the node's estimated cost is above what the caller's max price allows for this request.
    #[error("asks {} for this request, above the caller's bid of {}", format_atto(*ask), format_atto(*bid))]
    AskAboveBid {
        /// The node's estimated cost, atto-units.
        ask: u128,
        /// The caller's max price applied to the same token counts, atto-units.
        bid: u128,
    },
    /// Weighted strategy: the node has no weight (absent or 0).
    #[error("node has no weight in this weighted policy")]
    ZeroWeight,
}

impl RejectReason {
    /// Whether an operator's policy (rather than node health or the caller's bid) caused this, so a fallback may override it.
    pub fn is_policy_filter(&self) -> bool {
        !matches!(
            self,
            RejectReason::Unhealthy | RejectReason::AskAboveBid { .. }
        )
    }
}
