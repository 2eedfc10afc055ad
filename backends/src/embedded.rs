//! The engine in-process: a node without a network hop.
//!
//! It answers in the same OpenAI bytes a remote node would send, so the
//! gateway's relay, metering and failover treat it like any other node.

use std::sync::Arc;

use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};
use http::{HeaderMap, HeaderValue, StatusCode};
use tollgate_engine::{Engine, EngineError, Reply};

use crate::{Backend, BackendError, BoxFuture, UpstreamBody, UpstreamResponse};

/// A backend served by an [`Engine`] in this process.
pub struct EmbeddedBackend {
    engine: Arc<Engine>,
}

impl EmbeddedBackend {
    /// Wraps a loaded engine.
    pub fn new(engine: Arc<Engine>) -> Self {
        Self { engine }
    }

    async fn run(&self, body: Bytes) -> Result<UpstreamResponse, BackendError> {
        let request: serde_json::Value = serde_json::from_slice(&body)
            .map_err(|e| error_status(StatusCode::BAD_REQUEST, e.to_string(), None))?;
        response_of(self.engine.reply(&request).await.map_err(engine_error)?).await
    }
}

/// An engine reply as a node's HTTP response; a stream waits for its first
/// event, so a failure before it is still one "before the first byte".
pub(crate) async fn response_of(reply: Reply) -> Result<UpstreamResponse, BackendError> {
    match reply {
        Reply::Whole { body, .. } => Ok(UpstreamResponse {
            status: StatusCode::OK,
            headers: content_type("application/json"),
            body: UpstreamBody::Full(body),
        }),
        Reply::Events(events) => {
            let mut events = events
                .try_filter(|e| std::future::ready(e.visible))
                .map_ok(|e| e.bytes)
                .map_err(|e| BackendError::Body(e.to_string()))
                .boxed();
            let first = match events.next().await {
                Some(first) => first?,
                None => {
                    return Err(BackendError::Protocol(
                        "engine produced an empty stream".into(),
                    ))
                }
            };
            Ok(UpstreamResponse {
                status: StatusCode::OK,
                headers: content_type("text/event-stream"),
                body: UpstreamBody::Stream {
                    first,
                    rest: events,
                },
            })
        }
    }
}

impl Backend for EmbeddedBackend {
    fn chat(
        &self,
        body: Bytes,
        _stream: bool,
    ) -> BoxFuture<'_, Result<UpstreamResponse, BackendError>> {
        Box::pin(self.run(body))
    }

    fn list_models(&self) -> BoxFuture<'_, Result<Vec<String>, BackendError>> {
        let id = self.engine.id().to_string();
        Box::pin(async move { Ok(vec![id]) })
    }
}

fn content_type(value: &'static str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(http::header::CONTENT_TYPE, HeaderValue::from_static(value));
    h
}

/// An OpenAI error object with `status`, as a node would answer.
pub fn error_status(status: StatusCode, message: String, param: Option<String>) -> BackendError {
    let kind = if status.is_client_error() {
        "invalid_request_error"
    } else {
        "server_error"
    };
    let body = serde_json::json!({"error": {"message": message, "type": kind, "param": param, "code": null}});
    BackendError::Status {
        status,
        body: Bytes::from(body.to_string()),
    }
}

fn engine_error(e: EngineError) -> BackendError {
    match e {
        EngineError::Request(r) => {
            error_status(StatusCode::BAD_REQUEST, r.to_string(), Some(r.param))
        }
        other => error_status(StatusCode::INTERNAL_SERVER_ERROR, other.to_string(), None),
    }
}
