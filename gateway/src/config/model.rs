//! The shape of `config.yaml`.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tollgate_backends::{HealthConfig, Timeouts};
use tollgate_policies::{Policy, Price, Prices};

use super::chain::{is_address, ChainConfig};
use super::diagnostics::{display_path, Located};

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

/// What is wrong with an optional address field: not an address, or missing
/// while settling on chain needs the address `role`.
fn address_problem(value: &Option<String>, required: bool, role: &str) -> Option<String> {
    match value {
        Some(a) if !is_address(a) => Some(format!("'{a}' is not a 0x-prefixed 20-byte address")),
        None if required => Some(format!("settling on chain needs the address {role}")),
        _ => None,
    }
}

/// A problem found by [`Config::validate`], located by path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {message}", display_path(path))]
pub struct ConfigError {
    /// Where in the document.
    pub path: Vec<Located>,
    /// What is wrong.
    pub message: String,
}

impl Config {
    /// Checks what types alone cannot: uniqueness, ranges, references.
    pub fn validate(&self) -> Vec<ConfigError> {
        let mut errors = Vec::new();
        let mut err =
            |path: Vec<Located>, message: String| errors.push(ConfigError { path, message });
        let k = |s: &str| Located::Key(s.to_string());

        if self.listen.parse::<std::net::SocketAddr>().is_err() {
            err(
                vec![k("listen")],
                format!("'{}' is not an address like 127.0.0.1:8080", self.listen),
            );
        }
        for (key, v) in [
            ("share", self.audit.share),
            ("new_node_share", self.audit.new_node_share),
            ("thresholds.alpha", self.audit.thresholds.alpha),
            (
                "thresholds.honest_miss_rate",
                self.audit.thresholds.honest_miss_rate,
            ),
            (
                "thresholds.honest_gap_rate",
                self.audit.thresholds.honest_gap_rate,
            ),
            (
                "thresholds.honest_decisive_rate",
                self.audit.thresholds.honest_decisive_rate,
            ),
            (
                "thresholds.honest_alternatives_rate",
                self.audit.thresholds.honest_alternatives_rate,
            ),
        ] {
            if !(0.0..=1.0).contains(&v) {
                err(
                    vec![k("audit"), k(key)],
                    format!("must be between 0 and 1, got {v}"),
                );
            }
        }
        let th = &self.audit.thresholds;
        let tolerance = th
            .tie_tolerance
            .max(th.logprob_tolerance)
            .max(th.alternatives_tolerance);
        if th.decisive_tolerance.is_nan() || th.decisive_tolerance <= tolerance {
            err(
                vec![k("audit"), k("thresholds.decisive_tolerance")],
                format!(
                    "must be above tie_tolerance, logprob_tolerance and alternatives_tolerance ({tolerance}), got {}",
                    th.decisive_tolerance
                ),
            );
        }
        if th.alternatives_tolerance.is_nan() || th.alternatives_tolerance <= 0.0 {
            err(
                vec![k("audit"), k("thresholds.alternatives_tolerance")],
                format!("must be above 0, got {}", th.alternatives_tolerance),
            );
        }
        if self.audit.queue == 0 {
            err(vec![k("audit"), k("queue")], "must be at least 1".into());
        }
        if self.limits.max_body_bytes == 0 {
            err(
                vec![k("limits"), k("max_body_bytes")],
                "must be greater than 0".into(),
            );
        }
        if self.health.failure_threshold == 0 {
            err(
                vec![k("health"), k("failure_threshold")],
                "must be at least 1".into(),
            );
        }
        for (key, v) in [
            ("open_for_s", self.health.open_for_s),
            ("check_interval_s", self.health.check_interval_s),
        ] {
            if !(v.is_finite() && v > 0.0) {
                err(
                    vec![k("health"), k(key)],
                    format!("must be a positive number of seconds, got {v}"),
                );
            }
        }
        if let Some(shared) = &self.shared {
            for (key, v) in [
                ("settler_lease_s", shared.settler_lease_s),
                ("spend_refresh_s", shared.spend_refresh_s),
            ] {
                if !(v.is_finite() && v > 0.0) {
                    err(
                        vec![k("shared"), k(key)],
                        format!("must be a positive number of seconds, got {v}"),
                    );
                }
            }
            if let Some(url) = &shared.postgres {
                if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
                    err(
                        vec![k("shared"), k("postgres")],
                        "must be a URL like postgresql://user@host:5432/db".into(),
                    );
                }
            }
            if let Some(url) = &shared.redis {
                if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
                    err(
                        vec![k("shared"), k("redis")],
                        "must be a URL like redis://host:6379/0".into(),
                    );
                }
            }
        }
        let dup_nodes = super::duplicates(self.nodes.iter().map(|n| n.id.as_str()));
        for (i, n) in self.nodes.iter().enumerate() {
            let at = |key: &str| vec![k("nodes"), Located::Index(i), k(key)];
            if n.id.trim().is_empty() {
                err(at("id"), "node id must not be empty".into());
            } else if dup_nodes.contains(&n.id.as_str()) {
                err(
                    at("id"),
                    format!("node id '{}' is used more than once", n.id),
                );
            }
            match (n.kind, &n.url, &n.model_path) {
                (NodeKind::Openai, Some(url), None) => {
                    if !(url.starts_with("http://") || url.starts_with("https://")) {
                        err(at("url"), format!("'{url}' is not an http(s) URL"));
                    }
                }
                (NodeKind::Tollgate, Some(url), None) => {
                    if !(url.starts_with("http://") || url.starts_with("https://")) {
                        err(at("url"), format!("'{url}' is not an http(s) URL"));
                    }
                }
                (NodeKind::Pipeline, None, Some(_)) => {}
                (NodeKind::Pipeline, Some(_), _) => err(
                    at("url"),
                    "a pipeline is reached through its stages, not a url".into(),
                ),
                (NodeKind::Pipeline, None, None) => err(
                    at("model_path"),
                    "a pipeline needs the model's GGUF file for its vocabulary".into(),
                ),
                (NodeKind::Openai | NodeKind::Tollgate, None, _) => {
                    err(at("kind"), "a remote node needs a url".into())
                }
                (NodeKind::Tollgate, Some(_), Some(_)) => err(
                    at("model_path"),
                    "model_path is for embedded nodes; a tollgate node is reached by url".into(),
                ),
                (NodeKind::Openai, Some(_), Some(_)) => err(
                    at("model_path"),
                    "model_path is for embedded nodes; an openai node is reached by url".into(),
                ),
                (NodeKind::Embedded, None, Some(_)) => {}
                (NodeKind::Embedded, _, None) => err(
                    at("kind"),
                    "an embedded node needs a model_path (a GGUF file)".into(),
                ),
                (NodeKind::Embedded, Some(_), Some(_)) => err(
                    at("url"),
                    "an embedded node runs in this process and has no url".into(),
                ),
            }
            match (n.kind, n.stages.is_empty()) {
                (NodeKind::Pipeline, true) => {
                    err(at("stages"), "a pipeline needs at least one stage".into())
                }
                (NodeKind::Pipeline, false) => {
                    for (j, stage) in n.stages.iter().enumerate() {
                        let port = stage.rsplit_once(':').map(|(_, p)| p.parse::<u16>());
                        if !matches!(port, Some(Ok(p)) if p > 0) {
                            err(
                                vec![
                                    k("nodes"),
                                    Located::Index(i),
                                    k("stages"),
                                    Located::Index(j),
                                ],
                                format!("'{stage}' is not an address like 10.0.0.5:9200"),
                            );
                        }
                    }
                }
                (_, false) => err(at("stages"), "only pipeline nodes have stages".into()),
                (_, true) => {}
            }
            match (&n.codec, n.kind) {
                (Some(c), NodeKind::Pipeline) => {
                    if c.parse::<tollgate_protocol::stage::Codec>().is_err() {
                        err(
                            at("codec"),
                            format!("'{c}' is not a codec; use f32, f16, int8 or int7o"),
                        );
                    }
                }
                (Some(_), _) => err(at("codec"), "only pipeline nodes have a codec".into()),
                (None, _) => {}
            }
            match (&n.attention, n.kind) {
                (Some(a), NodeKind::Pipeline) => {
                    if let Err(e) = a.parse::<tollgate_engine::stage::AttentionPrecision>() {
                        err(at("attention"), e);
                    }
                }
                (Some(_), _) => err(
                    at("attention"),
                    "only pipeline nodes choose their stages' attention".into(),
                ),
                (None, _) => {}
            }
            let settling = self.chain.is_some();
            if let Some(m) = address_problem(&n.provider, settling, "paid for this node's work") {
                err(at("provider"), m);
            }
            for (stage, provider) in &n.stage_providers {
                let here = vec![
                    k("nodes"),
                    Located::Index(i),
                    k("stage_providers"),
                    k(stage),
                ];
                if n.kind != NodeKind::Pipeline {
                    err(here, "only pipeline nodes have stages".into());
                } else if !n.stages.contains(stage) {
                    err(here, format!("'{stage}' is not one of the node's stages"));
                } else if let Some(m) = address_problem(&Some(provider.clone()), true, "") {
                    err(here, m);
                }
            }
            match (&n.signer, n.kind) {
                (Some(_), NodeKind::Tollgate) => {
                    if let Some(m) = address_problem(&n.signer, false, "") {
                        err(at("signer"), m);
                    }
                }
                (Some(_), NodeKind::Openai | NodeKind::Embedded | NodeKind::Pipeline) => err(
                    at("signer"),
                    "only tollgate nodes sign their answers".into(),
                ),
                _ => {}
            }
            if !(0.0..=1.0).contains(&n.trust) {
                err(
                    at("trust"),
                    format!("trust must be between 0 and 1, got {}", n.trust),
                );
            }
            if n.timeouts.connect_ms == 0
                || n.timeouts.first_byte_ms == 0
                || n.timeouts.idle_ms == 0
            {
                err(at("timeouts"), "timeouts must be greater than 0 ms".into());
            }
        }
        let dup_accounts = super::duplicates(self.accounts.iter().map(|a| a.id.as_str()));
        for (i, a) in self.accounts.iter().enumerate() {
            let at = |key: &str| vec![k("accounts"), Located::Index(i), k(key)];
            if a.id.trim().is_empty() {
                err(at("id"), "account id must not be empty".into());
            } else if dup_accounts.contains(&a.id.as_str()) {
                err(
                    at("id"),
                    format!("account id '{}' is used more than once", a.id),
                );
            }
            let settling = self.chain.is_some();
            if let Some(m) =
                address_problem(&a.payer, settling, "whose escrow pays for this account")
            {
                err(at("payer"), m);
            }
            if a.requests_per_min == Some(0) {
                err(
                    at("requests_per_min"),
                    "0 would refuse every request; leave it unset for no limit".into(),
                );
            }
            if a.tokens_per_min == Some(0) {
                err(
                    at("tokens_per_min"),
                    "0 would refuse every request; leave it unset for no limit".into(),
                );
            }
        }
        if let Some(chain) = &self.chain {
            for (key, message) in chain.problems() {
                err(vec![k("chain"), k(key)], message);
            }
        }
        if let Some(anon) = &self.auth.anonymous_account {
            if !self.accounts.iter().any(|a| &a.id == anon) {
                err(
                    vec![k("auth"), k("anonymous_account")],
                    format!("account '{anon}' is not defined under accounts"),
                );
            }
        }
        errors
    }

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

