//! A `tollgate-node`: an OpenAI-compatible endpoint whose every answer must
//! carry a valid attestation signed by the node's key.
//!
//! The key's address is learned from `/node/info` on first contact and then
//! pinned: a node that later presents another key, or answers unsigned or
//! with a signature over other bytes, fails like a node that broke the
//! protocol (the call fails over, the node's circuit counts it).

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream::BoxStream;
use futures_util::{Stream, StreamExt};
use tollgate_protocol::{
    hash, Attestation, NodeInfo, StreamHasher, ATTESTATION_COMMENT, ATTESTATION_HEADER,
};

use crate::sse::EventSplitter;
use crate::{
    Backend, BackendError, BoxFuture, OpenAiBackend, OpenAiNode, Timeouts, UpstreamBody,
    UpstreamResponse,
};

type Address = tollgate_protocol::Address;

/// A remote `tollgate-node`.
pub struct TollgateBackend {
    http: OpenAiBackend,
    client: reqwest::Client,
    info_url: String,
    timeouts: Timeouts,
    address: Mutex<Option<Address>>,
}

impl TollgateBackend {
    /// A node at `root` (e.g. `http://10.0.0.5:9100`).
    pub fn new(
        root: &str,
        api_key: Option<String>,
        timeouts: Timeouts,
    ) -> Result<Self, BackendError> {
        let root = root.trim_end_matches('/');
        let http = OpenAiBackend::new(OpenAiNode {
            base_url: format!("{root}/v1"),
            api_key,
            timeouts,
        })?;
        let client = reqwest::Client::builder()
            .connect_timeout(timeouts.connect)
            .build()
            .map_err(|e| BackendError::Protocol(format!("cannot build HTTP client: {e}")))?;
        Ok(Self {
            http,
            client,
            info_url: format!("{root}/node/info"),
            timeouts,
            address: Mutex::new(None),
        })
    }

    /// Expects this signing key from the start (e.g. the one registered on
    /// chain), instead of trusting the first `/node/info`.
    pub fn pinned(self, signer: Address) -> Self {
        *self.address.lock().unwrap_or_else(|p| p.into_inner()) = Some(signer);
        self
    }

    /// The node's signing address, once known.
    pub fn address(&self) -> Option<Address> {
        *self.address.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Fetches `/node/info`, pinning the node's address on first contact.
    pub async fn info(&self) -> Result<NodeInfo, BackendError> {
        let limit = self.timeouts.first_byte.min(Duration::from_secs(10));
        let resp = tokio::time::timeout(limit, self.client.get(&self.info_url).send())
            .await
            .map_err(|_| BackendError::Timeout("node info"))?
            .map_err(|e| BackendError::Connect(e.to_string()))?;
        if !resp.status().is_success() {
            let status = resp.status();
            return Err(BackendError::Status {
                status,
                body: Bytes::new(),
            });
        }
        let info: NodeInfo = tokio::time::timeout(limit, resp.json())
            .await
            .map_err(|_| BackendError::Timeout("node info body"))?
            .map_err(|e| BackendError::Protocol(format!("bad /node/info: {e}")))?;
        let mut pinned = self.address.lock().unwrap_or_else(|p| p.into_inner());
        match *pinned {
            Some(known) if known != info.address => Err(BackendError::Protocol(format!(
                "node changed its signing key from {known} to {}",
                info.address
            ))),
            _ => {
                *pinned = Some(info.address);
                Ok(info)
            }
        }
    }

    async fn signed_chat(
        &self,
        body: Bytes,
        stream: bool,
    ) -> Result<UpstreamResponse, BackendError> {
        let signer = match self.address() {
            Some(a) => a,
            None => self.info().await?.address,
        };
        let resp = self.http.chat(body.clone(), stream).await?;
        match resp.body {
            UpstreamBody::Full(full) => {
                let att: Attestation = resp
                    .headers
                    .get(ATTESTATION_HEADER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| serde_json::from_str(v).ok())
                    .ok_or_else(|| BackendError::Protocol("answer is not signed".into()))?;
                att.verify(signer, &body, &hash(&full))
                    .map_err(|e| BackendError::Protocol(format!("attestation rejected: {e}")))?;
                Ok(UpstreamResponse {
                    status: resp.status,
                    headers: resp.headers,
                    body: UpstreamBody::Full(full),
                })
            }
            UpstreamBody::Stream { first, rest } => {
                let all = futures_util::stream::once(async move { Ok(first) }).chain(rest);
                let mut checked = verify_stream(all, signer, body).boxed();
                let first = match checked.next().await {
                    Some(first) => first?,
                    None => return Err(BackendError::Protocol("empty stream".into())),
                };
                Ok(UpstreamResponse {
                    status: resp.status,
                    headers: resp.headers,
                    body: UpstreamBody::Stream {
                        first,
                        rest: checked,
                    },
                })
            }
        }
    }
}

impl Backend for TollgateBackend {
    fn chat(
        &self,
        body: Bytes,
        stream: bool,
    ) -> BoxFuture<'_, Result<UpstreamResponse, BackendError>> {
        Box::pin(self.signed_chat(body, stream))
    }

