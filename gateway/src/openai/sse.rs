//! Server-sent events as OpenAI streams them: splitting a byte stream into
//! events and reading just enough of each to meter it.
//!
//! Chunks are forwarded byte for byte; the gateway parses JSON only for the
//! rare events that carry usage or an error, so a stream costs little more
//! than a copy.

use bytes::{Bytes, BytesMut};
use serde::Deserialize;
pub use tollgate_backends::sse::EventSplitter;

use super::ApiError;

/// Token counts as a node reports them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct Usage {
    /// Prompt tokens.
    #[serde(default)]
    pub prompt_tokens: u64,
    /// Completion tokens.
    #[serde(default)]
    pub completion_tokens: u64,
}

fn memfind(hay: &[u8], needle: &[u8]) -> Option<usize> {
    memchr::memmem::find(hay, needle)
}

/// What one event means for metering.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// `data: [DONE]`.
    Done,
    /// The usage chunk (no choices), sent last when `include_usage` is on.
    UsageOnly(Usage),
    /// An ordinary chunk; `tokens` is 1 when it carries generated text.
    Chunk {
        /// Usage, if a node attached it to a content chunk.
        usage: Option<Usage>,
        /// Whether it carries generated text or tool-call arguments.
        has_output: bool,
    },
    /// An error object sent by the node mid-stream.
    Error,
    /// A Tollgate node's signed attestation (an SSE comment): evidence for
    /// an audit, never passed on to the client.
    Attestation,
    /// Comments, keep-alives and anything else.
    Other,
}

/// The event's data parsed as JSON (for the few events read whole: audited answers).
pub fn data_json(event: &[u8]) -> Option<serde_json::Value> {
    serde_json::from_slice(data_field(event)?).ok()
}

/// Reads an event just far enough to meter it.
pub fn classify(event: &[u8]) -> Event {
    if event.starts_with(tollgate_protocol::ATTESTATION_COMMENT) {
        return Event::Attestation;
    }
    let Some(data) = data_field(event) else {
        return Event::Other;
    };
    if data.starts_with(b"[DONE]") {
        return Event::Done;
    }
    let mentions_usage =
        memfind(data, b"\"usage\":{").is_some() || memfind(data, b"\"usage\": {").is_some();
    let mentions_error = memfind(data, b"\"error\"").is_some();
    if mentions_usage || mentions_error {
        #[derive(Deserialize)]
        struct Probe {
            #[serde(default)]
            choices: Option<Vec<serde_json::Value>>,
            #[serde(default)]
            usage: Option<Usage>,
            #[serde(default)]
            error: Option<serde_json::Value>,
        }
        if let Ok(p) = serde_json::from_slice::<Probe>(data) {
            if p.error.is_some() && p.choices.is_none() {
                return Event::Error;
            }
            match (p.usage, p.choices.as_deref()) {
                (Some(u), None | Some([])) => return Event::UsageOnly(u),
                (usage, _) => {
                    return Event::Chunk {
                        usage,
                        has_output: has_output(data),
                    }
                }
            }
        }
    }
    Event::Chunk {
        usage: None,
        has_output: has_output(data),
    }
}

fn data_field(event: &[u8]) -> Option<&[u8]> {
    let start = memfind(event, b"data:")?;
    let rest = &event[start + 5..];
    let rest = rest.strip_prefix(b" ").unwrap_or(rest);
    Some(rest)
}

fn has_output(data: &[u8]) -> bool {
    non_empty_string_field(data, b"\"content\":\"")
        || non_empty_string_field(data, b"\"arguments\":\"")
}

fn non_empty_string_field(data: &[u8], key: &[u8]) -> bool {
    match memfind(data, key) {
        Some(i) => data.get(i + key.len()).is_some_and(|c| *c != b'"'),
        None => false,
    }
}

/// Appends a chunk to `out` without its `"usage":null`: the gateway asked
/// the node for usage, the client did not, and OpenAI sends no usage key then.
pub fn push_without_null_usage(out: &mut BytesMut, event: &[u8]) {
    const NEEDLE: &[u8] = b",\"usage\":null";
    match memfind(event, NEEDLE) {
        None => out.extend_from_slice(event),
        Some(i) => {
            out.extend_from_slice(&event[..i]);
            out.extend_from_slice(&event[i + NEEDLE.len()..]);
        }
    }
}

/// An error as an SSE event, which the OpenAI SDKs raise as an APIError.
pub fn error_event(err: &ApiError) -> Bytes {
    Bytes::from(format!("data: {}\n\n", err.body()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_openai_chunks() {
        let role = b"data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}],\"usage\":null}\n\n";
        assert_eq!(
            classify(role),
            Event::Chunk {
                usage: None,
                has_output: false
            }
        );
        let text = b"data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"}}]}\n\n";
        assert_eq!(
            classify(text),
            Event::Chunk {
                usage: None,
                has_output: true
            }
        );
        let tool = b"data: {\"choices\":[{\"delta\":{\"tool_calls\":[{\"function\":{\"arguments\":\"{\\\"a\"}}]}}]}\n\n";
        assert_eq!(
            classify(tool),
            Event::Chunk {
                usage: None,
                has_output: true
            }
        );
        let usage = b"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":7,\"total_tokens\":12}}\n\n";
        assert_eq!(
            classify(usage),
            Event::UsageOnly(Usage {
                prompt_tokens: 5,
                completion_tokens: 7
            })
        );
        let err = b"data: {\"error\":{\"message\":\"boom\"}}\n\n";
        assert_eq!(classify(err), Event::Error);
        assert_eq!(classify(b"data: [DONE]\n\n"), Event::Done);
        assert_eq!(classify(b": ping\n\n"), Event::Other);
        assert_eq!(
            classify(b": tollgate-attestation {\"signature\":\"0x\"}\n\n"),
            Event::Attestation
        );
    }

    #[test]
    fn strips_only_null_usage() {
        let mut out = BytesMut::new();
        push_without_null_usage(&mut out, b"data: {\"choices\":[],\"usage\":null}\n\n");
        assert_eq!(&out[..], b"data: {\"choices\":[]}\n\n");
        let kept = b"data: {\"usage\":{\"prompt_tokens\":1}}\n\n";
        let mut out = BytesMut::new();
        push_without_null_usage(&mut out, kept);
        assert_eq!(&out[..], kept);
    }

    #[test]
    fn error_events_are_openai_error_objects() {
        let e = error_event(&ApiError::internal("x"));
        assert!(e.starts_with(b"data: {\"error\":"));
        assert!(e.ends_with(b"\n\n"));
    }
}
