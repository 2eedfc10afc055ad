//! The PostgreSQL ledger: the same receipts, batches and states as the SQLite
//! ledger, in a database several gateways share.
//!
//! Receipts are written with group commit, as in SQLite: one task drains every
//! queued receipt into one transaction, and PostgreSQL's commit (with
//! `synchronous_commit` on, its default) is durable. Settler steps are one
//! transaction each, and row locks make two settlers that race for the same
//! receipts leave them in exactly one batch. The schema comes from the
//! numbered migrations in `ledger/migrations/postgres`, applied at connect
//! under an advisory lock so that gateways starting together apply each once.

use std::collections::HashMap;
use std::time::Duration;

mod trust;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio::sync::{mpsc, oneshot};
use tokio_postgres::{NoTls, Row};

use crate::columns::{self, BatchRow, BATCH_COLUMNS};
use crate::{Batch, BoxFuture, Ledger, LedgerError, Receipt, ReceiptSink, StoredReceipt};

type Ack = oneshot::Sender<Result<(), LedgerError>>;

/// The schema, one migration per step, in order; each is applied once.
const MIGRATIONS: &[(i32, &str, &str)] = &[
    (
        1,
        "receipts_and_batches",
        include_str!("../../migrations/postgres/0001_receipts_and_batches.sql"),
    ),
    (
        2,
        "leases",
        include_str!("../../migrations/postgres/0002_leases.sql"),
    ),
    (
        3,
        "node_trust",
        include_str!("../../migrations/postgres/0003_node_trust.sql"),
    ),
];

/// Any number: the advisory lock that serialises migrations between gateways.
const MIGRATION_LOCK: i64 = 0x746f_6c6c_6761_7465;

/// Most connections one gateway holds.
const POOL_SIZE: usize = 8;

impl From<tokio_postgres::Error> for LedgerError {
    fn from(e: tokio_postgres::Error) -> Self {
        LedgerError::Database(e.to_string())
    }
}

impl From<deadpool_postgres::PoolError> for LedgerError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        LedgerError::Database(e.to_string())
    }
}

/// Receipts and invoices in a shared PostgreSQL database.
pub struct PostgresLedger {
    pool: Pool,
    queue: mpsc::UnboundedSender<(Vec<Receipt>, Ack)>,
}

impl PostgresLedger {
    /// Connects to `url` (`postgresql://user@host:port/db`), applies the
    /// migrations it lacks and starts the receipt writer.
    pub async fn connect(url: &str) -> Result<Self, LedgerError> {
        let config: tokio_postgres::Config = url
            .parse()
            .map_err(|e| LedgerError::Database(format!("bad PostgreSQL URL: {e}")))?;
        let manager = Manager::from_config(
            config,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .wait_timeout(Some(Duration::from_secs(10)))
            .create_timeout(Some(Duration::from_secs(10)))
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .build()
            .map_err(|e| LedgerError::Database(e.to_string()))?;
        migrate(&pool).await?;
        let (queue, rx) = mpsc::unbounded_channel();
        tokio::spawn(write_loop(pool.clone(), rx));
        Ok(Self { pool, queue })
    }
}

async fn migrate(pool: &Pool) -> Result<(), LedgerError> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
             version    INT PRIMARY KEY,
             name       TEXT NOT NULL,
             applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
         )",
    )
    .await?;
    let applied: Vec<i32> = tx
        .query("SELECT version FROM schema_migrations", &[])
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    for (version, name, sql) in MIGRATIONS {
        if applied.contains(version) {
            continue;
        }
        tx.batch_execute(sql).await?;
        tx.execute(
            "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
            &[version, name],
        )
        .await?;
        tracing::info!(version, name, "ledger migration applied");
    }
    tx.commit().await?;
    Ok(())
}

