//! What the gateway knows of each node's audits: its trust, its quarantine,
//! its recent audits pooled, kept beside the receipts where there is a
//! ledger so that a restart or another gateway sees the same.

use std::sync::Arc;

use dashmap::DashMap;
use serde::{Deserialize, Serialize};
use tollgate_ledger::{AuditCount, TrustStore};
use tollgate_verify::{
    history, stats::Outcome, Earlier, Evidence, History, Thresholds, Trust, Verdict,
};

/// Why a node is quarantined.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Quarantine {
    /// When (unix ms).
    pub at_ms: u64,
    /// The audited request.
    pub request_id: String,
    /// The evidence bundle's file.
    pub evidence: String,
    /// sha256 of the bundle, what a slash names.
    pub evidence_hash: String,
    /// The verdict's reasons.
    pub reasons: Vec<String>,
    /// What slashing the node's stake on chain did, once tried.
    pub slash: Option<String>,
}

/// A node's audit record.
#[derive(Clone, Debug, Serialize)]
pub struct NodeRecord {
    /// Posterior over its audits.
    pub trust: Trust,
    /// Set after a failed audit; routing then sends it nothing.
    pub quarantine: Option<Quarantine>,
}

/// Trust per node id; outlives config reloads.
#[derive(Default)]
pub struct TrustBook {
    nodes: DashMap<String, NodeRecord>,
    /// Where audits are counted beside the receipts (the ledger); None = memory only.
    store: Option<Arc<dyn TrustStore>>,
    /// Each node's recent audits, pooled for the test across answers.
    histories: DashMap<String, History<Earlier>>,
}

impl TrustBook {
    /// A book that counts audits and quarantines in `store`: they survive a
    /// restart, and every gateway sharing the store sees them.
    pub fn stored(store: Arc<dyn TrustStore>) -> Self {
        Self {
            store: Some(store),
            ..Self::default()
        }
    }

    /// Counts an audit in the store (when there is one), off the audit queue.
    pub(crate) fn publish_audit(&self, node: &str, outcome: Outcome) {
        let Some(db) = self.store.clone() else {
            return;
        };
        let count = match outcome {
            Outcome::Pass => AuditCount::Passed,
            Outcome::Fail => AuditCount::Failed,
            Outcome::Inconclusive => AuditCount::Inconclusive,
        };
        let node = node.to_owned();
        tokio::spawn(async move {
            if let Err(e) = db.count_audit(&node, count).await {
                tracing::warn!(node, "audit not counted in the ledger: {e}");
            }
        });
    }

    /// Records a quarantine in the store (when there is one).
    pub(crate) fn publish_quarantine(&self, node: &str, q: &Quarantine) {
        let Some(db) = self.store.clone() else {
            return;
        };
        let (node, record) = (
            node.to_owned(),
            serde_json::to_string(q).unwrap_or_default(),
        );
        tokio::spawn(async move {
            if let Err(e) = db.quarantine(&node, &record).await {
                tracing::warn!(node, "quarantine not stored: {e}");
            }
        });
    }

    /// Takes what the store counted (this gateway before a restart, and every
    /// gateway sharing it): each node's audits, and a quarantine imposed
    /// elsewhere. `prior` gives a node's configured trust.
    pub async fn adopt_stored(&self, prior: impl Fn(&str) -> f64) {
        let Some(db) = &self.store else { return };
        let rows = match db.trust().await {
            Ok(rows) => rows,
            Err(e) => {
                tracing::warn!("reading stored trust failed: {e}");
                return;
            }
        };
        for row in rows {
            let p = prior(&row.node);
            let mut r = self.entry(&row.node, p);
            r.trust = Trust::from_counts(p, row.passed, row.failed, row.inconclusive);
            if r.quarantine.is_none() {
                r.quarantine = row
                    .quarantine
                    .as_deref()
                    .and_then(|q| serde_json::from_str(q).ok());
            }
        }
    }
    /// The trust routing uses: the node's posterior, 0 when quarantined,
    /// `prior` (its configured trust) before any audit.
    pub fn score(&self, node: &str, prior: f64) -> f64 {
        match self.nodes.get(node) {
            Some(r) if r.quarantine.is_some() => 0.0,
            Some(r) => r.trust.score(),
            None => prior,
        }
    }

