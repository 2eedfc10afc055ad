//! OpenAI's chat-completion response shapes: what every runtime answers with.

use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Token counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Prompt tokens.
    pub prompt_tokens: u64,
    /// Generated tokens.
    pub completion_tokens: u64,
    /// Their sum.
    pub total_tokens: u64,
}

/// One alternative at a position.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TopLogprob {
    /// The token's text.
    pub token: String,
    /// Its log-probability.
    pub logprob: f32,
    /// Its UTF-8 bytes.
    pub bytes: Option<Vec<u8>>,
}

/// The chosen token at a position, with alternatives.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TokenLogprob {
    /// The token's text.
    pub token: String,
    /// Its log-probability.
    pub logprob: f32,
    /// Its UTF-8 bytes.
    pub bytes: Option<Vec<u8>>,
    /// The most likely tokens at this position.
    pub top_logprobs: Vec<TopLogprob>,
}

/// A choice's log-probs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChoiceLogprobs {
    /// One entry per generated token.
    pub content: Option<Vec<TokenLogprob>>,
    /// Always null: refusals are not modelled.
    pub refusal: Option<Vec<TokenLogprob>>,
}

/// The assistant's message.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Message {
    /// Always "assistant".
    pub role: String,
    /// The text.
    pub content: Option<String>,
    /// Always null.
    pub refusal: Option<String>,
    /// Tool calls, when the model made any.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub tool_calls: Option<Vec<Value>>,
}

/// One choice of a whole completion.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Choice {
    /// Its index.
    pub index: u32,
    /// The message.
    pub message: Message,
    /// Per-token log-probs, when asked for.
    pub logprobs: Option<ChoiceLogprobs>,
    /// Why generation stopped: "stop", "length" or "tool_calls".
    pub finish_reason: Option<String>,
}

/// A whole chat completion, as OpenAI returns it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChatCompletion {
    /// "chatcmpl-…".
    pub id: String,
    /// "chat.completion".
    pub object: String,
    /// Unix seconds.
    pub created: u64,
    /// The model id clients named.
    pub model: String,
    /// Identifies the serving build.
    pub system_fingerprint: Option<String>,
    /// The choices.
    pub choices: Vec<Choice>,
    /// Token counts.
    pub usage: Usage,
}

/// What a streamed choice adds.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Delta {
    /// "assistant", on the first chunk only.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub role: Option<String>,
    /// New text.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub content: Option<String>,
    /// New tool-call fragments.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub tool_calls: Option<Vec<Value>>,
}

/// One streamed choice.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChunkChoice {
    /// Its index.
    pub index: u32,
    /// What it adds.
    pub delta: Delta,
    /// Log-probs of the tokens in this chunk.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub logprobs: Option<ChoiceLogprobs>,
    /// Set on the choice's last chunk.
    pub finish_reason: Option<String>,
}

/// One streamed chunk, as OpenAI sends it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChatCompletionChunk {
    /// Same for every chunk of a stream.
    pub id: String,
    /// "chat.completion.chunk".
    pub object: String,
    /// Unix seconds.
    pub created: u64,
    /// The model id.
    pub model: String,
    /// Identifies the serving build.
    pub system_fingerprint: Option<String>,
    /// Choices in this chunk (empty in the usage chunk).
    pub choices: Vec<ChunkChoice>,
    /// Absent unless usage was asked for; then null except in the last chunk.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub usage: Option<Option<Usage>>,
}

/// The fingerprint this build reports.
pub const FINGERPRINT: &str = concat!("fp_tollgate_", env!("CARGO_PKG_VERSION"));

/// A fresh completion id.
pub fn completion_id() -> String {
    format!("chatcmpl-{}", uuid::Uuid::new_v4().simple())
}

/// Unix seconds now.
pub(crate) fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl ChatCompletion {
    /// A whole completion with a fresh id, stamped now.
    pub fn new(model: &str, choices: Vec<Choice>, usage: Usage) -> Self {
        Self {
            id: completion_id(),
            object: "chat.completion".into(),
            created: now_s(),
            model: model.to_string(),
            system_fingerprint: Some(FINGERPRINT.into()),
            choices,
            usage,
        }
    }
}

/// What every chunk of one stream shares, and the chunks both runtimes build
/// the same way.
#[derive(Clone, Debug)]
pub struct ChunkHeader {
    /// Same for every chunk of the stream.
    pub id: String,
    /// Unix seconds at the start.
    pub created: u64,
    /// The model id.
    pub model: String,
    /// Whether the client asked for the usage chunk.
    pub include_usage: bool,
}

impl ChunkHeader {
    /// The header of a new stream.
    pub fn new(model: String, include_usage: bool) -> Self {
        Self {
            id: completion_id(),
            created: now_s(),
            model,
            include_usage,
        }
    }

    /// A chunk of this stream; `usage` is sent only if the client asked.
    pub fn chunk(&self, choices: Vec<ChunkChoice>, usage: Option<Usage>) -> ChatCompletionChunk {
        ChatCompletionChunk {
            id: self.id.clone(),
            object: "chat.completion.chunk".into(),
            created: self.created,
            model: self.model.clone(),
            system_fingerprint: Some(FINGERPRINT.into()),
            choices,
            usage: self.include_usage.then_some(usage),
        }
    }

    /// The first chunk: every choice opens with the assistant role.
    pub fn role_chunk(&self, n: usize) -> ChatCompletionChunk {
        let choices = (0..n as u32)
            .map(|index| ChunkChoice {
                index,
                delta: Delta {
                    role: Some("assistant".into()),
                    content: Some(String::new()),
                    tool_calls: None,
                },
                logprobs: None,
                finish_reason: None,
            })
            .collect();
        self.chunk(choices, None)
    }

    /// The chunk that ends choice `index`: OpenAI sends an empty delta
    /// carrying the reason.
    pub fn finish_chunk(&self, index: u32, reason: String) -> ChatCompletionChunk {
        let choice = ChunkChoice {
            index,
            delta: Delta::default(),
            logprobs: None,
            finish_reason: Some(reason),
        };
        self.chunk(vec![choice], None)
    }
}
