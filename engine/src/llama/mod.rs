//! The CPU runtime: llama.cpp (built from source for the host CPU) with
//! Tollgate's own continuous batching, sampling and log-probs on top.
//!
//! llama.cpp's CPU kernels are several times faster than candle's on the
//! quantized formats small GGUF models ship in, so CPU nodes run this.

pub mod output;
pub mod params;
mod vocab;
pub mod worker;

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc as std_mpsc, Arc, Mutex, OnceLock};

use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::token::LlamaToken;
use tokio::sync::{mpsc, oneshot};

use crate::logits::{Replay, Scores};
use crate::template::ChatTemplate;
use crate::{EngineError, RequestError};
pub use params::GenRequest;
pub use vocab::Vocabulary;
pub use worker::{Event, FlashAttention, Limits};

/// llama.cpp's process-wide initialisation, done once.
fn backend() -> Result<Arc<LlamaBackend>, String> {
    static BACKEND: OnceLock<Result<Arc<LlamaBackend>, String>> = OnceLock::new();
    BACKEND
        .get_or_init(|| {
            let mut backend = LlamaBackend::init().map_err(|e| e.to_string())?;
            if std::env::var_os("TOLLGATE_LLAMA_LOG").is_none() {
                backend.void_logs();
            }
            Ok(Arc::new(backend))
        })
        .clone()
}

/// The chat template stored in `model`'s file.
fn chat_template(model: &LlamaModel) -> Result<ChatTemplate, String> {
    // A file without a template (some community GGUFs) gets ChatML: a
    // served model must take chat messages somehow, and the audit's
    // reference reads the same file, so both sides agree on the prompt.
    let source = match model.chat_template(None) {
        Ok(t) => t.to_string().map_err(|e| e.to_string())?,
        Err(e) => {
            tracing::warn!("no chat template in the model file ({e}); using ChatML");
            crate::template::CHATML.to_string()
        }
    };
    let vocab = model.vocab();
    let text =
        |t: LlamaToken| String::from_utf8_lossy(&vocab.token_to_piece(t, true, None)).into_owned();
    ChatTemplate::new(&source, &text(vocab.bos()), &text(vocab.eos())).map_err(|e| e.to_string())
}

/// The token ids of `request`'s conversation under `template`, assistant
/// turn opened.
fn chat_prompt(
    model: &LlamaModel,
    template: &ChatTemplate,
    request: &GenRequest,
) -> Result<Vec<u32>, RequestError> {
    let text = template
        .render(&request.messages)
        .map_err(|e| RequestError::new("messages", e.to_string()))?;
    // The template writes the special tokens itself.
    Ok(model
        .vocab()
        .tokenize(text.as_bytes(), false, true)
        .into_iter()
        .map(|t| t.0 as u32)
        .collect())
}

/// A model loaded into llama.cpp, with its batching thread.
pub struct LlamaRuntime {
    model: Arc<LlamaModel>,
    jobs: Mutex<std_mpsc::Sender<Job>>,
    template: ChatTemplate,
    limits: Limits,
    busy: Arc<AtomicUsize>,
    /// Each token's bytes, to the token (`None` where several share them),
    /// built on first use.
    spellings: OnceLock<HashMap<Vec<u8>, Option<u32>>>,
}

use worker::Job;

impl LlamaRuntime {
    /// Loads `path` (blocking) with its first `gpu_layers` layers offloaded
    /// to the GPU, reporting load progress in [0, 1].
    pub fn load(
        path: &Path,
        limits: Limits,
        gpu_layers: u32,
        progress: impl FnMut(f32) -> bool + 'static,
    ) -> Result<Self, String> {
        let backend = backend()?;
        let params = LlamaModelParams::default()
            .with_n_gpu_layers(gpu_layers)
            .with_progress_callback(progress);
        let model = Arc::new(
            LlamaModel::load_from_file(&backend, path, &params).map_err(|e| e.to_string())?,
        );
        let template = chat_template(&model)?;
        let (tx, rx) = std_mpsc::channel();
        let (ready_tx, ready_rx) = oneshot::channel();
        let worker_model = model.clone();
        let busy = Arc::new(AtomicUsize::new(0));
        let worker_busy = busy.clone();
        std::thread::Builder::new()
            .name("llama-batch".into())
            .spawn(move || worker::run(backend, worker_model, limits, rx, ready_tx, worker_busy))
            .map_err(|e| e.to_string())?;
        ready_rx
            .blocking_recv()
            .map_err(|_| "the batching thread stopped".to_string())??;
        Ok(Self {
            model,
            jobs: Mutex::new(tx),
            template,
            limits,
            busy,
            spellings: OnceLock::new(),
        })
    }

