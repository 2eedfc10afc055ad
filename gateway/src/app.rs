//! State shared by every request: the swappable snapshot and what outlives it.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use dashmap::DashMap;
use metrics_exporter_prometheus::PrometheusHandle;
use serde::Serialize;
use tollgate_ledger::Ledger;

use crate::config::Diagnostic;
use crate::limits::RateLimits;
use crate::state::Snapshot;

/// The outcome of the last reload, for `/admin/status`.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ReloadStatus {
    /// When the last reload attempt finished (unix ms).
    pub last_attempt_ms: Option<u64>,
    /// When the served state was loaded (unix ms).
    pub loaded_at_ms: u64,
    /// Why the last attempt was refused; empty when it succeeded.
    pub last_errors: Vec<String>,
    /// Successful reloads since start.
    pub reloads_ok: u64,
    /// Refused reloads since start.
    pub reloads_failed: u64,
}

/// The gateway's shared state.
pub struct App {
    /// The routing state requests read; a reload swaps it whole.
    pub state: ArcSwap<Snapshot>,
    /// How reloads went.
    pub reload_status: Mutex<ReloadStatus>,
    /// Rate counters per account.
    pub limiter: RateLimits,
    /// Billed so far per account, atto-units.
    pub spend: DashMap<String, u128>,
    /// Where receipts go, durably, until they are settled.
    pub ledger: Arc<dyn Ledger>,
    /// Nodes registered on chain, routed beside the configured ones.
    pub discovered: ArcSwap<Vec<crate::config::NodeConfig>>,
    /// What payers' escrow still covers (empty when not settling on chain).
    pub escrow: crate::settlement::EscrowBook,
    /// Renders `/metrics`.
    pub metrics: PrometheusHandle,
    /// The config file being served.
    pub config_path: PathBuf,
    /// Process start, unix seconds (the `created` of listed models).
    pub started_at_s: u64,
    /// Wakes the health checker early (after a reload adds nodes).
    pub health_kick: tokio::sync::Notify,
    /// Audits of untrusted nodes and the trust they earn.
    pub auditing: Arc<crate::audits::Auditing>,
    /// Engines of embedded nodes, loaded at start, by GGUF path.
    pub engines: std::collections::HashMap<PathBuf, Arc<tollgate_engine::Engine>>,
    /// Recent usage per provider and outcomes per node, for caps and SLAs.
    pub recent: crate::recent::Recent,
    /// Files SLA slashes.
    pub sla: crate::sla::SlaWatch,
    /// Per-second chat traffic, for the dashboard.
    pub traffic: crate::traffic::Traffic,
}

impl App {
    /// Adds a billed amount to an account's spend.
    pub fn add_spend(&self, account: &str, amount: u128) {
        *self.spend.entry(account.to_string()).or_insert(0) += amount;
    }

    /// Billed so far for an account.
    pub fn spent(&self, account: &str) -> u128 {
        self.spend.get(account).map(|v| *v).unwrap_or(0)
    }

    /// Records a refused reload, keeping the state that serves.
    pub fn reload_failed(&self, errors: &[Diagnostic]) {
        let mut s = self.reload_status.lock().unwrap_or_else(|p| p.into_inner());
        s.last_attempt_ms = Some(now_ms());
        s.last_errors = errors.iter().map(ToString::to_string).collect();
        s.reloads_failed += 1;
    }

    /// Records a successful reload.
    pub fn reload_succeeded(&self) {
        let mut s = self.reload_status.lock().unwrap_or_else(|p| p.into_inner());
        let now = now_ms();
        s.last_attempt_ms = Some(now);
        s.loaded_at_ms = now;
        s.last_errors.clear();
        s.reloads_ok += 1;
    }

    /// A copy of the reload status.
    pub fn reload_status(&self) -> ReloadStatus {
        self.reload_status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// Unix time in milliseconds.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
