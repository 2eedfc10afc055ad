//! Service-level agreements: what a policy promises on behalf of the nodes it
//! routes to, and the verdict on a node's recent requests.
//!
//! Each request either keeps every promise (it succeeded, its first token came
//! within `max_ttft_ms`, it decoded at `min_tokens_per_s` or faster) or breaks
//! one. A node whose kept share over the window falls below `min_kept_share`
//! is in breach and ranked after nodes that are not; below `slash.below` the
//! gateway files an SLA slash against its stake.

use serde::{Deserialize, Serialize};

use crate::price::Price;

/// A policy's promise for every node it routes to.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sla {
    /// Highest time to first token a streamed request may take, in ms.
    #[serde(default)]
    pub max_ttft_ms: Option<f64>,
    /// Lowest decode speed a request may have, in tokens per second.
    #[serde(default)]
    pub min_tokens_per_s: Option<f64>,
    /// Share of requests that must keep every promise (a failed request keeps none).
    #[serde(default = "default_min_kept_share")]
    pub min_kept_share: f64,
    /// The window requests are judged over, in seconds.
    #[serde(default = "default_window_s")]
    pub window_s: f64,
    /// Fewer requests than this in the window give no verdict.
    #[serde(default = "default_min_requests")]
    pub min_requests: u32,
    /// When to file an SLA slash; None = never.
    #[serde(default)]
    pub slash: Option<SlaSlash>,
}

/// When and how much to slash a node that breaks its SLA badly.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlaSlash {
    /// Slash when the kept share falls below this (at most `min_kept_share`).
    pub below: f64,
    /// Fee-token units taken from the stake per slash.
    pub amount: Price,
}

fn default_min_kept_share() -> f64 {
    0.95
}

fn default_window_s() -> f64 {
    300.0
}

fn default_min_requests() -> u32 {
    10
}

/// What the gateway measured of one request to a node.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Outcome {
    /// Whether the node answered it whole.
    pub ok: bool,
    /// Time to first token, in ms (streamed answers only).
    pub ttft_ms: Option<f64>,
    /// Decode speed, tokens per second.
    pub tokens_per_s: Option<f64>,
}

/// How a node stands against an SLA over its window.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Standing {
    /// Requests in the window.
    pub requests: u32,
    /// Of those, how many kept every promise.
    pub kept: u32,
    /// Failed requests.
    pub failed: u32,
    /// Requests whose first token came too late.
    pub slow_first_token: u32,
    /// Requests that decoded too slowly.
    pub slow_decode: u32,
    /// Whether the kept share is below `min_kept_share` (with enough requests).
    pub in_breach: bool,
    /// Whether the kept share is below the slash threshold (with enough requests).
    pub slashable: bool,
}

impl Standing {
    /// Share of requests that kept every promise (1 with none).
    pub fn kept_share(&self) -> f64 {
        if self.requests == 0 {
            1.0
        } else {
            f64::from(self.kept) / f64::from(self.requests)
        }
    }
}

impl Sla {
    /// Whether one request kept every promise, and which it broke.
    fn judge_one(&self, o: &Outcome) -> (bool, bool, bool) {
        let late = matches!((self.max_ttft_ms, o.ttft_ms), (Some(max), Some(t)) if t > max);
        let slow =
            matches!((self.min_tokens_per_s, o.tokens_per_s), (Some(min), Some(r)) if r < min);
        (o.ok && !late && !slow, late, slow)
    }

    /// The node's standing over `outcomes` (the window's requests).
    pub fn judge(&self, outcomes: &[Outcome]) -> Standing {
        let mut s = Standing {
            requests: 0,
            kept: 0,
            failed: 0,
            slow_first_token: 0,
            slow_decode: 0,
            in_breach: false,
            slashable: false,
        };
        for o in outcomes {
            let (kept, late, slow) = self.judge_one(o);
            s.requests = s.requests.saturating_add(1);
            s.kept += u32::from(kept);
            s.failed += u32::from(!o.ok);
            s.slow_first_token += u32::from(late);
            s.slow_decode += u32::from(slow);
        }
        if s.requests >= self.min_requests.max(1) {
            let share = s.kept_share();
            s.in_breach = share < self.min_kept_share;
            s.slashable = self.slash.as_ref().is_some_and(|x| share < x.below);
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sla() -> Sla {
        Sla {
            max_ttft_ms: Some(500.0),
            min_tokens_per_s: Some(10.0),
            min_kept_share: 0.9,
            window_s: 60.0,
            min_requests: 4,
            slash: Some(SlaSlash {
                below: 0.5,
                amount: Price(5),
            }),
        }
    }

    const GOOD: Outcome = Outcome {
        ok: true,
        ttft_ms: Some(100.0),
        tokens_per_s: Some(30.0),
    };

    #[test]
    fn each_promise_is_judged_on_its_own_and_unmeasured_parts_pass() {
        let late = Outcome {
            ttft_ms: Some(900.0),
            ..GOOD
        };
        let slow = Outcome {
            tokens_per_s: Some(2.0),
            ..GOOD
        };
        let failed = Outcome { ok: false, ..GOOD };
        let whole = Outcome {
            ttft_ms: None,
            ..GOOD
        };
        let s = sla().judge(&[GOOD, late, slow, failed, whole]);
        assert_eq!(
            (
                s.requests,
                s.kept,
                s.slow_first_token,
                s.slow_decode,
                s.failed
            ),
            (5, 2, 1, 1, 1)
        );
        assert!(s.in_breach && s.slashable, "{s:?}");
    }

    #[test]
    fn too_few_requests_give_no_verdict() {
        let late = Outcome {
            ttft_ms: Some(900.0),
            ..GOOD
        };
        let s = sla().judge(&[late, late, late]);
        assert_eq!(s.kept, 0);
        assert!(!s.in_breach && !s.slashable);
        assert!(sla().judge(&[late; 4]).slashable);
    }

    #[test]
    fn breach_and_slash_have_their_own_thresholds() {
        let late = Outcome {
            ttft_ms: Some(900.0),
            ..GOOD
        };
        // 3 of 4 kept: 75% is under 90% (breach) but over 50% (no slash).
        let s = sla().judge(&[GOOD, GOOD, GOOD, late]);
        assert!(s.in_breach && !s.slashable);
        // 9 of 10 kept: exactly the promise.
        let mut ten = vec![GOOD; 9];
        ten.push(late);
        assert!(!sla().judge(&ten).in_breach);
        // Without a slash section nothing is slashable.
        let no_slash = Sla {
            slash: None,
            ..sla()
        };
        assert!(!no_slash.judge(&[late; 8]).slashable);
    }
}
