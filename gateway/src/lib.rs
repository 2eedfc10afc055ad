//! Tollgate's gateway: an OpenAI-compatible HTTP front that routes each chat
//! completion to inference nodes under live-reloaded policies, fails over
//! between them, and bills every request.
//!
//! The request path is assembled in [`server::router`]; start there.

pub mod api;
pub mod app;
pub mod audits;
pub mod auth;
pub mod config;
pub mod discovery;
pub mod dispatch;
pub mod finance;
pub mod keys;
pub mod limits;
pub mod metrics;
pub mod openai;
pub mod recent;
pub mod relay;
pub mod reload;
pub mod server;
pub mod settlement;
pub mod sla;
pub mod state;
pub mod traffic;
pub mod trust_book;

use std::path::Path;
use std::sync::{Arc, Mutex};

use anyhow::Context;
use arc_swap::ArcSwap;
use dashmap::DashMap;
use tollgate_ledger::{Ledger, PostgresLedger, SqliteLedger, TrustStore};

use app::{now_ms, App, ReloadStatus};
use state::Snapshot;

/// Loads the config, builds the shared state and starts its background tasks
/// (reload watcher, health checks), after one round of node checks.
pub async fn start(config_path: &Path) -> anyhow::Result<Arc<App>> {
    let loaded = config::load(config_path).map_err(|errors| {
        let text: Vec<String> = errors.iter().map(ToString::to_string).collect();
        anyhow::anyhow!("invalid configuration:\n  {}", text.join("\n  "))
    })?;
    let shared = loaded.config.shared.clone();
    let (ledger, trust_store) = open_ledger(&loaded).await?;
    let old_receipts = loaded.resolve(&loaded.config.data_dir.join("receipts.jsonl"));
    import_jsonl(ledger.as_ref(), &old_receipts).await?;
    let limiter = match shared
        .as_ref()
        .and_then(|s| Some((s.redis.as_deref()?, &s.redis_prefix)))
    {
        Some((url, prefix)) => limits::RateLimits::Shared(
            limits::redis::SharedLimiter::connect(url, prefix)
                .await
                .context("connecting to the shared rate-limit counters")?,
        ),
        None => limits::RateLimits::Local(limits::Limiter::default()),
    };
    let spend = ledger
        .spend_by_account()
        .await
        .context("reading past receipts")?;
    let engines = load_engines(&loaded).await?;
    let references = load_references(&loaded, &engines).await?;
    let evidence_dir = loaded.resolve(&loaded.config.data_dir.join("evidence"));
    let trust = Arc::new(trust_book::TrustBook::stored(trust_store));
    trust_book::restore_quarantines(&trust, &evidence_dir, &loaded.config.nodes);
    let escrow = settlement::EscrowBook::default();
    let sla = sla::SlaWatch::new(
        loaded.resolve(&loaded.config.data_dir.join("sla")),
        escrow.chain.clone(),
        ledger.clone(),
    );
    let auditing = audits::Auditing::start(
        loaded.config.audit.clone(),
        trust.clone(),
        references,
        evidence_dir,
        escrow.chain.clone(),
    );
    let chain_config = loaded.clone();
    let snapshot = Snapshot::build(loaded, None, 1, &engines, &trust).map_err(|errors| {
        let text: Vec<String> = errors.iter().map(ToString::to_string).collect();
        anyhow::anyhow!("invalid configuration:\n  {}", text.join("\n  "))
    })?;
    let app = Arc::new(App {
        state: ArcSwap::from_pointee(snapshot),
        reload_status: Mutex::new(ReloadStatus {
            loaded_at_ms: now_ms(),
            ..Default::default()
        }),
        limiter,
        spend: spend.into_iter().collect::<DashMap<_, _>>(),
        ledger: ledger.clone(),
        escrow,
        discovered: ArcSwap::from_pointee(Vec::new()),
        metrics: metrics::install(),
        config_path: config_path.to_path_buf(),
        started_at_s: now_ms() / 1000,
        health_kick: tokio::sync::Notify::new(),
        auditing,
        engines,
        recent: recent::Recent::default(),
        sla,
        traffic: traffic::Traffic::default(),
    });
    // Trust counted before a restart (and by other gateways sharing the ledger).
    let snap = app.state.load_full();
    let prior = |node: &str| snap.node(node).map_or(1.0, |n| n.config.trust);
    app.auditing.book.adopt_stored(prior).await;
    if let Some(every) = shared.as_ref().filter(|s| s.postgres.is_some()) {
        spawn_shared_refresh(app.clone(), every.spend_refresh_s);
    }
    settlement::start(&app, &chain_config, ledger).await?;
    ::metrics::gauge!(metrics::RELOAD_OK).set(1.0);
    reload::spawn(app.clone())?;
    reload::check_nodes_once(&app, std::time::Duration::from_secs(5)).await;
    reload::spawn_health_checks(app.clone());
    Ok(app)
}

