//! The shape of `config.yaml`.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tollgate_backends::{HealthConfig, Timeouts};
use tollgate_policies::{Policy, Price, Prices};

use super::chain::ChainConfig;

/// The whole config file.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Address to serve on (`127.0.0.1:0` picks a free port). Read at start only.
    #[serde(default = "default_listen")]
    pub listen: String,
    /// Where receipts, keys and other state live, relative to this file.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// `tracing` filter, e.g. `info` or `tollgate=debug`. Read at start only.
    #[serde(default)]
    pub log_level: Option<String>,
    /// Request size limits.
    #[serde(default)]
    pub limits: Limits,
    /// API key handling.
    #[serde(default)]
    pub auth: Auth,
    /// Admin API access.
    #[serde(default)]
    pub admin: Admin,
    /// Circuit breaker and health checks.
    #[serde(default)]
    pub health: HealthSettings,
    /// Paying accounts and their limits.
    #[serde(default)]
    pub accounts: Vec<AccountConfig>,
    /// Inference nodes.
    #[serde(default)]
    pub nodes: Vec<NodeConfig>,
    /// Routing policies written inline; tried before those in `policies_dir`.
    #[serde(default)]
    pub policies: Vec<Policy>,
    /// Stores shared with other gateways; unset keeps everything in this process and its SQLite file.
    #[serde(default)]
    pub shared: Option<SharedConfig>,
    /// Model aliases written inline; tried before those in `policies_dir`.
    #[serde(default)]
    pub aliases: Vec<tollgate_policies::Alias>,
    /// A directory of `*.yaml` policy files, loaded in file-name order.
    #[serde(default)]
    pub policies_dir: Option<PathBuf>,
    /// On-chain settlement; unset keeps receipts in the ledger only.
    #[serde(default)]
    pub chain: Option<ChainConfig>,
    /// Audits of `tollgate` nodes' answers. Read at start only.
    #[serde(default)]
    pub audit: crate::audits::AuditConfig,
}

fn default_listen() -> String {
    "127.0.0.1:8080".into()
}
fn default_data_dir() -> PathBuf {
    PathBuf::from("data")
}

/// Request size limits.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Largest request body accepted (413 above it).
    #[serde(default = "default_max_body")]
    pub max_body_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body_bytes: default_max_body(),
        }
    }
}
fn default_max_body() -> usize {
    4 * 1024 * 1024
}

/// API key handling.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Auth {
    /// Requests without a key are charged to this account; unset means a key is required.
    #[serde(default)]
    pub anonymous_account: Option<String>,
    /// The hashed key store, relative to `data_dir` (default `keys.json`).
    #[serde(default)]
    pub keys_file: Option<PathBuf>,
}

/// Admin API access.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Admin {
    /// Bearer token required on `/admin/*`; unset leaves it open (bind to loopback then).
    #[serde(default)]
    pub token: Option<String>,
}

/// Circuit breaker and active health-check settings.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HealthSettings {
    /// Consecutive failures that take a node out of routing.
    #[serde(default = "default_threshold")]
    pub failure_threshold: u32,
    /// Seconds a failed node stays out before a probe request.
    #[serde(default = "default_open_s")]
    pub open_for_s: f64,
    /// Seconds between model-list checks of every node.
    #[serde(default = "default_check_s")]
    pub check_interval_s: f64,
}

impl Default for HealthSettings {
    fn default() -> Self {
        Self {
            failure_threshold: default_threshold(),
            open_for_s: default_open_s(),
            check_interval_s: default_check_s(),
        }
    }
}
fn default_threshold() -> u32 {
    3
}
fn default_open_s() -> f64 {
    5.0
}
fn default_check_s() -> f64 {
    10.0
}

impl HealthSettings {
    /// The breaker's tuning.
    pub fn breaker(&self) -> HealthConfig {
        HealthConfig {
            failure_threshold: self.failure_threshold,
            open_for: Duration::from_secs_f64(self.open_for_s),
            ..HealthConfig::default()
        }
    }
}

/// A paying account.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AccountConfig {
    /// Account id (what API keys map to, and what receipts name).
    pub id: String,
    /// Requests per minute; unset = unlimited.
    #[serde(default)]
    pub requests_per_min: Option<u32>,
    /// Prompt + completion tokens per minute; unset = unlimited.
    #[serde(default)]
    pub tokens_per_min: Option<u64>,
    /// Total spend allowed, in fee-token units (e.g. "25.00"); unset = unlimited.
    #[serde(default)]
    pub budget: Option<Price>,
    /// The on-chain address whose escrow pays (required when `chain` is set).
    #[serde(default)]
    pub payer: Option<String>,
}

/// How the gateway reaches a node.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum NodeKind {
    /// Any OpenAI-compatible HTTP endpoint (`url`).
    Openai,
    /// The inference engine in this process, on a local GGUF file (`model_path`).
    Embedded,
    /// A `tollgate-node` at `url` (its root, e.g. `http://10.0.0.5:9100`):
    /// OpenAI-compatible, and every answer must carry the node's signature.
    Tollgate,
    /// One model split across `tollgate-node stage` processes (`stages`);
    /// the gateway reads only the vocabulary of `model_path` and drives
    /// the chain itself.
    Pipeline,
}

