//! Any OpenAI-compatible endpoint: a provider's node, vLLM, llama.cpp's server.

use std::time::Duration;

use bytes::Bytes;
use futures_util::{stream, Stream, StreamExt};
use http::header::CONTENT_TYPE;
use tokio::time::{timeout, timeout_at, Instant};

use crate::{Backend, BackendError, BoxFuture, Timeouts, UpstreamBody, UpstreamResponse};

/// Largest error body kept from a failing node.
const MAX_ERROR_BODY: usize = 64 * 1024;

/// Where and how to reach one OpenAI-compatible node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpenAiNode {
    /// Base URL including the version prefix, e.g. `http://10.0.0.5:8000/v1`.
    pub base_url: String,
    /// Bearer token the node expects, if any.
    pub api_key: Option<String>,
    /// Connect, first-byte and idle limits.
    pub timeouts: Timeouts,
}

/// A node reached over HTTP with a pooled connection set of its own.
pub struct OpenAiBackend {
    node: OpenAiNode,
    client: reqwest::Client,
    chat_url: String,
    models_url: String,
}

impl OpenAiBackend {
    /// Builds the backend and its connection pool.
    pub fn new(node: OpenAiNode) -> Result<Self, BackendError> {
        let client = reqwest::Client::builder()
            .connect_timeout(node.timeouts.connect)
            .pool_idle_timeout(Duration::from_secs(90))
            .tcp_nodelay(true)
            .build()
            .map_err(|e| BackendError::Protocol(format!("cannot build HTTP client: {e}")))?;
        let base = node.base_url.trim_end_matches('/');
        Ok(Self {
            chat_url: format!("{base}/chat/completions"),
            models_url: format!("{base}/models"),
            node,
            client,
        })
    }

    fn request(&self, builder: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.node.api_key {
            Some(key) => builder.bearer_auth(key),
            None => builder,
        }
    }

    async fn send_chat(
        &self,
        body: Bytes,
        streamed: bool,
    ) -> Result<UpstreamResponse, BackendError> {
        let deadline = Instant::now() + self.node.timeouts.first_byte;
        let idle = self.node.timeouts.idle;
        let req = self
            .request(self.client.post(&self.chat_url))
            .header(CONTENT_TYPE, "application/json")
            .body(body);
        let resp = timeout_at(deadline, req.send())
            .await
            .map_err(|_| BackendError::Timeout("response headers"))?
            .map_err(classify)?;
        let status = resp.status();
        let headers = resp.headers().clone();
        if !status.is_success() {
            let body = timeout(idle, read_bounded(resp, MAX_ERROR_BODY))
                .await
                .map_err(|_| BackendError::Timeout("error body"))??;
            return Err(BackendError::Status { status, body });
        }
        let mut chunks = with_idle_timeout(resp.bytes_stream(), idle).boxed();
        let first = loop {
            match timeout_at(deadline, chunks.next()).await {
                Err(_) => return Err(BackendError::Timeout("first byte")),
                Ok(None) if streamed => return Err(BackendError::Protocol("empty stream".into())),
                Ok(None) => break Bytes::new(),
                Ok(Some(Err(e))) => return Err(e),
                Ok(Some(Ok(b))) if b.is_empty() => continue,
                Ok(Some(Ok(b))) => break b,
            }
        };
        let body = if streamed {
            UpstreamBody::Stream {
                first,
                rest: chunks,
            }
        } else {
            let mut all = first.to_vec();
            while let Some(chunk) = chunks.next().await {
                all.extend_from_slice(&chunk?);
            }
            UpstreamBody::Full(Bytes::from(all))
        };
        Ok(UpstreamResponse {
            status,
            headers,
            body,
        })
    }

    async fn fetch_models(&self) -> Result<Vec<String>, BackendError> {
        #[derive(serde::Deserialize)]
        struct List {
            data: Vec<Entry>,
        }
        #[derive(serde::Deserialize)]
        struct Entry {
            id: String,
        }
        let req = self.request(self.client.get(&self.models_url));
        let resp = timeout(
            self.node.timeouts.first_byte.min(Duration::from_secs(10)),
            req.send(),
        )
        .await
        .map_err(|_| BackendError::Timeout("model list"))?
        .map_err(classify)?;
        let status = resp.status();
        let body = timeout(self.node.timeouts.idle, read_bounded(resp, 4 * 1024 * 1024))
            .await
            .map_err(|_| BackendError::Timeout("model list body"))??;
        if !status.is_success() {
            return Err(BackendError::Status { status, body });
        }
        let list: List = serde_json::from_slice(&body)
            .map_err(|e| BackendError::Protocol(format!("bad model list: {e}")))?;
        Ok(list.data.into_iter().map(|e| e.id).collect())
    }
}

impl Backend for OpenAiBackend {
    fn chat(
        &self,
        body: Bytes,
        stream: bool,
    ) -> BoxFuture<'_, Result<UpstreamResponse, BackendError>> {
        Box::pin(self.send_chat(body, stream))
    }

    fn list_models(&self) -> BoxFuture<'_, Result<Vec<String>, BackendError>> {
        Box::pin(self.fetch_models())
    }
}

fn classify(e: reqwest::Error) -> BackendError {
    if e.is_connect() {
        BackendError::Connect(e.to_string())
    } else if e.is_timeout() {
        BackendError::Timeout("connect")
    } else if e.is_body() || e.is_decode() {
        BackendError::Body(e.to_string())
    } else {
        // A connection reset before any response lands here; another node may do better.
        BackendError::Connect(e.to_string())
    }
}

async fn read_bounded(resp: reqwest::Response, limit: usize) -> Result<Bytes, BackendError> {
    let mut out = Vec::new();
    let mut body = resp.bytes_stream();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| BackendError::Body(e.to_string()))?;
        let room = limit.saturating_sub(out.len());
        out.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if out.len() >= limit {
            break;
        }
    }
    Ok(Bytes::from(out))
}

/// Ends the stream with an error when the node stays silent longer than `idle`,
/// and after the first error (a broken body does not resume).
fn with_idle_timeout<S>(
    inner: S,
    idle: Duration,
) -> impl Stream<Item = Result<Bytes, BackendError>> + Send + 'static
where
    S: Stream<Item = reqwest::Result<Bytes>> + Send + 'static,
{
    stream::unfold(Some(Box::pin(inner)), move |state| async move {
        let mut inner = state?;
        match timeout(idle, inner.next()).await {
            Ok(Some(Ok(b))) => Some((Ok(b), Some(inner))),
            Ok(Some(Err(e))) => Some((Err(BackendError::Body(e.to_string())), None)),
            Ok(None) => None,
            Err(_) => Some((Err(BackendError::Timeout("next chunk")), None)),
        }
    })
}
