//! Deploying the contracts from Foundry's artifacts, and funding payers.
//!
//! The bytecode comes from `forge build` output (`contracts/out`), so what is
//! deployed is exactly what `forge test` tested.

use std::path::{Path, PathBuf};

use alloy::network::TransactionBuilder;
use alloy::primitives::{Address, Bytes, U256};
use alloy::providers::{DynProvider, Provider};
use alloy::rpc::types::TransactionRequest;
use alloy::sol_types::SolValue;

use crate::bindings::{FeeToken, ProviderRegistry, Settlement};
use crate::chain::{ChainError, Deployment};

/// What a deployment is made of.
#[derive(Clone, Debug)]
pub struct DeployOptions {
    /// Foundry's `out` directory.
    pub artifacts: PathBuf,
    /// The account allowed to post invoices and to slash (the gateway's key).
    pub settler: Address,
    /// Where protocol fees and slashed stake go.
    pub treasury: Address,
    /// The protocol's share of each payment, in basis points.
    pub protocol_fee_bps: u16,
    /// Seconds a payer waits between asking to withdraw escrow and withdrawing.
    pub withdrawal_delay_s: u64,
    /// Seconds a provider waits between unbonding and withdrawing stake.
    pub unbonding_delay_s: u64,
}

fn rpc<E: std::fmt::Display>(e: E) -> ChainError {
    ChainError::Rpc(e.to_string())
}

/// The creation bytecode of `name` from Foundry's `out/NAME.sol/NAME.json`.
pub fn creation_code(artifacts: &Path, name: &str) -> Result<Vec<u8>, ChainError> {
    let path = artifacts.join(format!("{name}.sol/{name}.json"));
    let err = |reason: String| ChainError::Deployment {
        path: path.display().to_string(),
        reason,
    };
    let text = std::fs::read_to_string(&path)
        .map_err(|e| err(format!("{e} (run `scripts/forge build` first)")))?;
    let json: serde_json::Value = serde_json::from_str(&text).map_err(|e| err(e.to_string()))?;
    let hex_code = json["bytecode"]["object"]
        .as_str()
        .ok_or_else(|| err("no bytecode.object".into()))?;
    hex::decode(hex_code.trim_start_matches("0x")).map_err(|e| err(e.to_string()))
}

async fn create(
    provider: &DynProvider,
    artifacts: &Path,
    name: &str,
    args: Vec<u8>,
) -> Result<(Address, u64), ChainError> {
    let mut code = creation_code(artifacts, name)?;
    code.extend_from_slice(&args);
    let tx = TransactionRequest::default().with_deploy_code(Bytes::from(code));
    let receipt = provider
        .send_transaction(tx)
        .await
        .map_err(rpc)?
        .get_receipt()
        .await
        .map_err(rpc)?;
    let address = receipt
        .contract_address
        .filter(|_| receipt.status())
        .ok_or_else(|| ChainError::Rpc(format!("deploying {name} failed")))?;
    Ok((address, receipt.block_number.unwrap_or_default()))
}

/// Deploys FeeToken, ProviderRegistry and Settlement, administered by `admin`
/// (the provider's signer).
pub async fn deploy(
    provider: &DynProvider,
    admin: Address,
    opts: &DeployOptions,
) -> Result<Deployment, ChainError> {
    let chain_id = provider.get_chain_id().await.map_err(rpc)?;
    let (fee_token, deploy_block) =
        create(provider, &opts.artifacts, "FeeToken", admin.abi_encode()).await?;
    let (registry, _) = create(
        provider,
        &opts.artifacts,
        "ProviderRegistry",
        (fee_token, opts.unbonding_delay_s, admin, opts.treasury).abi_encode_params(),
    )
    .await?;
    // The gateway's key settles invoices and files the slashes of failed audits.
    landed(
        "grant arbiter",
        ProviderRegistry::new(registry, provider.clone())
            .grantRole(crate::slash::arbiter_role(), opts.settler)
            .send()
            .await,
    )
    .await?;
    let (settlement, _) = create(
        provider,
        &opts.artifacts,
        "Settlement",
        (
            fee_token,
            admin,
            opts.settler,
            opts.treasury,
            opts.protocol_fee_bps,
            opts.withdrawal_delay_s,
        )
            .abi_encode_params(),
    )
    .await?;
    Ok(Deployment {
        chain_id,
        fee_token,
        registry,
        settlement,
        deploy_block,
    })
}

/// Mints `amount` to the signer (the token's owner) and deposits it as
/// `payer`'s escrow.
pub async fn fund_escrow(
    provider: &DynProvider,
    deployment: &Deployment,
    minter: Address,
    payer: Address,
    amount: U256,
) -> Result<(), ChainError> {
    let token = FeeToken::new(deployment.fee_token, provider.clone());
    let settlement = Settlement::new(deployment.settlement, provider.clone());
    // Each step waits for the one before: approve must land before depositFor
    // is estimated, on chains that do not mine instantly.
    landed("mint", token.mint(minter, amount).send().await).await?;
    landed(
        "approve",
        token.approve(deployment.settlement, amount).send().await,
    )
    .await?;
    landed(
        "depositFor",
        settlement.depositFor(payer, amount).send().await,
    )
    .await?;
    Ok(())
}

/// Mints fee tokens (the signer must own the token: local chains).
pub async fn mint(
    provider: &DynProvider,
    deployment: &Deployment,
    to: Address,
    amount: U256,
) -> Result<(), ChainError> {
    let token = FeeToken::new(deployment.fee_token, provider.clone());
    landed("mint", token.mint(to, amount).send().await).await
}

/// A node's entry in the `ProviderRegistry`.
#[derive(Clone, Debug)]
pub struct Registration {
    /// The node's signing address.
    pub signer: Address,
    /// Its root URL.
    pub endpoint: String,
    /// sha256 of the GGUF file it serves.
    pub model_hash: alloy::primitives::B256,
    /// Input price per 1M tokens, atto-units.
    pub price_in_per_1m: U256,
    /// Output price per 1M tokens, atto-units.
    pub price_out_per_1m: U256,
    /// Region label.
    pub region: String,
    /// Stake, atto-units.
    pub stake: U256,
}

/// Approves the stake and registers the node; the signer is the provider.
pub async fn register_node(
    provider: &DynProvider,
    deployment: &Deployment,
    r: &Registration,
) -> Result<(), ChainError> {
    let token = FeeToken::new(deployment.fee_token, provider.clone());
    let registry = ProviderRegistry::new(deployment.registry, provider.clone());
    landed(
        "approve",
        token.approve(deployment.registry, r.stake).send().await,
    )
    .await?;
    let call = registry.register(
        r.signer,
        r.endpoint.clone(),
        r.model_hash,
        r.price_in_per_1m,
        r.price_out_per_1m,
        r.region.clone(),
        r.stake,
    );
    landed("register", call.send().await).await
}

async fn landed(
    what: &str,
    sent: Result<
        alloy::providers::PendingTransactionBuilder<alloy::network::Ethereum>,
        alloy::contract::Error,
    >,
) -> Result<(), ChainError> {
    let receipt = sent
        .map_err(|e| ChainError::Rpc(format!("{what}: {e}")))?
        .get_receipt()
        .await
        .map_err(|e| ChainError::Rpc(format!("{what}: {e}")))?;
    if receipt.status() {
        Ok(())
    } else {
        Err(ChainError::Rpc(format!("{what} reverted")))
    }
}
