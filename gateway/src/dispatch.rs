//! Calls the ranked routes in order until one answers.
//!
//! Everything here happens before the client has seen a byte, so a node that
//! refuses, times out, errors or breaks the protocol is simply skipped: the
//! client never learns it was tried.

use std::sync::Arc;
use std::time::Instant;

use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::header::CONTENT_TYPE;
use serde::Deserialize;
use tollgate_backends::{Admission, BackendError, UpstreamBody, UpstreamResponse};
use tollgate_policies::{Decision, Outcome, RejectReason};

use crate::app::App;
use crate::metrics as m;
use crate::openai::sse::Usage;
use crate::openai::{ApiError, ChatRequest};
use crate::state::{Node, Snapshot};

/// The first node that answered, and what it said.
pub struct Answer {
    /// The node.
    pub node: Arc<Node>,
    /// Its response (2xx).
    pub response: UpstreamResponse,
    /// When the successful call was sent.
    pub sent_at: Instant,
    /// For whole bodies: the usage the node reported, if any.
    pub usage: Option<Usage>,
    /// For whole bodies: characters of generated text (the gateway's count when usage is missing).
    pub output_chars: usize,
    /// The body the node was sent.
    pub request: Bytes,
    /// What the client gets of the log-probs the node was asked for (the
    /// relay cuts what the gateway added).
    pub logprobs: crate::openai::logprobs::Delivered,
}

/// Tries each route of `decision` in order.
pub async fn first_answer(
    app: &App,
    snap: &Snapshot,
    decision: &Decision,
    req: &ChatRequest,
) -> Result<Answer, Response> {
    if decision.routes.is_empty() {
        return Err(no_route(decision, &req.model).into_response());
    }
    let mut last_error: Option<BackendError> = None;
    let mut tried = 0usize;
    // Audited nodes get log-probs asked for; each body is built once.
    let mut bodies: [Option<Bytes>; 2] = [None, None];
    for route in &decision.routes {
        let Some(node) = snap.node(&route.node) else {
            continue;
        };
        let audited = node.tollgate().is_some();
        let body = bodies[usize::from(audited)]
            .get_or_insert_with(|| req.upstream_body(&req.model, audited))
            .clone();
        if node.health.admit(Instant::now()) == Admission::Denied {
            continue;
        }
        if tried > 0 {
            metrics::counter!(m::FAILOVERS).increment(1);
        }
        tried += 1;
        let sent_at = Instant::now();
        let result = node
            .backend
            .chat(body.clone(), req.stream)
            .await
            .and_then(inspect);
        match result {
            Ok((response, usage, output_chars)) => {
                node.set_reachable(true);
                return Ok(Answer {
                    node: node.clone(),
                    response,
                    sent_at,
                    usage,
                    output_chars,
                    request: body,
                    logprobs: req.delivered_logprobs(audited),
                });
            }
            Err(e) if !e.is_retryable() => return Err(pass_through(e)),
            Err(e) => {
                tracing::warn!(
                    node = node.id(),
                    "node failed before first byte, trying next route: {e}"
                );
                node.health.record_failure(Instant::now());
                if breaks_sla(&e) {
                    let failed = Outcome {
                        ok: false,
                        ttft_ms: None,
                        tokens_per_s: None,
                    };
                    crate::sla::observe(app, node, &decision.policy, failed);
                }
                metrics::counter!(m::NODE_FAILURES, "node" => node.id().to_string(), "reason" => reason(&e)).increment(1);
                last_error = Some(e);
            }
        }
    }
    Err(match last_error {
        Some(e) => ApiError::all_routes_failed(&e, tried),
        None => ApiError::no_healthy_node(&req.model, 1),
    }
    .into_response())
}

/// Checks a whole body is a chat completion before accepting it; reads its usage.
fn inspect(
    resp: UpstreamResponse,
) -> Result<(UpstreamResponse, Option<Usage>, usize), BackendError> {
    #[derive(Deserialize)]
    struct Completion {
        choices: Vec<Choice>,
        #[serde(default)]
        usage: Option<Usage>,
    }
    #[derive(Deserialize)]
    struct Choice {
        #[serde(default)]
        message: Option<Message>,
    }
    #[derive(Deserialize)]
    struct Message {
        #[serde(default)]
        content: Option<String>,
    }
    let UpstreamBody::Full(body) = &resp.body else {
        return Ok((resp, None, 0));
    };
    let parsed: Completion = serde_json::from_slice(body)
        .map_err(|e| BackendError::Protocol(format!("answer is not a chat completion: {e}")))?;
    let chars = parsed
        .choices
        .iter()
        .filter_map(|c| c.message.as_ref()?.content.as_ref().map(String::len))
        .sum();
    Ok((resp, parsed.usage, chars))
}

/// Whether a failure counts against the node's SLA: it could not be reached,
/// timed out, failed (5xx) or broke the protocol. A 4xx (429 shedding load, or
/// the gateway's own credentials refused) is not the node failing a promise.
fn breaks_sla(e: &BackendError) -> bool {
    match e {
        BackendError::Status { status, .. } => status.is_server_error(),
        _ => true,
    }
}

fn reason(e: &BackendError) -> &'static str {
    match e {
        BackendError::Connect(_) => "connect",
        BackendError::Timeout(_) => "timeout",
        BackendError::Status { .. } => "status",
        BackendError::Protocol(_) => "protocol",
        BackendError::Body(_) => "body",
    }
}

/// A client error from the node (every node would say the same): relayed as is
/// when it is an OpenAI error object, wrapped in one otherwise.
fn pass_through(e: BackendError) -> Response {
    if let BackendError::Status { status, body } = &e {
        let is_openai_error = serde_json::from_slice::<serde_json::Value>(body)
            .map(|v| v.get("error").is_some_and(|e| e.is_object()))
            .unwrap_or(false);
        if is_openai_error {
            return (
                *status,
                [(CONTENT_TYPE, "application/json")],
                Bytes::clone(body),
            )
                .into_response();
        }
        let mut err = ApiError::invalid(
            None,
            "upstream_rejected",
            format!(
                "The node rejected the request: {}",
                String::from_utf8_lossy(body)
            ),
        );
        err.status = *status;
        return err.into_response();
    }
    ApiError::internal(e.to_string()).into_response()
}

/// Why no route exists: every node down (503, retry) or the policy filtered all out.
fn no_route(decision: &Decision, model: &str) -> ApiError {
    if decision
        .rejected
        .iter()
        .all(|r| r.reason == RejectReason::Unhealthy)
    {
        return ApiError::no_healthy_node(model, 1);
    }
    let why: Vec<String> = decision
        .rejected
        .iter()
        .map(|r| format!("{}: {}", r.node, r.reason))
        .collect();
    let mut e = ApiError::no_healthy_node(model, 5);
    e.code = Some("no_route");
    e.message = format!(
        "No node serving `{model}` meets routing policy `{}` ({}). POST the request to /admin/route/explain for details.",
        decision.policy,
        why.join("; ")
    );
    e
}