#[cfg(test)]
mod tests {
    use super::Config;

    fn problems(nodes: &str) -> String {
        let config: Config = serde_yaml::from_str(&format!("nodes:\n{nodes}")).expect("parses");
        let found: Vec<String> = config.validate().iter().map(ToString::to_string).collect();
        found.join("\n")
    }

    #[test]
    fn a_pipeline_needs_a_vocabulary_file_and_stage_addresses() {
        let ok = "  - { id: p, kind: pipeline, model_path: m.gguf, stages: ['127.0.0.1:9201', 'stage-b.internal:9202'], codec: int8 }";
        assert_eq!(problems(ok), "");
        let found = problems("  - { id: p, kind: pipeline, url: 'http://x', stages: ['x:0', 'nohost'], codec: bf16, attention: f8 }");
        for expected in [
            "a pipeline is reached through its stages, not a url",
            "nodes[0].stages[0]: 'x:0' is not an address",
            "nodes[0].stages[1]: 'nohost' is not an address",
            "'bf16' is not a codec",
            "attention precision \"f8\": expected bf16, f16 or f32",
        ] {
            assert!(found.contains(expected), "{expected:?} in {found}");
        }
        let found = problems("  - { id: p, kind: pipeline }");
        assert!(found.contains("needs the model's GGUF file"), "{found}");
        assert!(found.contains("needs at least one stage"), "{found}");
        let found = problems(
            "  - { id: n, kind: openai, url: 'http://x/v1', stages: ['a:1'], codec: f16 }",
        );
        assert!(found.contains("only pipeline nodes have stages"), "{found}");
        assert!(
            found.contains("only pipeline nodes have a codec"),
            "{found}"
        );
        let paid = "  - { id: p, kind: pipeline, model_path: m.gguf, stages: ['a:1', 'b:2'], stage_providers: { 'b:2': '0x00000000000000000000000000000000000000b2' } }";
        assert_eq!(problems(paid), "");
        let found = problems(
            "  - { id: p, kind: pipeline, model_path: m.gguf, stages: ['a:1'], stage_providers: { 'c:3': '0x00000000000000000000000000000000000000c3', 'a:1': '0x12' } }",
        );
        assert!(
            found.contains("stage_providers.c:3: 'c:3' is not one of the node's stages"),
            "{found}"
        );
        assert!(
            found.contains("stage_providers.a:1: '0x12' is not a 0x-prefixed 20-byte address"),
            "{found}"
        );
    }

