//! Audit outcomes per node, kept beside the receipts: trust survives a
//! restart, and in a database several gateways share, a node one of them
//! catches is distrusted by all.

use crate::{BoxFuture, LedgerError};

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

impl AuditCount {
    /// The column it is counted in.
    pub(crate) fn column(self) -> &'static str {
        match self {
            AuditCount::Passed => "passed",
            AuditCount::Failed => "failed",
            AuditCount::Inconclusive => "inconclusive",
        }
    }
}

/// One node's audit record as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrustRecord {
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

/// Where audit outcomes are kept.
pub trait TrustStore: Send + Sync + 'static {
    /// Counts one audit of `node`.
    fn count_audit(&self, node: &str, count: AuditCount) -> BoxFuture<'_, Result<(), LedgerError>>;
    /// Quarantines `node` with `record` (JSON); false when it already was
    /// (the first quarantine, with its evidence, stands).
    fn quarantine(&self, node: &str, record: &str) -> BoxFuture<'_, Result<bool, LedgerError>>;
    /// Every node's audit record, by node id.
    fn trust(&self) -> BoxFuture<'_, Result<Vec<TrustRecord>, LedgerError>>;
}
