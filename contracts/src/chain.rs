//! A connection to the chain: where the contracts are and who signs.

use std::path::Path;

use alloy::network::EthereumWallet;
use alloy::primitives::Address;
use alloy::providers::{DynProvider, Provider, ProviderBuilder};
pub use alloy::signers::local::PrivateKeySigner;
use serde::{Deserialize, Serialize};

use crate::bindings::{FeeToken, ProviderRegistry, Settlement};

/// Why the chain could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ChainError {
    /// The deployment file is missing or malformed.
    #[error("deployment file {path}: {reason}")]
    Deployment {
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// The signing key is malformed.
    #[error("signing key: {0}")]
    Key(String),
    /// The RPC URL is malformed.
    #[error("RPC URL '{0}' is not a URL")]
    Url(String),
    /// The node answered with an error or not at all.
    #[error("chain RPC failed: {0}")]
    Rpc(String),
    /// The contracts at the given addresses are not Tollgate's deployment.
    #[error("{0}")]
    Mismatch(String),
}

/// Where the contracts live on one chain (written by `tollgate chain deploy`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deployment {
    /// EIP-155 chain id.
    pub chain_id: u64,
    /// The fee token.
    pub fee_token: Address,
    /// The provider registry.
    pub registry: Address,
    /// The settlement contract.
    pub settlement: Address,
    /// The block the contracts were deployed in; event scans start here.
    pub deploy_block: u64,
}

impl Deployment {
    /// Reads a deployment file.
    pub fn load(path: &Path) -> Result<Self, ChainError> {
        let err = |reason: String| ChainError::Deployment {
            path: path.display().to_string(),
            reason,
        };
        let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
        serde_json::from_str(&text).map_err(|e| err(e.to_string()))
    }

    /// Writes a deployment file atomically.
    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(self)?)?;
        std::fs::rename(tmp, path)
    }
}

/// A provider plus the deployment, ready to call the contracts.
#[derive(Clone)]
pub struct Chain {
    provider: DynProvider,
    deployment: Deployment,
    signer: Option<Address>,
}

/// Parses a hex private key (with or without 0x).
pub fn parse_key(hex_key: &str) -> Result<PrivateKeySigner, ChainError> {
    hex_key
        .trim()
        .parse()
        .map_err(|e| ChainError::Key(format!("not a secp256k1 private key ({e})")))
}

/// A provider for `rpc_url`, signing with `key` when given.
pub fn provider(rpc_url: &str, key: Option<PrivateKeySigner>) -> Result<DynProvider, ChainError> {
    let url = rpc_url
        .parse()
        .map_err(|_| ChainError::Url(rpc_url.to_string()))?;
    // The nonce is asked of the chain for every transaction (pending count)
    // rather than cached: after a dropped transaction, a lost answer, a reorg
    // or a restart, a cached nonce would leave a gap that nothing fills.
    let builder = ProviderBuilder::new()
        .disable_recommended_fillers()
        .with_gas_estimation()
        .with_simple_nonce_management()
        .fetch_chain_id();
    Ok(match key {
        Some(key) => builder
            .wallet(EthereumWallet::from(key))
            .connect_http(url)
            .erased(),
        None => builder.connect_http(url).erased(),
    })
}

impl Chain {
    /// Connects and checks that the chain id matches the deployment.
    pub async fn connect(
        rpc_url: &str,
        key: Option<PrivateKeySigner>,
        deployment: Deployment,
    ) -> Result<Self, ChainError> {
        let signer = key.as_ref().map(|k| k.address());
        let provider = provider(rpc_url, key)?;
        let chain_id = provider
            .get_chain_id()
            .await
            .map_err(|e| ChainError::Rpc(e.to_string()))?;
        if chain_id != deployment.chain_id {
            return Err(ChainError::Mismatch(format!(
                "the RPC serves chain {chain_id}, the deployment is on chain {}",
                deployment.chain_id
            )));
        }
        Ok(Self {
            provider,
            deployment,
            signer,
        })
    }

    /// The provider.
    pub fn provider(&self) -> &DynProvider {
        &self.provider
    }

    /// The deployment.
    pub fn deployment(&self) -> &Deployment {
        &self.deployment
    }

    /// The signing address, if this connection signs.
    pub fn signer(&self) -> Option<Address> {
        self.signer
    }

    /// The settlement contract.
    pub fn settlement(&self) -> Settlement::SettlementInstance<DynProvider> {
        Settlement::new(self.deployment.settlement, self.provider.clone())
    }

    /// The provider registry.
    pub fn registry(&self) -> ProviderRegistry::ProviderRegistryInstance<DynProvider> {
        ProviderRegistry::new(self.deployment.registry, self.provider.clone())
    }

    /// The fee token.
    pub fn fee_token(&self) -> FeeToken::FeeTokenInstance<DynProvider> {
        FeeToken::new(self.deployment.fee_token, self.provider.clone())
    }
}
