//! What the gateway has seen lately, for policies that look back: caps read an
//! account's usage per provider, SLAs read a node's recent requests, both as
//! routed by the policy asking (another policy's traffic is not its business).
//!
//! A trait, so routing stays a pure function: the gateway answers from its
//! in-memory windows, tests answer from fixed data.

use crate::cap::{Measure, Shares};
use crate::sla::Outcome;

/// Recent usage and request outcomes, over a window ending now.
pub trait History {
    /// The account's usage per provider of requests `policy` routed, over the last `window_s` seconds.
    fn shares(&self, account: &str, policy: &str, of: Measure, window_s: f64) -> Shares;
    /// The outcomes of requests `policy` routed to `node`, over the last `window_s` seconds.
    fn outcomes(&self, policy: &str, node: &str, window_s: f64) -> Vec<Outcome>;
}

/// A gateway that has seen nothing yet: no usage, no outcomes.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoHistory;

impl History for NoHistory {
    fn shares(&self, _: &str, _: &str, _: Measure, _: f64) -> Shares {
        Shares::default()
    }

    fn outcomes(&self, _: &str, _: &str, _: f64) -> Vec<Outcome> {
        Vec::new()
    }
}
