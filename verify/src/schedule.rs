//! Which answers get audited.
//!
//! The choice is made by the gateway after the answer arrived, from its own
//! randomness, and the request sent to the node is the same either way: a
//! node cannot tell an audited request from any other. New nodes are
//! audited more, until they have a record.

use serde::{Deserialize, Serialize};

/// Audit shares.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Schedule {
    /// Share of answers audited once a node has a record.
    pub share: f64,
    /// Share audited while a node is new.
    pub new_node_share: f64,
    /// Audits after which a node is no longer new.
    pub new_node_audits: u64,
}

impl Default for Schedule {
    fn default() -> Self {
        Self {
            share: 0.05,
            new_node_share: 0.5,
            new_node_audits: 10,
        }
    }
}

impl Schedule {
    /// The share for a node with `audits` audits behind it, given the
    /// policy's share (which overrides the default one).
    pub fn share_for(&self, audits: u64, policy_share: Option<f64>) -> f64 {
        let base = policy_share.unwrap_or(self.share);
        let share = if audits < self.new_node_audits {
            base.max(self.new_node_share)
        } else {
            base
        };
        if share.is_nan() {
            0.0
        } else {
            share.clamp(0.0, 1.0)
        }
    }

    /// Whether to audit, given a uniform `draw` in [0, 1).
    pub fn pick(&self, audits: u64, policy_share: Option<f64>, draw: f64) -> bool {
        draw < self.share_for(audits, policy_share)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_nodes_are_audited_more() {
        let s = Schedule::default();
        assert_eq!(s.share_for(0, None), 0.5);
        assert_eq!(s.share_for(9, None), 0.5);
        assert_eq!(s.share_for(10, None), 0.05);
        assert_eq!(s.share_for(10, Some(0.2)), 0.2);
        assert_eq!(s.share_for(0, Some(0.9)), 0.9, "a policy may ask for more");
        assert_eq!(s.share_for(50, Some(3.0)), 1.0);
        assert_eq!(s.share_for(50, Some(f64::NAN)), 0.0);
    }

    #[test]
    fn pick_draws_against_the_share() {
        let s = Schedule::default();
        let picked = (0..1000)
            .filter(|i| s.pick(100, None, *i as f64 / 1000.0))
            .count();
        assert_eq!(picked, 50);
        assert!(s.pick(100, Some(1.0), 0.999_999));
        assert!(!s.pick(100, Some(0.0), 0.0));
    }
}
