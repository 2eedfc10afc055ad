//! What types alone cannot check in `config.yaml`: uniqueness, ranges and
//! references. Every problem is collected, each located by its path.

use super::chain::is_address;
use super::diagnostics::{display_path, Located};
use super::model::{Config, NodeKind};

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
            (
                "thresholds.honest_shape_rate",
                self.audit.thresholds.honest_shape_rate,
            ),
            (
                "thresholds.honest_rival_floor",
                self.audit.thresholds.honest_rival_floor,
            ),
            (
                "thresholds.rival_max_rate",
                self.audit.thresholds.rival_max_rate,
            ),
            ("thresholds.rival_after", self.audit.thresholds.rival_after),
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
        for (key, v) in [
            (
                "thresholds.alternatives_tolerance",
                th.alternatives_tolerance,
            ),
            ("thresholds.shape_tolerance", th.shape_tolerance),
            ("thresholds.rival_share", th.rival_share),
            ("thresholds.rival_noise", th.rival_noise),
        ] {
            if v.is_nan() || v <= 0.0 {
                err(
                    vec![k("audit"), k(key)],
                    format!("must be above 0, got {v}"),
                );
            }
        }
        if th.honest_rival_floor > th.rival_max_rate {
            err(
                vec![k("audit"), k("thresholds.rival_max_rate")],
                format!(
                    "must be at least honest_rival_floor ({}), or no token is ever counted, got {}",
                    th.honest_rival_floor, th.rival_max_rate
                ),
            );
        }
        if th.rival_share > 1.0 {
            err(
                vec![k("audit"), k("thresholds.rival_share")],
                format!(
                    "must be at most 1 (all the way to the rival), got {}",
                    th.rival_share
                ),
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
        let bad = found("{ shape_tolerance: -0.01, honest_shape_rate: 1.5 }");
        assert!(
            bad.contains("thresholds.shape_tolerance: must be above 0, got -0.01"),
            "{bad}"
        );
        assert!(
            bad.contains("thresholds.honest_shape_rate: must be between 0 and 1, got 1.5"),
            "{bad}"
        );
        let bad = found("{ rival_noise: 0.0, rival_share: -0.5, rival_max_rate: 2.0, rival_after: -1.0, honest_rival_floor: 1.5 }");
        for want in [
            "thresholds.rival_noise: must be above 0, got 0",
            "thresholds.rival_share: must be above 0, got -0.5",
            "thresholds.rival_max_rate: must be between 0 and 1, got 2",
            "thresholds.rival_after: must be between 0 and 1, got -1",
            "thresholds.honest_rival_floor: must be between 0 and 1, got 1.5",
        ] {
            assert!(bad.contains(want), "{want}: {bad}");
        }
        let bad = found("{ rival_max_rate: 0.005, rival_share: 1.5 }");
        assert!(
            bad.contains("thresholds.rival_max_rate: must be at least honest_rival_floor (0.01), or no token is ever counted, got 0.005"),
            "{bad}"
        );
        assert!(
            bad.contains(
                "thresholds.rival_share: must be at most 1 (all the way to the rival), got 1.5"
            ),
            "{bad}"
        );
    }
}
