//! The settler: pending receipts -> invoice -> Settlement contract -> settled.
//!
//! Every step is safe to repeat, which is what makes a crash at any point
//! harmless. A batch is recorded in the ledger (state built) before its
//! transaction is sent, and its id is derived from its content, so after a
//! crash, a lost RPC answer or a reorg the settler looks the batch up on chain
//! and either records what it finds or sends it again; the contract refuses a
//! second post of the same id, so nothing is billed twice.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use alloy::primitives::B256;
use alloy::providers::Provider;
use tollgate_ledger::{Batch, BatchState, Ledger, LedgerError, Receipt};

use crate::bindings::Settlement;
use crate::chain::Chain;
use crate::merkle::MerkleTree;
use crate::receipt::{self, ReceiptError};

/// Why a settling step failed; the next step retries.
#[derive(Debug, thiserror::Error)]
pub enum SettleError {
    /// The ledger failed.
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    /// The chain failed, timed out or refused.
    #[error("chain: {0}")]
    Chain(String),
    /// A receipt cannot go on chain.
    #[error(transparent)]
    Receipt(#[from] ReceiptError),
    /// The chain holds something other than what the ledger says was sent.
    #[error("batch {batch_id}: {reason}")]
    Mismatch {
        /// The batch.
        batch_id: String,
        /// What differs.
        reason: String,
    },
    /// The receipts file could not be written.
    #[error("writing the receipts file: {0}")]
    Io(#[from] std::io::Error),
}

/// When to cut a batch and how long to wait for the chain.
#[derive(Clone, Debug)]
pub struct SettlerConfig {
    /// A batch is cut as soon as this many receipts are pending.
    pub max_receipts: usize,
    /// ...or when the oldest pending receipt is this old.
    pub max_age: Duration,
    /// Blocks (including the one it landed in) before an invoice is settled.
    pub confirmations: u64,
    /// Pause between steps when there is nothing to do.
    pub poll: Duration,
    /// Longest wait for any one RPC answer.
    pub rpc_timeout: Duration,
    /// Where each batch's receipts file is written.
    pub invoices_dir: PathBuf,
}

impl Default for SettlerConfig {
    fn default() -> Self {
        Self {
            max_receipts: 1000,
            max_age: Duration::from_secs(10),
            confirmations: 1,
            poll: Duration::from_millis(500),
            rpc_timeout: Duration::from_secs(10),
            invoices_dir: PathBuf::from("data/invoices"),
        }
    }
}

/// What one step did.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// Nothing to settle yet.
    Idle,
    /// A batch is on its way (sent, or awaiting confirmations).
    Waiting(String),
    /// A batch became settled.
    Settled(String),
}

/// Posts invoices for a ledger's receipts.
pub struct Settler {
    ledger: Arc<dyn Ledger>,
    chain: Chain,
    config: SettlerConfig,
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn hex32(text: &str) -> Result<B256, SettleError> {
    text.parse().map_err(|_| SettleError::Mismatch {
        batch_id: text.to_string(),
        reason: "not a 32-byte hex id".into(),
    })
}

/// The Merkle tree and on-chain receipts of a batch, in leaf order.
pub fn build_tree(
    receipts: &[Receipt],
) -> Result<(MerkleTree, Vec<Settlement::Receipt>), ReceiptError> {
    let onchain = receipts
        .iter()
        .map(receipt::onchain)
        .collect::<Result<Vec<_>, _>>()?;
    let tree = MerkleTree::new(onchain.iter().map(receipt::leaf).collect())
        .unwrap_or_else(|| unreachable!("callers pass at least one receipt"));
    Ok((tree, onchain))
}

impl Settler {
    /// A settler over `ledger`, posting with `chain`'s signer.
    pub fn new(ledger: Arc<dyn Ledger>, chain: Chain, config: SettlerConfig) -> Self {
        Self {
            ledger,
            chain,
            config,
        }
    }

    /// Settles until `stop` resolves, retrying failed steps with backoff.
    pub async fn run(self, stop: impl std::future::Future<Output = ()>) {
        self.run_while(|| async { true }, stop).await
    }

