//! Receipts of served requests and the sinks that keep them.
//!
//! Every finished request, complete or cut short, yields one [`Receipt`]. The
//! gateway hands it to a [`ReceiptSink`] and waits for the sink to say it is
//! durable before the client sees the end of its response, so a request is
//! never served without a record of what it cost.

mod jsonl;
mod receipt;

pub use jsonl::JsonlSink;
pub use receipt::{Outcome, Receipt, ResponseHasher, UsageSource};

use std::future::Future;
use std::pin::Pin;

/// Why a receipt could not be made durable.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// The underlying file or database failed.
    #[error("ledger I/O failed: {0}")]
    Io(#[from] std::io::Error),
    /// The receipt could not be encoded.
    #[error("receipt could not be encoded: {0}")]
    Encode(#[from] serde_json::Error),
    /// The sink's writer is gone (shutting down or crashed).
    #[error("ledger writer stopped")]
    Closed,
}

/// A boxed future, so that sinks can be used as trait objects.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Where receipts go. `record` resolves only once the receipt is durable.
pub trait ReceiptSink: Send + Sync + 'static {
    /// Stores one receipt; resolves when it survives a crash.
    fn record(&self, receipt: Receipt) -> BoxFuture<'_, Result<(), LedgerError>>;
}
