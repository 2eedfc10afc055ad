//! Routing and the per-endpoint answers, faults included.

use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_LENGTH, CONTENT_TYPE, RETRY_AFTER};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt as _, LengthLimitError, Limited};
use hyper::body::Incoming;

use super::body::Paced;
use super::completion::{completion_body, stream_plan, Answer, Meta};
use super::error::ApiError;
use super::request::{ChatRequest, Validated};
use super::settings::{ControlPatch, Fault, Snapshot};
use super::Shared;

const MAX_BODY: usize = 32 << 20;
// A hung request is still bounded, so that no test can leak a task forever.
const HANG_LIMIT: Duration = Duration::from_secs(600);
// How many content chunks die-mid-stream lets through before the cut.
const CHUNKS_BEFORE_DEATH: usize = 2;

const JSON: HeaderValue = HeaderValue::from_static("application/json");
const SSE: HeaderValue = HeaderValue::from_static("text/event-stream; charset=utf-8");

/// Returned instead of a response to make hyper drop the connection unanswered.
#[derive(Debug)]
pub struct Dropped(&'static str);

impl fmt::Display for Dropped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "connection dropped: {}", self.0)
    }
}

impl std::error::Error for Dropped {}

type Answered = Result<Response<Paced>, Dropped>;

/// Answers one request.
pub async fn handle(shared: Arc<Shared>, req: Request<Incoming>) -> Answered {
    let path = req.uri().path();
    let settings = shared.settings.snapshot();
    if settings.fault == Fault::Refuse && path.starts_with("/v1/") {
        return Err(Dropped("refuse"));
    }
    let method = req.method().clone();
    let response = match (&method, path) {
        (&Method::POST, "/v1/chat/completions") => return chat(&shared, settings, req).await,
        (&Method::GET, "/v1/models") => json(StatusCode::OK, shared.models_body.clone()),
        (&Method::GET, p) if p.starts_with("/v1/models/") => {
            let id = &p["/v1/models/".len()..];
            match shared.model_bodies.get(id) {
                Some(body) => json(StatusCode::OK, body.clone()),
                None => error(&ApiError::model_not_found(id)),
            }
        }
        (&Method::GET, "/control") => control_view(&shared),
        (&Method::POST, "/control") => return control_patch(&shared, req).await,
        (m, p) => error(&ApiError::unknown_url(m.as_str(), p)),
    };
    Ok(response)
}

async fn control_patch(shared: &Shared, req: Request<Incoming>) -> Answered {
    let body = match read_body(req).await? {
        Ok(body) => body,
        Err(e) => return Ok(error(&e)),
    };
    let patch: ControlPatch = match serde_json::from_slice(&body) {
        Ok(p) => p,
        Err(e) => return Ok(error(&ApiError::invalid(e.to_string(), None, None))),
    };
    if let Err(e) = shared.settings.apply(&patch) {
        return Ok(error(&ApiError::invalid(e, Some("fault"), None)));
    }
    Ok(control_view(shared))
}

fn control_view(shared: &Shared) -> Response<Paced> {
    let view = shared.settings.view(&shared.node_name, &shared.models);
    json(
        StatusCode::OK,
        Bytes::from(serde_json::to_vec(&view).unwrap_or_default()),
    )
}

async fn chat(shared: &Shared, settings: Snapshot, req: Request<Incoming>) -> Answered {
    shared.settings.count_request();
    let body = read_body(req).await?;
    if settings.latency_ms > 0 {
        tokio::time::sleep(Duration::from_millis(settings.latency_ms)).await;
    }
    match settings.fault {
        Fault::Hang => {
            tokio::time::sleep(HANG_LIMIT).await;
            return Err(Dropped("hang limit"));
        }
        Fault::ServerError => return Ok(error(&ApiError::server_error())),
        Fault::RateLimit => {
            let mut response = error(&ApiError::rate_limited());
            response
                .headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from_static("1"));
            return Ok(response);
        }
        Fault::None | Fault::Refuse | Fault::DieMidStream | Fault::BadJson => {}
    }
    let valid = match body.and_then(|b| ChatRequest::parse(&b)?.validate(&shared.models)) {
        Ok(v) => v,
        Err(e) => return Ok(error(&e)),
    };
    if settings.fault == Fault::BadJson {
        return Ok(bad_json(valid.stream));
    }
    let id = format!(
        "{}{:016x}",
        shared.id_prefix,
        shared.next_id.fetch_add(1, Ordering::Relaxed)
    );
    let meta = Meta {
        id: &id,
        created: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs(),
        model: &valid.model,
        fingerprint: &shared.fingerprint,
    };
    let answer = Answer::generate(&valid, settings.completion_tokens);
    let die = settings.fault == Fault::DieMidStream;
    let mut response = if valid.stream {
        stream(&meta, &valid, &answer, settings.tokens_per_s, die)
    } else if die {
        cut_short(completion_body(&meta, &valid, &answer))
    } else {
        json(StatusCode::OK, completion_body(&meta, &valid, &answer))
    };
    if !shared.node_name.is_empty() {
        if let Ok(v) = HeaderValue::from_str(&shared.node_name) {
            response.headers_mut().insert("x-upstream-node", v);
        }
    }
    if !die {
        shared.settings.count_served();
    }
    Ok(response)
}

