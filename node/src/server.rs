//! The node's HTTP routes.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::StreamExt;
use http::header::CONTENT_TYPE;
use http::{HeaderValue, StatusCode};
use serde::Deserialize;
use serde_json::json;
use tollgate_engine::{Engine, EngineError, Reply, DONE};
use tollgate_protocol::{
    hash, Identity, NodeInfo, StreamHasher, ATTESTATION_COMMENT, ATTESTATION_HEADER,
};

/// Everything the routes share.
pub struct NodeState {
    /// The loaded model.
    pub engine: Engine,
    /// The signing key.
    pub identity: Identity,
    /// What `/node/info` answers.
    pub info: NodeInfo,
}

/// The node's routes.
pub fn router(state: Arc<NodeState>) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(chat))
        .route("/v1/models", get(models))
        .route("/node/info", get(info))
        .route("/node/score", post(score))
        .with_state(state)
}

fn error(status: StatusCode, message: String, param: Option<String>) -> Response {
    let kind = if status.is_client_error() {
        "invalid_request_error"
    } else {
        "server_error"
    };
    (
        status,
        Json(json!({"error": {"message": message, "type": kind, "param": param, "code": null}})),
    )
        .into_response()
}

fn engine_error(e: EngineError) -> Response {
    match e {
        EngineError::Request(r) => error(StatusCode::BAD_REQUEST, r.to_string(), Some(r.param)),
        other => error(StatusCode::INTERNAL_SERVER_ERROR, other.to_string(), None),
    }
}

async fn chat(State(node): State<Arc<NodeState>>, request: Bytes) -> Response {
    let body: serde_json::Value = match serde_json::from_slice(&request) {
        Ok(v) => v,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("We could not parse the JSON body of your request. ({e})"),
                None,
            )
        }
    };
    match node.engine.reply(&body).await {
        Err(e) => engine_error(e),
        Ok(Reply::Whole { body, usage }) => {
            let att = node.identity.attest(
                &request,
                &hash(&body),
                usage.prompt_tokens,
                usage.completion_tokens,
            );
            let mut resp =
                (StatusCode::OK, [(CONTENT_TYPE, "application/json")], body).into_response();
            if let Ok(v) = HeaderValue::try_from(serde_json::to_string(&att).unwrap_or_default()) {
                resp.headers_mut().insert(ATTESTATION_HEADER, v);
            }
            resp
        }
        Ok(Reply::Events(events)) => {
            // The attestation goes in an SSE comment just before [DONE]: it
            // covers every byte sent before it, and clients ignore comments.
            let signer = node.clone();
            let mut hasher = StreamHasher::new();
            let mut usage = None;
            let body = events.flat_map(move |event| {
                let out: Vec<Result<Bytes, EngineError>> = match event {
                    Err(e) => vec![Err(e)],
                    Ok(e) if e.bytes.as_ref() == DONE => {
                        let (p, c) = usage
                            .map(|u: tollgate_engine::openai::Usage| {
                                (u.prompt_tokens, u.completion_tokens)
                            })
                            .unwrap_or((0, 0));
                        let digest = std::mem::take(&mut hasher).finalize();
                        let att = signer.identity.attest(&request, &digest, p, c);
                        let mut comment = ATTESTATION_COMMENT.to_vec();
                        comment.extend(serde_json::to_vec(&att).unwrap_or_default());
                        comment.extend_from_slice(b"\n\n");
                        vec![Ok(Bytes::from(comment)), Ok(e.bytes)]
                    }
                    Ok(e) => {
                        if e.usage.is_some() {
                            usage = e.usage;
                        }
                        if e.visible {
                            hasher.update(&e.bytes);
                            vec![Ok(e.bytes)]
                        } else {
                            Vec::new()
                        }
                    }
                };
                futures_util::stream::iter(out)
            });
            let mut resp = Response::new(Body::from_stream(body));
            resp.headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
            resp
        }
    }
}

async fn models(State(node): State<Arc<NodeState>>) -> Json<serde_json::Value> {
    Json(
        json!({"object": "list", "data": [{"id": node.info.model, "object": "model", "created": 0, "owned_by": "tollgate-node"}]}),
    )
}

async fn info(State(node): State<Arc<NodeState>>) -> Json<NodeInfo> {
    Json(node.info.clone())
}

/// Body of `/node/score`.
#[derive(Deserialize)]
struct ScoreRequest {
    tokens: Vec<u32>,
    #[serde(default = "default_top_k")]
    top_k: usize,
}

fn default_top_k() -> usize {
    5
}

async fn score(State(node): State<Arc<NodeState>>, Json(req): Json<ScoreRequest>) -> Response {
    match node.engine.score(req.tokens, req.top_k.min(20), None).await {
        Ok(scores) => Json(scores).into_response(),
        Err(e) => engine_error(e),
    }
}
