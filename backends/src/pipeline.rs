//! A model split across stage nodes, served as one node.
//!
//! The gateway holds the model's vocabulary (not its weights): it turns the
//! messages into token ids, sends them down the chain of stages, and turns
//! each picked token back into text. The chain is planned from what the
//! pool's stages say they serve ([`tollgate_placement::tiling`]); stages
//! with the same span as a chain link stand by as its spares, so a stage
//! that dies mid-stream is replaced and the stream goes on.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{HeaderValue, StatusCode};
use tokio::sync::mpsc;
use tollgate_engine::llama::{Event, GenRequest, Vocabulary};
use tollgate_engine::openai::TokenLogprob;
use tollgate_engine::text::TextDecoder;
use tollgate_engine::{Reply, RequestError};
use tollgate_placement::tiling::tile;
use tollgate_protocol::stage::{describe, ChainClient, Codec, Sampling, StageError};

use crate::embedded::{error_status, response_of};
use crate::{Backend, BackendError, BoxFuture, Timeouts, UpstreamResponse};

/// The chain requests run on now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chain {
    /// Stage addresses in chain order.
    pub stages: Vec<String>,
    /// The model blocks each stage runs, in chain order.
    pub blocks: Vec<u32>,
    /// For each link, the addresses that can replace it.
    pub spares: Vec<Vec<String>>,
    /// Most positions one session may hold (the smallest stage's).
    pub context: u32,
}

/// A backend that runs each request down a chain of stages.
pub struct PipelineBackend {
    model: String,
    vocab: Arc<Vocabulary>,
    sha256: String,
    pool: Vec<String>,
    codec: Codec,
    attention: String,
    timeouts: Timeouts,
    chain: Mutex<Option<Arc<Chain>>>,
    sessions: AtomicU64,
}

impl PipelineBackend {
    /// A pipeline serving `model` from the GGUF file at `path` (only its
    /// vocabulary is read here; the stages must serve the same file) over
    /// the stage addresses in `pool`, hidden states packed by `codec`, over
    /// stages whose attention runs in `attention` (`f32`, `f16`, `bf16`).
    pub fn load(
        model: impl Into<String>,
        path: &Path,
        pool: Vec<String>,
        codec: Codec,
        attention: String,
        timeouts: Timeouts,
    ) -> Result<Self, String> {
        let vocab = Vocabulary::load(path)?;
        let sha256 = tollgate_engine::file_sha256(path).map_err(|e| e.to_string())?;
        Ok(Self {
            model: model.into(),
            vocab: Arc::new(vocab),
            sha256,
            pool,
            codec,
            attention,
            timeouts,
            chain: Mutex::new(None),
            sessions: AtomicU64::new(now_nanos()),
        })
    }

