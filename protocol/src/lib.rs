//! The node protocol: what a `tollgate-node` says about itself, the
//! signature it puts on every answer, and the binary stage protocol of
//! pipelines ([`stage`]).
//!
//! A node signs (request hash, output hash, token counts) with its secp256k1
//! key, so a provider cannot later deny what it returned or what it billed.
//! The signature is EIP-191 over a fixed-layout digest, so a contract can
//! check it with `ecrecover` when evidence is used to slash a stake.

mod identity;
mod info;
pub mod stage;

pub use alloy_primitives::Address;
pub use identity::{Identity, IdentityError};
pub use info::{Hardware, NodeInfo};

use alloy_primitives::{keccak256, Signature, B256};
use serde::{Deserialize, Serialize};

/// Header carrying a whole answer's [`Attestation`] as JSON.
pub const ATTESTATION_HEADER: &str = "x-tollgate-attestation";
/// Prefix of the SSE comment that carries a stream's attestation (before `[DONE]`).
pub const ATTESTATION_COMMENT: &[u8] = b": tollgate-attestation ";
/// Domain tag of the signed digest.
const DOMAIN: &[u8] = b"tollgate-attestation-v1";

/// What a node signs about one answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attestation {
    /// keccak256 of the request body bytes the node received.
    pub request_hash: B256,
    /// keccak256 of the answer bytes it sent (a stream: every byte before the attestation).
    pub output_hash: B256,
    /// Prompt tokens it billed.
    pub prompt_tokens: u64,
    /// Completion tokens it billed.
    pub completion_tokens: u64,
    /// 65-byte EIP-191 signature over [`Attestation::digest`].
    pub signature: Signature,
}

/// Why an attestation does not hold.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AttestationError {
    /// The signature does not recover to the node's address.
    #[error("signed by {found}, expected {expected}")]
    WrongSigner {
        /// The node's address.
        expected: Address,
        /// Who signed.
        found: Address,
    },
    /// The signature is malformed.
    #[error("signature is malformed: {0}")]
    Malformed(String),
    /// It attests to other bytes than those received.
    #[error("attests to a different {0} than was exchanged")]
    HashMismatch(&'static str),
}

impl Attestation {
    /// The 32-byte digest that is signed.
    pub fn digest(
        request_hash: &B256,
        output_hash: &B256,
        prompt_tokens: u64,
        completion_tokens: u64,
    ) -> B256 {
        let mut buf = Vec::with_capacity(DOMAIN.len() + 80);
        buf.extend_from_slice(DOMAIN);
        buf.extend_from_slice(request_hash.as_slice());
        buf.extend_from_slice(output_hash.as_slice());
        buf.extend_from_slice(&prompt_tokens.to_be_bytes());
        buf.extend_from_slice(&completion_tokens.to_be_bytes());
        keccak256(&buf)
    }

    /// Checks that `signer` signed this attestation about exactly these bytes.
    pub fn verify(
        &self,
        signer: Address,
        request: &[u8],
        output_hash: &B256,
    ) -> Result<(), AttestationError> {
        if keccak256(request) != self.request_hash {
            return Err(AttestationError::HashMismatch("request"));
        }
        if *output_hash != self.output_hash {
            return Err(AttestationError::HashMismatch("output"));
        }
        let digest = Self::digest(
            &self.request_hash,
            &self.output_hash,
            self.prompt_tokens,
            self.completion_tokens,
        );
        let found = self
            .signature
            .recover_address_from_msg(digest.as_slice())
            .map_err(|e| AttestationError::Malformed(e.to_string()))?;
        if found != signer {
            return Err(AttestationError::WrongSigner {
                expected: signer,
                found,
            });
        }
        Ok(())
    }
}

/// keccak256 of some bytes (request and output hashes).
pub fn hash(bytes: &[u8]) -> B256 {
    keccak256(bytes)
}

/// Incremental keccak256 over a stream's bytes.
pub use alloy_primitives::Keccak256 as StreamHasher;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_verify_and_every_tamper_is_caught() {
        let id = Identity::random();
        let request = br#"{"model":"m","messages":[]}"#;
        let output = b"answer";
        let att = id.attest(request, &hash(output), 12, 34);
        att.verify(id.address(), request, &hash(output)).unwrap();

        let other = Identity::random();
        assert!(matches!(
            att.verify(other.address(), request, &hash(output)),
            Err(AttestationError::WrongSigner { .. })
        ));
        assert_eq!(
            att.verify(id.address(), b"other", &hash(output)),
            Err(AttestationError::HashMismatch("request"))
        );
        assert_eq!(
            att.verify(id.address(), request, &hash(b"x")),
            Err(AttestationError::HashMismatch("output"))
        );
        let mut inflated = att.clone();
        inflated.completion_tokens += 1;
        assert!(matches!(
            inflated.verify(id.address(), request, &hash(output)),
            Err(AttestationError::WrongSigner { .. })
        ));
        let forged = other.attest(request, &hash(output), 12, 34);
        assert!(forged.verify(id.address(), request, &hash(output)).is_err());
    }

    #[test]
    fn attestation_round_trips_as_json() {
        let id = Identity::random();
        let att = id.attest(b"r", &hash(b"o"), 1, 2);
        let text = serde_json::to_string(&att).unwrap();
        let back: Attestation = serde_json::from_str(&text).unwrap();
        assert_eq!(back, att);
        back.verify(id.address(), b"r", &hash(b"o")).unwrap();
    }

    #[test]
    fn stream_hasher_equals_one_shot() {
        let mut h = StreamHasher::new();
        h.update(b"ab");
        h.update(b"c");
        assert_eq!(h.finalize(), hash(b"abc"));
    }
}
