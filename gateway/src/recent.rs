//! The gateway's recent past, for policies that look back: each account's
//! usage per provider (concentration caps) and each node's request outcomes
//! (SLAs), per routing policy, over sliding windows held in memory.
//!
//! Both are bounded: entries older than [`KEEP`] are dropped, and so is the
//! oldest once a key holds [`MAX_PER_KEY`], so a flood cannot grow memory.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Serialize;
use tollgate_policies::cap::Shares;
use tollgate_policies::{History, Measure, Outcome};

use crate::app::now_ms;

/// (policy, account) or (policy, node).
type Key = (String, String);

/// The longest window any policy can look back over.
pub const KEEP: Duration = Duration::from_secs(24 * 3600);
/// The most entries kept per account or node.
pub const MAX_PER_KEY: usize = 50_000;

struct Use {
    at: Instant,
    provider: String,
    amount: u128,
}

/// One measured request to a node, with when it finished.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Measured {
    /// Unix ms when the gateway measured it.
    pub at_ms: u64,
    /// What was measured.
    #[serde(flatten)]
    pub outcome: Outcome,
    #[serde(skip)]
    at: Instant,
}

/// Recent usage and outcomes; the gateway's [`History`].
#[derive(Default)]
pub struct Recent {
    uses: Mutex<HashMap<Key, VecDeque<Use>>>,
    outcomes: Mutex<HashMap<Key, VecDeque<Measured>>>,
}

impl Recent {
    /// Records that `provider` served `account` a request routed by `policy`, billed `amount` atto-units.
    pub fn record_use(&self, policy: &str, account: &str, provider: &str, amount: u128) {
        let now = Instant::now();
        let mut uses = self.uses.lock().unwrap_or_else(|p| p.into_inner());
        let q = uses
            .entry((policy.to_owned(), account.to_owned()))
            .or_default();
        push_bounded(
            q,
            |u| u.at,
            now,
            Use {
                at: now,
                provider: provider.to_owned(),
                amount,
            },
        );
    }

    /// Records the outcome of a request `policy` routed to `node`.
    pub fn record_outcome(&self, policy: &str, node: &str, outcome: Outcome) {
        let now = Instant::now();
        let mut all = self.outcomes.lock().unwrap_or_else(|p| p.into_inner());
        let q = all.entry((policy.to_owned(), node.to_owned())).or_default();
        push_bounded(
            q,
            |m| m.at,
            now,
            Measured {
                at_ms: now_ms(),
                outcome,
                at: now,
            },
        );
    }

    /// The measured requests `policy` routed to `node` over the last `window_s` seconds, oldest first.
    pub fn measured(&self, policy: &str, node: &str, window_s: f64) -> Vec<Measured> {
        let since = since(window_s);
        let all = self.outcomes.lock().unwrap_or_else(|p| p.into_inner());
        all.get(&(policy.to_owned(), node.to_owned()))
            .map(|q| {
                q.iter()
                    .filter(|m| since.is_none_or(|s| m.at >= s))
                    .copied()
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl History for Recent {
    fn shares(&self, account: &str, policy: &str, of: Measure, window_s: f64) -> Shares {
        let since = since(window_s);
        let uses = self.uses.lock().unwrap_or_else(|p| p.into_inner());
        let mut shares = Shares::default();
        let key = (policy.to_owned(), account.to_owned());
        for u in uses.get(&key).into_iter().flatten() {
            if since.is_none_or(|s| u.at >= s) {
                let amount = match of {
                    Measure::Requests => 1,
                    Measure::Spend => u.amount,
                };
                shares.add(&u.provider, amount);
            }
        }
        shares
    }

    fn outcomes(&self, policy: &str, node: &str, window_s: f64) -> Vec<Outcome> {
        self.measured(policy, node, window_s)
            .into_iter()
            .map(|m| m.outcome)
            .collect()
    }
}

/// The start of a window ending now; None when it reaches before the process started.
fn since(window_s: f64) -> Option<Instant> {
    let window = Duration::try_from_secs_f64(window_s.max(0.0)).unwrap_or(KEEP);
    Instant::now().checked_sub(window.min(KEEP))
}

fn push_bounded<T>(q: &mut VecDeque<T>, at: impl Fn(&T) -> Instant, now: Instant, item: T) {
    while q.front().is_some_and(|x| now.duration_since(at(x)) > KEEP) || q.len() >= MAX_PER_KEY {
        q.pop_front();
    }
    q.push_back(item);
}

#[cfg(test)]
mod tests {
    use super::*;

    const FAILED: Outcome = Outcome {
        ok: false,
        ttft_ms: None,
        tokens_per_s: None,
    };

    #[test]
    fn shares_count_requests_or_spend_per_provider_for_one_account_and_policy() {
        let r = Recent::default();
        r.record_use("p", "acme", "0xa", 10);
        r.record_use("p", "acme", "0xb", 30);
        r.record_use("p", "acme", "0xa", 5);
        r.record_use("p", "globex", "0xa", 100);
        r.record_use("other-policy", "acme", "0xb", 1000);
        let n = r.shares("acme", "p", Measure::Requests, 60.0);
        assert_eq!((n.total, n.of("0xa"), n.of("0xb")), (3, 2, 1));
        let s = r.shares("acme", "p", Measure::Spend, 60.0);
        assert_eq!((s.total, s.of("0xa"), s.of("0xb")), (45, 15, 30));
        let none = r.shares("nobody", "p", Measure::Requests, 60.0);
        assert_eq!(none, Shares::default());
    }

    #[test]
    fn a_window_drops_what_is_older_than_it() {
        let r = Recent::default();
        r.record_outcome("p", "n", FAILED);
        std::thread::sleep(Duration::from_millis(400));
        let ok = Outcome { ok: true, ..FAILED };
        r.record_outcome("p", "n", ok);
        assert_eq!(r.outcomes("p", "n", 60.0).len(), 2);
        // 0.2 s reaches back past the second outcome, not the first.
        let recent = r.outcomes("p", "n", 0.2);
        assert_eq!(recent.len(), 1);
        assert!(recent[0].ok);
        assert!(r.outcomes("another-policy", "n", 60.0).is_empty());
    }

    #[test]
    fn a_key_never_holds_more_than_the_bound() {
        let r = Recent::default();
        for _ in 0..MAX_PER_KEY + 10 {
            r.record_use("p", "acme", "0xa", 1);
        }
        let total = r.shares("acme", "p", Measure::Requests, 60.0).total;
        assert_eq!(total, MAX_PER_KEY as u128);
    }
}
