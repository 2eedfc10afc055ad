//! The SQLite ledger: receipts and the invoices they are settled in.
//!
//! Receipts are written by one thread with group commit: it drains every queued
//! receipt, inserts them in one transaction and commits once (WAL with
//! `synchronous=FULL`, so the commit is an fsync), then answers every caller in
//! that group. Under load many receipts share one fsync.
//!
//! The settler's work (choosing a batch, recording the transaction, marking it
//! settled) runs on a second connection; each step is one transaction, so a
//! crash leaves every receipt in exactly one state.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rusqlite::{params, Connection, OptionalExtension, Transaction, TransactionBehavior};
use tokio::sync::{mpsc, oneshot};

mod trust;

use crate::columns::{self, BatchRow, BATCH_COLUMNS};
use crate::{Batch, BoxFuture, Ledger, LedgerError, Receipt, ReceiptSink, StoredReceipt};

type Ack = oneshot::Sender<Result<(), LedgerError>>;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS batches (
    batch_id      TEXT PRIMARY KEY,
    merkle_root   TEXT NOT NULL,
    receipt_count INTEGER NOT NULL,
    billed        TEXT NOT NULL,
    uri           TEXT NOT NULL,
    state         TEXT NOT NULL CHECK (state IN ('built', 'sent', 'settled')),
    tx_hash       TEXT,
    block_number  INTEGER,
    created_at_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS receipts (
    seq            INTEGER PRIMARY KEY AUTOINCREMENT,
    request_id     TEXT NOT NULL UNIQUE,
    account        TEXT NOT NULL,
    amount         TEXT NOT NULL,
    finished_at_ms INTEGER NOT NULL,
    body           TEXT NOT NULL,
    state          TEXT NOT NULL DEFAULT 'pending'
                   CHECK (state IN ('pending', 'batched', 'settled', 'unsettleable')),
    batch_id       TEXT REFERENCES batches(batch_id),
    note           TEXT
);
CREATE INDEX IF NOT EXISTS receipts_by_state ON receipts(state, seq);
CREATE INDEX IF NOT EXISTS receipts_by_batch ON receipts(batch_id, seq);
";

/// Receipts and invoices in one SQLite file.
pub struct SqliteLedger {
    path: PathBuf,
    queue: mpsc::UnboundedSender<(Vec<Receipt>, Ack)>,
    conn: Arc<Mutex<Connection>>,
    /// Dropped with the ledger, which ends the checkpoint thread.
    _alive: Arc<()>,
}

/// Folds the write-ahead log into the database every second, without
/// blocking the writer, until the ledger is dropped. (Every 5 s measured
/// worse: larger checkpoints hold the disk longer against commits.)
fn checkpoint_loop(conn: Connection, alive: std::sync::Weak<()>) {
    while alive.upgrade().is_some() {
        std::thread::sleep(std::time::Duration::from_secs(1));
        if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
            tracing::warn!("ledger checkpoint failed: {e}");
        }
    }
}

fn open_connection(path: &Path) -> Result<Connection, LedgerError> {
    let conn = Connection::open(path)?;
    // WAL lets the settler and readers work beside the writer; FULL makes
    // every commit an fsync of the log, which is what "durable" means here.
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    Ok(conn)
}

impl SqliteLedger {
    /// Opens (creating if needed) the database and starts its writer thread.
    pub fn open(path: impl Into<PathBuf>) -> Result<Self, LedgerError> {
        let path = path.into();
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let conn = open_connection(&path)?;
        conn.execute_batch(SCHEMA)?;
        conn.execute_batch(trust::SCHEMA)?;
        let writer = open_connection(&path)?;
        // The writer never checkpoints: copying the log into the database (and
        // syncing it) would stall every receipt waiting on the next commit. A
        // separate thread checkpoints passively, beside the writer.
        writer.pragma_update(None, "wal_autocheckpoint", 0)?;
        let checkpointer = open_connection(&path)?;
        let alive = Arc::new(());
        let watch = Arc::downgrade(&alive);
        std::thread::Builder::new()
            .name("ledger-checkpoint".into())
            .spawn(move || checkpoint_loop(checkpointer, watch))?;
        let (queue, rx) = mpsc::unbounded_channel();
        std::thread::Builder::new()
            .name("ledger-writer".into())
            .spawn(move || write_loop(writer, rx))?;
        Ok(Self {
            path,
            queue,
            conn: Arc::new(Mutex::new(conn)),
            _alive: alive,
        })
    }

