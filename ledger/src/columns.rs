//! How the ledger's columns become its values, and which batch moves are
//! allowed: one reading for SQLite and PostgreSQL alike.

use crate::{Batch, BatchState, LedgerError, ReceiptState, StoredReceipt};

/// Columns every batch query selects, in [`BatchRow`]'s order.
pub(crate) const BATCH_COLUMNS: &str = "batch_id, merkle_root, receipt_count, billed, uri, state, tx_hash, block_number, created_at_ms";

/// An amount column: u128 atto-units as decimal text.
pub(crate) fn amount(text: &str) -> Result<u128, LedgerError> {
    text.parse()
        .map_err(|_| LedgerError::Database(format!("amount '{text}' is not an integer")))
}

/// A receipt row: its JSON body, state, batch and note.
pub(crate) fn stored_receipt(
    body: &str,
    state: &str,
    batch_id: Option<String>,
    note: Option<String>,
) -> Result<StoredReceipt, LedgerError> {
    Ok(StoredReceipt {
        receipt: serde_json::from_str(body)?,
        state: ReceiptState::parse(state)
            .ok_or_else(|| LedgerError::Database(format!("unknown receipt state '{state}'")))?,
        batch_id,
        note,
    })
}

/// A batch row as selected by [`BATCH_COLUMNS`].
pub(crate) struct BatchRow {
    pub batch_id: String,
    pub merkle_root: String,
    pub receipt_count: i64,
    pub billed: String,
    pub uri: String,
    pub state: String,
    pub tx_hash: Option<String>,
    pub block_number: Option<i64>,
    pub created_at_ms: i64,
}

impl BatchRow {
    /// The batch, refusing a state its columns contradict.
    pub(crate) fn into_batch(self) -> Result<Batch, LedgerError> {
        let state = match (self.state.as_str(), self.tx_hash, self.block_number) {
            ("built", _, _) => BatchState::Built,
            ("sent", Some(tx_hash), Some(block)) => BatchState::Sent {
                tx_hash,
                block: block as u64,
            },
            ("settled", Some(tx_hash), Some(block)) => BatchState::Settled {
                tx_hash,
                block: block as u64,
            },
            (other, _, _) => {
                return Err(LedgerError::Database(format!(
                    "batch {} has inconsistent state '{other}'",
                    self.batch_id
                )))
            }
        };
        Ok(Batch {
            batch_id: self.batch_id,
            merkle_root: self.merkle_root,
            receipt_count: self.receipt_count as u64,
            billed: amount(&self.billed)?,
            uri: self.uri,
            state,
            created_at_ms: self.created_at_ms as u64,
        })
    }
}

/// Checks a batch in `state` may become `to` (from one of `from`); answers
/// the state its receipts take.
pub(crate) fn batch_move(
    batch_id: &str,
    state: String,
    from: &[&str],
    to: &str,
) -> Result<&'static str, LedgerError> {
    if !from.contains(&state.as_str()) {
        return Err(LedgerError::BatchState {
            batch_id: batch_id.to_string(),
            state,
            wanted: to.to_string(),
        });
    }
    Ok(if to == "settled" {
        "settled"
    } else {
        "batched"
    })
}