    fn list_models(&self) -> BoxFuture<'_, Result<Vec<String>, BackendError>> {
        Box::pin(async move { Ok(vec![self.info().await?.model]) })
    }
}

struct Verifier {
    inner: BoxStream<'static, Result<Bytes, BackendError>>,
    split: EventSplitter,
    hasher: StreamHasher,
    request: Bytes,
    signer: Address,
    verified: bool,
    ready: VecDeque<Result<Bytes, BackendError>>,
    ended: bool,
}

/// Passes a stream's events through, checks the attestation comment against
/// every byte before it, strips it, and fails the stream if `[DONE]` arrives
/// without a valid one.
fn verify_stream(
    inner: impl Stream<Item = Result<Bytes, BackendError>> + Send + 'static,
    signer: Address,
    request: Bytes,
) -> impl Stream<Item = Result<Bytes, BackendError>> + Send + 'static {
    let state = Verifier {
        inner: inner.boxed(),
        split: EventSplitter::default(),
        hasher: StreamHasher::new(),
        request,
        signer,
        verified: false,
        ready: VecDeque::new(),
        ended: false,
    };
    futures_util::stream::unfold(state, |mut s| async move {
        loop {
            if let Some(item) = s.ready.pop_front() {
                return Some((item, s));
            }
            if s.ended {
                return None;
            }
            if let Some(event) = s.split.next_event() {
                s.judge(event);
                continue;
            }
            match s.inner.next().await {
                Some(Ok(bytes)) => s.split.push(&bytes),
                Some(Err(e)) => {
                    s.ready.push_back(Err(e));
                    s.ended = true;
                }
                None => s.ended = true,
            }
        }
    })
}

impl Verifier {
    fn judge(&mut self, event: Bytes) {
        if let Some(rest) = event.strip_prefix(ATTESTATION_COMMENT) {
            let digest = self.hasher.clone().finalize();
            let outcome = serde_json::from_slice::<Attestation>(rest.trim_ascii_end())
                .map_err(|e| e.to_string())
                .and_then(|att| {
                    att.verify(self.signer, &self.request, &digest)
                        .map_err(|e| e.to_string())
                });
            match outcome {
                Ok(()) => {
                    // Passed on: an audit keeps it as evidence; the gateway
                    // never sends it to the client.
                    self.verified = true;
                    self.ready.push_back(Ok(event));
                }
                Err(e) => {
                    self.ready.push_back(Err(BackendError::Protocol(format!(
                        "stream attestation rejected: {e}"
                    ))));
                    self.ended = true;
                }
            }
        } else if event.starts_with(b"data: [DONE]") && !self.verified {
            self.ready.push_back(Err(BackendError::Protocol(
                "stream ended without a valid attestation".into(),
            )));
            self.ended = true;
        } else {
            self.hasher.update(&event);
            self.ready.push_back(Ok(event));
        }
    }
}
