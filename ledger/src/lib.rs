//! Receipts of served requests, and the ledger that keeps them until they are
//! settled on chain.
//!
//! Every finished request, complete or cut short, yields one [`Receipt`]. The
//! gateway hands it to a [`ReceiptSink`] and waits for the sink to say it is
//! durable before the client sees the end of its response, so a request is
//! never served without a record of what it cost. A [`Ledger`] also tracks each
//! receipt's billing life: pending, then batched into an invoice, then settled.

mod columns;
mod postgres;
mod receipt;
mod split;
mod sqlite;
mod trust;

pub use postgres::PostgresLedger;
pub use receipt::{Outcome, Receipt, ResponseHasher, UsageSource};
pub use split::{split_by_blocks, StageShare};
pub use sqlite::SqliteLedger;
pub use trust::{AuditCount, TrustRecord, TrustStore};

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

/// Why the ledger could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// The underlying file failed.
    #[error("ledger I/O failed: {0}")]
    Io(#[from] std::io::Error),
    /// The database refused or failed.
    #[error("ledger database error: {0}")]
    Database(String),
    /// A receipt could not be encoded or decoded.
    #[error("receipt could not be encoded: {0}")]
    Encode(#[from] serde_json::Error),
    /// A different receipt already exists under this request id.
    #[error("a different receipt is already recorded for request {0}")]
    Conflict(String),
    /// A receipt meant for a new batch is not pending.
    #[error("receipt {0} is not pending, so it cannot join a new batch")]
    NotPending(String),
    /// No batch has this id.
    #[error("no batch {0} in the ledger")]
    UnknownBatch(String),
    /// A batch is not in a state that allows the change.
    #[error("batch {batch_id} is {state}; it cannot become {wanted}")]
    BatchState {
        /// The batch.
        batch_id: String,
        /// Its current state.
        state: String,
        /// The state asked for.
        wanted: String,
    },
    /// The writer is gone (shutting down or crashed).
    #[error("ledger writer stopped")]
    Closed,
}

impl From<rusqlite::Error> for LedgerError {
    fn from(e: rusqlite::Error) -> Self {
        LedgerError::Database(e.to_string())
    }
}

/// A boxed future, so that ledgers can be used as trait objects.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Where receipts go. `record` resolves only once the receipt is durable.
pub trait ReceiptSink: Send + Sync + 'static {
    /// Stores one request's receipts (one, or one per stage of a chain)
    /// together: all of them or none, durable when it resolves. Recording
    /// the same receipts twice is a no-op; if any one conflicts with a
    /// stored receipt, none of them is stored.
    fn record_all(&self, receipts: Vec<Receipt>) -> BoxFuture<'_, Result<(), LedgerError>>;

    /// Stores one receipt; resolves when it survives a crash.
    fn record(&self, receipt: Receipt) -> BoxFuture<'_, Result<(), LedgerError>> {
        self.record_all(vec![receipt])
    }
}

/// Where a receipt is in its billing life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ReceiptState {
    /// Recorded, not yet in an invoice.
    Pending,
    /// In an invoice that is not yet confirmed on chain.
    Batched,
    /// In a confirmed on-chain invoice.
    Settled,
    /// Cannot go on chain (e.g. no payer address); set aside so it does not
    /// block the receipts behind it, and listed by reconciliation.
    Unsettleable,
}

impl ReceiptState {
    fn parse(text: &str) -> Option<Self> {
        match text {
            "pending" => Some(Self::Pending),
            "batched" => Some(Self::Batched),
            "settled" => Some(Self::Settled),
            "unsettleable" => Some(Self::Unsettleable),
            _ => None,
        }
    }
}

/// A receipt with its billing state.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct StoredReceipt {
    /// The receipt as recorded.
    pub receipt: Receipt,
    /// Where it is in its billing life.
    pub state: ReceiptState,
    /// The invoice it belongs to, once batched.
    pub batch_id: Option<String>,
    /// Why it was set aside, for an unsettleable receipt.
    pub note: Option<String>,
}

