//! Slashing a node's stake against evidence: a failed audit (fraud) or the
//! measurements of a broken SLA.

use alloy::primitives::{keccak256, Address, B256, U256};

use crate::chain::{Chain, ChainError};

/// The registry's reason code for fraud (a failed audit); it also deactivates the node.
pub const REASON_FRAUD: u8 = 0;
/// The registry's reason code for an SLA breach; the node stays active.
pub const REASON_SLA_BREACH: u8 = 1;

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
    take(chain, signer, None, evidence, REASON_FRAUD).await
}

/// Takes `amount` (at most what is staked) from the node that signs with
/// `signer`, for breaking its SLA, naming `evidence` (the sha256 of the
/// measurements). Safe to repeat, like [`fraud`].
pub async fn sla_breach(
    chain: &Chain,
    signer: Address,
    amount: U256,
    evidence: B256,
) -> Result<Slash, ChainError> {
    take(chain, signer, Some(amount), evidence, REASON_SLA_BREACH).await
}

/// Slashes `amount` (None = the whole stake) for `reason`.
async fn take(
    chain: &Chain,
    signer: Address,
    amount: Option<U256>,
    evidence: B256,
    reason: u8,
) -> Result<Slash, ChainError> {
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
    let amount = amount.map_or(node.stake, |a| a.min(node.stake));
    let receipt = registry
        .slash(signer, amount, evidence, reason)
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
        amount,
    })
}
