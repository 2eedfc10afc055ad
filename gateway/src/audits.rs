//! Audits of untrusted nodes, off the hot path.
//!
//! After a `tollgate` node's answer has been delivered and billed, the
//! gateway draws whether to audit it ([`Auditing::pick`]); the node was sent
//! the same request either way. Picked answers go into a bounded queue: a
//! full queue drops the audit (counted), never delays or fails a response.
//! One worker re-scores each answer with the reference engine loaded from
//! the GGUF file the node pins by hash, folds the verdict into the node's
//! trust ([`TrustBook`](crate::trust_book::TrustBook), which routing reads) and, on a failed audit,
//! quarantines the node and writes an evidence bundle for slashing. A node's
//! recent audits are also pooled (`tollgate_verify::history`), so a cheat
//! that errs on too few tokens to fail one answer is failed by the sum; its
//! evidence then carries every answer that was counted.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

use bytes::Bytes;
use serde::Serialize;
use tokio::sync::mpsc;
use tollgate_verify::{
    stats::Outcome, Auditor, Claim, Earlier, Evidence, Schedule, Signed, Thresholds,
};

use tollgate_contracts::Chain;

use crate::app::now_ms;
use crate::metrics as m;
use crate::state::Node;
use crate::trust_book::{Quarantine, TrustBook};

/// Audit settings (`audit:` in config.yaml).
#[derive(Clone, Debug, PartialEq, Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// Share of a node's answers audited once it has a record (a policy's
    /// `audit_share` overrides it).
    pub share: f64,
    /// Share audited while a node is new.
    pub new_node_share: f64,
    /// Audits after which a node is no longer new.
    pub new_node_audits: u64,
    /// Audits waiting beyond this many are dropped.
    pub queue: usize,
    /// Take a node out of routing when it fails an audit. Off, audits only
    /// lower trust and write evidence (for rolling audits out, or for
    /// watching a node's every answer get judged).
    pub quarantine: bool,
    /// The statistical test's tolerances and error budget.
    pub thresholds: Thresholds,
    /// GGUF files loaded as reference models only (embedded nodes' models
    /// are references too), relative to the config file.
    pub references: Vec<PathBuf>,
}

impl Default for AuditConfig {
    fn default() -> Self {
        let schedule = Schedule::default();
        Self {
            share: schedule.share,
            new_node_share: schedule.new_node_share,
            new_node_audits: schedule.new_node_audits,
            queue: 64,
            quarantine: true,
            thresholds: Thresholds::default(),
            references: Vec::new(),
        }
    }
}

impl AuditConfig {
    /// The audit schedule these settings describe.
    pub fn schedule(&self) -> Schedule {
        Schedule {
            share: self.share,
            new_node_share: self.new_node_share,
            new_node_audits: self.new_node_audits,
        }
    }
}

/// What the relay hands over for an audit.
pub struct Job {
    /// The node that answered.
    pub node: Arc<Node>,
    /// The gateway's request id.
    pub request_id: String,
    /// The node's answer.
    pub claim: Claim,
    /// The node's attestation of the answer.
    pub attestation: Option<serde_json::Value>,
    /// The bytes it signs.
    pub signed: Option<Signed>,
}

/// One finished audit, for `/admin/audits`.
#[derive(Clone, Debug, Serialize)]
pub struct AuditRecord {
    /// The node.
    pub node: String,
    /// The audited request.
    pub request_id: String,
    /// pass, fail or inconclusive.
    pub outcome: Outcome,
    /// Why.
    pub reasons: Vec<String>,
    /// Completion tokens audited.
    pub tokens: usize,
    /// Replay misses and their limit.
    pub replay_misses: usize,
    /// The count that fails.
    pub replay_limit: usize,
    /// Reported log-probs checked.
    pub logprobs_checked: usize,
    /// Reported log-probs beyond tolerance.
    pub logprob_gaps: usize,
    /// Positions whose reported alternatives were checked.
    pub alternatives_checked: usize,
    /// Positions whose reported alternatives are beyond tolerance.
    pub alternative_gaps: usize,
    /// Positions whose alternatives were paired token by token with the
    /// reference's.
    pub shape_checked: usize,
    /// Positions whose paired alternatives are weighed beyond tolerance.
    pub shape_gaps: usize,
    /// Positions off beyond what rounding does, where the text is aligned
    /// (one fails the answer).
    pub decisive: usize,
    /// Positions the rival test counted (none where its pass did not run).
    pub rival_checked: usize,
    /// Of those, positions whose report is nearer the request without its
    /// system prompt than the request itself.
    pub rival_leans: usize,
    /// The count that fails.
    pub rival_limit: usize,
    /// The test over the node's recent audits pooled.
    pub pooled: Option<tollgate_verify::Pooled>,
    /// The node's trust after this audit.
    pub trust_after: f64,
    /// Milliseconds from the answer's end to the verdict.
    pub verdict_ms: u64,
    /// Milliseconds of reference compute.
    pub audit_ms: u64,
    /// When (unix ms).
    pub at_ms: u64,
}