    /// Settles until `stop` resolves, taking each step only while `may_settle`
    /// says so (a lease: several gateways share one ledger, one settles).
    /// Overlapping settlers cannot bill twice either way: batches are claimed
    /// in the ledger and their content-derived ids are refused on chain a
    /// second time; the lease saves the wasted work.
    pub async fn run_while<F, Fut>(self, may_settle: F, stop: impl std::future::Future<Output = ()>)
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        tokio::pin!(stop);
        let mut backoff = self.config.poll;
        loop {
            if !may_settle().await {
                tokio::select! {
                    () = &mut stop => return,
                    () = tokio::time::sleep(self.config.poll) => continue,
                }
            }
            let pause = match self.step().await {
                Ok(Step::Settled(id)) => {
                    tracing::info!(batch = id, "invoice settled");
                    backoff = self.config.poll;
                    Duration::ZERO
                }
                Ok(Step::Waiting(_)) | Ok(Step::Idle) => {
                    backoff = self.config.poll;
                    self.config.poll
                }
                Err(e) => {
                    tracing::warn!("settling failed, will retry: {e}");
                    ::metrics::counter!("tollgate_settle_errors_total").increment(1);
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                    backoff
                }
            };
            tokio::select! {
                () = &mut stop => return,
                () = tokio::time::sleep(pause) => {}
            }
        }
    }

    /// One step: advance the oldest unfinished batch, or cut a new one.
    pub async fn step(&self) -> Result<Step, SettleError> {
        let unfinished = self
            .ledger
            .batches()
            .await?
            .into_iter()
            .find(|b| !matches!(b.state, BatchState::Settled { .. }));
        if let Some(batch) = unfinished {
            return self.advance(batch).await;
        }
        let mut pending = Vec::new();
        for r in self.ledger.pending(self.config.max_receipts).await? {
            match receipt::onchain(&r) {
                Ok(_) => pending.push(r),
                Err(e) => {
                    // One bad receipt must not hold up every receipt behind it;
                    // reconciliation lists it for finance.
                    tracing::error!(request_id = r.request_id, "receipt cannot be settled: {e}");
                    ::metrics::counter!("tollgate_receipts_unsettleable_total").increment(1);
                    self.ledger.set_aside(&r.request_id, &e.to_string()).await?;
                }
            }
        }
        let Some(oldest) = pending.first() else {
            return Ok(Step::Idle);
        };
        let age = Duration::from_millis(now_ms().saturating_sub(oldest.finished_at_ms));
        if pending.len() < self.config.max_receipts && age < self.config.max_age {
            return Ok(Step::Idle);
        }
        let batch = self.cut(pending).await?;
        self.advance(batch).await
    }

    /// Records a new batch of these receipts, with its receipts file.
    async fn cut(&self, receipts: Vec<Receipt>) -> Result<Batch, SettleError> {
        let (tree, _) = build_tree(&receipts)?;
        let count = receipts.len() as u32;
        let batch_id = receipt::batch_id(tree.root(), count).to_string();
        let file = self.config.invoices_dir.join(format!("{batch_id}.json"));
        write_durably(
            &file,
            &serde_json::to_vec_pretty(&receipts).map_err(LedgerError::from)?,
        )?;
        let batch = Batch {
            batch_id: batch_id.clone(),
            merkle_root: tree.root().to_string(),
            receipt_count: u64::from(count),
            billed: receipts.iter().map(|r| r.amount).sum(),
            uri: format!("invoices/{batch_id}.json"),
            state: BatchState::Built,
            created_at_ms: now_ms(),
        };
        let ids = receipts.iter().map(|r| r.request_id.clone()).collect();
        self.ledger.create_batch(batch.clone(), ids).await?;
        tracing::info!(batch = batch_id, receipts = count, "invoice built");
        Ok(batch)
    }

    /// Moves a batch one state along, looking at the chain first.
    async fn advance(&self, batch: Batch) -> Result<Step, SettleError> {
        let id = hex32(&batch.batch_id)?;
        for attempt in 0..2 {
            match self.find_posted(id).await? {
                Some((tx_hash, block)) => return self.confirm(&batch, id, tx_hash, block).await,
                None if attempt == 0 => {
                    if matches!(batch.state, BatchState::Sent { .. }) {
                        tracing::warn!(
                            batch = batch.batch_id,
                            "invoice left the chain (reorg); sending again"
                        );
                        self.ledger.mark_unsent(&batch.batch_id).await?;
                    }
                    self.post(&batch).await?;
                }
                None => {}
            }
        }
        Ok(Step::Waiting(batch.batch_id))
    }