    /// The chain last planned, if any.
    pub fn chain(&self) -> Option<Arc<Chain>> {
        self.chain.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Asks every stage of the pool what it serves and joins the spans of
    /// those serving this model into the shortest chain.
    pub async fn plan(&self) -> Result<Arc<Chain>, BackendError> {
        let asks = self.pool.iter().map(|addr| async move {
            let told = tokio::time::timeout(self.timeouts.connect, describe(addr)).await;
            (addr, told)
        });
        let mut offers = Vec::new();
        let mut layers = None;
        for (addr, told) in futures_util::future::join_all(asks).await {
            match told {
                Ok(Ok(info)) if info.model == self.sha256 && info.attention == self.attention => {
                    layers = Some(info.layers);
                    offers.push((addr.clone(), info));
                }
                // Spans computed in another number format would not add up
                // to the model's output: left out, like another model.
                Ok(Ok(info)) if info.model == self.sha256 => tracing::warn!(
                    stage = addr,
                    "stage attends in {}, not this pipeline's {}",
                    info.attention,
                    self.attention
                ),
                Ok(Ok(info)) => tracing::warn!(
                    stage = addr,
                    "stage serves model {}, not this pipeline's {}",
                    info.model,
                    self.sha256
                ),
                Ok(Err(e)) => tracing::debug!(stage = addr, "stage did not answer: {e}"),
                Err(_) => tracing::debug!(stage = addr, "stage did not answer in time"),
            }
        }
        let Some(layers) = layers else {
            return Err(BackendError::Connect(
                "no stage of the pipeline's pool serves its model".into(),
            ));
        };
        let spans: Vec<_> = offers.iter().map(|(_, i)| i.span.clone()).collect();
        let tiling =
            tile(&spans, layers).map_err(|e| BackendError::Connect(format!("pipeline: {e}")))?;
        let addr = |i: &usize| offers[*i].0.clone();
        let chain = Arc::new(Chain {
            stages: tiling.chain.iter().map(addr).collect(),
            blocks: tiling
                .chain
                .iter()
                .map(|&i| offers[i].1.span.len() as u32)
                .collect(),
            spares: tiling
                .spares
                .iter()
                .map(|s| s.iter().map(addr).collect())
                .collect(),
            context: tiling
                .chain
                .iter()
                .map(|&i| offers[i].1.context)
                .min()
                .unwrap_or(0),
        });
        *self.chain.lock().unwrap_or_else(|p| p.into_inner()) = Some(chain.clone());
        Ok(chain)
    }

    /// A session on `chain`, with its spares.
    async fn open(&self, chain: &Chain, session: u64) -> Result<ChainClient, BackendError> {
        let client = tokio::time::timeout(
            self.timeouts.connect,
            ChainClient::open(&chain.stages, self.codec, session),
        )
        .await
        .map_err(|_| BackendError::Timeout("connect"))?
        .map_err(|e| BackendError::Connect(e.to_string()))?;
        Ok(client.with_spares(chain.spares.clone()))
    }

    async fn run(&self, body: Bytes, stream: bool) -> Result<UpstreamResponse, BackendError> {
        let json: serde_json::Value = serde_json::from_slice(&body)
            .map_err(|e| error_status(StatusCode::BAD_REQUEST, e.to_string(), None))?;
        let request = GenRequest::from_openai(&json).map_err(bad_request)?;
        check_supported(&request).map_err(bad_request)?;
        let prompt = self.vocab.prompt(&request).map_err(bad_request)?;
        let chain = match self.chain() {
            Some(c) => c,
            None => self.plan().await?,
        };
        let session = self.sessions.fetch_add(1, Ordering::Relaxed);
        // A first stage that died since the last plan is found here; a new
        // plan leaves it out (later stages fail over inside the client).
        let (chain, mut client) = match self.open(&chain, session).await {
            Ok(client) => (chain, client),
            Err(e) => {
                tracing::debug!("pipeline: {e}; planning again");
                let chain = self.plan().await?;
                let client = self.open(&chain, session).await?;
                (chain, client)
            }
        };
        let context = chain.context as usize;
        if prompt.len() >= context {
            return Err(bad_request(RequestError::new(
                "messages",
                format!(
                    "this model's maximum context length is {context} tokens, but the messages use {}",
                    prompt.len()
                ),
            )));
        }
        let sampling = Sampling {
            temperature: request.sampling.temperature,
            top_p: request.sampling.top_p,
            seed: request.sampling.seed.unwrap_or_else(now_nanos),
            step: 0,
        };
        // The prompt's pass picks the first token; a chain that fails here
        // fails before the client has seen a byte, so another node may serve.
        let first = tokio::time::timeout(
            self.timeouts.first_byte,
            client.forward(prompt.clone(), sampling),
        )
        .await
        .map_err(|_| BackendError::Timeout("first byte"))?
        .map_err(stage_error)?;
        let room = context - prompt.len();
        let run = Run {
            vocab: self.vocab.clone(),
            decoder: TextDecoder::new(request.stops.clone()),
            max_new: request.max_tokens.unwrap_or(room).min(room),
            prompt_tokens: prompt.len() as u64,
            logprobs: request.logprobs,
            idle: self.timeouts.idle,
        };
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run.generate(client, first.next, first.logprob, sampling, tx));
        let include_usage = tollgate_engine::include_usage(&json);
        let reply = Reply::from_events(rx, &self.model, &request, stream, include_usage)
            .await
            .map_err(|e| BackendError::Body(e.to_string()))?;
        let mut response = response_of(reply).await?;
        if let Ok(stages) = HeaderValue::try_from(stages_header(&chain)) {
            response.headers.insert(STAGES_HEADER, stages);
        }
        Ok(response)
    }
}

/// Names the chain a pipeline's answer came from, for billing: each stage
/// as `address=blocks`, comma-separated, in chain order. Stages that take
/// over mid-request (failover) are not named: the chain that started the
/// request is paid for it.
pub const STAGES_HEADER: &str = "x-tollgate-stages";

