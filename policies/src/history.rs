//! What the gateway has seen lately, for policies that look back: caps read an
//! account's usage per provider, SLAs read a node's recent requests.
//!
//! A trait, so routing stays a pure function: the gateway answers from its
//! in-memory windows, tests answer from fixed data.

use crate::cap::{Measure, Shares};
use crate::sla::Outcome;

/// Recent usage and request outcomes, over a window ending now.
pub trait History {
    /// The account's usage per provider over the last `window_s` seconds.
    fn shares(&self, account: &str, of: Measure, window_s: f64) -> Shares;
    /// The node's request outcomes over the last `window_s` seconds.
    fn outcomes(&self, node: &str, window_s: f64) -> Vec<Outcome>;
}

/// A gateway that has seen nothing yet: no usage, no outcomes.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoHistory;

impl History for NoHistory {
    fn shares(&self, _: &str, _: Measure, _: f64) -> Shares {
        Shares::default()
    }

    fn outcomes(&self, _: &str, _: f64) -> Vec<Outcome> {
        Vec::new()
    }
}
