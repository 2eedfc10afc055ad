//! Rate limits shared by every gateway through Redis: the counters of both
//! one-minute windows live in Redis, and one Lua script reads them, decides
//! and counts, atomically, so requests spread over any number of gateways
//! never pass an account's limit in total. Redis's clock decides the minute,
//! so the gateways' clocks need not agree.
//!
//! When Redis does not answer, requests are refused with a 503 rather than
//! admitted uncounted: a limit that holds only while Redis is up is no limit.

use std::time::Duration;

use redis::aio::ConnectionManager;
use redis::Script;

use super::{admitted, judge, Exceeded, RateStatus};
use crate::config::AccountConfig;

/// How long one counter call may take before the request is refused.
const CALL_TIMEOUT: Duration = Duration::from_secs(2);
/// Counters outlive their minute by the next one, which still weighs them.
const KEEP_MS: u64 = 180_000;

/// Reads both windows, admits when neither limit is spent (the same arithmetic
/// as `limits::weighted`), and counts the request if admitted.
/// KEYS[1]: the account's key prefix. ARGV: requests/min, tokens/min (0 = none), keep ms.
/// Returns {admitted, used requests, used tokens, now ms}.
const ADMIT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local minute = math.floor(now / 60000)
local cur = KEYS[1] .. ':' .. minute
local prev = KEYS[1] .. ':' .. (minute - 1)
local c = redis.call('HMGET', cur, 'r', 't')
local p = redis.call('HMGET', prev, 'r', 't')
local into = (now % 60000) / 60000
local used_r = (tonumber(c[1]) or 0) + math.ceil((tonumber(p[1]) or 0) * (1 - into))
local used_t = (tonumber(c[2]) or 0) + math.ceil((tonumber(p[2]) or 0) * (1 - into))
local rpm, tpm = tonumber(ARGV[1]), tonumber(ARGV[2])
local ok = (rpm == 0 or used_r < rpm) and (tpm == 0 or used_t < tpm)
if ok then
  redis.call('HINCRBY', cur, 'r', 1)
  redis.call('PEXPIRE', cur, ARGV[3])
end
return {ok and 1 or 0, used_r, used_t, now}
";

/// Adds tokens to the current minute. KEYS[1]: prefix. ARGV: tokens, keep ms.
const CHARGE: &str = r"
local t = redis.call('TIME')
local minute = math.floor((tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)) / 60000)
local cur = KEYS[1] .. ':' .. minute
redis.call('HINCRBY', cur, 't', ARGV[1])
redis.call('PEXPIRE', cur, ARGV[2])
return 1
";

/// Why a shared limit could not be checked.
#[derive(Debug, thiserror::Error)]
#[error("rate-limit counters unavailable: {0}")]
pub struct Unavailable(pub String);

/// Rate counters in Redis, shared by every gateway pointed at it.
pub struct SharedLimiter {
    conn: ConnectionManager,
    prefix: String,
    admit: Script,
    charge: Script,
}

impl SharedLimiter {
    /// Connects to `url` (`redis://host:port/db`); keys start with `prefix`.
    pub async fn connect(url: &str, prefix: &str) -> Result<Self, Unavailable> {
        let client = redis::Client::open(url).map_err(|e| Unavailable(e.to_string()))?;
        let conn = tokio::time::timeout(CALL_TIMEOUT, ConnectionManager::new(client))
            .await
            .map_err(|_| Unavailable(format!("{url} did not answer")))?
            .map_err(|e| Unavailable(e.to_string()))?;
        Ok(Self {
            conn,
            prefix: prefix.to_owned(),
            admit: Script::new(ADMIT),
            charge: Script::new(CHARGE),
        })
    }

    fn key(&self, account: &str) -> String {
        format!("{}rl:{account}", self.prefix)
    }

    /// Counts one request against the account's limits, or refuses it.
    pub async fn admit(
        &self,
        account: &AccountConfig,
    ) -> Result<Result<RateStatus, (Exceeded, RateStatus)>, Unavailable> {
        if account.requests_per_min.is_none() && account.tokens_per_min.is_none() {
            return Ok(Ok(RateStatus::default()));
        }
        let mut conn = self.conn.clone();
        let mut invocation = self.admit.key(self.key(&account.id));
        invocation
            .arg(account.requests_per_min.unwrap_or(0))
            .arg(account.tokens_per_min.unwrap_or(0))
            .arg(KEEP_MS);
        let call = invocation.invoke_async::<(u8, u64, u64, u64)>(&mut conn);
        let (ok, used_requests, used_tokens, now_ms) = tokio::time::timeout(CALL_TIMEOUT, call)
            .await
            .map_err(|_| Unavailable("Redis did not answer in time".into()))?
            .map_err(|e| Unavailable(e.to_string()))?;
        let verdict = judge(account, now_ms, used_requests, used_tokens);
        Ok(match (ok == 1, verdict) {
            (true, Ok(status)) => Ok(admitted(status)),
            (false, Err(refused)) => Err(refused),
            // The script decides; the arithmetic only words the answer.
            (true, Err((_, status))) => Ok(status),
            (false, Ok(status)) => Err((
                Exceeded::Requests {
                    limit: status.requests.map_or(0, |s| s.limit),
                    retry_after_s: status.requests.map_or(1, |s| s.reset_s),
                },
                status,
            )),
        })
    }

    /// Charges tokens a finished request used (logged, not raised, on failure:
    /// the request has been served).
    pub async fn charge_tokens(&self, account: &str, tokens: u64) {
        let mut conn = self.conn.clone();
        let mut invocation = self.charge.key(self.key(account));
        invocation.arg(tokens).arg(KEEP_MS);
        let call = invocation.invoke_async::<u8>(&mut conn);
        match tokio::time::timeout(CALL_TIMEOUT, call).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::warn!(account, "charging tokens in Redis failed: {e}"),
            Err(_) => tracing::warn!(account, "charging tokens in Redis timed out"),
        }
    }
}
