//! The receipt: what one request cost and who served it.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// How a request ended, as far as billing is concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The whole response reached the client.
    Completed,
    /// The node failed after the first byte; the client got part of the answer.
    Interrupted,
    /// The client went away mid-stream; billed for what was delivered.
    Cancelled,
}

/// Where the token counts came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UsageSource {
    /// The node reported usage.
    Upstream,
    /// The node reported none; the gateway counted.
    Gateway,
}

/// One served request, priced. Amounts are atto-units (1e-18) of the fee token,
/// written as decimal strings because JSON numbers cannot hold a u128 exactly.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipt {
    /// The gateway's request id (also the `x-request-id` header).
    pub request_id: String,
    /// The paying account.
    pub account: String,
    /// The paying account's on-chain address (0x hex); empty when the
    /// gateway settles nowhere.
    #[serde(default)]
    pub payer: String,
    /// The node that served the request.
    pub node: String,
    /// The address paid for the node's work (0x hex); empty when the gateway
    /// settles nowhere.
    #[serde(default)]
    pub provider: String,
    /// The model that served it.
    pub model: String,
    /// Prompt tokens billed.
    pub prompt_tokens: u64,
    /// Completion tokens billed.
    pub completion_tokens: u64,
    /// Input price per 1M tokens, atto-units.
    #[serde(with = "u128_string")]
    pub price_in_per_1m: u128,
    /// Output price per 1M tokens, atto-units.
    #[serde(with = "u128_string")]
    pub price_out_per_1m: u128,
    /// Total fee, atto-units.
    #[serde(with = "u128_string")]
    pub amount: u128,
    /// sha256 (hex) of the bytes the client received.
    pub response_hash: String,
    /// How the request ended.
    pub outcome: Outcome,
    /// Where the token counts came from.
    pub usage_source: UsageSource,
    /// Unix time in milliseconds when the request finished.
    pub finished_at_ms: u64,
}

impl Receipt {
    /// The fee for the given counts and per-1M prices, rounded down to the atto-unit.
    pub fn amount_for(prompt: u64, completion: u64, price_in: u128, price_out: u128) -> u128 {
        (u128::from(prompt) * price_in + u128::from(completion) * price_out) / 1_000_000
    }
}

/// Incremental sha256 over the bytes delivered to a client.
#[derive(Clone, Default)]
pub struct ResponseHasher(Sha256);

impl ResponseHasher {
    /// Adds delivered bytes.
    pub fn update(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
    /// The hex digest of everything added.
    pub fn finish(self) -> String {
        hex::encode(self.0.finalize())
    }
}

mod u128_string {
    use serde::{de::Error, Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &u128, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(v)
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u128, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(D::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn receipt() -> Receipt {
        Receipt {
            request_id: "req-1".into(),
            account: "acme".into(),
            payer: "0x0000000000000000000000000000000000000001".into(),
            node: "n1".into(),
            provider: "0x0000000000000000000000000000000000000002".into(),
            model: "m".into(),
            prompt_tokens: 10,
            completion_tokens: 20,
            price_in_per_1m: 150_000_000_000_000_000,
            price_out_per_1m: 600_000_000_000_000_000,
            amount: Receipt::amount_for(10, 20, 150_000_000_000_000_000, 600_000_000_000_000_000),
            response_hash: "00".into(),
            outcome: Outcome::Completed,
            usage_source: UsageSource::Upstream,
            finished_at_ms: 1,
        }
    }

    #[test]
    fn amount_is_exact_integer_arithmetic() {
        // 10 * 0.15/1M + 20 * 0.6/1M = 0.0000135 fee tokens
        assert_eq!(receipt().amount, 13_500_000_000_000);
        assert_eq!(Receipt::amount_for(0, 0, u128::MAX / 4, 1), 0);
        assert_eq!(Receipt::amount_for(1, 0, 999_999, 0), 0, "rounds down");
    }

    #[test]
    fn json_round_trip_keeps_u128_exact() {
        let mut r = receipt();
        r.amount = u128::MAX;
        let line = serde_json::to_string(&r).unwrap();
        assert!(line.contains(&format!("\"amount\":\"{}\"", u128::MAX)));
        let back: Receipt = serde_json::from_str(&line).unwrap();
        assert_eq!(back, r);
    }

    #[test]
    fn hasher_matches_one_shot_sha256() {
        let mut h = ResponseHasher::default();
        h.update(b"hello ");
        h.update(b"world");
        assert_eq!(h.finish(), hex::encode(Sha256::digest(b"hello world")));
    }
}
