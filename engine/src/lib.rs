//! Tollgate's inference engine: mistralrs over a local GGUF file.
//!
//! [`Engine`] speaks OpenAI's chat-completion format on both sides: it takes a
//! request body as JSON and answers with [`openai::ChatCompletion`] or a stream
//! of [`openai::ChatCompletionChunk`]s, so the gateway's embedded backend and
//! the provider node serve exactly what an OpenAI client expects. Requests are
//! queued to mistralrs's scheduler, which batches concurrent sequences.
//! [`Engine::score`] runs one teacher-forced pass over a token sequence: the
//! reference measurement the audits of untrusted nodes are built on.

mod logprobs;
pub mod openai;
mod reply;
mod request;
mod score;

pub use reply::{Event, Reply, DONE};
pub use request::{ChatJob, RequestError};
pub use score::{PositionScore, Scores};

use std::path::{Path, PathBuf};

use futures_util::Stream;
use mistralrs::{GgufModelBuilder, Model, NormalRequest, Response, TokenSource};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

/// What can go wrong in the engine.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The model file could not be read or loaded.
    #[error("cannot load model {path}: {message}")]
    Load {
        /// The GGUF file.
        path: PathBuf,
        /// Why.
        message: String,
    },
    /// The request cannot be run (bad parameters for this engine).
    #[error(transparent)]
    Request(#[from] RequestError),
    /// The model failed while generating.
    #[error("inference failed: {0}")]
    Inference(String),
    /// The engine stopped answering.
    #[error("engine is not running")]
    Closed,
}

/// Builder for an [`Engine`].
#[derive(Clone, Debug)]
pub struct EngineBuilder {
    path: PathBuf,
    model_id: Option<String>,
    max_num_seqs: usize,
    prefix_cache: bool,
}

impl EngineBuilder {
    /// An engine for the GGUF file at `path`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            model_id: None,
            max_num_seqs: 16,
            prefix_cache: false,
        }
    }

    /// The model id clients name (default: the file name without `.gguf`).
    pub fn model_id(mut self, id: impl Into<String>) -> Self {
        self.model_id = Some(id.into());
        self
    }

    /// How many sequences the scheduler batches at once.
    pub fn max_num_seqs(mut self, n: usize) -> Self {
        self.max_num_seqs = n.max(1);
        self
    }

    /// Reuse the KV cache of repeated prompt prefixes. Off by default: a cached
    /// prefix takes a different numeric path than a fresh prefill, so the same
    /// greedy request could answer differently, and audits need reproducible
    /// log-probs.
    pub fn prefix_cache(mut self, on: bool) -> Self {
        self.prefix_cache = on;
        self
    }

    /// Hashes and loads the model.
    pub async fn build(self) -> Result<Engine, EngineError> {
        let load_err = |message: String| EngineError::Load {
            path: self.path.clone(),
            message,
        };
        let file_name = self
            .path
            .file_name()
            .and_then(|f| f.to_str())
            .ok_or_else(|| load_err("not a file path".into()))?
            .to_string();
        let dir = self
            .path
            .parent()
            .unwrap_or(Path::new("."))
            .to_string_lossy()
            .to_string();
        let sha256 = {
            let path = self.path.clone();
            tokio::task::spawn_blocking(move || file_sha256(&path))
                .await
                .map_err(|e| load_err(e.to_string()))?
                .map_err(|e| load_err(e.to_string()))?
        };
        let model = GgufModelBuilder::new(dir, vec![file_name.clone()])
            .with_token_source(TokenSource::None)
            .with_max_num_seqs(self.max_num_seqs)
            .with_prefix_cache_n(self.prefix_cache.then_some(16))
            .with_logging()
            .build()
            .await
            .map_err(|e| load_err(format!("{e:#}")))?;
        let id = self
            .model_id
            .unwrap_or_else(|| file_name.trim_end_matches(".gguf").to_string());
        Ok(Engine {
            model,
            id,
            sha256,
            path: self.path,
        })
    }
}

/// A loaded model, ready for concurrent requests.
pub struct Engine {
    model: Model,
    id: String,
    sha256: String,
    path: PathBuf,
}

impl Engine {
    /// The model id clients name.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// sha256 (hex) of the GGUF file: what pins the model a node serves.
    pub fn sha256(&self) -> &str {
        &self.sha256
    }

