//! Audit outcomes per node in the shared database, so that a node caught by
//! one gateway's audit is distrusted by every gateway.

use super::PostgresLedger;
use crate::LedgerError;

/// What one audit concluded, as counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuditCount {
    /// The answer held up.
    Passed,
    /// The answer was a lie.
    Failed,
    /// The audit could not tell.
    Inconclusive,
}

/// One node's audit record as every gateway sharing the database sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SharedTrust {
    /// Node id.
    pub node: String,
    /// Audits passed.
    pub passed: u64,
    /// Audits failed.
    pub failed: u64,
    /// Audits that could not decide.
    pub inconclusive: u64,
    /// The first quarantine, as the gateway that imposed it wrote it (JSON).
    pub quarantine: Option<String>,
}

impl PostgresLedger {
    /// Counts one audit of `node`.
    pub async fn count_audit(&self, node: &str, count: AuditCount) -> Result<(), LedgerError> {
        let column = match count {
            AuditCount::Passed => "passed",
            AuditCount::Failed => "failed",
            AuditCount::Inconclusive => "inconclusive",
        };
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
    }

    /// Quarantines `node` with `record` (JSON); false when it already was
    /// (the first quarantine, with its evidence, stands).
    pub async fn quarantine(&self, node: &str, record: &str) -> Result<bool, LedgerError> {
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
    }

    /// Every node's shared audit record.
    pub async fn trust(&self) -> Result<Vec<SharedTrust>, LedgerError> {
        let client = self.pool.get().await?;
        let rows = client
            .query(
                "SELECT node, passed, failed, inconclusive, quarantine FROM node_trust ORDER BY node",
                &[],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| SharedTrust {
                node: r.get(0),
                passed: r.get::<_, i64>(1).max(0) as u64,
                failed: r.get::<_, i64>(2).max(0) as u64,
                inconclusive: r.get::<_, i64>(3).max(0) as u64,
                quarantine: r.get(4),
            })
            .collect())
    }
}
