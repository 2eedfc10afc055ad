//! Tollgate's gateway: an OpenAI-compatible HTTP front that routes each chat
//! completion to inference nodes under live-reloaded policies, fails over
//! between them, and bills every request.
//!
//! The request path is assembled in [`server::router`]; start there.

pub mod api;
pub mod app;
pub mod auth;
pub mod config;
pub mod dispatch;
pub mod keys;
pub mod limits;
pub mod metrics;
pub mod openai;
pub mod relay;
pub mod reload;
pub mod server;
pub mod state;

use std::path::Path;
use std::sync::{Arc, Mutex};

use anyhow::Context;
use arc_swap::ArcSwap;
use dashmap::DashMap;
use tollgate_ledger::JsonlSink;

use app::{now_ms, App, ReloadStatus};
use state::Snapshot;

/// Loads the config, builds the shared state and starts its background tasks
/// (reload watcher, health checks), after one round of node checks.
pub async fn start(config_path: &Path) -> anyhow::Result<Arc<App>> {
    let loaded = config::load(config_path).map_err(|errors| {
        let text: Vec<String> = errors.iter().map(ToString::to_string).collect();
        anyhow::anyhow!("invalid configuration:\n  {}", text.join("\n  "))
    })?;
    let receipts_path = loaded.resolve(&loaded.config.receipts_path());
    let spend = JsonlSink::spend_by_account(&receipts_path).context("reading past receipts")?;
    let receipts = JsonlSink::open(&receipts_path).context("opening the receipts file")?;
    let engines = load_engines(&loaded).await?;
    let snapshot = Snapshot::build(loaded, None, 1, &engines).map_err(|errors| {
        let text: Vec<String> = errors.iter().map(ToString::to_string).collect();
        anyhow::anyhow!("invalid configuration:\n  {}", text.join("\n  "))
    })?;
    let app = Arc::new(App {
        state: ArcSwap::from_pointee(snapshot),
        reload_status: Mutex::new(ReloadStatus {
            loaded_at_ms: now_ms(),
            ..Default::default()
        }),
        limiter: limits::Limiter::default(),
        spend: spend.into_iter().collect::<DashMap<_, _>>(),
        receipts: Arc::new(receipts),
        metrics: metrics::install(),
        config_path: config_path.to_path_buf(),
        started_at_s: now_ms() / 1000,
        health_kick: tokio::sync::Notify::new(),
        engines,
    });
    ::metrics::gauge!(metrics::RELOAD_OK).set(1.0);
    reload::spawn(app.clone())?;
    reload::check_nodes_once(&app, std::time::Duration::from_secs(5)).await;
    reload::spawn_health_checks(app.clone());
    Ok(app)
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
