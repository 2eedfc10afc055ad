//! Per-account request and token rate limits.
//!
//! A sliding window approximated from two fixed one-minute windows (the
//! previous minute's count, weighted by how much of it still overlaps the last
//! 60 s, plus this minute's). Time is passed in, so the arithmetic is tested
//! without waiting. The counters live in this process ([`Limiter`]) or, when
//! several gateways share an account's limits, in Redis ([`redis::SharedLimiter`]),
//! which counts with the same arithmetic in one atomic script.

pub mod redis;

use dashmap::DashMap;

use crate::config::AccountConfig;

const WINDOW_MS: u64 = 60_000;

/// What the last 60 s used: this minute's count plus the overlapping part of the previous one.
fn weighted(now_ms: u64, current: u64, previous: u64) -> u64 {
    let into = (now_ms % WINDOW_MS) as f64 / WINDOW_MS as f64;
    current + (previous as f64 * (1.0 - into)).ceil() as u64
}

/// The standing of both limits given what the window used, and the refusal if either is spent.
fn judge(
    account: &AccountConfig,
    now_ms: u64,
    used_requests: u64,
    used_tokens: u64,
) -> Result<RateStatus, (Exceeded, RateStatus)> {
    let reset_s = (WINDOW_MS - now_ms % WINDOW_MS).div_ceil(1000).max(1);
    let status = RateStatus {
        requests: account.requests_per_min.map(|l| Standing {
            limit: l.into(),
            remaining: u64::from(l).saturating_sub(used_requests),
            reset_s,
        }),
        tokens: account.tokens_per_min.map(|l| Standing {
            limit: l,
            remaining: l.saturating_sub(used_tokens),
            reset_s,
        }),
    };
    if let Some(s) = status.requests.filter(|s| s.remaining == 0) {
        return Err((
            Exceeded::Requests {
                limit: s.limit,
                retry_after_s: reset_s,
            },
            status,
        ));
    }
    if let Some(s) = status.tokens.filter(|s| s.remaining == 0) {
        return Err((
            Exceeded::Tokens {
                limit: s.limit,
                retry_after_s: reset_s,
            },
            status,
        ));
    }
    Ok(status)
}

/// Counts this request in an admitted standing.
fn admitted(mut status: RateStatus) -> RateStatus {
    if let Some(s) = status.requests.as_mut() {
        s.remaining -= 1;
    }
    status
}

#[derive(Clone, Copy, Debug, Default)]
struct Window {
    minute: u64,
    requests: u64,
    prev_requests: u64,
    tokens: u64,
    prev_tokens: u64,
}

impl Window {
    fn roll(&mut self, now_ms: u64) {
        let minute = now_ms / WINDOW_MS;
        if minute == self.minute {
            return;
        }
        let adjacent = minute == self.minute + 1;
        self.prev_requests = if adjacent { self.requests } else { 0 };
        self.prev_tokens = if adjacent { self.tokens } else { 0 };
        self.requests = 0;
        self.tokens = 0;
        self.minute = minute;
    }
}

/// One limit's standing, as the `x-ratelimit-*` headers tell it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Standing {
    /// The limit per minute.
    pub limit: u64,
    /// What is left of it now.
    pub remaining: u64,
    /// Seconds until the current minute rolls over.
    pub reset_s: u64,
}

/// Both limits' standing for one account (None where the account has no such limit).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RateStatus {
    /// Requests per minute.
    pub requests: Option<Standing>,
    /// Tokens per minute.
    pub tokens: Option<Standing>,
}

/// Which limit refused a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exceeded {
    /// Requests per minute.
    Requests {
        /// The limit.
        limit: u64,
        /// Seconds to wait.
        retry_after_s: u64,
    },
    /// Tokens per minute.
    Tokens {
        /// The limit.
        limit: u64,
        /// Seconds to wait.
        retry_after_s: u64,
    },
}

/// Where the counters live: in this process, or in Redis for several gateways.
pub enum RateLimits {
    /// This gateway alone.
    Local(Limiter),
    /// Every gateway sharing the Redis.
    Shared(redis::SharedLimiter),
}

impl RateLimits {
    /// Counts one request against the account's limits, or refuses it; Err
    /// when shared counters cannot be reached.
    pub async fn admit(
        &self,
        account: &AccountConfig,
        now_ms: u64,
    ) -> Result<Result<RateStatus, (Exceeded, RateStatus)>, redis::Unavailable> {
        match self {
            RateLimits::Local(l) => Ok(l.admit(account, now_ms)),
            RateLimits::Shared(s) => s.admit(account).await,
        }
    }