/// How many finished audits `/admin/audits` keeps.
const RECENT: usize = 256;

/// The audit scheduler, queue and records.
pub struct Auditing {
    /// Trust per node.
    pub book: Arc<TrustBook>,
    config: AuditConfig,
    queue: mpsc::Sender<(Job, std::time::Instant)>,
    recent: Mutex<VecDeque<AuditRecord>>,
    dropped: std::sync::atomic::AtomicU64,
    chain: Arc<OnceLock<Chain>>,
}

impl Auditing {
    /// Starts the audit worker with `references` (by GGUF sha256).
    pub fn start(
        config: AuditConfig,
        book: Arc<TrustBook>,
        references: HashMap<String, Arc<tollgate_engine::Engine>>,
        evidence_dir: PathBuf,
        chain: Arc<OnceLock<Chain>>,
    ) -> Arc<Self> {
        let (tx, rx) = mpsc::channel(config.queue.max(1));
        let auditing = Arc::new(Self {
            book,
            queue: tx,
            recent: Mutex::new(VecDeque::new()),
            dropped: Default::default(),
            config,
            chain,
        });
        let auditors = references
            .into_iter()
            .map(|(sha, engine)| {
                (
                    sha,
                    Auditor::new(engine, auditing.config.thresholds.clone()),
                )
            })
            .collect();
        tokio::spawn(worker(auditing.clone(), auditors, evidence_dir, rx));
        auditing
    }

    /// Whether to audit this answer of `node`, whose policy asks for
    /// `policy_share` (None: the configured share). Only `tollgate` nodes,
    /// which pin their model, are audited.
    pub fn pick(&self, node: &Node, policy_share: Option<f64>) -> bool {
        node.tollgate().is_some()
            && self.config.schedule().pick(
                self.book.audits(node.id()),
                policy_share,
                rand::random::<f64>(),
            )
    }

    /// Queues an audit; a full queue drops it.
    pub fn submit(&self, job: Job) {
        if self
            .queue
            .try_send((job, std::time::Instant::now()))
            .is_err()
        {
            self.dropped
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            metrics::counter!(m::AUDITS_DROPPED).increment(1);
        }
    }

    /// Audits dropped because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The most recent audits, newest last.
    pub fn recent(&self) -> Vec<AuditRecord> {
        self.recent
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .cloned()
            .collect()
    }

    fn remember(&self, record: AuditRecord) {
        let mut recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        if recent.len() == RECENT {
            recent.pop_front();
        }
        recent.push_back(record);
    }
}

async fn worker(
    auditing: Arc<Auditing>,
    auditors: HashMap<String, Auditor>,
    evidence_dir: PathBuf,
    mut rx: mpsc::Receiver<(Job, std::time::Instant)>,
) {
    while let Some((job, queued_at)) = rx.recv().await {
        let node_id = job.node.id().to_string();
        match audit_one(&auditing, &auditors, &evidence_dir, job, queued_at).await {
            Ok(record) => {
                metrics::counter!(m::AUDITS, "node" => node_id.clone(), "outcome" => outcome_name(record.outcome)).increment(1);
                metrics::gauge!(m::NODE_TRUST, "node" => node_id).set(record.trust_after);
                auditing.remember(record);
            }
            Err(e) => {
                metrics::counter!(m::AUDITS, "node" => node_id.clone(), "outcome" => "error")
                    .increment(1);
                tracing::warn!(node = node_id, "audit not run: {e}");
            }
        }
    }
}

fn outcome_name(o: Outcome) -> &'static str {
    match o {
        Outcome::Pass => "pass",
        Outcome::Fail => "fail",
        Outcome::Inconclusive => "inconclusive",
    }
}

