//! Concentration caps: no one provider takes more than a set share of an
//! account's traffic or spend over a window.
//!
//! A cap holds a provider back rather than refusing the request: providers
//! over their share are ranked after every provider under it, so a request is
//! never failed to keep a share, and when every provider is over (the first
//! request of a window) the strategy's order stands.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// What a cap measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Measure {
    /// Requests served.
    #[default]
    Requests,
    /// Fees billed.
    Spend,
}

/// A policy's cap on any one provider's share of an account's usage.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cap {
    /// The largest share one provider may take, in (0, 1].
    pub max_share: f64,
    /// Requests or spend.
    #[serde(default)]
    pub of: Measure,
    /// The window the share is measured over, in seconds.
    #[serde(default = "default_window_s")]
    pub window_s: f64,
}

fn default_window_s() -> f64 {
    3600.0
}

/// An account's usage over a window: the total and each provider's part,
/// in requests or atto-units.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Shares {
    /// Everything the account used.
    pub total: u128,
    /// What each provider served of it.
    pub by_provider: BTreeMap<String, u128>,
}

impl Shares {
    /// Adds one use of `amount` served by `provider`.
    pub fn add(&mut self, provider: &str, amount: u128) {
        self.total = self.total.saturating_add(amount);
        let part = self.by_provider.entry(provider.to_owned()).or_default();
        *part = part.saturating_add(amount);
    }

    /// What `provider` served.
    pub fn of(&self, provider: &str) -> u128 {
        self.by_provider.get(provider).copied().unwrap_or(0)
    }
}

impl Cap {
    /// The share `provider` would hold if it also served this request (of
    /// size `amount`), when that is over the cap; None when within it.
    pub fn over(&self, shares: &Shares, provider: &str, amount: u128) -> Option<f64> {
        let mine = shares.of(provider).saturating_add(amount) as f64;
        let total = shares.total.saturating_add(amount) as f64;
        if total <= 0.0 {
            return None;
        }
        let share = mine / total;
        (share > self.max_share).then_some(share)
    }

    /// The amount one request adds under this cap's measure: 1 request, or its estimated cost.
    pub fn amount(&self, estimated_cost: u128) -> u128 {
        match self.of {
            Measure::Requests => 1,
            Measure::Spend => estimated_cost,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cap(max_share: f64, of: Measure) -> Cap {
        Cap {
            max_share,
            of,
            window_s: 60.0,
        }
    }

    #[test]
    fn an_empty_window_puts_every_provider_over_a_partial_cap() {
        let c = cap(0.5, Measure::Requests);
        assert_eq!(c.over(&Shares::default(), "a", 1), Some(1.0));
        assert_eq!(
            cap(1.0, Measure::Requests).over(&Shares::default(), "a", 1),
            None
        );
    }

    #[test]
    fn a_share_exactly_at_the_cap_is_within_it() {
        let mut s = Shares::default();
        s.add("a", 1);
        s.add("b", 1);
        s.add("b", 1);
        let c = cap(0.5, Measure::Requests);
        // a: 2 of 4 after this request.
        assert_eq!(c.over(&s, "a", 1), None);
        // b: 3 of 4.
        assert_eq!(c.over(&s, "b", 1), Some(0.75));
    }

    #[test]
    fn spend_caps_weigh_each_request_by_its_cost() {
        let mut s = Shares::default();
        s.add("cheap", 10);
        s.add("dear", 90);
        let c = cap(0.5, Measure::Spend);
        assert_eq!(c.amount(40), 40);
        assert_eq!(cap(0.5, Measure::Requests).amount(40), 1);
        // cheap: 50 of 140 after a 40-unit request.
        assert_eq!(c.over(&s, "cheap", 40), None);
        // dear: 130 of 140.
        assert!(c.over(&s, "dear", 40).is_some());
    }

    #[test]
    fn alternating_two_providers_under_a_half_cap_never_exceeds_it_at_even_counts() {
        // The gateway's loop in miniature: the cheaper provider goes first
        // unless it is over the cap and the other is not.
        let c = cap(0.5, Measure::Requests);
        let mut s = Shares::default();
        for n in 1..=200u32 {
            let cheap_over = c.over(&s, "cheap", 1).is_some();
            let dear_over = c.over(&s, "dear", 1).is_some();
            let pick = if cheap_over && !dear_over {
                "dear"
            } else {
                "cheap"
            };
            s.add(pick, 1);
            if n % 2 == 0 {
                assert!(s.of("cheap") * 2 <= s.total, "after {n}: {s:?}");
            }
        }
        assert_eq!(s.of("cheap"), 100);
    }
}
