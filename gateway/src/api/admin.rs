//! The admin API: status, routing explanations, reload on demand.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use http::HeaderMap;
use serde::Deserialize;
use serde_json::json;
use tollgate_policies::Price;

use crate::api::chat::{plan, Plan};
use crate::app::App;
use crate::openai::{ApiError, ChatRequest};
use crate::reload;

/// `GET /admin/status`: the served state, nodes' health, spend, last reload.
pub async fn status(State(app): State<Arc<App>>) -> Json<serde_json::Value> {
    let snap = app.state.load_full();
    let now = Instant::now();
    let nodes: Vec<_> = snap
        .nodes
        .iter()
        .map(|n| {
            json!({
                "id": n.id(),
                "kind": n.config.kind,
                "url": n.config.url,
                "region": n.config.region,
                "hardware": n.config.hardware,
                "prices": n.config.prices,
                "provider": n.config.provider,
                "trust": n.trust(),
                "quarantined": n.quarantined(),
                "audits": app.auditing.book.record_of(n.id()),
                "models": *n.models(),
                "reachable": n.reachable(),
                "health": n.health.snapshot(now),
                "chain": n.pipeline().and_then(|p| p.chain()).map(|c| json!({
                    "stages": c.stages, "spares": c.spares, "context": c.context,
                })),
            })
        })
        .collect();
    let accounts: Vec<_> = snap
        .loaded
        .config
        .accounts
        .iter()
        .map(|a| {
            json!({
                "id": a.id,
                "spent": Price(app.spent(&a.id)).to_string(),
                "budget": a.budget.map(|b| b.to_string()),
                "requests_per_min": a.requests_per_min,
                "tokens_per_min": a.tokens_per_min,
            })
        })
        .collect();
    let policies: Vec<&str> = snap
        .loaded
        .policies
        .policies
        .iter()
        .map(|p| p.name.as_str())
        .collect();
    Json(json!({
        "generation": snap.generation,
        "config_path": snap.loaded.path,
        "reload": app.reload_status(),
        "policies": policies,
        "nodes": nodes,
        "accounts": accounts,
    }))
}

/// `GET /admin/audits`: the latest audits (newest last), how many were
/// dropped, and every quarantined node with its evidence and slash.
pub async fn audits(State(app): State<Arc<App>>) -> Json<serde_json::Value> {
    Json(json!({
        "audits": app.auditing.recent(),
        "dropped": app.auditing.dropped(),
        "quarantined": app.auditing.book.quarantines(),
    }))
}

/// Query of `/admin/route/explain`.
#[derive(Deserialize)]
pub struct ExplainQuery {
    /// The account to route as (default: the anonymous account, else "").
    pub account: Option<String>,
}

/// Query of `/admin/traffic`.
#[derive(Deserialize)]
pub struct TrafficQuery {
    /// How many seconds back (default 120, at most 600).
    pub seconds: Option<u64>,
}

/// `GET /admin/traffic`: chat requests, errors and latency per second, oldest first.
pub async fn traffic(
    State(app): State<Arc<App>>,
    Query(q): Query<TrafficQuery>,
) -> Json<serde_json::Value> {
    let now_s = crate::app::now_ms() / 1000;
    Json(json!({"seconds": app.traffic.series(now_s, q.seconds.unwrap_or(120))}))
}

/// `GET /admin/policies`: the routing policies and aliases being served, and the files they came from.
pub async fn policies(State(app): State<Arc<App>>) -> Json<serde_json::Value> {
    let snap = app.state.load_full();
    Json(json!({
        "generation": snap.generation,
        "files": snap.loaded.files,
        "policies": snap.loaded.policies.policies,
        "aliases": snap.loaded.policies.aliases,
        "reload": app.reload_status(),
    }))
}

/// `GET /admin/sla`: every SLA slash filed, with its evidence and what the chain did.
pub async fn sla(State(app): State<Arc<App>>) -> Json<serde_json::Value> {
    Json(json!({"slashes": app.sla.records()}))
}

/// `POST /admin/route/explain`: how a request with this body and these headers
/// would be routed right now, with every node's reason.
pub async fn explain(
    State(app): State<Arc<App>>,
    Query(q): Query<ExplainQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let snap = app.state.load_full();
    let req = match ChatRequest::parse(&body) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    let account = q
        .account
        .or_else(|| snap.loaded.config.auth.anonymous_account.clone())
        .unwrap_or_default();
    let request_id = headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("explain")
        .to_string();
    let Plan {
        model,
        candidates,
        decision,
        prompt_tokens,
        max_output_tokens,
    } = match plan(&snap, &app.recent, &req, &account, &headers, &request_id) {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    Json(json!({
        "model": req.model,
        "served_by_model": model,
        "account": account,
        "estimated_prompt_tokens": prompt_tokens,
        "max_output_tokens": max_output_tokens,
        "decision": decision,
        "candidates": candidates.iter().map(|c| json!({
            "node": c.node, "provider": c.provider, "region": c.region, "hardware": c.hardware, "prices": c.prices, "trust": c.trust,
            "tokens_per_s": c.tokens_per_s, "ttft_ms": c.ttft_ms, "error_rate": c.error_rate, "healthy": c.healthy,
        })).collect::<Vec<_>>(),
    }))
    .into_response()
}

/// `POST /admin/reload`: reload now; 200 with the new generation, or 422 with the errors.
pub async fn reload_now(State(app): State<Arc<App>>) -> Response {
    let app2 = app.clone();
    match tokio::task::spawn_blocking(move || reload::reload(&app2)).await {
        Ok(Ok(generation)) => Json(json!({"reloaded": true, "generation": generation})).into_response(),
        Ok(Err(errors)) => (
            http::StatusCode::UNPROCESSABLE_ENTITY,
            Json(json!({"reloaded": false, "errors": errors.iter().map(ToString::to_string).collect::<Vec<_>>()})),
        )
            .into_response(),
        Err(e) => ApiError::internal(format!("reload task failed: {e}")).into_response(),
    }
}