/// One inference node.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// Node id, unique; named by policies and receipts.
    pub id: String,
    /// How to reach it.
    pub kind: NodeKind,
    /// `openai` nodes: base URL with version prefix, e.g. `http://127.0.0.1:9001/v1`.
    #[serde(default)]
    pub url: Option<String>,
    /// `embedded` nodes: the GGUF file, relative to the config file. Loaded at start.
    #[serde(default)]
    pub model_path: Option<PathBuf>,
    /// Bearer token the node expects.
    #[serde(default)]
    pub api_key: Option<String>,
    /// Models it serves; empty = ask the node (`GET /models`). An embedded
    /// node serves its file under the first name here (default: the file name).
    #[serde(default)]
    pub models: Vec<String>,
    /// Region label for policies.
    #[serde(default = "unknown")]
    pub region: String,
    /// Hardware class label for policies.
    #[serde(default = "unknown")]
    pub hardware: String,
    /// Asking prices per 1M tokens.
    #[serde(default)]
    pub prices: Prices,
    /// Starting trust in 0..=1 (audits move it once verification runs).
    #[serde(default = "full_trust")]
    pub trust: f64,
    /// Per-phase timeouts in milliseconds.
    #[serde(default)]
    pub timeouts: NodeTimeouts,
    /// The on-chain address paid for this node's work (required when `chain` is set).
    #[serde(default)]
    pub provider: Option<String>,
    /// `tollgate` nodes: the signing address every answer must carry; unset
    /// trusts the key the node shows on first contact.
    #[serde(default)]
    pub signer: Option<String>,
    /// `pipeline` nodes: the pool of stage addresses (`host:port`); the
    /// gateway joins their spans into a chain, the rest stand by as spares.
    #[serde(default)]
    pub stages: Vec<String>,
    /// `pipeline` nodes: the address paid for each stage's share of a
    /// request, by stage address; a request is billed as one receipt per
    /// stage, priced by the blocks it ran. Stages not named are paid to
    /// `provider`.
    #[serde(default)]
    pub stage_providers: std::collections::BTreeMap<String, String>,
    /// `pipeline` nodes: how hidden states cross the network, `f32`, `f16`
    /// (default), `int8` or `int7o` (outliers exact, the rest in 7 bits).
    #[serde(default)]
    pub codec: Option<String>,
    /// `pipeline` nodes: the number format its stages attend in (`f32`,
    /// the default, `f16` or `bf16`, as `tollgate-node stage --attention`);
    /// stages in another are left out of its chain.
    #[serde(default)]
    pub attention: Option<String>,
}

fn unknown() -> String {
    "unknown".into()
}
fn full_trust() -> f64 {
    1.0
}

/// Per-phase timeouts of one node, in milliseconds.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct NodeTimeouts {
    /// TCP connect.
    #[serde(default = "default_connect_ms")]
    pub connect_ms: u64,
    /// Request sent to first body byte.
    #[serde(default = "default_first_byte_ms")]
    pub first_byte_ms: u64,
    /// Silence allowed between streamed chunks.
    #[serde(default = "default_idle_ms")]
    pub idle_ms: u64,
}

impl Default for NodeTimeouts {
    fn default() -> Self {
        Self {
            connect_ms: default_connect_ms(),
            first_byte_ms: default_first_byte_ms(),
            idle_ms: default_idle_ms(),
        }
    }
}
fn default_connect_ms() -> u64 {
    2_000
}
fn default_first_byte_ms() -> u64 {
    60_000
}
fn default_idle_ms() -> u64 {
    30_000
}

impl NodeTimeouts {
    /// As the backend wants them.
    pub fn to_timeouts(&self) -> Timeouts {
        Timeouts {
            connect: Duration::from_millis(self.connect_ms),
            first_byte: Duration::from_millis(self.first_byte_ms),
            idle: Duration::from_millis(self.idle_ms),
        }
    }
}

impl Config {
    /// The key store's path, relative to the config file.
    pub fn keys_path(&self) -> PathBuf {
        self.data_dir.join(
            self.auth
                .keys_file
                .clone()
                .unwrap_or_else(|| PathBuf::from("keys.json")),
        )
    }

    /// The ledger database's path, relative to the config file.
    pub fn ledger_path(&self) -> PathBuf {
        self.data_dir.join("ledger.sqlite")
    }
}

/// Stores several gateways share: PostgreSQL for the ledger (receipts,
/// invoices, spend) and the settler's lease, Redis for rate-limit counters.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SharedConfig {
    /// PostgreSQL URL, e.g. `postgresql://tollgate@db:5432/tollgate`; replaces the SQLite ledger.
    #[serde(default)]
    pub postgres: Option<String>,
    /// Redis URL, e.g. `redis://cache:6379/0`; rate limits count there.
    #[serde(default)]
    pub redis: Option<String>,
    /// Prefix of every Redis key.
    #[serde(default = "default_redis_prefix")]
    pub redis_prefix: String,
    /// Seconds a settler's lease lasts without renewal: how long settlement
    /// pauses when the gateway holding it dies.
    #[serde(default = "default_lease_s")]
    pub settler_lease_s: f64,
    /// Seconds between reads of every gateway's spend and audits from the shared ledger.
    #[serde(default = "default_spend_refresh_s")]
    pub spend_refresh_s: f64,
}

fn default_redis_prefix() -> String {
    "tollgate:".into()
}

fn default_lease_s() -> f64 {
    5.0
}

fn default_spend_refresh_s() -> f64 {
    1.0
}
