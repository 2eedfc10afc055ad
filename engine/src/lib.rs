//! Tollgate's inference engine over a local GGUF file.
//!
//! [`Engine`] speaks OpenAI's chat-completion format on both sides: it takes a
//! request body as JSON and answers with [`openai::ChatCompletion`] or a stream
//! of [`openai::ChatCompletionChunk`]s, so the gateway's embedded backend and
//! the provider node serve exactly what an OpenAI client expects. Two runtimes
//! sit behind it ([`Runtime`]): llama.cpp for CPU nodes, whose kernels are the
//! fastest on CPU, and mistralrs for GPU nodes. Both batch concurrent requests.
//! [`Engine::score`] runs one teacher-forced pass over a token sequence: the
//! reference measurement the audits of untrusted nodes are built on.

pub mod hardware;
pub mod llama;
pub mod logits;
mod messages;
mod mistral;
pub mod openai;
pub mod profile;
mod progress;
mod reply;
pub mod sampler;
pub mod stage;
pub mod template;
pub mod text;

pub use llama::FlashAttention;
pub use logits::{PositionScore, Replay, Scores};
pub use reply::{include_usage, Event, Reply, DONE};
pub use sampler::{Replayed, Sampler, SamplingParams};

use std::path::{Path, PathBuf};

use futures_util::stream::BoxStream;
use futures_util::StreamExt;
use sha2::{Digest, Sha256};

use llama::{GenRequest, LlamaRuntime};
use mistral::MistralRuntime;

/// A request the engine cannot run as given.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid '{param}': {message}")]
pub struct RequestError {
    /// The parameter at fault.
    pub param: String,
    /// What is wrong.
    pub message: String,
}

impl RequestError {
    /// `param` is at fault, for the reason `message`.
    pub fn new(param: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            param: param.into(),
            message: message.into(),
        }
    }
}

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

/// Which inference library runs the model.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Runtime {
    /// llama.cpp, built for the host CPU: the CPU default.
    LlamaCpp,
    /// mistralrs (candle): the default of CUDA builds.
    Mistralrs,
}

impl Default for Runtime {
    fn default() -> Self {
        if cfg!(feature = "cuda") {
            Runtime::Mistralrs
        } else {
            Runtime::LlamaCpp
        }
    }
}

impl Runtime {
    /// The name used in configuration and `/node/info`.
    pub fn name(self) -> &'static str {
        match self {
            Runtime::LlamaCpp => "llama.cpp",
            Runtime::Mistralrs => "mistralrs",
        }
    }
}

impl std::str::FromStr for Runtime {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "llama.cpp" | "llamacpp" | "llama" => Ok(Runtime::LlamaCpp),
            "mistralrs" | "mistral.rs" => Ok(Runtime::Mistralrs),
            other => Err(format!(
                "unknown runtime '{other}' (llama.cpp or mistralrs)"
            )),
        }
    }
}

/// Builder for an [`Engine`].
#[derive(Clone, Debug)]
pub struct EngineBuilder {
    path: PathBuf,
    model_id: Option<String>,
    runtime: Runtime,
    max_num_seqs: usize,
    context_len: usize,
    threads: Option<usize>,
    prefix_cache: bool,
    progress: bool,
    gpu_layers: usize,
    flash_attention: FlashAttention,
}

