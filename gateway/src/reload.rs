//! Live reload: file watching, SIGHUP, and the all-or-nothing swap.
//!
//! A reload reads every file again, validates the whole new state, and only
//! then swaps the snapshot. A request holds the snapshot it started with, so
//! in-flight streams finish on the old state while new requests see the new.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;

use crate::app::App;
use crate::config::{self, Diagnostic};
use crate::metrics as m;
use crate::state::Snapshot;

/// Re-reads every file and swaps the state if all of it is valid.
pub fn reload(app: &App) -> Result<u64, Vec<Diagnostic>> {
    let current = app.state.load_full();
    let result = config::load(&app.config_path).and_then(|mut loaded| {
        crate::discovery::add_to(&mut loaded, &app.discovered.load());
        Snapshot::build(
            loaded,
            Some(&current),
            current.generation + 1,
            &app.engines,
            &app.auditing.book,
        )
    });
    match result {
        Ok(next) => {
            let generation = next.generation;
            app.state.store(Arc::new(next));
            app.reload_succeeded();
            app.health_kick.notify_one();
            metrics::counter!(m::RELOADS, "result" => "ok").increment(1);
            metrics::gauge!(m::RELOAD_OK).set(1.0);
            tracing::info!(generation, "config reloaded");
            Ok(generation)
        }
        Err(errors) => {
            app.reload_failed(&errors);
            metrics::counter!(m::RELOADS, "result" => "error").increment(1);
            metrics::gauge!(m::RELOAD_OK).set(0.0);
            for e in &errors {
                tracing::error!("reload refused, old config still serving: {e}");
            }
            Err(errors)
        }
    }
}

/// Directories whose changes trigger a reload: the config's, the policies
/// directory and the key store's (editors replace files, so watch folders).
fn watched_dirs(snap: &Snapshot) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = snap
        .loaded
        .files
        .iter()
        .chain(std::iter::once(
            &snap.loaded.resolve(&snap.loaded.config.keys_path()),
        ))
        .filter_map(|f| f.parent().map(|p| p.to_path_buf()))
        .collect();
    if let Some(d) = &snap.loaded.config.policies_dir {
        dirs.push(snap.loaded.resolve(d));
    }
    dirs.retain(|d| d.is_dir());
    dirs.sort();
    dirs.dedup();
    dirs
}

/// Starts the watcher and the SIGHUP handler; both trigger [`reload`].
pub fn spawn(app: Arc<App>) -> anyhow::Result<()> {
    let (tx, mut rx) = mpsc::unbounded_channel::<()>();
    let watch_tx = tx.clone();
    let files: Vec<PathBuf> = {
        let snap = app.state.load();
        let mut f = snap.loaded.files.clone();
        f.push(snap.loaded.resolve(&snap.loaded.config.keys_path()));
        f
    };
    let policies_dir = app
        .state
        .load()
        .loaded
        .config
        .policies_dir
        .clone()
        .map(|d| app.state.load().loaded.resolve(&d));
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        if let Ok(ev) = res {
            if ev.kind.is_access() {
                return;
            }
            // Only files we read (or files in the policies directory) matter; the
            // data directory also holds receipts, written on every request.
            let relevant = ev.paths.iter().any(|p| {
                files
                    .iter()
                    .any(|f| f.file_name() == p.file_name() && f.parent() == p.parent())
                    || policies_dir
                        .as_ref()
                        .is_some_and(|d| p.parent() == Some(d.as_path()))
            });
            if relevant {
                let _ = watch_tx.send(());
            }
        }
    })?;
    for dir in watched_dirs(&app.state.load()) {
        watcher.watch(&dir, RecursiveMode::NonRecursive)?;
    }

    #[cfg(unix)]
    {
        let hup_tx = tx.clone();
        let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
        tokio::spawn(async move {
            while hup.recv().await.is_some() {
                let _ = hup_tx.send(());
            }
        });
    }

    tokio::spawn(async move {
        // The watcher lives as long as this task.
        let _watcher = watcher;
        while rx.recv().await.is_some() {
            // Editors write in several steps; let them finish, then reload once.
            tokio::time::sleep(Duration::from_millis(150)).await;
            while rx.try_recv().is_ok() {}
            let app = app.clone();
            let _ = tokio::task::spawn_blocking(move || reload(&app)).await;
        }
    });
    Ok(())
}

/// Checks every node once (bounded), so the first requests already know what
/// each node serves.
pub async fn check_nodes_once(app: &App, limit: Duration) {
    let _ = tokio::time::timeout(limit, check_nodes(app)).await;
}

/// Polls every node's model list: discovers what it serves and whether it answers.
pub fn spawn_health_checks(app: Arc<App>) {
    tokio::spawn(async move {
        loop {
            let interval =
                Duration::from_secs_f64(app.state.load().loaded.config.health.check_interval_s);
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = app.health_kick.notified() => {}
            }
            check_nodes(&app).await;
        }
    });
}

async fn check_nodes(app: &App) {
    let snap = app.state.load_full();
    let checks = snap.nodes.iter().map(|node| {
        let node = node.clone();
        async move {
            match node.backend.list_models().await {
                Ok(models) => {
                    node.set_discovered_models(models);
                    node.set_reachable(true);
                }
                Err(e) => {
                    tracing::warn!(node = node.id(), "health check failed: {e}");
                    node.set_reachable(false);
                }
            }
            let up = node.available(std::time::Instant::now());
            metrics::gauge!(m::NODE_AVAILABLE, "node" => node.id().to_string()).set(if up {
                1.0
            } else {
                0.0
            });
        }
    });
    futures_util::future::join_all(checks).await;
}
