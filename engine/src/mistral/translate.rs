//! mistralrs's responses, translated into OpenAI's shapes.
//!
//! mistralrs's own types are close to OpenAI's but not equal (stream log-probs
//! are not wrapped in `content`, every delta repeats the role, usage carries
//! timing fields, ids are sequence numbers).

use futures_util::Stream;
use mistralrs::{ChatCompletionResponse, Response};
use tokio::sync::mpsc;

use super::logprobs::Recorder;
use crate::openai::{
    ChatCompletion, ChatCompletionChunk, Choice, ChoiceLogprobs, ChunkChoice, ChunkHeader, Delta,
    Message, TokenLogprob, TopLogprob, Usage,
};
use crate::EngineError;

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

/// Translates mistralrs's finished response.
pub fn completion(
    done: ChatCompletionResponse,
    model: &str,
    logprobs: Option<&LogprobSource>,
) -> ChatCompletion {
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
    let usage = Usage {
        prompt_tokens: u.prompt_tokens as u64,
        completion_tokens: u.completion_tokens as u64,
        total_tokens: u.total_tokens as u64,
    };
    ChatCompletion::new(model, choices, usage)
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
        header: ChunkHeader::new(model, include_usage),
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
                let chunk = s.header.role_chunk(s.n_choices);
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
    header: ChunkHeader,
    started: bool,
    finished: usize,
    n_choices: usize,
    done: bool,
}

impl StreamState {
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
                finishing.push((ch.index as u32, reason));
            }
        }
        for choice in content {
            let chunk = self.header.chunk(vec![choice], None);
            self.pending.push_back(Ok(chunk));
        }
        for (index, reason) in finishing {
            self.finished += 1;
            let chunk = self.header.finish_chunk(index, reason);
            self.pending.push_back(Ok(chunk));
        }
        if let Some(u) = c.usage {
            if self.header.include_usage {
                let usage = Usage {
                    prompt_tokens: u.prompt_tokens as u64,
                    completion_tokens: u.completion_tokens as u64,
                    total_tokens: u.total_tokens as u64,
                };
                let chunk = self.header.chunk(Vec::new(), Some(usage));
                self.pending.push_back(Ok(chunk));
            }
        }
        if self.finished >= self.n_choices {
            self.done = true;
        }
    }
}