    /// Opens an existing database for reading and settling, without a writer
    /// for new receipts (the finance CLI). Fails if the file does not exist.
    pub fn open_existing(path: impl Into<PathBuf>) -> Result<Self, LedgerError> {
        let path = path.into();
        if !path.exists() {
            return Err(LedgerError::Io(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("no ledger at {}", path.display()),
            )));
        }
        Self::open(path)
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` on the settler's connection off the async runtime.
    fn with_conn<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, LedgerError> + Send + 'static,
    ) -> BoxFuture<'_, Result<T, LedgerError>> {
        let conn = self.conn.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || {
                let mut conn = conn.lock().map_err(|_| LedgerError::Closed)?;
                f(&mut conn)
            })
            .await
            .map_err(|_| LedgerError::Closed)?
        })
    }
}

impl ReceiptSink for SqliteLedger {
    fn record_all(&self, receipts: Vec<Receipt>) -> BoxFuture<'_, Result<(), LedgerError>> {
        Box::pin(async move {
            let (ack, done) = oneshot::channel();
            self.queue
                .send((receipts, ack))
                .map_err(|_| LedgerError::Closed)?;
            done.await.map_err(|_| LedgerError::Closed)?
        })
    }
}

fn write_loop(mut conn: Connection, mut rx: mpsc::UnboundedReceiver<(Vec<Receipt>, Ack)>) {
    let mut group: Vec<(Vec<Receipt>, Ack)> = Vec::new();
    while let Some(first) = rx.blocking_recv() {
        group.push(first);
        while let Ok(next) = rx.try_recv() {
            group.push(next);
        }
        let answers = insert_group(&mut conn, &group);
        for ((_, ack), answer) in group.drain(..).zip(answers) {
            // A caller that stopped waiting no longer needs its answer.
            let _ = ack.send(answer);
        }
    }
}

/// Inserts a group in one transaction; one answer per receipt, in order.
fn insert_group(
    conn: &mut Connection,
    group: &[(Vec<Receipt>, Ack)],
) -> Vec<Result<(), LedgerError>> {
    let mut attempt = || -> Result<Vec<Result<(), LedgerError>>, LedgerError> {
        let tx = conn.transaction()?;
        let mut answers = Vec::with_capacity(group.len());
        for (receipts, _) in group {
            let mut fresh = Vec::new();
            let mut answer = Ok(());
            for receipt in receipts {
                match insert_one(&tx, receipt) {
                    Ok(true) => fresh.push(receipt.request_id.as_str()),
                    Ok(false) => {}
                    // A refused duplicate leaves the transaction healthy...
                    Err(LedgerError::Conflict(id)) => {
                        answer = Err(LedgerError::Conflict(id));
                        break;
                    }
                    // ...any other failure may have rolled it back already, so the
                    // whole group fails rather than half of it landing unannounced.
                    Err(e) => return Err(e),
                }
            }
            // A request's receipts land together or not at all.
            if answer.is_err() {
                for id in fresh {
                    tx.execute("DELETE FROM receipts WHERE request_id = ?1", [id])?;
                }
            }
            answers.push(answer);
        }
        tx.commit()?;
        Ok(answers)
    };
    match attempt() {
        Ok(answers) => answers,
        Err(e) => {
            let text = e.to_string();
            group
                .iter()
                .map(|_| Err(LedgerError::Database(text.clone())))
                .collect()
        }
    }
}

/// Inserts one receipt (true when it is new); the same receipt twice is a
/// no-op, a different receipt under a known request id is refused.
fn insert_one(tx: &Transaction<'_>, receipt: &Receipt) -> Result<bool, LedgerError> {
    let body = serde_json::to_string(receipt)?;
    let inserted = tx
        .prepare_cached(
            "INSERT INTO receipts (request_id, account, amount, finished_at_ms, body)
             VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT(request_id) DO NOTHING",
        )?
        .execute(params![
            receipt.request_id,
            receipt.account,
            receipt.amount.to_string(),
            receipt.finished_at_ms as i64,
            body
        ])?;
    if inserted == 1 {
        return Ok(true);
    }
    let existing: String = tx.query_row(
        "SELECT body FROM receipts WHERE request_id = ?1",
        [&receipt.request_id],
        |row| row.get(0),
    )?;
    let existing: Receipt = serde_json::from_str(&existing)?;
    if &existing == receipt {
        Ok(false)
    } else {
        Err(LedgerError::Conflict(receipt.request_id.clone()))
    }
}

type StoredRow = (String, String, Option<String>, Option<String>);

fn stored(row: &rusqlite::Row<'_>) -> rusqlite::Result<StoredRow> {
    Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?))
}

fn to_stored((body, state, batch_id, note): StoredRow) -> Result<StoredReceipt, LedgerError> {
    columns::stored_receipt(&body, &state, batch_id, note)
}

fn batch_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<BatchRow> {
    Ok(BatchRow {
        batch_id: row.get(0)?,
        merkle_root: row.get(1)?,
        receipt_count: row.get(2)?,
        billed: row.get(3)?,
        uri: row.get(4)?,
        state: row.get(5)?,
        tx_hash: row.get(6)?,
        block_number: row.get(7)?,
        created_at_ms: row.get(8)?,
    })
}

fn receipts_of(conn: &Connection, batch_id: &str) -> Result<Vec<Receipt>, LedgerError> {
    let mut stmt = conn.prepare("SELECT body FROM receipts WHERE batch_id = ?1 ORDER BY seq")?;
    let bodies = stmt
        .query_map([batch_id], |row| row.get::<_, String>(0))?
        .collect::<Result<Vec<_>, _>>()?;
    bodies
        .iter()
        .map(|b| serde_json::from_str(b).map_err(LedgerError::from))
        .collect()
}

fn set_batch_state(
    conn: &mut Connection,
    batch_id: &str,
    from: &[&str],
    to: &str,
    tx_hash: Option<&str>,
    block: Option<u64>,
) -> Result<(), LedgerError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let state: Option<String> = tx
        .query_row(
            "SELECT state FROM batches WHERE batch_id = ?1",
            [batch_id],
            |r| r.get(0),
        )
        .optional()?;
    let Some(state) = state else {
        return Err(LedgerError::UnknownBatch(batch_id.to_string()));
    };
    let receipt_state = columns::batch_move(batch_id, state, from, to)?;
    tx.execute(
        "UPDATE batches SET state = ?2, tx_hash = ?3, block_number = ?4 WHERE batch_id = ?1",
        params![batch_id, to, tx_hash, block.map(|b| b as i64)],
    )?;
    tx.execute(
        "UPDATE receipts SET state = ?2 WHERE batch_id = ?1",
        params![batch_id, receipt_state],
    )?;
    tx.commit()?;
    Ok(())
}

/// Sums amounts per account over the receipts a query selects.
fn totals(conn: &Connection, sql: &str) -> Result<HashMap<String, u128>, LedgerError> {
    let mut stmt = conn.prepare(sql)?;
    let rows = stmt.query_map([], |row| {
        Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?))
    })?;
    let mut totals = HashMap::new();
    for row in rows {
        let (account, amount) = row?;
        *totals.entry(account).or_insert(0u128) += columns::amount(&amount)?;
    }
    Ok(totals)
}

impl Ledger for SqliteLedger {
    fn spend_by_account(&self) -> BoxFuture<'_, Result<HashMap<String, u128>, LedgerError>> {
        self.with_conn(|conn| totals(conn, "SELECT account, amount FROM receipts"))
    }

    fn unsettled_by_payer(&self) -> BoxFuture<'_, Result<HashMap<String, u128>, LedgerError>> {
        self.with_conn(|conn| {
            totals(
                conn,
                "SELECT lower(json_extract(body, '$.payer')), amount FROM receipts
                 WHERE state IN ('pending', 'batched')",
            )
        })
    }

    fn set_aside(&self, request_id: &str, reason: &str) -> BoxFuture<'_, Result<(), LedgerError>> {
        let (request_id, reason) = (request_id.to_string(), reason.to_string());
        self.with_conn(move |conn| {
            let changed = conn.execute(
                "UPDATE receipts SET state = 'unsettleable', note = ?2
                 WHERE request_id = ?1 AND state = 'pending'",
                params![request_id, reason],
            )?;
            if changed == 1 {
                Ok(())
            } else {
                Err(LedgerError::NotPending(request_id))
            }
        })
    }

    fn receipt(
        &self,
        request_id: &str,
    ) -> BoxFuture<'_, Result<Option<StoredReceipt>, LedgerError>> {
        let request_id = request_id.to_string();
        self.with_conn(move |conn| {
            conn.query_row(
                "SELECT body, state, batch_id, note FROM receipts WHERE request_id = ?1",
                [request_id],
                stored,
            )
            .optional()?
            .map(to_stored)
            .transpose()
        })
    }

    fn receipts(&self) -> BoxFuture<'_, Result<Vec<StoredReceipt>, LedgerError>> {
        self.with_conn(|conn| {
            let mut stmt =
                conn.prepare("SELECT body, state, batch_id, note FROM receipts ORDER BY seq")?;
            let rows = stmt.query_map([], stored)?.collect::<Result<Vec<_>, _>>()?;
            rows.into_iter().map(to_stored).collect()
        })
    }

    fn pending(&self, limit: usize) -> BoxFuture<'_, Result<Vec<Receipt>, LedgerError>> {
        self.with_conn(move |conn| {
            let mut stmt = conn.prepare(
                "SELECT body FROM receipts WHERE state = 'pending' ORDER BY seq LIMIT ?1",
            )?;
            let bodies = stmt
                .query_map([limit as i64], |row| row.get::<_, String>(0))?
                .collect::<Result<Vec<_>, _>>()?;
            bodies
                .iter()
                .map(|b| serde_json::from_str(b).map_err(LedgerError::from))
                .collect()
        })
    }

    fn create_batch(
        &self,
        batch: Batch,
        request_ids: Vec<String>,
    ) -> BoxFuture<'_, Result<(), LedgerError>> {
        self.with_conn(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            tx.execute(
                "INSERT INTO batches (batch_id, merkle_root, receipt_count, billed, uri, state, created_at_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, 'built', ?6)",
                params![
                    batch.batch_id,
                    batch.merkle_root,
                    batch.receipt_count as i64,
                    batch.billed.to_string(),
                    batch.uri,
                    batch.created_at_ms as i64
                ],
            )?;
            let mut update = tx.prepare(
                "UPDATE receipts SET state = 'batched', batch_id = ?1
                 WHERE request_id = ?2 AND state = 'pending'",
            )?;
            for id in &request_ids {
                if update.execute(params![batch.batch_id, id])? != 1 {
                    // Someone else batched it, or it never existed: the whole
                    // batch is abandoned rather than half-assigned.
                    return Err(LedgerError::NotPending(id.clone()));
                }
            }
            drop(update);
            tx.commit()?;
            Ok(())
        })
    }

    fn batch(&self, batch_id: &str) -> BoxFuture<'_, Result<Option<Batch>, LedgerError>> {
        let batch_id = batch_id.to_string();
        self.with_conn(move |conn| {
            conn.query_row(
                &format!("SELECT {BATCH_COLUMNS} FROM batches WHERE batch_id = ?1"),
                [batch_id],
                batch_row,
            )
            .optional()?
            .map(BatchRow::into_batch)
            .transpose()
        })
    }

    fn batches(&self) -> BoxFuture<'_, Result<Vec<Batch>, LedgerError>> {
        self.with_conn(|conn| {
            let mut stmt = conn.prepare(&format!(
                "SELECT {BATCH_COLUMNS} FROM batches ORDER BY created_at_ms, batch_id"
            ))?;
            let rows = stmt
                .query_map([], batch_row)?
                .collect::<Result<Vec<_>, _>>()?;
            rows.into_iter().map(BatchRow::into_batch).collect()
        })
    }

    fn batch_receipts(&self, batch_id: &str) -> BoxFuture<'_, Result<Vec<Receipt>, LedgerError>> {
        let batch_id = batch_id.to_string();
        self.with_conn(move |conn| receipts_of(conn, &batch_id))
    }

    fn mark_sent(
        &self,
        batch_id: &str,
        tx_hash: &str,
        block: u64,
    ) -> BoxFuture<'_, Result<(), LedgerError>> {
        let (batch_id, tx_hash) = (batch_id.to_string(), tx_hash.to_string());
        self.with_conn(move |conn| {
            set_batch_state(
                conn,
                &batch_id,
                &["built", "sent"],
                "sent",
                Some(&tx_hash),
                Some(block),
            )
        })
    }

    fn mark_settled(
        &self,
        batch_id: &str,
        tx_hash: &str,
        block: u64,
    ) -> BoxFuture<'_, Result<(), LedgerError>> {
        let (batch_id, tx_hash) = (batch_id.to_string(), tx_hash.to_string());
        self.with_conn(move |conn| {
            set_batch_state(
                conn,
                &batch_id,
                &["built", "sent"],
                "settled",
                Some(&tx_hash),
                Some(block),
            )
        })
    }

    fn mark_unsent(&self, batch_id: &str) -> BoxFuture<'_, Result<(), LedgerError>> {
        let batch_id = batch_id.to_string();
        self.with_conn(move |conn| set_batch_state(conn, &batch_id, &["sent"], "built", None, None))
    }
}
