//! OpenAI's chat-completion response shapes, and the translation from
//! mistralrs's responses into them.
//!
//! mistralrs's own types are close to OpenAI's but not equal (stream log-probs
//! are not wrapped in `content`, every delta repeats the role, usage carries
//! timing fields, ids are sequence numbers), so the engine answers with these.

use std::time::{SystemTime, UNIX_EPOCH};

use futures_util::Stream;
use mistralrs::{ChatCompletionResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::mpsc;

use crate::logprobs::Recorder;
use crate::EngineError;

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

fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// mistralrs 0.8 reports base-10 log-probabilities; OpenAI's are natural logs.
/// Used only when the recorder has no entry for a step.
const LOG10_TO_LN: f32 = std::f32::consts::LN_10;

/// Where exact log-probs come from, and how many alternatives the client wants.
#[derive(Clone)]
pub struct LogprobSource {
    /// The request's recorder.
    pub recorder: std::sync::Arc<Recorder>,
    /// The client's `top_logprobs`.
    pub top: usize,
}

fn logprob_entry(
    lp: &mistralrs::core::ResponseLogprob,
    step: usize,
    src: &LogprobSource,
) -> TokenLogprob {
    // mistralrs names its top tokens by id and text; the chosen one is the
    // entry whose text is the emitted token.
    let text_of = |id: u32| {
        lp.top_logprobs
            .iter()
            .find(|t| t.token == id)
            .and_then(|t| t.bytes.clone())
    };
    let hint = lp
        .top_logprobs
        .iter()
        .find(|t| t.bytes.as_deref() == Some(lp.token.as_str()))
        .map(|t| t.token);
    let bytes = Some(lp.token.as_bytes().to_vec());
    match src.recorder.entry(step, hint) {
        Some(entry) => TokenLogprob {
            token: lp.token.clone(),
            logprob: entry.logprob,
            bytes,
            top_logprobs: entry
                .top
                .into_iter()
                .filter_map(|(id, v)| {
                    text_of(id).map(|t| TopLogprob {
                        bytes: Some(t.as_bytes().to_vec()),
                        token: t,
                        logprob: v,
                    })
                })
                .take(src.top)
                .collect(),
        },
        None => TokenLogprob {
            token: lp.token.clone(),
            logprob: lp.logprob * LOG10_TO_LN,
            bytes,
            top_logprobs: Vec::new(),
        },
    }
}

impl ChatCompletion {
    /// Translates mistralrs's finished response.
    pub fn from_mistralrs(
        done: ChatCompletionResponse,
        model: &str,
        logprobs: Option<&LogprobSource>,
    ) -> Self {
        let choices = done
            .choices
            .into_iter()
            .map(|c| Choice {
                index: c.index as u32,
                message: Message {
                    role: "assistant".into(),
                    content: c.message.content,
                    refusal: None,
                    tool_calls: c.message.tool_calls.map(|calls| {
                        calls
                            .iter()
                            .filter_map(|t| serde_json::to_value(t).ok())
                            .collect()
                    }),
                },
                logprobs: match (c.logprobs, logprobs) {
                    (Some(l), Some(src)) => Some(ChoiceLogprobs {
                        content: l.content.map(|v| {
                            v.iter()
                                .enumerate()
                                .map(|(i, lp)| logprob_entry(lp, i, src))
                                .collect()
                        }),
                        refusal: None,
                    }),
                    _ => None,
                },
                finish_reason: Some(c.finish_reason),
            })
            .collect();
        let u = done.usage;
        Self {
            id: completion_id(),
            object: "chat.completion".into(),
            created: now_s(),
            model: model.to_string(),
            system_fingerprint: Some(FINGERPRINT.into()),
            choices,
            usage: Usage {
                prompt_tokens: u.prompt_tokens as u64,
                completion_tokens: u.completion_tokens as u64,
                total_tokens: u.total_tokens as u64,
            },
        }
    }
}

/// Turns mistralrs's streamed responses into OpenAI's chunk sequence.
pub fn chunk_stream(
    rx: mpsc::Receiver<Response>,
    model: String,
    n_choices: usize,
    include_usage: bool,
    logprobs: Option<LogprobSource>,
) -> impl Stream<Item = Result<ChatCompletionChunk, EngineError>> + Send + 'static {
    let state = StreamState {
        logprobs,
        step: 0,
        rx,
        pending: std::collections::VecDeque::new(),
        id: completion_id(),
        created: now_s(),
        model,
        include_usage,
        started: false,
        finished: 0,
        n_choices,
        done: false,
    };
    futures_util::stream::unfold(state, |mut s| async move {
        loop {
            if let Some(item) = s.pending.pop_front() {
                return Some((item, s));
            }
            if s.done {
                return None;
            }
            if !s.started {
                s.started = true;
                let role = (0..s.n_choices)
                    .map(|i| ChunkChoice {
                        index: i as u32,
                        delta: Delta {
                            role: Some("assistant".into()),
                            content: Some(String::new()),
                            tool_calls: None,
                        },
                        logprobs: None,
                        finish_reason: None,
                    })
                    .collect();
                let chunk = s.chunk(role, None);
                s.pending.push_back(Ok(chunk));
                continue;
            }
            match s.rx.recv().await {
                Some(Response::Chunk(c)) => s.absorb(c),
                Some(Response::Done(_)) | None => s.done = true,
                Some(Response::ModelError(msg, _)) => {
                    s.pending.push_back(Err(EngineError::Inference(msg)));
                    s.done = true;
                }
                Some(Response::InternalError(e)) | Some(Response::ValidationError(e)) => {
                    s.pending
                        .push_back(Err(EngineError::Inference(e.to_string())));
                    s.done = true;
                }
                Some(_) => {
                    s.pending.push_back(Err(EngineError::Inference(
                        "unexpected response kind".into(),
                    )));
                    s.done = true;
                }
            }
        }
    })
}