fn stages_header(chain: &Chain) -> String {
    chain
        .stages
        .iter()
        .zip(&chain.blocks)
        .map(|(addr, blocks)| format!("{addr}={blocks}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// The stages and their blocks from a [`STAGES_HEADER`] value; `None` if
/// it is not one.
pub fn parse_stages(value: &str) -> Option<Vec<(String, u32)>> {
    value
        .split(',')
        .map(|part| {
            let (addr, blocks) = part.trim().rsplit_once('=')?;
            Some((addr.to_string(), blocks.parse().ok()?))
        })
        .collect()
}

/// One request's generation after the first pick.
struct Run {
    vocab: Arc<Vocabulary>,
    decoder: TextDecoder,
    max_new: usize,
    prompt_tokens: u64,
    logprobs: bool,
    idle: Duration,
}

impl Run {
    /// Emits each picked token as the llama.cpp runtime would, and asks the
    /// chain for the next, until a stop, the length limit, or the receiver
    /// hangs up (the client left).
    async fn generate(
        mut self,
        mut client: ChainClient,
        mut token: u32,
        mut logprob: f32,
        sampling: Sampling,
        events: mpsc::UnboundedSender<Event>,
    ) {
        let mut generated = 0usize;
        let reason = loop {
            if self.vocab.end_of_generation().contains(&token) {
                break "stop";
            }
            generated += 1;
            let piece = self.vocab.piece(token);
            let delta = self.decoder.push(&piece);
            let lp = self.logprobs.then(|| TokenLogprob {
                token: String::from_utf8_lossy(&piece).into_owned(),
                logprob,
                bytes: Some(piece),
                top_logprobs: Vec::new(),
            });
            let sent = events.send(Event::Token {
                choice: 0,
                text: delta.text,
                logprob: lp,
            });
            if sent.is_err() {
                return;
            }
            if delta.stopped {
                break "stop";
            }
            if generated >= self.max_new {
                break "length";
            }
            let step = Sampling {
                step: generated as u32,
                ..sampling
            };
            match tokio::time::timeout(self.idle, client.forward(vec![token], step)).await {
                Ok(Ok(picks)) => (token, logprob) = (picks.next, picks.logprob),
                Ok(Err(e)) => {
                    let _ = events.send(Event::Failed(format!("pipeline: {e}")));
                    return;
                }
                Err(_) => {
                    let _ = events.send(Event::Failed("pipeline: a stage went silent".into()));
                    return;
                }
            }
        };
        let rest = self.decoder.finish();
        if !rest.is_empty() {
            let _ = events.send(Event::Token {
                choice: 0,
                text: rest,
                logprob: None,
            });
        }
        let _ = events.send(Event::Finish {
            choice: 0,
            reason,
            prompt_tokens: self.prompt_tokens,
            completion_tokens: generated as u64,
        });
    }
}

impl Backend for PipelineBackend {
    fn chat(
        &self,
        body: Bytes,
        stream: bool,
    ) -> BoxFuture<'_, Result<UpstreamResponse, BackendError>> {
        Box::pin(self.run(body, stream))
    }

    fn list_models(&self) -> BoxFuture<'_, Result<Vec<String>, BackendError>> {
        // The health check re-plans: stages that died or came back change
        // the chain (and whether there is one).
        Box::pin(async move {
            self.plan().await?;
            Ok(vec![self.model.clone()])
        })
    }
}

/// What the stage protocol cannot carry: several choices, alternatives per
/// token, and penalties that need the whole completion at the last stage.
fn check_supported(r: &GenRequest) -> Result<(), RequestError> {
    if r.n != 1 {
        return Err(RequestError::new(
            "n",
            "pipeline models generate one choice per request",
        ));
    }
    if r.top_logprobs > 0 {
        return Err(RequestError::new(
            "top_logprobs",
            "pipeline models report the chosen token's log-prob only",
        ));
    }
    let s = &r.sampling;
    if s.frequency_penalty != 0.0 || s.presence_penalty != 0.0 {
        return Err(RequestError::new(
            "frequency_penalty",
            "pipeline models do not apply frequency or presence penalties",
        ));
    }
    if !s.logit_bias.is_empty() {
        return Err(RequestError::new(
            "logit_bias",
            "pipeline models do not apply logit_bias",
        ));
    }
    Ok(())
}

fn bad_request(e: RequestError) -> BackendError {
    error_status(StatusCode::BAD_REQUEST, e.to_string(), Some(e.param))
}

/// A chain failure before the first byte: retryable, like a dead node.
fn stage_error(e: StageError) -> BackendError {
    match e {
        StageError::Io(e) => BackendError::Connect(e.to_string()),
        other => BackendError::Protocol(other.to_string()),
    }
}

fn now_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stages_header_names_each_stage_and_its_blocks() {
        let chain = Chain {
            stages: vec!["10.0.0.1:9200".into(), "[::1]:9201".into()],
            blocks: vec![12, 18],
            spares: vec![vec![], vec![]],
            context: 8192,
        };
        let value = stages_header(&chain);
        assert_eq!(value, "10.0.0.1:9200=12,[::1]:9201=18");
        assert_eq!(
            parse_stages(&value),
            Some(vec![
                ("10.0.0.1:9200".into(), 12),
                ("[::1]:9201".into(), 18)
            ])
        );
        assert_eq!(parse_stages("a:1=x"), None);
        assert_eq!(parse_stages("a:1"), None);
    }
}
