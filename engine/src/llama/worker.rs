//! The llama.cpp batching loop: one thread owns the context and, at every
//! step, decodes one token for each generating sequence plus a slice of each
//! waiting prompt in a single `llama_decode` call. Concurrent requests share
//! every pass over the weights instead of queueing behind each other.

use std::collections::VecDeque;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, TryRecvError};
use std::sync::Arc;

use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::token::LlamaToken;
use tokio::sync::{mpsc, oneshot};

use super::params::GenRequest;
use crate::logits::{log_softmax, top_k, Replay, ScoreRun, Scores};
use crate::openai::{TokenLogprob, TopLogprob};
use crate::sampler::Sampler;
use crate::text::TextDecoder;
use crate::EngineError;

/// Sizes of the batching context.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Sequences decoded together (each holds its own KV cache).
    pub sequences: usize,
    /// Context length of one sequence: prompt plus completion.
    pub seq_ctx: usize,
    /// Tokens per `llama_decode` call.
    pub batch: usize,
    /// CPU threads.
    pub threads: i32,
    /// Which attention kernel llama.cpp runs.
    pub flash_attention: FlashAttention,
}

/// Whether llama.cpp fuses attention into one kernel (flash attention).
///
/// Both paths compute the same function, but round differently: the fused
/// kernel takes queries in f16 and normalises its softmax online. A GPU node
/// takes the fused path; the switch lets a CPU node take either, so audits
/// can be shown to pass honest nodes on a numeric path other than the
/// reference's.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FlashAttention {
    /// llama.cpp decides: fused wherever the device supports it (CPUs and
    /// CUDA GPUs do).
    #[default]
    Auto,
    /// Always fused.
    On,
    /// Never fused: attention as separate matrix products and a softmax.
    Off,
}

impl FlashAttention {
    /// llama.h's `llama_flash_attn_type` (the -sys crate is not a direct
    /// dependency, so its values are spelled out).
    fn policy(self) -> i32 {
        match self {
            Self::Auto => -1,
            Self::On => 1,
            Self::Off => 0,
        }
    }
}

impl std::str::FromStr for FlashAttention {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(Self::Auto),
            "on" => Ok(Self::On),
            "off" => Ok(Self::Off),
            other => Err(format!(
                "unknown flash attention '{other}' (auto, on or off)"
            )),
        }
    }
}

/// What a generating sequence reports.
#[derive(Debug)]
pub enum Event {
    /// Text (possibly empty while held back) and, if asked, the token's log-prob.
    Token {
        /// The choice.
        choice: u32,
        /// New text.
        text: String,
        /// The generated token's log-prob, when asked for.
        logprob: Option<TokenLogprob>,
    },
    /// The choice ended.
    Finish {
        /// The choice.
        choice: u32,
        /// "stop" or "length".
        reason: &'static str,
        /// Prompt tokens.
        prompt_tokens: u64,
        /// Tokens this choice generated.
        completion_tokens: u64,
    },
    /// The model failed; the request is over.
    Failed(String),
}

/// Work for the loop.
pub enum Job {
    /// Generate `request.n` choices after `prompt`.
    Generate {
        /// The chat prompt's tokens.
        prompt: Vec<u32>,
        /// The request.
        request: GenRequest,
        /// Where the events go; a closed receiver cancels the request.
        events: mpsc::UnboundedSender<Event>,
    },
    /// Teacher-forced pass over `tokens`.
    Score {
        /// The sequence.
        tokens: Vec<u32>,
        /// The index of the first token to judge (at least 1).
        from: usize,
        /// Alternatives per position.
        top_k: usize,
        /// The sampling to replay over the generated part, if any.
        replay: Option<Replay>,
        /// Where the scores go.
        reply: oneshot::Sender<Result<Scores, EngineError>>,
    },
}

impl Job {
    fn slots(&self) -> usize {
        match self {
            Job::Generate { request, .. } => request.n,
            Job::Score { .. } => 1,
        }
    }
}

