//! SLA enforcement: every measured request is judged, with the node's other
//! requests in the window, under the SLA of the policy that routed it. Routing
//! reads the same window (policies' hold-back) to rank a node in breach last;
//! here a node past the slash threshold gets an SLA slash filed against its
//! stake, with the window's measurements written as evidence and named by
//! their sha256 on chain.
//!
//! A gateway files at most one slash per node per window, so one bad stretch
//! costs one slash. Gateways sharing a ledger file through one of them at a
//! time (the holder of the `sla-slasher` lease); the others keep their
//! evidence and say so, so N gateways never slash a node N times.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde::Serialize;
use sha2::{Digest, Sha256};
use tollgate_contracts::chain::Chain;
use tollgate_contracts::slash::{self, Slash};
use tollgate_ledger::Ledger;
use tollgate_policies::{Outcome, Sla, Standing};

use crate::app::{now_ms, App};
use crate::recent::Measured;
use crate::state::Node;

/// Evidence format version.
pub const EVIDENCE_VERSION: u32 = 1;

/// The evidence of an SLA slash: the promise, the verdict and every measurement behind it.
#[derive(Debug, Serialize)]
pub struct SlaEvidence<'a> {
    /// Format version.
    pub version: u32,
    /// Always "sla_breach", to tell it from fraud evidence.
    pub kind: &'static str,
    /// Node id.
    pub node: &'a str,
    /// The node's signing address, when it has one.
    pub signer: Option<String>,
    /// Its provider's address, when configured.
    pub provider: Option<&'a str>,
    /// The policy whose SLA it broke.
    pub policy: &'a str,
    /// What the policy promised.
    pub sla: &'a Sla,
    /// The verdict over the window.
    pub standing: &'a Standing,
    /// Every request measured in the window, oldest first.
    pub requests: &'a [Measured],
    /// Unix ms the evidence was written.
    pub filed_at_ms: u64,
}

/// One SLA slash filed, and what came of it.
#[derive(Clone, Debug, Serialize)]
pub struct SlaSlashRecord {
    /// Node id.
    pub node: String,
    /// The policy whose SLA it broke.
    pub policy: String,
    /// Share of the window's requests that kept every promise.
    pub kept_share: f64,
    /// Requests in the window.
    pub requests: u32,
    /// The evidence file.
    pub evidence: String,
    /// Its sha256, what the slash names on chain.
    pub evidence_hash: String,
    /// Unix ms it was filed.
    pub at_ms: u64,
    /// What the chain did, once known.
    pub slash: Option<String>,
}

/// Files SLA slashes, at most one per node per window.
pub struct SlaWatch {
    dir: PathBuf,
    chain: Arc<OnceLock<Chain>>,
    ledger: Arc<dyn Ledger>,
    holder: String,
    last: Mutex<HashMap<String, Instant>>,
    records: Arc<Mutex<Vec<SlaSlashRecord>>>,
}

/// The lease a gateway holds to file SLA slashes for every gateway sharing its ledger.
pub const SLASHER_LEASE: &str = "sla-slasher";

/// The most slash records kept for `/admin/sla`.
const MAX_RECORDS: usize = 1000;

impl SlaWatch {
    /// A watch writing evidence under `dir` and slashing on `chain` once it
    /// is connected, while it holds the `sla-slasher` lease in `ledger`.
    pub fn new(dir: PathBuf, chain: Arc<OnceLock<Chain>>, ledger: Arc<dyn Ledger>) -> Self {
        Self {
            dir,
            chain,
            ledger,
            holder: uuid::Uuid::new_v4().to_string(),
            last: Mutex::new(HashMap::new()),
            records: Arc::new(Mutex::new(Vec::new())),
        }
    }

