//! The engine in-process: a node without a network hop.
//!
//! It answers in the same OpenAI bytes a remote node would send, so the
//! gateway's relay, metering and failover treat it like any other node.

use std::sync::Arc;

use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};
use http::{HeaderMap, HeaderValue, StatusCode};
use tollgate_engine::{Engine, EngineError};

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

    async fn run(&self, body: Bytes, stream: bool) -> Result<UpstreamResponse, BackendError> {
        let request: serde_json::Value =
            serde_json::from_slice(&body).map_err(|e| client_error(e.to_string(), None))?;
        if stream {
            let include_usage = request
                .get("stream_options")
                .and_then(|o| o.get("include_usage"))
                .and_then(serde_json::Value::as_bool)
                .unwrap_or(false);
            let chunks = self
                .engine
                .stream(&request, include_usage)
                .await
                .map_err(engine_error)?;
            let events = chunks
                .map_ok(|chunk| sse_event(&chunk))
                .map_err(|e| BackendError::Body(e.to_string()))
                .chain(futures_util::stream::once(async {
                    Ok(Bytes::from_static(b"data: [DONE]\n\n"))
                }));
            let mut events = Box::pin(events);
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
                    rest: events.boxed(),
                },
            })
        } else {
            let completion = self.engine.complete(&request).await.map_err(engine_error)?;
            let body = serde_json::to_vec(&completion)
                .map_err(|e| BackendError::Protocol(e.to_string()))?;
            Ok(UpstreamResponse {
                status: StatusCode::OK,
                headers: content_type("application/json"),
                body: UpstreamBody::Full(Bytes::from(body)),
            })
        }
    }
}

impl Backend for EmbeddedBackend {
    fn chat(
        &self,
        body: Bytes,
        stream: bool,
    ) -> BoxFuture<'_, Result<UpstreamResponse, BackendError>> {
        Box::pin(self.run(body, stream))
    }

    fn list_models(&self) -> BoxFuture<'_, Result<Vec<String>, BackendError>> {
        let id = self.engine.id().to_string();
        Box::pin(async move { Ok(vec![id]) })
    }
}

fn sse_event<T: serde::Serialize>(chunk: &T) -> Bytes {
    let mut out = b"data: ".to_vec();
    // Serialising plain data structures cannot fail.
    out.extend(serde_json::to_vec(chunk).unwrap_or_default());
    out.extend_from_slice(b"\n\n");
    Bytes::from(out)
}

fn content_type(value: &'static str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(http::header::CONTENT_TYPE, HeaderValue::from_static(value));
    h
}

fn client_error(message: String, param: Option<String>) -> BackendError {
    let body = serde_json::json!({"error": {"message": message, "type": "invalid_request_error", "param": param, "code": null}});
    BackendError::Status {
        status: StatusCode::BAD_REQUEST,
        body: Bytes::from(body.to_string()),
    }
}

fn engine_error(e: EngineError) -> BackendError {
    match e {
        EngineError::Request(r) => client_error(r.to_string(), Some(r.param)),
        other => {
            let body = serde_json::json!({"error": {"message": other.to_string(), "type": "server_error", "param": null, "code": null}});
            BackendError::Status {
                status: StatusCode::INTERNAL_SERVER_ERROR,
                body: Bytes::from(body.to_string()),
            }
        }
    }
}