enum Kind {
    Generate {
        choice: u32,
        // Boxed: a seeded RNG is large beside the scoring variant.
        sampler: Box<Sampler>,
        decoder: TextDecoder,
        max_new: usize,
        generated: usize,
        prompt_tokens: usize,
        top_logprobs: Option<usize>,
        events: mpsc::UnboundedSender<Event>,
    },
    Score {
        // Boxed: a replay's seeded RNG is large.
        run: Box<ScoreRun>,
        reply: Option<oneshot::Sender<Result<Scores, EngineError>>>,
    },
}

struct Seq {
    slot: i32,
    /// Tokens to feed: the prompt, then each sampled token.
    feed: Vec<u32>,
    /// How many of `feed` are in the KV cache.
    fed: usize,
    kind: Kind,
    done: bool,
}

impl Seq {
    fn cancelled(&self) -> bool {
        match &self.kind {
            Kind::Generate { events, .. } => events.is_closed(),
            Kind::Score { reply, .. } => reply.as_ref().is_none_or(|r| r.is_closed()),
        }
    }

    /// Whether position `i` of `feed` needs its logits.
    fn wants_logits(&self, i: usize) -> bool {
        match self.kind {
            Kind::Generate { .. } => i + 1 == self.feed.len(),
            Kind::Score { ref run, .. } => i + 1 < self.feed.len() && run.wants(i + 1),
        }
    }

    fn fail(&mut self, message: &str) {
        self.done = true;
        match &mut self.kind {
            Kind::Generate { events, .. } => {
                let _ = events.send(Event::Failed(message.to_string()));
            }
            Kind::Score { reply, .. } => {
                if let Some(r) = reply.take() {
                    let _ = r.send(Err(EngineError::Inference(message.to_string())));
                }
            }
        }
    }
}

/// Runs the loop until every job sender is gone. `ready` hears whether the
/// context could be created.
pub fn run(
    backend: Arc<LlamaBackend>,
    model: Arc<LlamaModel>,
    limits: Limits,
    jobs: Receiver<Job>,
    ready: oneshot::Sender<Result<(), String>>,
    busy: Arc<AtomicUsize>,
) {
    let params = LlamaContextParams::default()
        .with_n_ctx(NonZeroU32::new((limits.sequences * limits.seq_ctx) as u32))
        .with_n_batch(limits.batch as u32)
        .with_n_ubatch(limits.batch as u32)
        .with_n_seq_max(limits.sequences as u32)
        .with_n_threads(limits.threads)
        .with_n_threads_batch(limits.threads)
        .with_flash_attention_policy(limits.flash_attention.policy());
    let mut ctx = match model.new_context(&backend, params) {
        Ok(ctx) => ctx,
        Err(e) => {
            let _ = ready.send(Err(e.to_string()));
            return;
        }
    };
    let _ = ready.send(Ok(()));
    Loop {
        model: &model,
        limits,
        batch: LlamaBatch::new(limits.batch, 1),
        free: (0..limits.sequences as i32).rev().collect(),
        active: Vec::new(),
        waiting: VecDeque::new(),
        piece: Vec::new(),
        busy,
    }
    .run(&mut ctx, jobs);
}

struct Loop<'m> {
    model: &'m LlamaModel,
    limits: Limits,
    batch: LlamaBatch<'static>,
    free: Vec<i32>,
    active: Vec<Seq>,
    waiting: VecDeque<Job>,
    piece: Vec<u8>,
    /// Sequences running plus jobs waiting, for [`super::LlamaRuntime::busy`].
    busy: Arc<AtomicUsize>,
}

