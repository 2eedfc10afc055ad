//! A chat completion as the HTTP bytes OpenAI would send: one JSON body, or
//! SSE events ending in `data: [DONE]`. Shared by the gateway's embedded
//! backend and the provider node, so both serve the same wire format.

use bytes::Bytes;
use futures_util::stream::BoxStream;
use futures_util::{StreamExt, TryStreamExt};
use serde_json::Value;

use tokio::sync::mpsc::UnboundedReceiver;

use crate::llama::{self, GenRequest};
use crate::openai::{ChatCompletion, ChatCompletionChunk, Usage};
use crate::{Engine, EngineError};

/// The answer to one chat completion request.
pub enum Reply {
    /// A whole `chat.completion` body, and its token counts.
    Whole {
        /// The JSON body.
        body: Bytes,
        /// Token counts.
        usage: Usage,
    },
    /// SSE events (`data: {...}\n\n`), the last being `data: [DONE]\n\n`.
    Events(BoxStream<'static, Result<Event, EngineError>>),
}

/// One SSE event of a streamed reply.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    /// The event's bytes, blank-line terminator included.
    pub bytes: Bytes,
    /// Set on the usage chunk (always produced; `visible` says if the client asked).
    pub usage: Option<Usage>,
    /// False for the usage chunk when the client did not ask for it.
    pub visible: bool,
}

/// The terminating event.
pub const DONE: &[u8] = b"data: [DONE]\n\n";

impl Engine {
    /// Runs `body` and answers in OpenAI's wire format. Usage is always
    /// computed (callers meter and sign with it); the usage chunk is marked
    /// invisible unless the client asked for it.
    pub async fn reply(&self, body: &Value) -> Result<Reply, EngineError> {
        let stream = body.get("stream").and_then(Value::as_bool).unwrap_or(false);
        if !stream {
            return Reply::whole(&self.complete(body).await?);
        }
        let chunks = self.stream(body, true).await?;
        Ok(Reply::Events(sse_events(chunks, include_usage(body))))
    }
}

impl Reply {
    /// The reply to a request whose choices' tokens arrive as `events` (the
    /// llama.cpp runtime's, or a pipeline caller's that produces the same).
    pub async fn from_events(
        events: UnboundedReceiver<llama::Event>,
        model: &str,
        request: &GenRequest,
        stream: bool,
        include_usage: bool,
    ) -> Result<Reply, EngineError> {
        if !stream {
            let completion =
                llama::output::collect(events, model, request.n, request.logprobs).await?;
            return Reply::whole(&completion);
        }
        let chunks = llama::output::chunks(events, model.to_string(), request.n, true);
        Ok(Reply::Events(sse_events(chunks, include_usage)))
    }
}

impl Reply {
    /// A whole completion as its JSON body.
    fn whole(completion: &ChatCompletion) -> Result<Reply, EngineError> {
        let bytes =
            serde_json::to_vec(completion).map_err(|e| EngineError::Inference(e.to_string()))?;
        Ok(Reply::Whole {
            body: Bytes::from(bytes),
            usage: completion.usage,
        })
    }
}

/// Whether a streaming request asked for the usage chunk
/// (`stream_options.include_usage`).
pub fn include_usage(body: &Value) -> bool {
    body.get("stream_options")
        .and_then(|o| o.get("include_usage"))
        .and_then(Value::as_bool)
        .unwrap_or(false)
}

/// Chunks as SSE events, usage chunk hidden unless asked for, `[DONE]` last.
fn sse_events(
    chunks: impl futures_util::Stream<Item = Result<ChatCompletionChunk, EngineError>> + Send + 'static,
    wants_usage: bool,
) -> BoxStream<'static, Result<Event, EngineError>> {
    chunks
        .map_ok(move |mut chunk| {
            let usage = chunk.usage.flatten();
            if !wants_usage {
                chunk.usage = None;
            }
            Event {
                bytes: sse(&chunk),
                usage,
                visible: usage.is_none() || wants_usage,
            }
        })
        .chain(futures_util::stream::once(async {
            Ok(Event {
                bytes: Bytes::from_static(DONE),
                usage: None,
                visible: true,
            })
        }))
        .boxed()
}

fn sse<T: serde::Serialize>(value: &T) -> Bytes {
    let mut out = b"data: ".to_vec();
    // Plain data structures always serialise.
    out.extend(serde_json::to_vec(value).unwrap_or_default());
    out.extend_from_slice(b"\n\n");
    Bytes::from(out)
}
