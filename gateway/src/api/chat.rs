//! `POST /v1/chat/completions`: validate, route, call, relay, bill.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{Extension, State};
use axum::response::{IntoResponse, Response};
use http::HeaderMap;
use tollgate_backends::UpstreamBody;
use tollgate_policies::{
    choose_with_history, Candidate, Decision, History, Price, Prices, RouteRequest,
};

use crate::app::App;
use crate::auth::Caller;
use crate::dispatch;
use crate::openai::{ApiError, ChatRequest};
use crate::relay::{self, Meter};
use crate::state::Snapshot;

/// Output tokens assumed for cost estimates when the request sets no limit.
const DEFAULT_MAX_OUTPUT: u64 = 512;

/// The chat completions endpoint.
pub async fn completions(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Caller>,
    Extension(snap): Extension<Arc<Snapshot>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let received_at = Instant::now();
    let limit = snap.loaded.config.limits.max_body_bytes;
    let Ok(bytes) = axum::body::to_bytes(body, limit).await else {
        return ApiError::too_large(limit).into_response();
    };
    let mut req = match ChatRequest::parse(&bytes) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    let request_id = headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let plan = match plan(
        &snap,
        &app.recent,
        &req,
        &caller.account,
        &headers,
        &request_id,
    ) {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    // From here on the request is for the model that serves it: nodes are
    // sent its name, receipts record it.
    req.model = plan.model;
    let decision = plan.decision;
    tracing::debug!(request_id, policy = %decision.policy, routes = ?decision.nodes().collect::<Vec<_>>(), "routed");

    let answer = match dispatch::first_answer(&app, &snap, &decision, &req).await {
        Ok(a) => a,
        Err(resp) => return resp,
    };
    // Drawn after the node answered: the node saw the same request either way.
    let audit = answer
        .node
        .tollgate()
        .is_some()
        .then(|| {
            snap.loaded
                .policies
                .policies
                .iter()
                .find(|p| p.name == decision.policy)
                .and_then(|p| p.audit_share)
        })
        .filter(|&policy_share| app.auditing.pick(&answer.node, policy_share))
        .map(|_| relay::AuditTicket {
            request: answer.request.clone(),
            attestation: answer
                .response
                .headers
                .get(tollgate_protocol::ATTESTATION_HEADER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| serde_json::from_str(v).ok()),
        });
    let stages = relay::stage_shares(&answer.node, &answer.response.headers);
    let meter = Meter {
        app,
        node: answer.node,
        audit,
        request_id,
        account: caller.account,
        model: req.model.clone(),
        policy: decision.policy.clone(),
        include_usage: req.include_usage,
        logprobs: answer.logprobs,
        estimated_prompt_tokens: req.estimated_prompt_tokens(),
        stages,
        received_at,
        sent_at: answer.sent_at,
    };
    match answer.response.body {
        UpstreamBody::Full(body) => {
            relay::whole(
                meter,
                answer.response.status,
                body,
                answer.usage,
                answer.output_chars,
            )
            .await
        }
        UpstreamBody::Stream { first, rest } => relay::stream(meter, first, rest),
    }
}

/// How one request would be routed now.
pub struct Plan {
    /// The model that serves the request: the requested name, or what its alias stands for.
    pub model: String,
    /// Every node serving the model, with its routing facts.
    pub candidates: Vec<Candidate>,
    /// The ranked routes and the rejections.
    pub decision: Decision,
    /// The prompt estimate routing used.
    pub prompt_tokens: u64,
    /// The output tokens routing priced.
    pub max_output_tokens: u64,
}

/// Routes a validated request under the snapshot's policies (shared by the
/// chat endpoint and `/admin/route/explain`, so an explanation is the truth).
pub fn plan(
    snap: &Snapshot,
    history: &dyn History,
    req: &ChatRequest,
    account: &str,
    headers: &HeaderMap,
    request_id: &str,
) -> Result<Plan, ApiError> {
    let max_price = max_price(headers)?;
    let model = snap.loaded.policies.resolve(&req.model, account);
    let candidates = snap.candidates(model, Instant::now());
    if candidates.is_empty() {
        // Named as the client named it: an app need not know its alias exists.
        return Err(ApiError::model_not_found(&req.model));
    }
    let header_pairs = lowercase_headers(headers);
    let route_req = RouteRequest {
        model,
        account,
        headers: &header_pairs,
        prompt_tokens: req.estimated_prompt_tokens(),
        max_output_tokens: req.max_output_tokens.unwrap_or(DEFAULT_MAX_OUTPUT) * req.n,
        max_price,
        seed: seed_of(request_id),
    };
    let decision = choose_with_history(&snap.loaded.policies, &route_req, &candidates, history);
    Ok(Plan {
        model: model.to_owned(),
        prompt_tokens: route_req.prompt_tokens,
        max_output_tokens: route_req.max_output_tokens,
        candidates,
        decision,
    })
}

/// The request headers as (lowercase name, value) pairs, for header-matching policies.
fn lowercase_headers(headers: &HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .filter_map(|(k, v)| {
            v.to_str()
                .ok()
                .map(|v| (k.as_str().to_string(), v.to_string()))
        })
        .collect()
}

/// The caller's price cap for auctions: `x-tollgate-max-price: <input per 1M>,<output per 1M>`.
fn max_price(headers: &HeaderMap) -> Result<Option<Prices>, ApiError> {
    let Some(v) = headers.get("x-tollgate-max-price") else {
        return Ok(None);
    };
    let bad = || {
        ApiError::invalid(
            None,
            "invalid_value",
            "Invalid x-tollgate-max-price header: expected '<input price per 1M>,<output price per 1M>', e.g. '0.50,1.50'.",
        )
    };
    let text = v.to_str().map_err(|_| bad())?;
    let (i, o) = text.split_once(',').ok_or_else(bad)?;
    let input_per_1m = Price::parse(i.trim()).map_err(|_| bad())?;
    let output_per_1m = Price::parse(o.trim()).map_err(|_| bad())?;
    Ok(Some(Prices {
        input_per_1m,
        output_per_1m,
    }))
}

/// A stable seed from the request id, so a weighted draw can be explained afterwards.
fn seed_of(request_id: &str) -> u64 {
    // FNV-1a: tiny, stable across builds (unlike the std hasher).
    request_id.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}
