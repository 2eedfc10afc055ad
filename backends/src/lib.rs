//! How the gateway talks to inference nodes.
//!
//! A [`Backend`] is one node reached one way: any OpenAI-compatible HTTP
//! endpoint, a `tollgate-node` whose answers are signed, or the engine in
//! this process. Every backend call reports into the node's [`NodeHealth`],
//! whose circuit breaker keeps a failing node out of routing until a probe
//! shows it is back.

mod embedded;
mod error;
mod health;
mod openai;
mod pipeline;
pub mod sse;
mod tollgate;

pub use embedded::EmbeddedBackend;
pub use error::BackendError;
pub use health::{Admission, HealthConfig, HealthSnapshot, NodeHealth, Observation};
pub use openai::{OpenAiBackend, OpenAiNode};
pub use pipeline::{parse_stages, Chain, PipelineBackend, STAGES_HEADER};
pub use tollgate::TollgateBackend;

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream::BoxStream;
use http::{HeaderMap, StatusCode};

/// A boxed future, so backends can be trait objects.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The three waits a call may spend on a node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// Establishing the TCP connection.
    pub connect: Duration,
    /// From sending the request to the first byte of the body.
    pub first_byte: Duration,
    /// Between two chunks of a streamed body.
    pub idle: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(2),
            first_byte: Duration::from_secs(60),
            idle: Duration::from_secs(30),
        }
    }
}

/// A successful (2xx) answer from a node.
pub struct UpstreamResponse {
    /// The node's status code.
    pub status: StatusCode,
    /// The node's headers.
    pub headers: HeaderMap,
    /// The body: whole, or a stream whose first chunk has already arrived.
    pub body: UpstreamBody,
}

/// A node's response body.
pub enum UpstreamBody {
    /// A complete, non-streamed body.
    Full(Bytes),
    /// A streamed body. `first` is already here, so a failure before it was
    /// still a failure "before the first byte" and could be retried elsewhere.
    Stream {
        /// The first chunk.
        first: Bytes,
        /// The rest; each item arrives within the idle timeout or is an error.
        rest: BoxStream<'static, Result<Bytes, BackendError>>,
    },
}

/// One way of reaching one node.
pub trait Backend: Send + Sync + 'static {
    /// Sends a chat completion body (already rewritten for this node).
    fn chat(
        &self,
        body: Bytes,
        stream: bool,
    ) -> BoxFuture<'_, Result<UpstreamResponse, BackendError>>;
    /// The model ids the node serves right now.
    fn list_models(&self) -> BoxFuture<'_, Result<Vec<String>, BackendError>>;
}