impl Loop<'_> {
    fn run(&mut self, ctx: &mut LlamaContext<'_>, jobs: Receiver<Job>) {
        loop {
            self.busy
                .store(self.active.len() + self.waiting.len(), Ordering::Relaxed);
            if self.active.is_empty() && self.waiting.is_empty() {
                match jobs.recv() {
                    Ok(job) => self.waiting.push_back(job),
                    Err(_) => return,
                }
            }
            loop {
                match jobs.try_recv() {
                    Ok(job) => self.waiting.push_back(job),
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected)
                        if self.active.is_empty() && self.waiting.is_empty() =>
                    {
                        return
                    }
                    Err(TryRecvError::Disconnected) => break,
                }
            }
            self.admit();
            for seq in &mut self.active {
                if seq.cancelled() {
                    seq.done = true;
                }
            }
            self.release(ctx);
            if self.active.is_empty() {
                continue;
            }
            self.step(ctx);
            self.release(ctx);
        }
    }

    /// Starts waiting jobs, oldest first, while slots are free.
    fn admit(&mut self) {
        while let Some(job) = self.waiting.front() {
            if job.slots() > self.free.len() {
                break;
            }
            let Some(job) = self.waiting.pop_front() else {
                break;
            };
            match job {
                Job::Generate {
                    prompt,
                    request,
                    events,
                } => {
                    let room = self.limits.seq_ctx.saturating_sub(prompt.len());
                    let max_new = request.max_tokens.unwrap_or(room).min(room);
                    for choice in 0..request.n {
                        let Some(slot) = self.free.pop() else { break };
                        self.active.push(Seq {
                            slot,
                            feed: prompt.clone(),
                            fed: 0,
                            kind: Kind::Generate {
                                choice: choice as u32,
                                sampler: Box::new(Sampler::new(
                                    request.sampling.clone(),
                                    choice as u64,
                                )),
                                decoder: TextDecoder::new(request.stops.clone()),
                                max_new,
                                generated: 0,
                                prompt_tokens: prompt.len(),
                                top_logprobs: request.logprobs.then_some(request.top_logprobs),
                                events: events.clone(),
                            },
                            done: false,
                        });
                    }
                }
                Job::Score {
                    tokens,
                    from,
                    top_k,
                    replay,
                    reply,
                } => {
                    if tokens.len() <= from {
                        let _ = reply.send(Ok(Scores {
                            positions: Vec::new(),
                        }));
                        continue;
                    }
                    let Some(slot) = self.free.pop() else { break };
                    self.active.push(Seq {
                        slot,
                        feed: tokens,
                        fed: 0,
                        kind: Kind::Score {
                            run: Box::new(ScoreRun::new(top_k, from, replay)),
                            reply: Some(reply),
                        },
                        done: false,
                    });
                }
            }
        }
    }

    /// Frees the slots of finished sequences.
    fn release(&mut self, ctx: &mut LlamaContext<'_>) {
        let free = &mut self.free;
        self.active.retain(|seq| {
            if seq.done {
                let _ = ctx.clear_kv_cache_seq(Some(seq.slot as u32), None, None);
                free.push(seq.slot);
            }
            !seq.done
        });
    }

    /// One `llama_decode`: a token for every generating sequence first (they
    /// are latency-bound), then prompt slices in the remaining room.
    fn step(&mut self, ctx: &mut LlamaContext<'_>) {
        self.batch.clear();
        let mut budget = self.limits.batch;
        // (sequence, batch row, position in feed) of every row with logits.
        let mut outputs: Vec<(usize, i32, usize)> = Vec::new();
        let decoding_first: Vec<usize> = {
            let mut order: Vec<usize> = (0..self.active.len()).collect();
            order.sort_by_key(|&i| self.active[i].feed.len() - self.active[i].fed > 1);
            order
        };
        for i in decoding_first {
            let seq = &mut self.active[i];
            let take = (seq.feed.len() - seq.fed).min(budget);
            let mut added = 0;
            for k in seq.fed..seq.fed + take {
                let logits = seq.wants_logits(k);
                // The budget keeps the batch within its capacity; should an
                // add fail anyway, only what was added counts as fed.
                if self
                    .batch
                    .add(
                        LlamaToken(seq.feed[k] as i32),
                        k as i32,
                        &[seq.slot],
                        logits,
                    )
                    .is_err()
                {
                    break;
                }
                if logits {
                    outputs.push((i, self.batch.n_tokens() - 1, k));
                }
                added += 1;
            }
            seq.fed += added;
            budget -= added;
            if budget == 0 || added < take {
                break;
            }
        }
        if let Err(e) = ctx.decode(&mut self.batch) {
            let message = format!("llama_decode failed: {e}");
            tracing::error!("{message}");
            for seq in &mut self.active {
                seq.fail(&message);
            }
            return;
        }
        for (i, row, pos) in outputs {
            let logits = ctx.get_logits_ith(row);
            self.on_logits(i, logits, pos);
        }
    }

    fn on_logits(&mut self, i: usize, logits: &[f32], pos: usize) {
        let vocab = self.model.vocab();
        let limit = self.limits.seq_ctx;
        let piece = &mut self.piece;
        let seq = &mut self.active[i];
        let feed_len = seq.feed.len();
        match &mut seq.kind {
            Kind::Score { run, reply } => {
                run.push(logits, pos + 1, seq.feed[pos + 1]);
                if run.complete(feed_len) {
                    if let Some(r) = reply.take() {
                        let done = std::mem::replace(run, Box::new(ScoreRun::new(0, 1, None)));
                        let _ = r.send(Ok(done.finish()));
                    }
                    seq.done = true;
                }
            }
            Kind::Generate {
                choice,
                sampler,
                decoder,
                max_new,
                generated,
                prompt_tokens,
                top_logprobs,
                events,
            } => {
                let token = sampler.sample(logits);
                let finish = |reason: &'static str, decoder: &mut TextDecoder, generated: usize| {
                    let rest = decoder.finish();
                    if !rest.is_empty() {
                        let _ = events.send(Event::Token {
                            choice: *choice,
                            text: rest,
                            logprob: None,
                        });
                    }
                    let _ = events.send(Event::Finish {
                        choice: *choice,
                        reason,
                        prompt_tokens: *prompt_tokens as u64,
                        completion_tokens: generated as u64,
                    });
                };
                if vocab.is_eog(LlamaToken(token as i32)) {
                    finish("stop", decoder, *generated);
                    seq.done = true;
                    return;
                }
                *generated += 1;
                piece.clear();
                vocab.token_to_piece_into(LlamaToken(token as i32), piece, false, None);
                let delta = decoder.push(piece);
                let logprob = top_logprobs.map(|k| {
                    token_logprob(&vocab, logits, token, &String::from_utf8_lossy(piece), k)
                });
                let _ = events.send(Event::Token {
                    choice: *choice,
                    text: delta.text,
                    logprob,
                });
                if delta.stopped {
                    finish("stop", decoder, *generated);
                    seq.done = true;
                } else if *generated >= *max_new || feed_len + 1 >= limit {
                    finish("length", decoder, *generated);
                    seq.done = true;
                } else {
                    seq.feed.push(token);
                }
            }
        }
    }
}

/// The chosen token's log-prob under the model's own distribution (before
/// temperature and penalties, as OpenAI reports them) and the `k` best
/// alternatives, with their texts.
fn token_logprob(
    vocab: &llama_cpp_2::vocab::LlamaVocab<'_>,
    logits: &[f32],
    token: u32,
    text: &str,
    k: usize,
) -> TokenLogprob {
    let lp = log_softmax(logits);
    let top_logprobs = top_k(&lp, k)
        .into_iter()
        .map(|(id, logprob)| {
            let bytes = vocab.token_to_piece(LlamaToken(id as i32), false, None);
            TopLogprob {
                token: String::from_utf8_lossy(&bytes).into_owned(),
                logprob,
                bytes: Some(bytes),
            }
        })
        .collect();
    TokenLogprob {
        token: text.to_string(),
        logprob: lp.get(token as usize).copied().unwrap_or(f32::NEG_INFINITY),
        bytes: Some(text.as_bytes().to_vec()),
        top_logprobs,
    }
}
