//! Audit outcomes per node in the shared database (`node_trust`).

use super::PostgresLedger;
use crate::{AuditCount, BoxFuture, LedgerError, TrustRecord, TrustStore};

impl TrustStore for PostgresLedger {
    fn count_audit(&self, node: &str, count: AuditCount) -> BoxFuture<'_, Result<(), LedgerError>> {
        let node = node.to_owned();
        Box::pin(async move {
            let column = count.column();
            let client = self.pool.get().await?;
            client
                .execute(
                    &format!(
                        "INSERT INTO node_trust (node, {column}) VALUES ($1, 1)
                         ON CONFLICT (node) DO UPDATE SET {column} = node_trust.{column} + 1"
                    ),
                    &[&node],
                )
                .await?;
            Ok(())
        })
    }

    fn quarantine(&self, node: &str, record: &str) -> BoxFuture<'_, Result<bool, LedgerError>> {
        let (node, record) = (node.to_owned(), record.to_owned());
        Box::pin(async move {
            let client = self.pool.get().await?;
            let changed = client
                .execute(
                    "INSERT INTO node_trust (node, quarantine) VALUES ($1, $2)
                     ON CONFLICT (node) DO UPDATE SET quarantine = EXCLUDED.quarantine
                     WHERE node_trust.quarantine IS NULL",
                    &[&node, &record],
                )
                .await?;
            Ok(changed == 1)
        })
    }

    fn trust(&self) -> BoxFuture<'_, Result<Vec<TrustRecord>, LedgerError>> {
        Box::pin(async move {
            let client = self.pool.get().await?;
            let rows = client
                .query(
                    "SELECT node, passed, failed, inconclusive, quarantine FROM node_trust ORDER BY node",
                    &[],
                )
                .await?;
            Ok(rows
                .iter()
                .map(|r| TrustRecord {
                    node: r.get(0),
                    passed: r.get::<_, i64>(1).max(0) as u64,
                    failed: r.get::<_, i64>(2).max(0) as u64,
                    inconclusive: r.get::<_, i64>(3).max(0) as u64,
                    quarantine: r.get(4),
                })
                .collect())
        })
    }
}