impl EngineBuilder {
    /// An engine for the GGUF file at `path`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            model_id: None,
            runtime: Runtime::default(),
            max_num_seqs: 8,
            context_len: 2048,
            threads: None,
            prefix_cache: false,
            progress: false,
            gpu_layers: 0,
            flash_attention: FlashAttention::default(),
        }
    }

    /// The model id clients name (default: the file name without `.gguf`).
    pub fn model_id(mut self, id: impl Into<String>) -> Self {
        self.model_id = Some(id.into());
        self
    }

    /// Which library runs the model (default: llama.cpp, or mistralrs in CUDA builds).
    pub fn runtime(mut self, runtime: Runtime) -> Self {
        self.runtime = runtime;
        self
    }

    /// How many sequences are batched at once.
    pub fn max_num_seqs(mut self, n: usize) -> Self {
        self.max_num_seqs = n.max(1);
        self
    }

    /// Tokens of prompt plus completion one sequence may hold (llama.cpp runtime).
    pub fn context_len(mut self, n: usize) -> Self {
        self.context_len = n.max(16);
        self
    }

    /// CPU threads (default: every core; llama.cpp runtime).
    pub fn threads(mut self, n: usize) -> Self {
        self.threads = Some(n.max(1));
        self
    }

    /// Which attention kernel runs (default: llama.cpp's choice; llama.cpp
    /// runtime).
    pub fn flash_attention(mut self, choice: FlashAttention) -> Self {
        self.flash_attention = choice;
        self
    }

    /// Reuse the KV cache of repeated prompt prefixes (mistralrs runtime). Off
    /// by default: a cached prefix takes a different numeric path than a fresh
    /// prefill, so the same greedy request could answer differently, and
    /// audits need reproducible log-probs.
    pub fn prefix_cache(mut self, on: bool) -> Self {
        self.prefix_cache = on;
        self
    }

    /// How many leading layers go on GPU 0 (the placement plan's GPU prefix);
    /// the rest stay in CPU RAM. 0, the default, keeps every layer on the CPU.
    pub fn gpu_layers(mut self, n: usize) -> Self {
        self.gpu_layers = n;
        self
    }

    /// Show a progress bar on stderr while the model loads.
    pub fn progress(mut self, on: bool) -> Self {
        self.progress = on;
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
        let sha256 = {
            let path = self.path.clone();
            tokio::task::spawn_blocking(move || file_sha256(&path))
                .await
                .map_err(|e| load_err(e.to_string()))?
                .map_err(|e| load_err(e.to_string()))?
        };
        let inner = match self.runtime {
            Runtime::LlamaCpp => {
                let limits = llama::Limits {
                    sequences: self.max_num_seqs,
                    seq_ctx: self.context_len,
                    batch: 512,
                    threads: self.threads.unwrap_or_else(default_threads) as i32,
                    flash_attention: self.flash_attention,
                };
                let gpu_layers = self.gpu_layers as u32;
                let path = self.path.clone();
                let bar = progress::LoadBar::new(self.progress, &file_name);
                let runtime = tokio::task::spawn_blocking(move || {
                    LlamaRuntime::load(&path, limits, gpu_layers, move |p| bar.set(p))
                })
                .await
                .map_err(|e| load_err(e.to_string()))?
                .map_err(load_err)?;
                Inner::Llama(Box::new(runtime))
            }
            Runtime::Mistralrs => Inner::Mistral(
                MistralRuntime::load(
                    &self.path,
                    self.max_num_seqs,
                    self.prefix_cache,
                    self.gpu_layers,
                )
                .await
                .map_err(load_err)?,
            ),
        };
        let id = self
            .model_id
            .unwrap_or_else(|| file_name.trim_end_matches(".gguf").to_string());
        Ok(Engine {
            inner,
            runtime: self.runtime,
            id,
            sha256,
            path: self.path,
        })
    }
}

fn default_threads() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

enum Inner {
    Llama(Box<LlamaRuntime>),
    Mistral(MistralRuntime),
}

/// A stream of OpenAI chunks.
pub type ChunkStream = BoxStream<'static, Result<openai::ChatCompletionChunk, EngineError>>;

/// A loaded model, ready for concurrent requests.
pub struct Engine {
    inner: Inner,
    runtime: Runtime,
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

    /// The library running the model.
    pub fn runtime(&self) -> Runtime {
        self.runtime
    }

    /// Transformer layers, where the runtime reports them.
    pub fn layers(&self) -> Option<u32> {
        match &self.inner {
            Inner::Llama(rt) => Some(rt.layers()),
            Inner::Mistral(_) => None,
        }
    }

    /// Requests in the engine (running or waiting) as of its last step;
    /// `None` where the runtime does not say.
    pub fn busy(&self) -> Option<usize> {
        match &self.inner {
            Inner::Llama(rt) => Some(rt.busy()),
            Inner::Mistral(_) => None,
        }
    }

