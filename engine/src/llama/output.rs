//! The worker's per-choice events, assembled into OpenAI's response shapes.

use futures_util::Stream;
use tokio::sync::mpsc::UnboundedReceiver;

use super::worker::Event;
use crate::openai::{
    ChatCompletion, ChatCompletionChunk, Choice, ChoiceLogprobs, ChunkChoice, ChunkHeader, Delta,
    Message, TokenLogprob, Usage,
};
use crate::EngineError;

/// Waits for every choice to finish and builds the whole completion.
pub async fn collect(
    mut events: UnboundedReceiver<Event>,
    model: &str,
    n: usize,
    logprobs: bool,
) -> Result<ChatCompletion, EngineError> {
    let mut texts = vec![String::new(); n];
    let mut lps: Vec<Vec<TokenLogprob>> = vec![Vec::new(); n];
    let mut reasons: Vec<Option<&'static str>> = vec![None; n];
    let mut usage = Usage {
        prompt_tokens: 0,
        completion_tokens: 0,
        total_tokens: 0,
    };
    let mut finished = 0;
    while finished < n {
        match events.recv().await.ok_or(EngineError::Closed)? {
            Event::Token {
                choice,
                text,
                logprob,
            } => {
                let c = choice as usize;
                texts[c].push_str(&text);
                lps[c].extend(logprob);
            }
            Event::Finish {
                choice,
                reason,
                prompt_tokens,
                completion_tokens,
            } => {
                reasons[choice as usize] = Some(reason);
                usage.prompt_tokens = prompt_tokens;
                usage.completion_tokens += completion_tokens;
                finished += 1;
            }
            Event::Failed(message) => return Err(EngineError::Inference(message)),
        }
    }
    usage.total_tokens = usage.prompt_tokens + usage.completion_tokens;
    let choices = texts
        .into_iter()
        .zip(lps)
        .zip(reasons)
        .enumerate()
        .map(|(i, ((text, lp), reason))| Choice {
            index: i as u32,
            message: Message {
                role: "assistant".into(),
                content: Some(text),
                refusal: None,
                tool_calls: None,
            },
            logprobs: logprobs.then_some(ChoiceLogprobs {
                content: Some(lp),
                refusal: None,
            }),
            finish_reason: reason.map(str::to_string),
        })
        .collect();
    Ok(ChatCompletion::new(model, choices, usage))
}

struct Chunks {
    events: UnboundedReceiver<Event>,
    header: ChunkHeader,
    n: usize,
    started: bool,
    finished: usize,
    usage: Usage,
    over: bool,
}

impl Chunks {
    async fn next(&mut self) -> Option<Result<ChatCompletionChunk, EngineError>> {
        if self.over {
            return None;
        }
        if !self.started {
            self.started = true;
            return Some(Ok(self.header.role_chunk(self.n)));
        }
        loop {
            if self.finished == self.n {
                self.over = true;
                let usage = Usage {
                    total_tokens: self.usage.prompt_tokens + self.usage.completion_tokens,
                    ..self.usage
                };
                return self
                    .header
                    .include_usage
                    .then(|| Ok(self.header.chunk(Vec::new(), Some(usage))));
            }
            let Some(event) = self.events.recv().await else {
                self.over = true;
                return Some(Err(EngineError::Closed));
            };
            match event {
                Event::Token {
                    choice,
                    text,
                    logprob,
                } => {
                    if text.is_empty() && logprob.is_none() {
                        continue;
                    }
                    let choice = ChunkChoice {
                        index: choice,
                        delta: Delta {
                            role: None,
                            content: Some(text),
                            tool_calls: None,
                        },
                        logprobs: logprob.map(|l| ChoiceLogprobs {
                            content: Some(vec![l]),
                            refusal: None,
                        }),
                        finish_reason: None,
                    };
                    return Some(Ok(self.header.chunk(vec![choice], None)));
                }
                Event::Finish {
                    choice,
                    reason,
                    prompt_tokens,
                    completion_tokens,
                } => {
                    self.finished += 1;
                    self.usage.prompt_tokens = prompt_tokens;
                    self.usage.completion_tokens += completion_tokens;
                    return Some(Ok(self.header.finish_chunk(choice, reason.to_string())));
                }
                Event::Failed(message) => {
                    self.over = true;
                    return Some(Err(EngineError::Inference(message)));
                }
            }
        }
    }
}

/// The completion as OpenAI's chunk sequence: role, content, one finish per
/// choice, then usage (when asked). Dropping the stream cancels generation.
pub fn chunks(
    events: UnboundedReceiver<Event>,
    model: String,
    n: usize,
    include_usage: bool,
) -> impl Stream<Item = Result<ChatCompletionChunk, EngineError>> + Send + 'static {
    let state = Chunks {
        events,
        header: ChunkHeader::new(model, include_usage),
        n,
        started: false,
        finished: 0,
        usage: Usage {
            prompt_tokens: 0,
            completion_tokens: 0,
            total_tokens: 0,
        },
        over: false,
    };
    futures_util::stream::unfold(state, |mut s| async move {
        s.next().await.map(|item| (item, s))
    })
}