impl ReceiptSink for PostgresLedger {
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

async fn write_loop(pool: Pool, mut rx: mpsc::UnboundedReceiver<(Vec<Receipt>, Ack)>) {
    let mut group: Vec<(Vec<Receipt>, Ack)> = Vec::new();
    while let Some(first) = rx.recv().await {
        group.push(first);
        while let Ok(next) = rx.try_recv() {
            group.push(next);
        }
        let answers = match insert_group(&pool, &group).await {
            Ok(answers) => answers,
            Err(e) => {
                let text = e.to_string();
                group
                    .iter()
                    .map(|_| Err(LedgerError::Database(text.clone())))
                    .collect()
            }
        };
        for ((_, ack), answer) in group.drain(..).zip(answers) {
            // A caller that stopped waiting no longer needs its answer.
            let _ = ack.send(answer);
        }
    }
}

/// Inserts a group in one statement and one transaction; one answer per
/// request, in order. The same receipt twice is a no-op, a different one
/// under a known request id is refused (the inner result) and takes its
/// request's other receipts back out, and a database failure fails the
/// whole group (the outer one).
async fn insert_group(
    pool: &Pool,
    group: &[(Vec<Receipt>, Ack)],
) -> Result<Vec<Result<(), LedgerError>>, LedgerError> {
    let receipts: Vec<&Receipt> = group.iter().flat_map(|(r, _)| r).collect();
    let ids: Vec<&str> = receipts.iter().map(|r| r.request_id.as_str()).collect();
    let accounts: Vec<&str> = receipts.iter().map(|r| r.account.as_str()).collect();
    let payers: Vec<String> = receipts
        .iter()
        .map(|r| r.payer.to_ascii_lowercase())
        .collect();
    let amounts: Vec<String> = receipts.iter().map(|r| r.amount.to_string()).collect();
    let finished: Vec<i64> = receipts.iter().map(|r| r.finished_at_ms as i64).collect();
    let bodies = receipts
        .iter()
        .map(serde_json::to_string)
        .collect::<Result<Vec<_>, _>>()?;
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    // One round trip for the whole group, however many writers it gathers.
    let inserted: std::collections::HashSet<String> = tx
        .query(
            "INSERT INTO receipts (request_id, account, payer, amount, finished_at_ms, body)
             SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::int8[], $6::text[])
             ON CONFLICT (request_id) DO NOTHING
             RETURNING request_id",
            &[&ids, &accounts, &payers, &amounts, &finished, &bodies],
        )
        .await?
        .iter()
        .map(|row| row.get(0))
        .collect();
    // Receipts not inserted by their first mention here already existed (or
    // came twice in this group): each must equal what is stored.
    let mut first = std::collections::HashSet::new();
    let fresh: Vec<bool> = ids
        .iter()
        .map(|id| inserted.contains(*id) && first.insert(*id))
        .collect();
    let again: Vec<&str> = ids
        .iter()
        .zip(&fresh)
        .filter(|(_, &new)| !new)
        .map(|(id, _)| *id)
        .collect();
    let stored: HashMap<String, String> = if again.is_empty() {
        HashMap::new()
    } else {
        tx.query(
            "SELECT request_id, body FROM receipts WHERE request_id = ANY($1)",
            &[&again],
        )
        .await?
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect()
    };
    let mut answers = Vec::with_capacity(group.len());
    let mut undo: Vec<&str> = Vec::new();
    let mut at = 0;
    for (request, _) in group {
        let mut answer = Ok(());
        for (r, &new) in request.iter().zip(&fresh[at..]) {
            if new {
                continue;
            }
            let existing: Receipt = match stored.get(&r.request_id) {
                Some(body) => serde_json::from_str(body)?,
                None => {
                    return Err(LedgerError::Database(format!(
                        "receipt {} neither inserted nor found",
                        r.request_id
                    )))
                }
            };
            if &existing != r {
                answer = Err(LedgerError::Conflict(r.request_id.clone()));
            }
        }
        // A request's receipts land together or not at all.
        if answer.is_err() {
            undo.extend(
                request
                    .iter()
                    .zip(&fresh[at..])
                    .filter(|(_, &new)| new)
                    .map(|(r, _)| r.request_id.as_str()),
            );
        }
        at += request.len();
        answers.push(answer);
    }
    if !undo.is_empty() {
        tx.execute("DELETE FROM receipts WHERE request_id = ANY($1)", &[&undo])
            .await?;
    }
    tx.commit().await?;
    Ok(answers)
}

fn to_stored(row: &Row) -> Result<StoredReceipt, LedgerError> {
    columns::stored_receipt(row.get(0), row.get(1), row.get(2), row.get(3))
}

fn to_batch(row: &Row) -> Result<Batch, LedgerError> {
    BatchRow {
        batch_id: row.get(0),
        merkle_root: row.get(1),
        receipt_count: row.get(2),
        billed: row.get(3),
        uri: row.get(4),
        state: row.get(5),
        tx_hash: row.get(6),
        block_number: row.get(7),
        created_at_ms: row.get(8),
    }
    .into_batch()
}