    /// The batching limits.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Sequences generating or scoring plus requests waiting for a slot, as of
    /// the batching loop's last step.
    pub fn busy(&self) -> usize {
        self.busy.load(Ordering::Relaxed)
    }

    /// Number of transformer layers.
    pub fn layers(&self) -> u32 {
        self.model.n_layer()
    }

    fn submit(&self, job: Job) -> Result<(), EngineError> {
        self.jobs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .send(job)
            .map_err(|_| EngineError::Closed)
    }

    /// The token ids of a chat prompt (template applied, assistant turn opened).
    pub fn prompt(&self, request: &GenRequest) -> Result<Vec<u32>, EngineError> {
        Ok(chat_prompt(&self.model, &self.template, request)?)
    }

    /// Token ids of `text`; `special` parses special-token markup.
    pub fn tokenize(&self, text: &str, special: bool) -> Vec<u32> {
        self.model
            .vocab()
            .tokenize(text.as_bytes(), false, special)
            .into_iter()
            .map(|t| t.0 as u32)
            .collect()
    }

    /// The bytes each token stands for.
    pub fn pieces(&self, tokens: &[u32]) -> Vec<Vec<u8>> {
        let vocab = self.model.vocab();
        tokens
            .iter()
            .map(|&t| vocab.token_to_piece(LlamaToken(t as i32), false, None))
            .collect()
    }

    /// The one token whose bytes are `bytes`: `None` where no token or
    /// several (control tokens, which have none) are spelled so.
    pub fn token_spelled(&self, bytes: &[u8]) -> Option<u32> {
        let spellings = self.spellings.get_or_init(|| {
            let vocab = self.model.vocab();
            let mut map = HashMap::new();
            for t in 0..vocab.n_tokens() {
                let piece = vocab.token_to_piece(LlamaToken(t), false, None);
                map.entry(piece)
                    .and_modify(|v| *v = None)
                    .or_insert(Some(t as u32));
            }
            map
        });
        spellings.get(bytes).copied().flatten()
    }

    /// Starts generating; events arrive per choice until each has finished.
    pub fn generate(
        &self,
        request: GenRequest,
    ) -> Result<mpsc::UnboundedReceiver<Event>, EngineError> {
        let prompt = self.prompt(&request)?;
        let max = self.limits.seq_ctx;
        if prompt.len() >= max {
            return Err(RequestError::new(
                "messages",
                format!(
                    "this model's maximum context length is {max} tokens, but the messages use {}",
                    prompt.len()
                ),
            )
            .into());
        }
        let (tx, rx) = mpsc::unbounded_channel();
        self.submit(Job::Generate {
            prompt,
            request,
            events: tx,
        })?;
        Ok(rx)
    }

    /// One teacher-forced pass over `tokens`.
    pub async fn score(
        &self,
        tokens: Vec<u32>,
        from: usize,
        top_k: usize,
        replay: Option<Replay>,
    ) -> Result<Scores, EngineError> {
        let max = self.limits.seq_ctx;
        if tokens.len() > max {
            return Err(RequestError::new(
                "tokens",
                format!("at most {max} tokens can be scored at once"),
            )
            .into());
        }
        let vocab = self.model.n_vocab() as u32;
        if let Some(bad) = tokens.iter().find(|&&t| t >= vocab) {
            return Err(RequestError::new(
                "tokens",
                format!("{bad} is not a token id of this model"),
            )
            .into());
        }
        let (tx, rx) = oneshot::channel();
        self.submit(Job::Score {
            tokens,
            from,
            top_k,
            replay,
            reply: tx,
        })?;
        rx.await.map_err(|_| EngineError::Closed)?
    }
}