    #[test]
    fn audit_thresholds_are_checked() {
        let found = |thresholds: &str| {
            let config: Config =
                serde_yaml::from_str(&format!("audit:\n  thresholds: {thresholds}"))
                    .expect("parses");
            let found: Vec<String> = config.validate().iter().map(ToString::to_string).collect();
            found.join("\n")
        };
        assert_eq!(
            found("{ decisive_tolerance: 6.0, honest_decisive_rate: 1.0e-12 }"),
            ""
        );
        let bad = found("{ decisive_tolerance: 0.4, honest_decisive_rate: 2.0 }");
        assert!(
            bad.contains("thresholds.decisive_tolerance: must be above tie_tolerance, logprob_tolerance and alternatives_tolerance (0.5), got 0.4"),
            "{bad}"
        );
        assert!(
            bad.contains("thresholds.honest_decisive_rate: must be between 0 and 1, got 2"),
            "{bad}"
        );
        let bad = found("{ alternatives_tolerance: 5.0, honest_alternatives_rate: -0.1 }");
        assert!(
            bad.contains("thresholds.decisive_tolerance: must be above tie_tolerance, logprob_tolerance and alternatives_tolerance (5), got 4"),
            "{bad}"
        );
        assert!(
            bad.contains("thresholds.honest_alternatives_rate: must be between 0 and 1, got -0.1"),
            "{bad}"
        );
        assert!(found("{ alternatives_tolerance: 0.0 }")
            .contains("thresholds.alternatives_tolerance: must be above 0, got 0"));
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