struct StreamState {
    logprobs: Option<LogprobSource>,
    step: usize,
    rx: mpsc::Receiver<Response>,
    pending: std::collections::VecDeque<Result<ChatCompletionChunk, EngineError>>,
    id: String,
    created: u64,
    model: String,
    include_usage: bool,
    started: bool,
    finished: usize,
    n_choices: usize,
    done: bool,
}

impl StreamState {
    fn chunk(&self, choices: Vec<ChunkChoice>, usage: Option<Usage>) -> ChatCompletionChunk {
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

    fn absorb(&mut self, c: mistralrs::ChatCompletionChunkResponse) {
        let mut content = Vec::new();
        let mut finishing = Vec::new();
        for ch in c.choices {
            let text = ch.delta.content.filter(|t| !t.is_empty());
            let tool_calls = ch.delta.tool_calls.map(|calls| {
                calls
                    .iter()
                    .filter_map(|t| serde_json::to_value(t).ok())
                    .collect::<Vec<_>>()
            });
            let logprobs = match (&ch.logprobs, &self.logprobs) {
                (Some(lp), Some(src)) => {
                    let entry = logprob_entry(lp, self.step, src);
                    self.step += 1;
                    Some(ChoiceLogprobs {
                        content: Some(vec![entry]),
                        refusal: None,
                    })
                }
                _ => None,
            };
            if text.is_some() || tool_calls.is_some() || logprobs.is_some() {
                content.push(ChunkChoice {
                    index: ch.index as u32,
                    delta: Delta {
                        role: None,
                        content: text,
                        tool_calls,
                    },
                    logprobs,
                    finish_reason: None,
                });
            }
            if let Some(reason) = ch.finish_reason {
                // OpenAI ends each choice with an empty delta carrying the reason.
                finishing.push(ChunkChoice {
                    index: ch.index as u32,
                    delta: Delta::default(),
                    logprobs: None,
                    finish_reason: Some(reason),
                });
            }
        }
        for choice in content {
            let chunk = self.chunk(vec![choice], None);
            self.pending.push_back(Ok(chunk));
        }
        for choice in finishing {
            self.finished += 1;
            let chunk = self.chunk(vec![choice], None);
            self.pending.push_back(Ok(chunk));
        }
        if let Some(u) = c.usage {
            if self.include_usage {
                let usage = Usage {
                    prompt_tokens: u.prompt_tokens as u64,
                    completion_tokens: u.completion_tokens as u64,
                    total_tokens: u.total_tokens as u64,
                };
                let chunk = self.chunk(Vec::new(), Some(usage));
                self.pending.push_back(Ok(chunk));
            }
        }
        if self.finished >= self.n_choices {
            self.done = true;
        }
    }
}