    /// Charges tokens a finished request used.
    pub async fn charge_tokens(&self, account: &str, tokens: u64, now_ms: u64) {
        match self {
            RateLimits::Local(l) => l.charge_tokens(account, tokens, now_ms),
            RateLimits::Shared(s) => s.charge_tokens(account, tokens).await,
        }
    }
}

/// Rate counters of every account, shared by all requests and kept across reloads.
#[derive(Default)]
pub struct Limiter {
    windows: DashMap<String, Window>,
}

impl Limiter {
    /// Counts one request against the account's limits, or refuses it.
    pub fn admit(
        &self,
        account: &AccountConfig,
        now_ms: u64,
    ) -> Result<RateStatus, (Exceeded, RateStatus)> {
        if account.requests_per_min.is_none() && account.tokens_per_min.is_none() {
            return Ok(RateStatus::default());
        }
        let mut w = self.windows.entry(account.id.clone()).or_default();
        w.roll(now_ms);
        let used_requests = weighted(now_ms, w.requests, w.prev_requests);
        let used_tokens = weighted(now_ms, w.tokens, w.prev_tokens);
        let status = judge(account, now_ms, used_requests, used_tokens)?;
        w.requests += 1;
        Ok(admitted(status))
    }

    /// Charges tokens a finished request used.
    pub fn charge_tokens(&self, account: &str, tokens: u64, now_ms: u64) {
        if let Some(mut w) = self.windows.get_mut(account) {
            w.roll(now_ms);
            w.tokens += tokens;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn account(rpm: Option<u32>, tpm: Option<u64>) -> AccountConfig {
        AccountConfig {
            id: "a".into(),
            requests_per_min: rpm,
            tokens_per_min: tpm,
            budget: None,
            payer: None,
        }
    }

    #[test]
    fn requests_per_minute_refuse_the_next_and_say_when_to_retry() {
        let l = Limiter::default();
        let a = account(Some(3), None);
        let t = 10 * WINDOW_MS + 15_000;
        for left in [2, 1, 0] {
            assert_eq!(l.admit(&a, t).unwrap().requests.unwrap().remaining, left);
        }
        let (ex, status) = l.admit(&a, t).unwrap_err();
        assert_eq!(
            ex,
            Exceeded::Requests {
                limit: 3,
                retry_after_s: 45
            }
        );
        assert_eq!(status.requests.unwrap().remaining, 0);
    }

    #[test]
    fn previous_minute_decays_across_the_boundary() {
        let l = Limiter::default();
        let a = account(Some(4), None);
        let t = 10 * WINDOW_MS + 59_000;
        for _ in 0..4 {
            l.admit(&a, t).unwrap();
        }
        // Just after the boundary almost all of the last minute still counts.
        assert!(l.admit(&a, 11 * WINDOW_MS + 1_000).is_err());
        // Three quarters in, a quarter of it (1 request) counts.
        assert_eq!(
            l.admit(&a, 11 * WINDOW_MS + 45_000)
                .unwrap()
                .requests
                .unwrap()
                .remaining,
            2
        );
        // Two minutes on, nothing does.
        assert_eq!(
            l.admit(&a, 13 * WINDOW_MS)
                .unwrap()
                .requests
                .unwrap()
                .remaining,
            3
        );
    }

    #[test]
    fn tokens_per_minute_refuse_once_spent() {
        let l = Limiter::default();
        let a = account(None, Some(100));
        let t = 5 * WINDOW_MS;
        assert_eq!(l.admit(&a, t).unwrap().tokens.unwrap().remaining, 100);
        l.charge_tokens("a", 60, t);
        assert_eq!(l.admit(&a, t).unwrap().tokens.unwrap().remaining, 40);
        l.charge_tokens("a", 40, t);
        assert!(matches!(
            l.admit(&a, t),
            Err((Exceeded::Tokens { limit: 100, .. }, _))
        ));
    }

    #[test]
    fn unlimited_accounts_are_not_tracked() {
        let l = Limiter::default();
        assert_eq!(
            l.admit(&account(None, None), 0).unwrap(),
            RateStatus::default()
        );
        assert!(l.windows.is_empty());
    }
}