    /// Records where the invoice landed and settles it once deep enough.
    async fn confirm(
        &self,
        batch: &Batch,
        id: B256,
        tx_hash: B256,
        block: u64,
    ) -> Result<Step, SettleError> {
        let invoice = self
            .timed(self.chain.settlement().invoices(id).call())
            .await?
            .map_err(|e| SettleError::Chain(e.to_string()))?;
        if invoice.merkleRoot.to_string() != batch.merkle_root
            || u64::from(invoice.receiptCount) != batch.receipt_count
        {
            return Err(SettleError::Mismatch {
                batch_id: batch.batch_id.clone(),
                reason: format!(
                    "on chain: root {} with {} receipts; ledger: root {} with {}",
                    invoice.merkleRoot,
                    invoice.receiptCount,
                    batch.merkle_root,
                    batch.receipt_count
                ),
            });
        }
        let tx = tx_hash.to_string();
        let recorded = matches!(&batch.state, BatchState::Sent { tx_hash: t, block: b } if *t == tx && *b == block);
        if !recorded {
            if matches!(batch.state, BatchState::Sent { .. }) {
                self.ledger.mark_unsent(&batch.batch_id).await?;
            }
            self.ledger.mark_sent(&batch.batch_id, &tx, block).await?;
        }
        let head = self
            .timed(self.chain.provider().get_block_number())
            .await?
            .map_err(|e| SettleError::Chain(e.to_string()))?;
        if head + 1 < block + self.config.confirmations {
            return Ok(Step::Waiting(batch.batch_id.clone()));
        }
        self.ledger
            .mark_settled(&batch.batch_id, &tx, block)
            .await?;
        ::metrics::counter!("tollgate_invoices_settled_total").increment(1);
        ::metrics::counter!("tollgate_receipts_settled_total").increment(batch.receipt_count);
        Ok(Step::Settled(batch.batch_id.clone()))
    }

    /// The transaction and block of the invoice's `InvoicePosted` event, if any.
    async fn find_posted(&self, id: B256) -> Result<Option<(B256, u64)>, SettleError> {
        let settlement = self.chain.settlement();
        // One storage read answers "not posted" without scanning logs.
        let invoice = self
            .timed(settlement.invoices(id).call())
            .await?
            .map_err(|e| SettleError::Chain(e.to_string()))?;
        if invoice.receiptCount == 0 {
            return Ok(None);
        }
        let query = settlement
            .InvoicePosted_filter()
            .topic1(id)
            .from_block(self.chain.deployment().deploy_block);
        let logs = self
            .timed(query.query())
            .await?
            .map_err(|e| SettleError::Chain(e.to_string()))?;
        Ok(logs
            .into_iter()
            .find_map(|(_, log)| Some((log.transaction_hash?, log.block_number?))))
    }

    /// Sends the invoice; an already-posted batch counts as success.
    async fn post(&self, batch: &Batch) -> Result<(), SettleError> {
        let receipts = self.ledger.batch_receipts(&batch.batch_id).await?;
        if receipts.is_empty() {
            return Err(SettleError::Mismatch {
                batch_id: batch.batch_id.clone(),
                reason: "the ledger holds no receipts for it".into(),
            });
        }
        let (tree, onchain) = build_tree(&receipts)?;
        let count = receipts.len() as u32;
        if receipt::batch_id(tree.root(), count).to_string() != batch.batch_id {
            return Err(SettleError::Mismatch {
                batch_id: batch.batch_id.clone(),
                reason: "its receipts no longer hash to its id".into(),
            });
        }
        let settlement = self.chain.settlement();
        let call = settlement.postInvoice(
            tree.root(),
            count,
            receipt::lines(&onchain),
            batch.uri.clone(),
        );
        let pending = match self.timed(call.send()).await? {
            Ok(pending) => pending,
            Err(e) => {
                if e.as_decoded_error::<Settlement::BatchExists>().is_some() {
                    return Ok(());
                }
                return Err(SettleError::Chain(e.to_string()));
            }
        };
        let tx_hash = *pending.tx_hash();
        tracing::info!(batch = batch.batch_id, tx = %tx_hash, "invoice sent");
        let landed = self
            .timed(
                pending
                    .with_timeout(Some(self.config.rpc_timeout))
                    .get_receipt(),
            )
            .await?
            .map_err(|e| SettleError::Chain(format!("transaction {tx_hash}: {e}")))?;
        if !landed.status() {
            return Err(SettleError::Chain(format!(
                "transaction {tx_hash} reverted"
            )));
        }
        Ok(())
    }

    async fn timed<T>(
        &self,
        fut: impl std::future::IntoFuture<Output = T>,
    ) -> Result<T, SettleError> {
        tokio::time::timeout(self.config.rpc_timeout * 2, fut.into_future())
            .await
            .map_err(|_| SettleError::Chain("RPC timed out".into()))
    }
}

/// Writes a file so that it survives a crash: temp file, fsync, rename.
fn write_durably(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("json.tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    // The rename itself is durable only once the directory is synced.
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}
