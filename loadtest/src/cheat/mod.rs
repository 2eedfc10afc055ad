//! A dishonest node, for testing the audits: it speaks the real node
//! protocol and signs every answer with its own key, but lies in one chosen
//! way. It sits in front of a real `tollgate-node` and presents itself as
//! serving whatever model another node (the one it imitates) serves.
//!
//! Lies that need another model file (a different model, skipped layers,
//! noisy weights) come from the upstream node running that file (see
//! [`derive`]); lies about the request or the answer are made here.

pub mod derive;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use http::header::CONTENT_TYPE;
use http::{HeaderValue, StatusCode};
use serde_json::{json, Value};
use tollgate_protocol::{
    hash, Identity, NodeInfo, StreamHasher, ATTESTATION_COMMENT, ATTESTATION_HEADER,
};

/// The lie a cheating node tells.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Lie {
    /// None beyond presenting the imitated node's model (whose file the
    /// upstream may or may not serve).
    Model,
    /// Drops every system message before generating.
    DropSystem,
    /// Generates from the last message alone, dropping earlier context.
    Truncate,
    /// Answers every request with its first answer (to another prompt).
    Replay,
    /// Generates honestly but reports fabricated log-probs.
    FakeLogprobs,
}

/// How the cheat behaves.
pub struct CheatConfig {
    /// The real node that generates.
    pub upstream: String,
    /// The node whose model this one claims to serve.
    pub imitate: String,
    /// The lie.
    pub lie: Lie,
    /// Honest (plain relay) for this many chat requests first.
    pub honest_first: u64,
    /// Held before every answer: a node too slow for its SLA (0 = none).
    pub delay: std::time::Duration,
}

struct Cheat {
    config: CheatConfig,
    identity: Identity,
    http: reqwest::Client,
    served: AtomicU64,
    first_answer: Mutex<Option<Value>>,
}

/// The cheat's routes, the same as a node's.
pub fn router(config: CheatConfig, identity: Identity) -> Router {
    let state = Arc::new(Cheat {
        config,
        identity,
        http: reqwest::Client::new(),
        served: AtomicU64::new(0),
        first_answer: Mutex::new(None),
    });
    Router::new()
        .route("/v1/chat/completions", post(chat))
        .route("/v1/models", get(models))
        .route("/node/info", get(info))
        .with_state(state)
}

fn fail(status: StatusCode, message: String) -> Response {
    (
        status,
        Json(json!({"error": {"message": message, "type": "server_error", "param": null, "code": null}})),
    )
        .into_response()
}

impl Cheat {
    async fn get_info(&self, root: &str) -> Result<NodeInfo, String> {
        self.http
            .get(format!("{}/node/info", root.trim_end_matches('/')))
            .send()
            .await
            .map_err(|e| e.to_string())?
            .json()
            .await
            .map_err(|e| e.to_string())
    }

    /// The imitated node's self-description, under this node's key.
    async fn claimed_info(&self) -> Result<NodeInfo, String> {
        let mut info = self.get_info(&self.config.imitate).await?;
        info.address = self.identity.address();
        Ok(info)
    }

    async fn generate(&self, mut body: Value, lie: Option<Lie>) -> Result<Value, String> {
        let upstream = self.get_info(&self.config.upstream).await?;
        if let Some(messages) = body.get_mut("messages").and_then(Value::as_array_mut) {
            match lie {
                Some(Lie::DropSystem) => messages.retain(|m| m["role"] != "system"),
                Some(Lie::Truncate) => {
                    let last = messages.pop();
                    messages.clear();
                    messages.extend(last);
                }
                _ => {}
            }
        }
        body["model"] = json!(upstream.model);
        body["stream"] = json!(false);
        if let Some(obj) = body.as_object_mut() {
            obj.remove("stream_options");
        }
        let resp = self
            .http
            .post(format!(
                "{}/v1/chat/completions",
                self.config.upstream.trim_end_matches('/')
            ))
            .json(&body)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if !resp.status().is_success() {
            return Err(format!("upstream answered {}", resp.status()));
        }
        resp.json().await.map_err(|e| e.to_string())
    }
}