fn bodies(rows: &[Row]) -> Result<Vec<Receipt>, LedgerError> {
    rows.iter()
        .map(|r| serde_json::from_str(r.get::<_, &str>(0)).map_err(LedgerError::from))
        .collect()
}

/// Sums per key over rows of (key, decimal amount); the database sums exactly
/// (NUMERIC), so few rows cross the wire.
fn totals(rows: &[Row]) -> Result<HashMap<String, u128>, LedgerError> {
    let mut totals = HashMap::new();
    for row in rows {
        *totals.entry(row.get::<_, String>(0)).or_insert(0u128) += columns::amount(row.get(1))?;
    }
    Ok(totals)
}

impl PostgresLedger {
    async fn set_batch_state(
        &self,
        batch_id: &str,
        from: &[&str],
        to: &str,
        tx_hash: Option<&str>,
        block: Option<u64>,
    ) -> Result<(), LedgerError> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let row = tx
            .query_opt(
                "SELECT state FROM batches WHERE batch_id = $1 FOR UPDATE",
                &[&batch_id],
            )
            .await?;
        let Some(row) = row else {
            return Err(LedgerError::UnknownBatch(batch_id.to_string()));
        };
        let state: String = row.get(0);
        let receipt_state = columns::batch_move(batch_id, state, from, to)?;
        tx.execute(
            "UPDATE batches SET state = $2, tx_hash = $3, block_number = $4 WHERE batch_id = $1",
            &[&batch_id, &to, &tx_hash, &block.map(|b| b as i64)],
        )
        .await?;
        tx.execute(
            "UPDATE receipts SET state = $2 WHERE batch_id = $1",
            &[&batch_id, &receipt_state],
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }
}