    /// Whether routing must skip the node.
    pub fn quarantined(&self, node: &str) -> bool {
        self.nodes.get(node).is_some_and(|r| r.quarantine.is_some())
    }

    /// Audits the node has had.
    pub fn audits(&self, node: &str) -> u64 {
        self.nodes.get(node).map_or(0, |r| r.trust.audits())
    }

    /// The node's record, if audited.
    pub fn record_of(&self, node: &str) -> Option<NodeRecord> {
        self.nodes.get(node).map(|r| r.clone())
    }

    fn entry(
        &self,
        node: &str,
        prior: f64,
    ) -> dashmap::mapref::one::RefMut<'_, String, NodeRecord> {
        self.nodes
            .entry(node.to_string())
            .or_insert_with(|| NodeRecord {
                trust: Trust::new(prior),
                quarantine: None,
            })
    }

    /// Folds in one audit outcome.
    pub fn record(&self, node: &str, prior: f64, outcome: Outcome) -> f64 {
        let mut r = self.entry(node, prior);
        r.trust.record(outcome);
        r.trust.score()
    }

    /// Quarantines the node; false when it already was (the first
    /// quarantine, with its evidence and slash, stands).
    pub fn quarantine(&self, node: &str, prior: f64, q: Quarantine) -> bool {
        let mut r = self.entry(node, prior);
        if r.quarantine.is_some() {
            return false;
        }
        r.quarantine = Some(q);
        true
    }

    /// Every quarantined node (also those no longer routed, such as a
    /// registry node deactivated by its slash), by node id.
    pub fn quarantines(&self) -> std::collections::BTreeMap<String, Quarantine> {
        self.nodes
            .iter()
            .filter_map(|r| Some((r.key().clone(), r.quarantine.clone()?)))
            .collect()
    }

    /// Adds an audit to the node's pooled history: the verdict with the
    /// pooled test folded in, and the earlier audits it counted when it is
    /// the pooled test that fails the answer.
    pub fn pool(&self, node: &str, audited: Earlier, t: &Thresholds) -> (Verdict, Vec<Earlier>) {
        let mut h = self.histories.entry(node.to_string()).or_default();
        let single = audited.verdict.clone();
        let pooled = h.observe(&single, audited, t);
        let verdict = history::with_pooled(single.clone(), pooled, t);
        let earlier = if single.outcome != Outcome::Fail && verdict.outcome == Outcome::Fail {
            let n = h.items().count();
            h.items().take(n.saturating_sub(1)).cloned().collect()
        } else {
            Vec::new()
        };
        (verdict, earlier)
    }

    /// Records what slashing a quarantined node did.
    pub(crate) fn slashed(&self, node: &str, outcome: String) {
        if let Some(mut r) = self.nodes.get_mut(node) {
            if let Some(q) = &mut r.quarantine {
                q.slash = Some(outcome);
            }
        }
    }
}

/// Quarantines again, at start, the nodes that earlier evidence bundles
/// convict: a restart must not launder a caught node.
pub fn restore_quarantines(
    book: &TrustBook,
    evidence_dir: &std::path::Path,
    nodes: &[crate::config::NodeConfig],
) {
    let Ok(entries) = std::fs::read_dir(evidence_dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(bytes) = std::fs::read(&path) else {
            continue;
        };
        let Ok(evidence) = serde_json::from_slice::<Evidence>(&bytes) else {
            continue;
        };
        if evidence.verdict.outcome != Outcome::Fail {
            continue;
        }
        let prior = nodes
            .iter()
            .find(|n| n.id == evidence.node)
            .map_or(1.0, |n| n.trust);
        book.record(&evidence.node, prior, Outcome::Fail);
        book.quarantine(
            &evidence.node,
            prior,
            Quarantine {
                at_ms: evidence.audited_at_ms,
                request_id: evidence.request_id.clone(),
                evidence: path.display().to_string(),
                evidence_hash: Evidence::hash_hex(&bytes),
                reasons: evidence.verdict.reasons.clone(),
                slash: None,
            },
        );
    }
}