    /// Runs a chat completion to the end.
    pub async fn complete(
        &self,
        body: &serde_json::Value,
    ) -> Result<openai::ChatCompletion, EngineError> {
        match &self.inner {
            Inner::Llama(rt) => {
                let request = GenRequest::from_openai(body)?;
                let (n, logprobs) = (request.n, request.logprobs);
                let events = rt.generate(request)?;
                llama::output::collect(events, &self.id, n, logprobs).await
            }
            Inner::Mistral(rt) => rt.complete(body, &self.id).await,
        }
    }

    /// Runs a chat completion as a stream of OpenAI chunks: the role chunk,
    /// content chunks, one finish chunk per choice, then (if asked) the usage
    /// chunk. Dropping the stream cancels generation.
    pub async fn stream(
        &self,
        body: &serde_json::Value,
        include_usage: bool,
    ) -> Result<ChunkStream, EngineError> {
        match &self.inner {
            Inner::Llama(rt) => {
                let request = GenRequest::from_openai(body)?;
                let n = request.n;
                let events = rt.generate(request)?;
                Ok(llama::output::chunks(events, self.id.clone(), n, include_usage).boxed())
            }
            Inner::Mistral(rt) => Ok(rt.stream(body, &self.id, include_usage).await?.boxed()),
        }
    }

    /// One teacher-forced pass over `tokens`: at every position, the log-prob
    /// the model gives the token that follows, its argmax, and the top `k`;
    /// with `replay`, also what the request's own sampler picks from the
    /// reference logits over the generated part.
    pub async fn score(
        &self,
        tokens: Vec<u32>,
        top_k: usize,
        replay: Option<Replay>,
    ) -> Result<Scores, EngineError> {
        self.score_from(tokens, 1, top_k, replay).await
    }

    /// [`Self::score`] of the tokens from index `from` (at least 1) on:
    /// entry `i` of the result judges token `from + i`. An audit judges the
    /// answer, not the prompt; leaving the prompt's positions out spares
    /// their projection onto the vocabulary and its softmax.
    pub async fn score_from(
        &self,
        tokens: Vec<u32>,
        from: usize,
        top_k: usize,
        replay: Option<Replay>,
    ) -> Result<Scores, EngineError> {
        let from = from.max(1);
        match &self.inner {
            Inner::Llama(rt) => rt.score(tokens, from, top_k, replay).await,
            Inner::Mistral(rt) => rt.score(tokens, from, top_k, replay).await,
        }
    }

    /// The sampling settings an OpenAI request body asks for, as this engine
    /// reads them (what an audit replays).
    pub fn sampling_of(body: &serde_json::Value) -> Result<SamplingParams, RequestError> {
        Ok(GenRequest::from_openai(body)?.sampling)
    }

    /// Token ids of a chat prompt as the model sees it (chat template applied,
    /// generation prompt added).
    pub async fn tokenize_chat(&self, body: &serde_json::Value) -> Result<Vec<u32>, EngineError> {
        match &self.inner {
            Inner::Llama(rt) => rt.prompt(&GenRequest::from_openai(body)?),
            Inner::Mistral(rt) => rt.tokenize_chat(body).await,
        }
    }

    /// The bytes each token stands for, where the runtime can say
    /// (llama.cpp); `None` otherwise.
    pub fn pieces(&self, tokens: &[u32]) -> Option<Vec<Vec<u8>>> {
        match &self.inner {
            Inner::Llama(rt) => Some(rt.pieces(tokens)),
            Inner::Mistral(_) => None,
        }
    }

    /// The one token spelled `bytes` in generated text, if exactly one is
    /// (`None` also where the runtime cannot tell: mistralrs).
    pub fn token_spelled(&self, bytes: &[u8]) -> Option<u32> {
        match &self.inner {
            Inner::Llama(rt) => rt.token_spelled(bytes),
            Inner::Mistral(_) => None,
        }
    }

    /// Token ids of plain text, without special tokens.
    pub async fn tokenize_text(&self, text: &str) -> Result<Vec<u32>, EngineError> {
        match &self.inner {
            Inner::Llama(rt) => Ok(rt.tokenize(text, false)),
            Inner::Mistral(rt) => rt.tokenize_text(text).await,
        }
    }
}

/// sha256 (hex) of a file: what pins the model a node or stage serves.
pub fn file_sha256(path: &Path) -> std::io::Result<String> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    std::io::copy(&mut file, &mut hasher)?;
    Ok(hex::encode(hasher.finalize()))
}
