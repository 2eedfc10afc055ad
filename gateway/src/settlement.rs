//! The chain in the gateway: the settler, and payers' escrow for admission.
//!
//! An account may spend only what its payer's escrow covers: the escrow read
//! from the `Settlement` contract minus what the ledger holds unsettled. The
//! escrow refresher re-reads both every `escrow_refresh_s`; between refreshes
//! each bill adds to the unsettled amount in memory.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use alloy::primitives::Address;
use anyhow::Context;
use dashmap::DashMap;
use tollgate_contracts::{chain, Chain, Deployment, Settler, SettlerConfig};
use tollgate_ledger::Ledger;

use crate::app::App;
use crate::config::{ChainConfig, Loaded};

/// What each payer's escrow can still cover, keyed by lower-case payer
/// address: accounts that share a payer share its escrow.
#[derive(Default)]
pub struct EscrowBook {
    /// Escrow per payer as last read from chain, atto-units.
    escrow: DashMap<String, u128>,
    /// Billed but not yet settled per payer, atto-units.
    unsettled: DashMap<String, u128>,
    /// The chain connection, once settlement runs (shared with the auditor,
    /// which files slashes).
    pub chain: Arc<OnceLock<Chain>>,
}

impl EscrowBook {
    /// (escrow, unsettled spend) of a payer; `None` when not settling or not
    /// yet read, which admits (a chain outage does not stop serving).
    pub fn standing(&self, payer: &str) -> Option<(u128, u128)> {
        let payer = payer.to_ascii_lowercase();
        let escrow = *self.escrow.get(&payer)?;
        let unsettled = self.unsettled.get(&payer).map(|v| *v).unwrap_or(0);
        Some((escrow, unsettled))
    }

    /// Counts a new bill against its payer's escrow.
    pub fn add_unsettled(&self, payer: &str, amount: u128) {
        if self.chain.get().is_some() && !payer.is_empty() {
            *self
                .unsettled
                .entry(payer.to_ascii_lowercase())
                .or_insert(0) += amount;
        }
    }
}

fn settler_key(loaded: &Loaded, c: &ChainConfig) -> anyhow::Result<String> {
    if let Ok(key) = std::env::var(&c.settler_key_env) {
        return Ok(key);
    }
    match &c.settler_key_file {
        Some(file) => {
            let path = loaded.resolve(file);
            std::fs::read_to_string(&path)
                .with_context(|| format!("reading the settler key {}", path.display()))
        }
        None => anyhow::bail!(
            "settling on chain needs the settler's private key in ${} or chain.settler_key_file",
            c.settler_key_env
        ),
    }
}

/// Starts settlement: a bad deployment file or key fails here; an unreachable
/// chain does not stop serving: the connection is retried in the background
/// while receipts wait in the ledger.
pub async fn start(app: &Arc<App>, loaded: &Loaded, ledger: Arc<dyn Ledger>) -> anyhow::Result<()> {
    let Some(c) = loaded.config.chain.clone() else {
        return Ok(());
    };
    let deployment = Deployment::load(&loaded.resolve(&c.deployment))?;
    let key = chain::parse_key(&settler_key(loaded, &c)?)?;
    let config = SettlerConfig {
        max_receipts: c.batch_max_receipts,
        max_age: Duration::from_secs_f64(c.batch_max_age_s),
        confirmations: c.confirmations,
        rpc_timeout: Duration::from_secs_f64(c.rpc_timeout_s),
        invoices_dir: loaded.resolve(&loaded.config.data_dir.join("invoices")),
        ..SettlerConfig::default()
    };
    let every = Duration::from_secs_f64(c.escrow_refresh_s);
    let discovery = c
        .discover_nodes
        .then(|| Duration::from_secs_f64(c.discovery_interval_s));
    let attempt = {
        let (url, deployment, timeout) =
            (c.rpc_url.clone(), deployment.clone(), config.rpc_timeout);
        move || {
            let (url, deployment, key) = (url.clone(), deployment.clone(), key.clone());
            async move {
                match tokio::time::timeout(timeout, Chain::connect(&url, Some(key), deployment))
                    .await
                {
                    Ok(result) => result.map_err(|e| e.to_string()),
                    Err(_) => Err("timed out".to_string()),
                }
            }
        }
    };
    match attempt().await {
        Ok(chain) => run(app.clone(), chain, ledger, config, every, discovery).await,
        Err(reason) => {
            tracing::error!(
                "settlement chain unreachable ({reason}); receipts stay pending until it answers"
            );
            let app = app.clone();
            tokio::spawn(async move {
                let mut pause = Duration::from_secs(1);
                let chain = loop {
                    tokio::time::sleep(pause).await;
                    match attempt().await {
                        Ok(chain) => break chain,
                        Err(reason) => {
                            tracing::warn!("settlement chain still unreachable: {reason}")
                        }
                    }
                    pause = (pause * 2).min(Duration::from_secs(30));
                };
                run(app, chain, ledger, config, every, discovery).await;
            });
        }
    }
    Ok(())
}

