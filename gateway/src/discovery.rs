//! Nodes registered in the `ProviderRegistry` join routing beside the
//! configured ones, so a provider joins without an operator editing files.
//!
//! Each active registration becomes a `tollgate` node named by its signing
//! address, with the registered endpoint, prices, region and provider, and
//! with that signing key pinned: every answer must be signed by the key that
//! put up the stake.

use std::sync::Arc;
use std::time::Duration;

use alloy::primitives::Address;
use serde_json::json;
use tollgate_contracts::Chain;
use tollgate_policies::{Price, Prices};

use crate::app::App;
use crate::config::{Loaded, NodeConfig};

/// The active registrations as node configs, in registration order.
pub async fn registered(chain: &Chain) -> Result<Vec<NodeConfig>, String> {
    let registry = chain.registry();
    let signers = registry.signers().call().await.map_err(|e| e.to_string())?;
    let mut nodes = Vec::new();
    for signer in signers {
        let node = registry
            .nodeOf(signer)
            .call()
            .await
            .map_err(|e| e.to_string())?;
        if !node.active {
            continue;
        }
        match node_config(signer, &node) {
            Ok(cfg) => nodes.push(cfg),
            Err(e) => tracing::warn!(%signer, "registered node skipped: {e}"),
        }
    }
    Ok(nodes)
}

fn node_config(
    signer: Address,
    node: &tollgate_contracts::bindings::ProviderRegistry::Node,
) -> Result<NodeConfig, String> {
    if !(node.endpoint.starts_with("http://") || node.endpoint.starts_with("https://")) {
        return Err(format!(
            "endpoint '{}' is not an http(s) URL",
            node.endpoint
        ));
    }
    let price = |v: alloy::primitives::U256| {
        u128::try_from(v)
            .map(Price)
            .map_err(|_| "price above u128".to_string())
    };
    let mut cfg: NodeConfig = serde_json::from_value(json!({
        "id": signer.to_string().to_ascii_lowercase(),
        "kind": "tollgate",
        "url": node.endpoint,
        "region": node.region,
        "provider": node.provider.to_string(),
        "signer": signer.to_string(),
    }))
    .map_err(|e| e.to_string())?;
    cfg.prices = Prices {
        input_per_1m: price(node.priceInPer1M)?,
        output_per_1m: price(node.priceOutPer1M)?,
    };
    Ok(cfg)
}

/// Adds discovered nodes to a loaded config; configured nodes win on a
/// clash of id or signer.
pub fn add_to(loaded: &mut Loaded, discovered: &[NodeConfig]) {
    for node in discovered {
        let clash = loaded.config.nodes.iter().any(|n| {
            n.id == node.id
                || n.signer.as_deref().map(str::to_ascii_lowercase)
                    == node.signer.as_deref().map(str::to_ascii_lowercase)
                    && n.signer.is_some()
        });
        if !clash {
            loaded.config.nodes.push(node.clone());
        }
    }
}

/// Polls the registry and rebuilds the routing state when registrations change.
pub fn spawn(app: Arc<App>, chain: Chain, every: Duration) {
    tokio::spawn(async move {
        loop {
            match registered(&chain).await {
                Ok(nodes) if nodes != **app.discovered.load() => {
                    tracing::info!(nodes = nodes.len(), "registered nodes changed");
                    app.discovered.store(Arc::new(nodes));
                    let app = app.clone();
                    let _ = tokio::task::spawn_blocking(move || crate::reload::reload(&app)).await;
                }
                Ok(_) => {}
                Err(e) => tracing::warn!("reading the provider registry failed: {e}"),
            }
            tokio::time::sleep(every).await;
        }
    });
}
