//! What a failed audit leaves behind: everything a third party needs to
//! re-run the audit, under a hash that a slash on chain names.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::claim::Claim;
use crate::position::Position;
use crate::stats::Verdict;

/// Format version of [`Evidence`].
/// Version 2 added [`Evidence::earlier`]; version 3 the signed bytes
/// ([`Evidence::signed`]), streams included; version 4 the rival test
/// (each position's rival log-probs, the verdict's rival count).
pub const VERSION: u32 = 4;

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
    /// The exact bytes the attestation signs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signed: Option<Signed>,
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
    /// The exact bytes the attestation signs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signed: Option<Signed>,
    /// That audit's own verdict.
    pub verdict: Verdict,
    /// Its per-token measures.
    pub positions: Vec<Position>,
    /// When it was audited (unix ms).
    pub audited_at_ms: u64,
}

/// The bytes a node's attestation signs: the request body it received and
/// what it answered (a whole body, or every stream event before the
/// attestation), so a third party can check the signature and read the
/// claim from them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signed {
    /// The request body, byte for byte.
    pub request: String,
    /// The answer, byte for byte.
    pub output: String,
}

/// Why signed evidence does not hold.
#[derive(Debug, thiserror::Error)]
pub enum EvidenceError {
    /// The bundle lacks the attestation, the signed bytes or the signer.
    #[error("no {0} in the evidence")]
    Missing(&'static str),
    /// The attestation is not one.
    #[error("attestation: {0}")]
    Malformed(String),
    /// The signature or the hashes do not hold.
    #[error("attestation: {0}")]
    Attestation(#[from] tollgate_protocol::AttestationError),
    /// The claim judged is not what the signed answer says.
    #[error("the claim's text is not the signed answer's")]
    ClaimMismatch,
}

impl Signed {
    /// The claim these bytes make (first choice), read as the gateway read
    /// it: a `chat.completion` body, or SSE chunks.
    pub fn claim(&self) -> Option<Claim> {
        let request: serde_json::Value = serde_json::from_str(&self.request).ok()?;
        if let Ok(body) = serde_json::from_str::<serde_json::Value>(&self.output) {
            return Claim::from_completion(request, &body);
        }
        let mut builder = crate::claim::ClaimBuilder::default();
        for event in self.output.split("\n\n") {
            let data = event.lines().find_map(|l| l.strip_prefix("data: "));
            if let Some(chunk) = data.and_then(|d| serde_json::from_str(d).ok()) {
                builder.push(&chunk);
            }
        }
        Some(builder.finish(request))
    }

    /// Checks that `signer` (a 0x address) attested to exactly these bytes.
    pub fn check(
        &self,
        attestation: &serde_json::Value,
        signer: &str,
    ) -> Result<(), EvidenceError> {
        let signer: tollgate_protocol::Address = signer
            .parse()
            .map_err(|e| EvidenceError::Malformed(format!("signer {signer:?}: {e}")))?;
        let attestation: tollgate_protocol::Attestation =
            serde_json::from_value(attestation.clone())
                .map_err(|e| EvidenceError::Malformed(e.to_string()))?;
        attestation.verify(
            signer,
            self.request.as_bytes(),
            &tollgate_protocol::hash(self.output.as_bytes()),
        )?;
        Ok(())
    }
}

/// One answer's chain of custody: signature, bytes, claim.
fn check_answer(
    signer: Option<&str>,
    attestation: Option<&serde_json::Value>,
    signed: Option<&Signed>,
    claim: &Claim,
) -> Result<(), EvidenceError> {
    let signed = signed.ok_or(EvidenceError::Missing("signed bytes"))?;
    let attestation = attestation.ok_or(EvidenceError::Missing("attestation"))?;
    signed.check(attestation, signer.ok_or(EvidenceError::Missing("signer"))?)?;
    match signed.claim() {
        Some(c) if c.text == claim.text => Ok(()),
        _ => Err(EvidenceError::ClaimMismatch),
    }
}

impl Evidence {
    /// Checks the bundle's chain of custody, for the failed answer and for
    /// every earlier one it pools: the node's key signed these bytes, and
    /// each claim that was judged is what they say. Returns how many
    /// answers it checked.
    pub fn check_signed(&self) -> Result<usize, EvidenceError> {
        let signer = self.signer.as_deref();
        check_answer(
            signer,
            self.attestation.as_ref(),
            self.signed.as_ref(),
            &self.claim,
        )?;
        for e in &self.earlier {
            check_answer(signer, e.attestation.as_ref(), e.signed.as_ref(), &e.claim)?;
        }
        Ok(1 + self.earlier.len())
    }

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
            other_split: false,
            reported_top: Vec::new(),
            ref_top: Vec::new(),
            paired: Vec::new(),
            unpaired: 0,
            rival: Vec::new(),
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
            signed: None,
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

    fn signed_evidence(signed: Signed, attestation: serde_json::Value, signer: String) -> Evidence {
        let claim = signed.claim().unwrap();
        Evidence {
            version: VERSION,
            node: "n1".into(),
            signer: Some(signer),
            provider: None,
            model_sha256: "ff".into(),
            request_id: "chatcmpl-1".into(),
            claim,
            attestation: Some(attestation),
            signed: Some(signed),
            verdict: judge(&[], Mode::Greedy, &Thresholds::default()),
            positions: Vec::new(),
            audited_at_ms: 1,
            earlier: Vec::new(),
        }
    }

    #[test]
    fn signed_whole_and_streamed_answers_check_and_every_tamper_fails() {
        use tollgate_protocol::{hash, Identity};
        let node = Identity::random();
        let request = r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#;
        let whole = r#"{"choices":[{"index":0,"message":{"role":"assistant","content":"Hello there"},"finish_reason":"stop"}]}"#;
        let stream = concat!(
            "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hello\"}}]}\n\n",
            "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\" there\"},\"finish_reason\":\"stop\"}]}\n\n",
        );
        for output in [whole, stream] {
            let att = node.attest(request.as_bytes(), &hash(output.as_bytes()), 5, 2);
            let signed = Signed {
                request: request.into(),
                output: output.into(),
            };
            assert_eq!(signed.claim().unwrap().text, "Hello there");
            let e = signed_evidence(
                signed.clone(),
                serde_json::to_value(&att).unwrap(),
                node.address().to_string(),
            );
            e.check_signed().unwrap();
            let back: Evidence = serde_json::from_slice(&e.to_bytes()).unwrap();
            back.check_signed().unwrap();

            let mut forged = e.clone();
            forged.signed.as_mut().unwrap().output = output.replace("there", "where");
            assert!(matches!(
                forged.check_signed(),
                Err(EvidenceError::Attestation(_))
            ));
            let mut other_request = e.clone();
            other_request.signed.as_mut().unwrap().request = request.replace("hi", "ho");
            assert!(matches!(
                other_request.check_signed(),
                Err(EvidenceError::Attestation(_))
            ));
            let mut other_signer = e.clone();
            other_signer.signer = Some(Identity::random().address().to_string());
            assert!(matches!(
                other_signer.check_signed(),
                Err(EvidenceError::Attestation(_))
            ));
            let mut other_claim = e.clone();
            other_claim.claim.text = "Hello where".into();
            assert!(matches!(
                other_claim.check_signed(),
                Err(EvidenceError::ClaimMismatch)
            ));
            let mut unsigned = e.clone();
            unsigned.signed = None;
            assert!(matches!(
                unsigned.check_signed(),
                Err(EvidenceError::Missing(_))
            ));
        }
    }
}