async fn run(
    app: Arc<App>,
    chain: Chain,
    ledger: Arc<dyn Ledger>,
    config: SettlerConfig,
    every: Duration,
    discovery: Option<Duration>,
) {
    if let Some(interval) = discovery {
        crate::discovery::spawn(app.clone(), chain.clone(), interval);
    }
    let _ = app.escrow.chain.set(chain.clone());
    tracing::info!(
        settlement = %chain.deployment().settlement,
        signer = ?chain.signer(),
        "settling invoices on chain {}",
        chain.deployment().chain_id
    );
    refresh_escrow(&app, &chain, ledger.as_ref()).await;
    let lease = app
        .state
        .load()
        .loaded
        .config
        .shared
        .as_ref()
        .and_then(|s| Duration::try_from_secs_f64(s.settler_lease_s).ok())
        .unwrap_or(Duration::from_secs(5));
    tokio::spawn(settle_under_lease(
        ledger.clone(),
        chain.clone(),
        config,
        lease,
    ));
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(every).await;
            refresh_escrow(&app, &chain, ledger.as_ref()).await;
        }
    });
}

/// Runs the settler while this gateway holds the settler lease in the
/// ledger (always, for a ledger no other gateway shares). The lease is renewed
/// in the background every third of its length, also while a step waits on the
/// chain, so only a gateway that died or lost its database loses it, and
/// another takes settlement over once it runs out.
async fn settle_under_lease(
    ledger: Arc<dyn Ledger>,
    chain: Chain,
    config: SettlerConfig,
    lease: Duration,
) {
    let holder = format!("{}:{}", std::process::id(), uuid::Uuid::new_v4());
    let held = Arc::new(AtomicBool::new(false));
    renew(ledger.as_ref(), &holder, lease, &held).await;
    {
        let (ledger, held) = (ledger.clone(), held.clone());
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(lease / 3).await;
                renew(ledger.as_ref(), &holder, lease, &held).await;
            }
        });
    }
    let may_settle = move || {
        let held = held.clone();
        async move { held.load(Ordering::Relaxed) }
    };
    Settler::new(ledger, chain, config)
        .run_while(may_settle, std::future::pending())
        .await;
}

/// Takes or renews the settler lease; records (and logs changes of) whether it is held.
async fn renew(ledger: &dyn Ledger, holder: &str, lease: Duration, held: &AtomicBool) {
    let now = match ledger.hold_lease(SETTLER_LEASE, holder, lease).await {
        Ok(now) => now,
        Err(e) => {
            tracing::warn!("settler lease not renewed: {e}");
            false
        }
    };
    if held.swap(now, Ordering::Relaxed) != now {
        let what = if now {
            "taken: this gateway settles"
        } else {
            "lost: another gateway settles"
        };
        tracing::info!(holder, "settler lease {what}");
    }
    ::metrics::gauge!(crate::metrics::SETTLER_LEASE_HELD).set(if now { 1.0 } else { 0.0 });
}

/// The name of the settler's lease in a shared ledger.
pub const SETTLER_LEASE: &str = "settler";

/// Re-reads every payer's escrow and the ledger's unsettled spend. A failed
/// read keeps the last known values (and is logged), so a chain outage does
/// not stop serving.
async fn refresh_escrow(app: &App, chain: &Chain, ledger: &dyn Ledger) {
    let payers: std::collections::BTreeSet<Address> = app
        .state
        .load()
        .loaded
        .config
        .accounts
        .iter()
        .filter_map(|a| a.payer.as_deref()?.parse().ok())
        .collect();
    let settlement = chain.settlement();
    let timeout = Duration::from_secs(10);
    for payer in payers {
        match tokio::time::timeout(timeout, settlement.escrowOf(payer).call()).await {
            Ok(Ok(v)) => {
                let key = payer.to_string().to_ascii_lowercase();
                app.escrow
                    .escrow
                    .insert(key, u128::try_from(v).unwrap_or(u128::MAX));
            }
            Ok(Err(e)) => tracing::warn!(%payer, "reading escrow failed: {e}"),
            Err(_) => tracing::warn!(%payer, "reading escrow timed out"),
        }
    }
    match ledger.unsettled_by_payer().await {
        Ok(map) => replace(&app.escrow.unsettled, map),
        Err(e) => tracing::warn!("reading unsettled spend failed: {e}"),
    }
}

fn replace(map: &DashMap<String, u128>, fresh: HashMap<String, u128>) {
    map.retain(|k, _| fresh.contains_key(k));
    for (k, v) in fresh {
        map.insert(k, v);
    }
}