/// Where an invoice is on its way to the chain.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case", tag = "state")]
pub enum BatchState {
    /// Its receipts are assigned; no transaction is known to have landed.
    Built,
    /// Its transaction landed in `block`, awaiting confirmations.
    Sent {
        /// Transaction hash (0x hex).
        tx_hash: String,
        /// Block it landed in.
        block: u64,
    },
    /// Confirmed on chain.
    Settled {
        /// Transaction hash (0x hex).
        tx_hash: String,
        /// Block it landed in.
        block: u64,
    },
}

/// One invoice as the ledger knows it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Batch {
    /// Content-derived id (0x hex), the same on chain.
    pub batch_id: String,
    /// Merkle root of its receipts (0x hex).
    pub merkle_root: String,
    /// Number of receipts.
    pub receipt_count: u64,
    /// Sum of its receipts' amounts, atto-units.
    pub billed: u128,
    /// Where the batch's receipts file is published.
    pub uri: String,
    /// Where it is on its way to the chain.
    #[serde(flatten)]
    pub state: BatchState,
    /// When the batch was built, Unix milliseconds.
    pub created_at_ms: u64,
}

/// A durable store of receipts through pending -> batched -> settled.
///
/// Every method is one atomic step, so a crash between any two leaves each
/// receipt in exactly one state. SQLite implements it for one gateway,
/// PostgreSQL for several sharing one database.
pub trait Ledger: ReceiptSink {
    /// Total billed per account over every receipt, so budgets survive restarts.
    fn spend_by_account(&self) -> BoxFuture<'_, Result<HashMap<String, u128>, LedgerError>>;
    /// Total not yet in a settled invoice per payer address, lower-case hex
    /// (what each payer's escrow must still cover).
    fn unsettled_by_payer(&self) -> BoxFuture<'_, Result<HashMap<String, u128>, LedgerError>>;
    /// Moves a pending receipt that cannot go on chain out of the queue.
    fn set_aside(&self, request_id: &str, reason: &str) -> BoxFuture<'_, Result<(), LedgerError>>;
    /// One receipt by request id.
    fn receipt(
        &self,
        request_id: &str,
    ) -> BoxFuture<'_, Result<Option<StoredReceipt>, LedgerError>>;
    /// Every receipt, oldest first.
    fn receipts(&self) -> BoxFuture<'_, Result<Vec<StoredReceipt>, LedgerError>>;
    /// Up to `limit` pending receipts, oldest first.
    fn pending(&self, limit: usize) -> BoxFuture<'_, Result<Vec<Receipt>, LedgerError>>;
    /// Records a new batch (state built) and moves its receipts from pending
    /// to batched, all or nothing.
    fn create_batch(
        &self,
        batch: Batch,
        request_ids: Vec<String>,
    ) -> BoxFuture<'_, Result<(), LedgerError>>;
    /// One batch by id.
    fn batch(&self, batch_id: &str) -> BoxFuture<'_, Result<Option<Batch>, LedgerError>>;
    /// Every batch, oldest first.
    fn batches(&self) -> BoxFuture<'_, Result<Vec<Batch>, LedgerError>>;
    /// A batch's receipts in Merkle-leaf order.
    fn batch_receipts(&self, batch_id: &str) -> BoxFuture<'_, Result<Vec<Receipt>, LedgerError>>;
    /// Records the transaction that carried a built batch.
    fn mark_sent(
        &self,
        batch_id: &str,
        tx_hash: &str,
        block: u64,
    ) -> BoxFuture<'_, Result<(), LedgerError>>;
    /// Marks a batch and its receipts settled.
    fn mark_settled(
        &self,
        batch_id: &str,
        tx_hash: &str,
        block: u64,
    ) -> BoxFuture<'_, Result<(), LedgerError>>;
    /// Returns a sent batch to built when its transaction left the chain (reorg).
    fn mark_unsent(&self, batch_id: &str) -> BoxFuture<'_, Result<(), LedgerError>>;
    /// Takes or renews the lease `name` for `holder` until `ttl` from now;
    /// true while `holder` holds it. Gateways sharing a ledger run the settler
    /// only under its lease. A ledger only one gateway uses grants every lease.
    fn hold_lease(
        &self,
        name: &str,
        holder: &str,
        ttl: Duration,
    ) -> BoxFuture<'_, Result<bool, LedgerError>> {
        let _ = (name, holder, ttl);
        Box::pin(async { Ok(true) })
    }
}