impl Ledger for PostgresLedger {
    fn spend_by_account(&self) -> BoxFuture<'_, Result<HashMap<String, u128>, LedgerError>> {
        Box::pin(async move {
            let client = self.pool.get().await?;
            totals(
                &client
                    .query(
                        "SELECT account, SUM(amount::numeric)::text FROM receipts GROUP BY account",
                        &[],
                    )
                    .await?,
            )
        })
    }

    fn unsettled_by_payer(&self) -> BoxFuture<'_, Result<HashMap<String, u128>, LedgerError>> {
        Box::pin(async move {
            let client = self.pool.get().await?;
            totals(
                &client
                    .query(
                        "SELECT payer, SUM(amount::numeric)::text FROM receipts
                         WHERE state IN ('pending', 'batched') GROUP BY payer",
                        &[],
                    )
                    .await?,
            )
        })
    }

    fn set_aside(&self, request_id: &str, reason: &str) -> BoxFuture<'_, Result<(), LedgerError>> {
        let (request_id, reason) = (request_id.to_string(), reason.to_string());
        Box::pin(async move {
            let client = self.pool.get().await?;
            let changed = client
                .execute(
                    "UPDATE receipts SET state = 'unsettleable', note = $2
                     WHERE request_id = $1 AND state = 'pending'",
                    &[&request_id, &reason],
                )
                .await?;
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
        Box::pin(async move {
            let client = self.pool.get().await?;
            client
                .query_opt(
                    "SELECT body, state, batch_id, note FROM receipts WHERE request_id = $1",
                    &[&request_id],
                )
                .await?
                .as_ref()
                .map(to_stored)
                .transpose()
        })
    }

    fn receipts(&self) -> BoxFuture<'_, Result<Vec<StoredReceipt>, LedgerError>> {
        Box::pin(async move {
            let client = self.pool.get().await?;
            client
                .query(
                    "SELECT body, state, batch_id, note FROM receipts ORDER BY seq",
                    &[],
                )
                .await?
                .iter()
                .map(to_stored)
                .collect()
        })
    }

    fn pending(&self, limit: usize) -> BoxFuture<'_, Result<Vec<Receipt>, LedgerError>> {
        Box::pin(async move {
            let client = self.pool.get().await?;
            let rows = client
                .query(
                    "SELECT body FROM receipts WHERE state = 'pending' ORDER BY seq LIMIT $1",
                    &[&(limit as i64)],
                )
                .await?;
            bodies(&rows)
        })
    }

    fn create_batch(
        &self,
        batch: Batch,
        request_ids: Vec<String>,
    ) -> BoxFuture<'_, Result<(), LedgerError>> {
        Box::pin(async move {
            let mut client = self.pool.get().await?;
            let tx = client.transaction().await?;
            tx.execute(
                "INSERT INTO batches (batch_id, merkle_root, receipt_count, billed, uri, state, created_at_ms)
                 VALUES ($1, $2, $3, $4, $5, 'built', $6)",
                &[
                    &batch.batch_id,
                    &batch.merkle_root,
                    &(batch.receipt_count as i64),
                    &batch.billed.to_string(),
                    &batch.uri,
                    &(batch.created_at_ms as i64),
                ],
            )
            .await?;
            for id in &request_ids {
                let changed = tx
                    .execute(
                        "UPDATE receipts SET state = 'batched', batch_id = $1
                         WHERE request_id = $2 AND state = 'pending'",
                        &[&batch.batch_id, id],
                    )
                    .await?;
                if changed != 1 {
                    // Another settler batched it, or it never existed: the
                    // whole batch is abandoned (the transaction rolls back).
                    return Err(LedgerError::NotPending(id.clone()));
                }
            }
            tx.commit().await?;
            Ok(())
        })
    }

    fn batch(&self, batch_id: &str) -> BoxFuture<'_, Result<Option<Batch>, LedgerError>> {
        let batch_id = batch_id.to_string();
        Box::pin(async move {
            let client = self.pool.get().await?;
            client
                .query_opt(
                    &format!("SELECT {BATCH_COLUMNS} FROM batches WHERE batch_id = $1"),
                    &[&batch_id],
                )
                .await?
                .as_ref()
                .map(to_batch)
                .transpose()
        })
    }

    fn batches(&self) -> BoxFuture<'_, Result<Vec<Batch>, LedgerError>> {
        Box::pin(async move {
            let client = self.pool.get().await?;
            client
                .query(
                    &format!(
                        "SELECT {BATCH_COLUMNS} FROM batches ORDER BY created_at_ms, batch_id"
                    ),
                    &[],
                )
                .await?
                .iter()
                .map(to_batch)
                .collect()
        })
    }

    fn batch_receipts(&self, batch_id: &str) -> BoxFuture<'_, Result<Vec<Receipt>, LedgerError>> {
        let batch_id = batch_id.to_string();
        Box::pin(async move {
            let client = self.pool.get().await?;
            let rows = client
                .query(
                    "SELECT body FROM receipts WHERE batch_id = $1 ORDER BY seq",
                    &[&batch_id],
                )
                .await?;
            bodies(&rows)
        })
    }

    fn mark_sent(
        &self,
        batch_id: &str,
        tx_hash: &str,
        block: u64,
    ) -> BoxFuture<'_, Result<(), LedgerError>> {
        let (batch_id, tx_hash) = (batch_id.to_string(), tx_hash.to_string());
        Box::pin(async move {
            self.set_batch_state(
                &batch_id,
                &["built", "sent"],
                "sent",
                Some(&tx_hash),
                Some(block),
            )
            .await
        })
    }

    fn mark_settled(
        &self,
        batch_id: &str,
        tx_hash: &str,
        block: u64,
    ) -> BoxFuture<'_, Result<(), LedgerError>> {
        let (batch_id, tx_hash) = (batch_id.to_string(), tx_hash.to_string());
        Box::pin(async move {
            self.set_batch_state(
                &batch_id,
                &["built", "sent"],
                "settled",
                Some(&tx_hash),
                Some(block),
            )
            .await
        })
    }

    fn mark_unsent(&self, batch_id: &str) -> BoxFuture<'_, Result<(), LedgerError>> {
        let batch_id = batch_id.to_string();
        Box::pin(async move {
            self.set_batch_state(&batch_id, &["sent"], "built", None, None)
                .await
        })
    }

    fn hold_lease(
        &self,
        name: &str,
        holder: &str,
        ttl: Duration,
    ) -> BoxFuture<'_, Result<bool, LedgerError>> {
        let (name, holder) = (name.to_string(), holder.to_string());
        Box::pin(async move {
            let client = self.pool.get().await?;
            // Taken when free or expired, renewed by its holder; the
            // database's clock decides, so gateways' clocks need not agree.
            let row = client
                .query_opt(
                    "INSERT INTO leases (name, holder, expires_at)
                     VALUES ($1, $2, now() + make_interval(secs => $3))
                     ON CONFLICT (name) DO UPDATE
                       SET holder = EXCLUDED.holder, expires_at = EXCLUDED.expires_at
                       WHERE leases.holder = EXCLUDED.holder OR leases.expires_at < now()
                     RETURNING holder",
                    &[&name, &holder, &ttl.as_secs_f64()],
                )
                .await?;
            Ok(row.is_some())
        })
    }
}
