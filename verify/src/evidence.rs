//! What a failed audit leaves behind: everything a third party needs to
//! re-run the audit, under a hash that a slash on chain names.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::claim::Claim;
use crate::stats::{Position, Verdict};

/// Format version of [`Evidence`].
/// Version 2 added [`Evidence::earlier`].
pub const VERSION: u32 = 2;

/// The evidence of one failed (or any) audit.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Evidence {
    /// [`VERSION`].
    pub version: u32,
    /// The gateway's id for the node.
    pub node: String,
    /// The node's signing address, where known.
    pub signer: Option<String>,
    /// The address paid for the node's work, where known.
    pub provider: Option<String>,
    /// The GGUF file the node claims to serve, by sha256; the reference was loaded from it.
    pub model_sha256: String,
    /// The gateway's request id.
    pub request_id: String,
    /// The request and what the node answered.
    pub claim: Claim,
    /// The node's signed attestation of that answer, as it sent it.
    pub attestation: Option<serde_json::Value>,
    /// The verdict.
    pub verdict: Verdict,
    /// The per-token measures behind it.
    pub positions: Vec<Position>,
    /// When the audit finished (unix ms).
    pub audited_at_ms: u64,
    /// The node's earlier audits that the pooled test counted, when it is
    /// the pooled test that failed the node (oldest first).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub earlier: Vec<Earlier>,
}

/// An earlier audit of the same node, as pooled evidence.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Earlier {
    /// The gateway's request id.
    pub request_id: String,
    /// The request and what the node answered.
    pub claim: Claim,
    /// The node's signed attestation of that answer.
    pub attestation: Option<serde_json::Value>,
    /// That audit's own verdict.
    pub verdict: Verdict,
    /// Its per-token measures.
    pub positions: Vec<Position>,
    /// When it was audited (unix ms).
    pub audited_at_ms: u64,
}

impl Evidence {
    /// The bundle as stored: its hash is over exactly these bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec_pretty(self).unwrap_or_default()
    }

    /// sha256 of the stored bytes, the evidence hash a slash names.
    pub fn hash(bytes: &[u8]) -> [u8; 32] {
        Sha256::digest(bytes).into()
    }

    /// [`Evidence::hash`] as 0x-prefixed hex.
    pub fn hash_hex(bytes: &[u8]) -> String {
        format!("0x{}", hex::encode(Self::hash(bytes)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::{judge, Mode, Thresholds};
    use serde_json::json;

    #[test]
    fn the_hash_is_over_the_stored_bytes_and_round_trips() {
        let positions = vec![Position {
            claimed: 1,
            ref_logprob: -9.0,
            ref_best: 2,
            ref_best_logprob: -0.1,
            replayed: None,
            reported_logprob: Some(-0.1),
        }];
        let e = Evidence {
            version: VERSION,
            node: "n1".into(),
            signer: Some("0xabc".into()),
            provider: None,
            model_sha256: "ff".into(),
            request_id: "chatcmpl-1".into(),
            claim: Claim {
                request: json!({"model": "m"}),
                text: "x".into(),
                finish_reason: None,
                logprobs: None,
            },
            attestation: None,
            verdict: judge(&positions, Mode::Greedy, &Thresholds::default()),
            positions,
            audited_at_ms: 1,
            earlier: Vec::new(),
        };
        let bytes = e.to_bytes();
        let back: Evidence = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(back, e);
        let h = Evidence::hash_hex(&bytes);
        assert_eq!(h.len(), 66);
        assert_eq!(h, format!("0x{}", hex::encode(Sha256::digest(&bytes))));
        assert_ne!(Evidence::hash(&bytes), Evidence::hash(b"other"));
    }
}
