//! Slashing a node's stake against the evidence of a failed audit.

use alloy::primitives::{keccak256, Address, B256, U256};

use crate::chain::{Chain, ChainError};

/// The registry's reason code for fraud (a failed audit); it also deactivates the node.
pub const REASON_FRAUD: u8 = 0;

/// The registry's arbiter role: who may slash.
pub fn arbiter_role() -> B256 {
    keccak256("ARBITER_ROLE")
}

/// What a slash did.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Slash {
    /// The stake was taken in this transaction.
    Slashed {
        /// The transaction.
        tx: B256,
        /// Atto-units taken.
        amount: U256,
    },
    /// This evidence already slashed the node (an earlier attempt landed).
    AlreadySlashed,
    /// The signer is not in the registry: nothing is staked to take.
    NotRegistered,
    /// The node's stake is already gone.
    NothingStaked,
}

/// Takes the whole stake of the node that signs with `signer`, for fraud,
/// naming `evidence` (the sha256 of the audit's evidence bundle). Safe to
/// repeat: the registry accepts each evidence hash once.
pub async fn fraud(chain: &Chain, signer: Address, evidence: B256) -> Result<Slash, ChainError> {
    let rpc = |e: alloy::contract::Error| ChainError::Rpc(e.to_string());
    let registry = chain.registry();
    if registry.evidenceUsed(evidence).call().await.map_err(rpc)? {
        return Ok(Slash::AlreadySlashed);
    }
    let node = registry.nodeOf(signer).call().await.map_err(rpc)?;
    if node.provider == Address::ZERO {
        return Ok(Slash::NotRegistered);
    }
    if node.stake.is_zero() {
        return Ok(Slash::NothingStaked);
    }
    let receipt = registry
        .slash(signer, node.stake, evidence, REASON_FRAUD)
        .send()
        .await
        .map_err(rpc)?
        .get_receipt()
        .await
        .map_err(|e| ChainError::Rpc(e.to_string()))?;
    if !receipt.status() {
        return Err(ChainError::Rpc("slash reverted".into()));
    }
    Ok(Slash::Slashed {
        tx: receipt.transaction_hash,
        amount: node.stake,
    })
}