    /// Every SLA slash filed, oldest first.
    pub fn records(&self) -> Vec<SlaSlashRecord> {
        self.records
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Judges `node` after a measured request; files a slash when it is past the threshold.
    fn judge(&self, node: &Node, policy: &str, sla: &Sla, window: Vec<Measured>) {
        let Some(terms) = &sla.slash else { return };
        let outcomes: Vec<Outcome> = window.iter().map(|m| m.outcome).collect();
        let standing = sla.judge(&outcomes);
        if !standing.slashable {
            return;
        }
        let window_len = Duration::try_from_secs_f64(sla.window_s).unwrap_or(Duration::MAX);
        {
            let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
            let now = Instant::now();
            if last
                .get(node.id())
                .is_some_and(|at| now.duration_since(*at) < window_len)
            {
                return;
            }
            last.insert(node.id().to_owned(), now);
        }
        let signer = node.tollgate().and_then(|t| t.address());
        let evidence = SlaEvidence {
            version: EVIDENCE_VERSION,
            kind: "sla_breach",
            node: node.id(),
            signer: signer.map(|a| a.to_string()),
            provider: node.config.provider.as_deref(),
            policy,
            sla,
            standing: &standing,
            requests: &window,
            filed_at_ms: now_ms(),
        };
        let mut record = SlaSlashRecord {
            node: node.id().to_owned(),
            policy: policy.to_owned(),
            kept_share: standing.kept_share(),
            requests: standing.requests,
            evidence: String::new(),
            evidence_hash: String::new(),
            at_ms: now_ms(),
            slash: None,
        };
        match self.write(&evidence) {
            Ok((path, hash)) => {
                record.evidence = path.display().to_string();
                record.evidence_hash = hash;
            }
            Err(e) => {
                tracing::error!(node = node.id(), "SLA evidence not written: {e}");
                record.slash = Some(format!(
                    "not slashed: the evidence could not be written: {e}"
                ));
            }
        }
        tracing::warn!(node = node.id(), policy, kept = standing.kept, requests = standing.requests, evidence = %record.evidence_hash, "SLA broken past its slash threshold");
        metrics::counter!(crate::metrics::SLA_SLASHES, "node" => node.id().to_string())
            .increment(1);
        {
            let mut records = self.records.lock().unwrap_or_else(|p| p.into_inner());
            if records.len() >= MAX_RECORDS {
                records.remove(0);
            }
            records.push(record.clone());
        }
        if record.slash.is_some() {
            return;
        }
        let outcome = match (self.chain.get().cloned(), signer) {
            (None, _) => Some("not slashed: the gateway settles on no chain".to_owned()),
            (_, None) => Some("not slashed: the node has no signing key to slash".to_owned()),
            (Some(chain), Some(signer)) => {
                let (records, hash, amount) = (
                    self.records.clone(),
                    record.evidence_hash.clone(),
                    terms.amount.0,
                );
                let (ledger, holder) = (self.ledger.clone(), self.holder.clone());
                let lease = window_len.max(Duration::from_secs(60));
                // Off the request path: a slow chain must not hold up the answer.
                tokio::spawn(async move {
                    let outcome = match ledger.hold_lease(SLASHER_LEASE, &holder, lease).await {
                        Ok(true) => file(&chain, signer, amount, &hash).await,
                        Ok(false) => {
                            "not slashed here: another gateway sharing the ledger files SLA slashes"
                                .into()
                        }
                        Err(e) => format!("not slashed: the slasher lease could not be read: {e}"),
                    };
                    tracing::warn!(evidence = %hash, "SLA slash: {outcome}");
                    set_outcome(&records, &hash, outcome);
                });
                None
            }
        };
        if let Some(outcome) = outcome {
            set_outcome(&self.records, &record.evidence_hash, outcome);
        }
    }

    fn write(&self, evidence: &SlaEvidence<'_>) -> std::io::Result<(PathBuf, String)> {
        let bytes = serde_json::to_vec_pretty(evidence)?;
        let hash = format!("0x{}", hex::encode(Sha256::digest(&bytes)));
        std::fs::create_dir_all(&self.dir)?;
        let path = self.dir.join(format!("{}.json", &hash[2..]));
        std::fs::write(&path, &bytes)?;
        Ok((path, hash))
    }
}

/// Records what the chain did; the record is found by its evidence, since the list may have rotated.
fn set_outcome(records: &Mutex<Vec<SlaSlashRecord>>, hash: &str, outcome: String) {
    let mut records = records.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(r) = records.iter_mut().rev().find(|r| r.evidence_hash == hash) {
        r.slash = Some(outcome);
    }
}

async fn file(
    chain: &Chain,
    signer: tollgate_protocol::Address,
    amount: u128,
    hash: &str,
) -> String {
    let Ok(evidence) = hash.parse() else {
        return format!("not slashed: {hash} is not a 32-byte hash");
    };
    let amount = alloy::primitives::U256::from(amount);
    match slash::sla_breach(chain, signer, amount, evidence).await {
        Ok(Slash::Slashed { tx, amount }) => format!("slashed {amount} atto-units in {tx}"),
        Ok(Slash::AlreadySlashed) => "already slashed".into(),
        Ok(Slash::NotRegistered) => "not slashed: the node is not in the provider registry".into(),
        Ok(Slash::NothingStaked) => "not slashed: no stake left".into(),
        Err(e) => format!("not slashed: {e}"),
    }
}

/// Records a measured request to `node`, routed under `policy`, and judges the
/// node under that policy's SLA.
pub fn observe(app: &App, node: &Node, policy: &str, outcome: Outcome) {
    app.recent.record_outcome(policy, node.id(), outcome);
    let snap = app.state.load();
    let Some(sla) = snap
        .loaded
        .policies
        .policies
        .iter()
        .find(|p| p.name == policy)
        .and_then(|p| p.sla.as_ref())
    else {
        return;
    };
    if sla.slash.is_none() {
        return;
    }
    let window = app.recent.measured(policy, node.id(), sla.window_s);
    app.sla.judge(node, policy, sla, window);
}
