//! Audit outcomes per node in the gateway's SQLite file (`node_trust`), so
//! trust survives a restart.

use rusqlite::params;

use super::SqliteLedger;
use crate::{AuditCount, BoxFuture, LedgerError, TrustRecord, TrustStore};

/// The table, created with the rest of the schema.
pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS node_trust (
    node         TEXT PRIMARY KEY,
    passed       INTEGER NOT NULL DEFAULT 0,
    failed       INTEGER NOT NULL DEFAULT 0,
    inconclusive INTEGER NOT NULL DEFAULT 0,
    quarantine   TEXT
);
";

impl TrustStore for SqliteLedger {
    fn count_audit(&self, node: &str, count: AuditCount) -> BoxFuture<'_, Result<(), LedgerError>> {
        let node = node.to_owned();
        self.with_conn(move |conn| {
            let column = count.column();
            conn.execute(
                &format!(
                    "INSERT INTO node_trust (node, {column}) VALUES (?1, 1)
                     ON CONFLICT (node) DO UPDATE SET {column} = {column} + 1"
                ),
                [&node],
            )?;
            Ok(())
        })
    }

    fn quarantine(&self, node: &str, record: &str) -> BoxFuture<'_, Result<bool, LedgerError>> {
        let (node, record) = (node.to_owned(), record.to_owned());
        self.with_conn(move |conn| {
            let changed = conn.execute(
                "INSERT INTO node_trust (node, quarantine) VALUES (?1, ?2)
                 ON CONFLICT (node) DO UPDATE SET quarantine = excluded.quarantine
                 WHERE quarantine IS NULL",
                params![node, record],
            )?;
            Ok(changed == 1)
        })
    }

    fn trust(&self) -> BoxFuture<'_, Result<Vec<TrustRecord>, LedgerError>> {
        self.with_conn(|conn| {
            let mut stmt = conn.prepare(
                "SELECT node, passed, failed, inconclusive, quarantine FROM node_trust ORDER BY node",
            )?;
            let rows = stmt
                .query_map([], |r| {
                    Ok(TrustRecord {
                        node: r.get(0)?,
                        passed: r.get::<_, i64>(1)?.max(0) as u64,
                        failed: r.get::<_, i64>(2)?.max(0) as u64,
                        inconclusive: r.get::<_, i64>(3)?.max(0) as u64,
                        quarantine: r.get(4)?,
                    })
                })?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
    }
}