fn stream(
    meta: &Meta<'_>,
    req: &Validated,
    answer: &Answer,
    tokens_per_s: f64,
    die: bool,
) -> Response<Paced> {
    let plan = stream_plan(meta, req, answer);
    let token_count = if die {
        plan.tokens.len().min(CHUNKS_BEFORE_DEATH)
    } else {
        plan.tokens.len()
    };
    let tokens = plan.tokens.into_iter().take(token_count);
    let steps = if tokens_per_s > 0.0 {
        let gap = Duration::from_secs_f64(1.0 / tokens_per_s);
        let mut steps = vec![(Duration::ZERO, plan.head)];
        steps.extend(tokens.map(|t| (gap, t)));
        if !die {
            steps.push((Duration::ZERO, plan.tail));
        }
        steps
    } else {
        // Unpaced: one write for the whole answer, which is what makes thousands of
        // streams a second cheap.
        let mut all = plan.head.to_vec();
        tokens.for_each(|t| all.extend_from_slice(&t));
        if !die {
            all.extend_from_slice(&plan.tail);
        }
        vec![(Duration::ZERO, Bytes::from(all))]
    };
    let mut response = Response::new(Paced::new(steps, die));
    response.headers_mut().insert(CONTENT_TYPE, SSE);
    response
        .headers_mut()
        .insert("cache-control", HeaderValue::from_static("no-cache"));
    response
}

// Promises the full length, sends half, then aborts: the client sees a truncated body.
fn cut_short(full: Bytes) -> Response<Paced> {
    let half = full.slice(..full.len() / 2);
    let mut response = Response::new(Paced::new(vec![(Duration::ZERO, half)], true));
    response.headers_mut().insert(CONTENT_TYPE, JSON);
    response
        .headers_mut()
        .insert(CONTENT_LENGTH, HeaderValue::from(full.len()));
    response
}

fn bad_json(stream: bool) -> Response<Paced> {
    if stream {
        let body = "data: {\"id\":\"chatcmpl-bad\",\"object\":\"chat.completion.chunk\",\"choices\":[{oops\n\n\
                    data: [DONE]\n\n";
        let steps = vec![(Duration::ZERO, Bytes::from_static(body.as_bytes()))];
        let mut response = Response::new(Paced::new(steps, false));
        response.headers_mut().insert(CONTENT_TYPE, SSE);
        response
    } else {
        let body = "{\"id\":\"chatcmpl-bad\",\"object\":\"chat.completion\",\"choices\":[{oops";
        json(StatusCode::OK, Bytes::from_static(body.as_bytes()))
    }
}

/// Reads the whole body; the outer error drops the connection, the inner one answers.
async fn read_body(req: Request<Incoming>) -> Result<Result<Bytes, ApiError>, Dropped> {
    match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(body) => Ok(Ok(body.to_bytes())),
        Err(e) if e.is::<LengthLimitError>() => Ok(Err(ApiError::too_large())),
        Err(_) => Err(Dropped("request body read failed")),
    }
}

fn json(status: StatusCode, body: Bytes) -> Response<Paced> {
    let mut response = Response::new(Paced::full(body));
    *response.status_mut() = status;
    response.headers_mut().insert(CONTENT_TYPE, JSON);
    response
}

fn error(e: &ApiError) -> Response<Paced> {
    let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    json(status, e.body())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::Config;

    #[test]
    fn shared_lists_models() {
        let shared = Shared::new(Config::instant(&["a", "b"]));
        let v: serde_json::Value = serde_json::from_slice(&shared.models_body).expect("json");
        assert_eq!(v["object"], "list");
        assert_eq!(v["data"][1]["id"], "b");
        assert_eq!(v["data"][0]["owned_by"], "tollgate-upstream");
        assert!(shared.model_bodies.contains_key("a"));
    }
}
