//! Prometheus metrics: names in one place, recorder installed once.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Finished requests by `status`, `model`, `node`.
pub const REQUESTS: &str = "tollgate_requests_total";
/// Whole-request latency, seconds.
pub const REQUEST_SECONDS: &str = "tollgate_request_duration_seconds";
/// Time to first token seen by the client, seconds.
pub const TTFT_SECONDS: &str = "tollgate_ttft_seconds";
/// Time spent waiting on nodes, seconds.
pub const UPSTREAM_SECONDS: &str = "tollgate_upstream_duration_seconds";
/// Gateway time not spent waiting on nodes, seconds.
pub const OVERHEAD_SECONDS: &str = "tollgate_gateway_overhead_seconds";
/// Tokens billed, by `kind` (prompt/completion), `model`, `node`.
pub const TOKENS: &str = "tollgate_tokens_total";
/// Fees billed, in fee-token units, by `account`.
pub const COST: &str = "tollgate_cost_total";
/// Streams open now.
pub const OPEN_STREAMS: &str = "tollgate_open_streams";
/// Failed calls to nodes, by `node` and `reason`.
pub const NODE_FAILURES: &str = "tollgate_node_failures_total";
/// Whether a node is routable (1) or not (0), by `node`.
pub const NODE_AVAILABLE: &str = "tollgate_node_available";
/// Failovers from one node to the next.
pub const FAILOVERS: &str = "tollgate_failovers_total";
/// Config reloads by `result` (ok/error).
pub const RELOADS: &str = "tollgate_config_reloads_total";
/// 1 when the last reload succeeded, 0 when the served state is older than the files.
pub const RELOAD_OK: &str = "tollgate_config_last_reload_ok";

/// Finished audits by `node` and `outcome` (pass/fail/inconclusive/error).
pub const AUDITS: &str = "tollgate_audits_total";
/// Audits dropped because the audit queue was full.
pub const AUDITS_DROPPED: &str = "tollgate_audits_dropped_total";
/// A node's trust score after its last audit, by `node`.
pub const NODE_TRUST: &str = "tollgate_node_trust";
/// SLA breaches past their slash threshold (each files a slash), by `node`.
pub const SLA_SLASHES: &str = "tollgate_sla_slashes_total";
/// 1 while this gateway holds the settler lease (it settles), else 0.
pub const SETTLER_LEASE_HELD: &str = "tollgate_settler_lease_held";
/// Reference compute per audit, seconds.
pub const AUDIT_SECONDS: &str = "tollgate_audit_duration_seconds";

const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0,
];
const OVERHEAD_BUCKETS: &[f64] = &[
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05,
];

/// Installs the process-wide recorder (once) and returns the handle that renders `/metrics`.
pub fn install() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full(OVERHEAD_SECONDS.into()),
                        OVERHEAD_BUCKETS,
                    )
                });
            let recorder = match builder {
                Ok(b) => b.build_recorder(),
                Err(_) => PrometheusBuilder::new().build_recorder(),
            };
            let handle = recorder.handle();
            // A second recorder (tests running several gateways) keeps the first.
            let _ = metrics::set_global_recorder(recorder);
            handle
        })
        .clone()
}