async fn audit_one(
    auditing: &Auditing,
    auditors: &HashMap<String, Auditor>,
    evidence_dir: &std::path::Path,
    job: Job,
    queued_at: std::time::Instant,
) -> anyhow::Result<AuditRecord> {
    let node = &job.node;
    let backend = node
        .tollgate()
        .ok_or_else(|| anyhow::anyhow!("not a tollgate node"))?;
    // What the node claims now; its pinned key guards the answer itself.
    let info = backend.info().await?;
    let sha = info.model_sha256.to_ascii_lowercase();
    let auditor = auditors.get(&sha).ok_or_else(|| {
        anyhow::anyhow!("no reference model with sha256 {sha} (add its GGUF to audit.references)")
    })?;
    let mut report = auditor
        .audit(&job.claim, &sha, info.runtime == "llama.cpp")
        .await?;
    let prior = node.config.trust;
    let (verdict, earlier) = auditing.book.pool(
        node.id(),
        Earlier {
            request_id: job.request_id.clone(),
            claim: job.claim.clone(),
            attestation: job.attestation.clone(),
            signed: job.signed.clone(),
            verdict: report.verdict.clone(),
            positions: report.positions.clone(),
            audited_at_ms: now_ms(),
        },
        &auditing.config.thresholds,
    );
    report.verdict = verdict;
    let verdict = &report.verdict;
    auditing.book.record(node.id(), prior, verdict.outcome);
    auditing.book.publish_audit(node.id(), verdict.outcome);
    if verdict.outcome == Outcome::Fail {
        let evidence = Evidence {
            version: tollgate_verify::evidence::VERSION,
            node: node.id().to_string(),
            signer: Some(info.address.to_string()),
            provider: node.config.provider.clone(),
            model_sha256: sha.clone(),
            request_id: job.request_id.clone(),
            claim: job.claim.clone(),
            attestation: job.attestation.clone(),
            signed: job.signed.clone(),
            verdict: verdict.clone(),
            positions: report.positions.clone(),
            audited_at_ms: now_ms(),
            earlier,
        };
        let bytes = evidence.to_bytes();
        let hash = Evidence::hash_hex(&bytes);
        std::fs::create_dir_all(evidence_dir)?;
        let path = evidence_dir.join(format!("{}.json", hash.trim_start_matches("0x")));
        std::fs::write(&path, &bytes)?;
        tracing::warn!(node = node.id(), evidence = %path.display(), reasons = ?verdict.reasons, "audit failed");
        if !auditing.config.quarantine {
            return Ok(record(node, &job.request_id, &report, auditing, queued_at));
        }
        let quarantine = Quarantine {
            at_ms: now_ms(),
            request_id: job.request_id.clone(),
            evidence: path.display().to_string(),
            evidence_hash: hash.clone(),
            reasons: verdict.reasons.clone(),
            slash: None,
        };
        let first = auditing
            .book
            .quarantine(node.id(), prior, quarantine.clone());
        if first {
            auditing.book.publish_quarantine(node.id(), &quarantine);
        }
        if !first {
            return Ok(record(node, &job.request_id, &report, auditing, queued_at));
        }
        // Off the audit queue: a slow chain must not hold up other audits.
        if let Some(chain) = auditing.chain.get().cloned() {
            let (book, node_id, signer) =
                (auditing.book.clone(), node.id().to_string(), info.address);
            tokio::spawn(async move {
                let outcome = slash(&chain, signer, &hash).await;
                tracing::warn!(node = node_id, evidence = %hash, "slash: {outcome}");
                book.slashed(&node_id, outcome);
            });
        }
    }
    Ok(record(node, &job.request_id, &report, auditing, queued_at))
}

fn record(
    node: &Node,
    request_id: &str,
    report: &tollgate_verify::Report,
    auditing: &Auditing,
    queued_at: std::time::Instant,
) -> AuditRecord {
    metrics::histogram!(m::AUDIT_SECONDS).record(report.elapsed.as_secs_f64());
    let verdict = &report.verdict;
    AuditRecord {
        node: node.id().to_string(),
        request_id: request_id.to_string(),
        outcome: verdict.outcome,
        reasons: verdict.reasons.clone(),
        tokens: verdict.tokens,
        replay_misses: verdict.replay.errors,
        replay_limit: verdict.replay.limit,
        logprobs_checked: verdict.logprobs.checked,
        logprob_gaps: verdict.logprobs.errors,
        alternatives_checked: verdict.alternatives.checked,
        alternative_gaps: verdict.alternatives.errors,
        shape_checked: verdict.shape.checked,
        shape_gaps: verdict.shape.errors,
        decisive: verdict.decisive.errors,
        rival_checked: verdict.rival.checked,
        rival_leans: verdict.rival.errors,
        rival_limit: verdict.rival.limit,
        pooled: verdict.pooled.clone(),
        trust_after: auditing.book.score(node.id(), node.config.trust),
        verdict_ms: queued_at.elapsed().as_millis() as u64,
        audit_ms: report.elapsed.as_millis() as u64,
        at_ms: now_ms(),
    }
}

/// Slashes the stake of the node signing with `signer` for fraud against
/// the evidence hash; says what happened.
async fn slash(chain: &Chain, signer: tollgate_protocol::Address, evidence_hash: &str) -> String {
    let Ok(evidence) = evidence_hash.parse() else {
        return format!("not slashed: {evidence_hash} is not a 32-byte hash");
    };
    match tollgate_contracts::slash::fraud(chain, signer, evidence).await {
        Ok(tollgate_contracts::slash::Slash::Slashed { tx, amount }) => {
            format!("slashed {amount} atto-units in {tx}")
        }
        Ok(tollgate_contracts::slash::Slash::AlreadySlashed) => "already slashed".into(),
        Ok(tollgate_contracts::slash::Slash::NotRegistered) => {
            "not slashed: the node is not in the provider registry".into()
        }
        Ok(tollgate_contracts::slash::Slash::NothingStaked) => "not slashed: no stake left".into(),
        Err(e) => format!("not slashed: {e}"),
    }
}

/// A whole answer's claim, or None when it is not a chat completion.
pub fn whole_claim(request: &Bytes, body: &Bytes) -> Option<Claim> {
    let request = serde_json::from_slice(request).ok()?;
    let completion = serde_json::from_slice(body).ok()?;
    Claim::from_completion(request, &completion)
}