async fn chat(State(cheat): State<Arc<Cheat>>, request: Bytes) -> Response {
    let body: Value = match serde_json::from_slice(&request) {
        Ok(v) => v,
        Err(e) => return fail(StatusCode::BAD_REQUEST, format!("bad JSON: {e}")),
    };
    tokio::time::sleep(cheat.config.delay).await;
    let n = cheat.served.fetch_add(1, Ordering::Relaxed);
    let lie = (n >= cheat.config.honest_first).then_some(cheat.config.lie);
    let claimed = match cheat.claimed_info().await {
        Ok(i) => i,
        Err(e) => return fail(StatusCode::BAD_GATEWAY, e),
    };
    let mut answer = if lie == Some(Lie::Replay) {
        let stored = cheat
            .first_answer
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        match stored {
            Some(a) => a,
            None => match cheat.generate(body.clone(), None).await {
                Ok(a) => a,
                Err(e) => return fail(StatusCode::BAD_GATEWAY, e),
            },
        }
    } else {
        match cheat.generate(body.clone(), lie).await {
            Ok(a) => a,
            Err(e) => return fail(StatusCode::BAD_GATEWAY, e),
        }
    };
    {
        let mut first = cheat.first_answer.lock().unwrap_or_else(|p| p.into_inner());
        if first.is_none() {
            *first = Some(answer.clone());
        }
    }
    answer["model"] = json!(claimed.model);
    if lie == Some(Lie::FakeLogprobs) {
        fabricate_logprobs(&mut answer);
    }
    let usage = |k: &str| {
        answer
            .pointer(&format!("/usage/{k}"))
            .and_then(Value::as_u64)
            .unwrap_or(0)
    };
    let (p, c) = (usage("prompt_tokens"), usage("completion_tokens"));
    if body.get("stream").and_then(Value::as_bool) == Some(true) {
        let include_usage = body
            .pointer("/stream_options/include_usage")
            .and_then(Value::as_bool)
            == Some(true);
        let mut hasher = StreamHasher::new();
        let mut out = Vec::new();
        for event in as_chunks(&answer, include_usage) {
            let bytes = format!("data: {event}\n\n").into_bytes();
            hasher.update(&bytes);
            out.extend(bytes);
        }
        let att = cheat.identity.attest(&request, &hasher.finalize(), p, c);
        out.extend_from_slice(ATTESTATION_COMMENT);
        out.extend(serde_json::to_vec(&att).unwrap_or_default());
        out.extend_from_slice(b"\n\ndata: [DONE]\n\n");
        let mut resp = Response::new(axum::body::Body::from(out));
        resp.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
        return resp;
    }
    let bytes = serde_json::to_vec(&answer).unwrap_or_default();
    let att = cheat.identity.attest(&request, &hash(&bytes), p, c);
    let mut resp = (StatusCode::OK, [(CONTENT_TYPE, "application/json")], bytes).into_response();
    if let Ok(v) = HeaderValue::try_from(serde_json::to_string(&att).unwrap_or_default()) {
        resp.headers_mut().insert(ATTESTATION_HEADER, v);
    }
    resp
}

/// Claims near-certainty for every token: what a node inflating its answer's
/// confidence would send.
fn fabricate_logprobs(answer: &mut Value) {
    let Some(choices) = answer.get_mut("choices").and_then(Value::as_array_mut) else {
        return;
    };
    for choice in choices {
        if let Some(tokens) = choice
            .pointer_mut("/logprobs/content")
            .and_then(Value::as_array_mut)
        {
            for t in tokens {
                t["logprob"] = json!(-0.01);
                if let Some(top) = t.get_mut("top_logprobs").and_then(Value::as_array_mut) {
                    for (i, alt) in top.iter_mut().enumerate() {
                        alt["logprob"] = json!(-0.01 - 3.0 * i as f64);
                    }
                }
            }
        }
    }
}

/// A whole completion re-cut as the chunks a streaming node sends: the
/// role, one chunk per token (with its log-probs) or the text at once, the
/// finish, and the usage if asked.
fn as_chunks(answer: &Value, include_usage: bool) -> Vec<Value> {
    let id = answer["id"].clone();
    let model = answer["model"].clone();
    let created = answer["created"].clone();
    let chunk = |choices: Value| json!({"id": id, "object": "chat.completion.chunk", "created": created, "model": model, "choices": choices});
    let mut out = Vec::new();
    let empty = Vec::new();
    let choices = answer["choices"].as_array().unwrap_or(&empty);
    for choice in choices {
        let index = choice["index"].clone();
        out.push(chunk(json!([{"index": index, "delta": {"role": "assistant", "content": ""}, "logprobs": null, "finish_reason": null}])));
        match choice
            .pointer("/logprobs/content")
            .and_then(Value::as_array)
        {
            Some(tokens) if !tokens.is_empty() => {
                for t in tokens {
                    out.push(chunk(
                        json!([{"index": index, "delta": {"content": t["token"]},
                        "logprobs": {"content": [t]}, "finish_reason": null}]),
                    ));
                }
            }
            _ => out.push(chunk(
                json!([{"index": index, "delta": {"content": choice["message"]["content"]},
                "logprobs": null, "finish_reason": null}]),
            )),
        }
        out.push(chunk(json!([{"index": index, "delta": {}, "logprobs": null, "finish_reason": choice["finish_reason"]}])));
    }
    if include_usage {
        let mut u = chunk(json!([]));
        u["usage"] = answer["usage"].clone();
        out.push(u);
    }
    out
}

async fn models(State(cheat): State<Arc<Cheat>>) -> Response {
    match cheat.claimed_info().await {
        Ok(info) => Json(json!({"object": "list", "data": [{"id": info.model, "object": "model", "created": 0, "owned_by": "tollgate-node"}]})).into_response(),
        Err(e) => fail(StatusCode::BAD_GATEWAY, e),
    }
}

async fn info(State(cheat): State<Arc<Cheat>>) -> Response {
    match cheat.claimed_info().await {
        Ok(info) => Json(info).into_response(),
        Err(e) => fail(StatusCode::BAD_GATEWAY, e),
    }
}