    /// The GGUF file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    async fn submit(
        &self,
        job: ChatJob,
        streaming: bool,
    ) -> Result<(mpsc::Receiver<Response>, Option<openai::LogprobSource>), EngineError> {
        let (tx, rx) = mpsc::channel(64);
        let source = job.logprobs.then(|| openai::LogprobSource {
            recorder: std::sync::Arc::new(logprobs::Recorder::default()),
            top: job.top_logprobs,
        });
        let processors = source.as_ref().map(|s| {
            vec![s.recorder.clone() as std::sync::Arc<dyn mistralrs::CustomLogitsProcessor>]
        });
        let request = mistralrs::Request::Normal(Box::new(NormalRequest {
            messages: job.messages,
            sampling_params: job.sampling,
            response: tx,
            return_logprobs: job.logprobs,
            is_streaming: streaming,
            id: 0,
            constraint: job.constraint,
            suffix: None,
            tools: job.tools,
            tool_choice: job.tool_choice,
            logits_processors: processors,
            return_raw_logits: false,
            web_search_options: None,
            model_id: None,
            truncate_sequence: false,
        }));
        send(&self.model, request).await?;
        Ok((rx, source))
    }

    /// Runs a chat completion to the end.
    pub async fn complete(
        &self,
        body: &serde_json::Value,
    ) -> Result<openai::ChatCompletion, EngineError> {
        let job = ChatJob::from_openai(body)?;
        let (mut rx, logprobs) = self.submit(job, false).await?;
        match rx.recv().await {
            Some(Response::Done(done)) => Ok(openai::ChatCompletion::from_mistralrs(
                done,
                &self.id,
                logprobs.as_ref(),
            )),
            Some(other) => Err(unexpected(other)),
            None => Err(EngineError::Closed),
        }
    }

    /// Runs a chat completion as a stream of OpenAI chunks: the role chunk,
    /// content chunks, one finish chunk per choice, then (if asked) the usage
    /// chunk. Dropping the stream cancels generation.
    pub async fn stream(
        &self,
        body: &serde_json::Value,
        include_usage: bool,
    ) -> Result<
        impl Stream<Item = Result<openai::ChatCompletionChunk, EngineError>> + Send + 'static,
        EngineError,
    > {
        let job = ChatJob::from_openai(body)?;
        let n = job.sampling.n_choices;
        let (rx, logprobs) = self.submit(job, true).await?;
        Ok(openai::chunk_stream(
            rx,
            self.id.clone(),
            n,
            include_usage,
            logprobs,
        ))
    }

    /// One teacher-forced pass over `tokens`: at every position, the log-prob
    /// the model gives the token that follows, its argmax, and the top `k`.
    pub async fn score(&self, tokens: Vec<u32>, top_k: usize) -> Result<Scores, EngineError> {
        score::run(&self.model, tokens, top_k).await
    }

    /// Token ids of a chat prompt as the model sees it (chat template applied,
    /// generation prompt added).
    pub async fn tokenize_chat(&self, body: &serde_json::Value) -> Result<Vec<u32>, EngineError> {
        let job = ChatJob::from_openai(body)?;
        let mistralrs::core::RequestMessage::Chat { messages, .. } = job.messages else {
            return Err(EngineError::Inference("not a chat request".into()));
        };
        let (tx, mut rx) = mpsc::channel(1);
        let request = mistralrs::Request::Tokenize(mistralrs::core::TokenizationRequest {
            text: either::Either::Left(messages),
            tools: job.tools,
            add_special_tokens: true,
            add_generation_prompt: true,
            response: tx,
            enable_thinking: None,
            reasoning_effort: None,
        });
        send(&self.model, request).await?;
        rx.recv()
            .await
            .ok_or(EngineError::Closed)?
            .map_err(|e| EngineError::Inference(e.to_string()))
    }

    /// Token ids of plain text, without special tokens.
    pub async fn tokenize_text(&self, text: &str) -> Result<Vec<u32>, EngineError> {
        self.model
            .tokenize(
                either::Either::Right(text.to_string()),
                None,
                false,
                false,
                None,
            )
            .await
            .map_err(|e| EngineError::Inference(e.to_string()))
    }
}

/// Queues a request on the model's scheduler.
pub(crate) async fn send(model: &Model, request: mistralrs::Request) -> Result<(), EngineError> {
    let sender = model
        .inner()
        .get_sender(None)
        .map_err(|e| EngineError::Inference(e.to_string()))?;
    sender.send(request).await.map_err(|_| EngineError::Closed)
}

fn unexpected(r: Response) -> EngineError {
    match r {
        Response::InternalError(e) | Response::ValidationError(e) => {
            EngineError::Inference(e.to_string())
        }
        Response::ModelError(msg, _) => EngineError::Inference(msg),
        _ => EngineError::Inference("unexpected response kind from the engine".into()),
    }
}

fn file_sha256(path: &Path) -> std::io::Result<String> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    std::io::copy(&mut file, &mut hasher)?;
    Ok(hex::encode(hasher.finalize()))
}