/// The ledger, which is also where audits are counted: the shared PostgreSQL
/// one when configured, else this gateway's SQLite file.
pub async fn open_ledger(
    loaded: &config::Loaded,
) -> anyhow::Result<(Arc<dyn Ledger>, Arc<dyn TrustStore>)> {
    let shared = loaded.config.shared.as_ref();
    if let Some(url) = shared.and_then(|s| s.postgres.as_deref()) {
        let ledger = Arc::new(
            PostgresLedger::connect(url)
                .await
                .context("connecting to the shared PostgreSQL ledger")?,
        );
        return Ok((ledger.clone(), ledger));
    }
    let path = loaded.resolve(&loaded.config.ledger_path());
    let ledger = Arc::new(SqliteLedger::open(&path).context("opening the ledger")?);
    Ok((ledger.clone(), ledger))
}

/// With a shared ledger, other gateways bill the same accounts and audit the
/// same nodes: budgets read every gateway's spend from it, and trust every
/// gateway's audits (between reads, this gateway's own add up in memory).
fn spawn_shared_refresh(app: Arc<App>, every_s: f64) {
    let every = std::time::Duration::try_from_secs_f64(every_s)
        .unwrap_or(std::time::Duration::from_secs(1));
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(every).await;
            match app.ledger.spend_by_account().await {
                Ok(totals) => {
                    for (account, spent) in totals {
                        app.spend.insert(account, spent);
                    }
                }
                Err(e) => tracing::warn!("reading shared spend failed: {e}"),
            }
            let snap = app.state.load_full();
            let prior = |node: &str| snap.node(node).map_or(1.0, |n| n.config.trust);
            app.auditing.book.adopt_stored(prior).await;
        }
    });
}

/// Moves receipts from the JSON-lines file of earlier versions into the
/// ledger (idempotently), then renames the file so it is read once.
async fn import_jsonl(ledger: &dyn Ledger, path: &Path) -> anyhow::Result<()> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let mut imported = 0;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        // A torn last line (crash mid-write) was never acknowledged to a client.
        let Ok(receipt) = serde_json::from_str::<tollgate_ledger::Receipt>(line) else {
            continue;
        };
        ledger
            .record(receipt)
            .await
            .context("importing receipts.jsonl")?;
        imported += 1;
    }
    std::fs::rename(path, path.with_extension("jsonl.imported"))?;
    tracing::info!(
        imported,
        "receipts moved from {} into the ledger",
        path.display()
    );
    Ok(())
}

/// The reference models audits use, by GGUF sha256: the embedded nodes'
/// engines and the files listed under `audit.references`.
async fn load_references(
    loaded: &config::Loaded,
    engines: &std::collections::HashMap<std::path::PathBuf, Arc<tollgate_engine::Engine>>,
) -> anyhow::Result<std::collections::HashMap<String, Arc<tollgate_engine::Engine>>> {
    let mut by_sha: std::collections::HashMap<String, Arc<tollgate_engine::Engine>> = engines
        .values()
        .map(|e| (e.sha256().to_string(), e.clone()))
        .collect();
    for path in &loaded.config.audit.references {
        let path = loaded.resolve(path);
        if engines.contains_key(&path) {
            continue;
        }
        tracing::info!(model = %path.display(), "loading reference model for audits");
        let engine = tollgate_engine::EngineBuilder::new(&path)
            .max_num_seqs(2)
            .build()
            .await
            .with_context(|| format!("audit reference {}", path.display()))?;
        by_sha.insert(engine.sha256().to_string(), Arc::new(engine));
    }
    Ok(by_sha)
}

/// Loads the engine of every embedded node (once per GGUF file).
async fn load_engines(
    loaded: &config::Loaded,
) -> anyhow::Result<std::collections::HashMap<std::path::PathBuf, Arc<tollgate_engine::Engine>>> {
    let mut engines = std::collections::HashMap::new();
    for node in &loaded.config.nodes {
        let Some(path) = &node.model_path else {
            continue;
        };
        // A pipeline reads only the vocabulary of its file; its stages run it.
        if node.kind != config::NodeKind::Embedded {
            continue;
        }
        let path = loaded.resolve(path);
        if engines.contains_key(&path) {
            continue;
        }
        let mut builder = tollgate_engine::EngineBuilder::new(&path).progress(true);
        if let Some(id) = node.models.first() {
            builder = builder.model_id(id.clone());
        }
        tracing::info!(node = node.id, model = %path.display(), "loading model");
        let engine = builder
            .build()
            .await
            .with_context(|| format!("node '{}'", node.id))?;
        tracing::info!(
            node = node.id,
            model = engine.id(),
            sha256 = engine.sha256(),
            "model loaded"
        );
        engines.insert(path, Arc::new(engine));
    }
    Ok(engines)
}
