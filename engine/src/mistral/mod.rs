//! The GPU runtime: mistralrs over the GGUF file, its scheduler batching
//! concurrent sequences.
//!
//! Except where any layer attends on the CPU: mistralrs 0.8.1's CPU
//! attention for one new token (`flash_attn_cpu_single_q` in
//! `attention/backends/cpu.rs`) keeps one scratch row per tile and head but
//! none per sequence, so in a batched decode step every sequence gets the
//! last one's attention, and concurrent requests answer with each other's
//! text. Requests there run one at a time ([`MistralRuntime::one_at_a_time`]),
//! and a request for several choices, which mistralrs would decode as one
//! batch, is refused.

mod logprobs;
mod request;
mod score;
mod translate;

pub use request::ChatJob;

use std::path::Path;
use std::sync::Arc;

use futures_util::{Stream, StreamExt};
use mistralrs::core::{DeviceLayerMapMetadata, DeviceMapMetadata};
use mistralrs::{DeviceMapSetting, GgufModelBuilder, Model, NormalRequest, Response, TokenSource};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};

use crate::logits::{Replay, Scores};
use crate::openai::{ChatCompletion, ChatCompletionChunk};
use crate::{EngineError, RequestError};
use translate::LogprobSource;

/// A model loaded into mistralrs.
pub struct MistralRuntime {
    model: Model,
    /// One permit, held by each request for as long as it runs, where a
    /// layer attends on the CPU (see the module docs); `None` when every
    /// layer is on the GPU and mistralrs may batch.
    gate: Option<Arc<Semaphore>>,
}

impl MistralRuntime {
    /// Loads the GGUF file at `path`, its first `gpu_layers` layers on GPU 0
    /// through mistralrs's device map and the rest on the CPU.
    pub async fn load(
        path: &Path,
        max_num_seqs: usize,
        prefix_cache: bool,
        gpu_layers: usize,
    ) -> Result<Self, String> {
        let file_name = path
            .file_name()
            .and_then(|f| f.to_str())
            .ok_or("not a file path")?
            .to_string();
        let dir = path
            .parent()
            .unwrap_or(Path::new("."))
            .to_string_lossy()
            .to_string();
        let mut builder = GgufModelBuilder::new(dir, vec![file_name]);
        if gpu_layers > 0 {
            builder = builder.with_device_mapping(DeviceMapSetting::Map(
                DeviceMapMetadata::from_num_device_layers(vec![DeviceLayerMapMetadata {
                    ordinal: 0,
                    layers: gpu_layers,
                }]),
            ));
        }
        let model = builder
            .with_token_source(TokenSource::None)
            .with_max_num_seqs(max_num_seqs)
            .with_prefix_cache_n(prefix_cache.then_some(16))
            .with_logging()
            .build()
            .await
            .map_err(|e| format!("{e:#}"))?;
        // A file whose layers cannot be counted is treated as touching the CPU.
        let layers = crate::profile::read(path).map_or(usize::MAX, |p| p.layers.len());
        let gate = (gpu_layers < layers).then(|| Arc::new(Semaphore::new(1)));
        Ok(Self { model, gate })
    }

    /// Whether requests run one at a time because some layer attends on the
    /// CPU, where mistralrs's batched decode mixes sequences up.
    pub fn one_at_a_time(&self) -> bool {
        self.gate.is_some()
    }

    /// Waits for this request's turn where requests run one at a time.
    async fn turn(&self) -> Result<Option<OwnedSemaphorePermit>, EngineError> {
        match &self.gate {
            None => Ok(None),
            Some(gate) => gate
                .clone()
                .acquire_owned()
                .await
                .map(Some)
                .map_err(|_| EngineError::Closed),
        }
    }

    async fn submit(
        &self,
        job: ChatJob,
        streaming: bool,
    ) -> Result<(mpsc::Receiver<Response>, Option<LogprobSource>), EngineError> {
        let (tx, rx) = mpsc::channel(64);
        let source = job.logprobs.then(|| LogprobSource {
            recorder: Arc::new(logprobs::Recorder::default()),
            top: job.top_logprobs,
        });
        let processors = source
            .as_ref()
            .map(|s| vec![s.recorder.clone() as Arc<dyn mistralrs::CustomLogitsProcessor>]);
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
        model_id: &str,
    ) -> Result<ChatCompletion, EngineError> {
        let job = self.admit(ChatJob::from_openai(body)?)?;
        let _turn = self.turn().await?;
        let (mut rx, logprobs) = self.submit(job, false).await?;
        match rx.recv().await {
            Some(Response::Done(done)) => {
                Ok(translate::completion(done, model_id, logprobs.as_ref()))
            }
            Some(other) => Err(unexpected(other)),
            None => Err(EngineError::Closed),
        }
    }

    /// Runs a chat completion as a stream of OpenAI chunks.
    pub async fn stream(
        &self,
        body: &serde_json::Value,
        model_id: &str,
        include_usage: bool,
    ) -> Result<
        impl Stream<Item = Result<ChatCompletionChunk, EngineError>> + Send + 'static,
        EngineError,
    > {
        let job = self.admit(ChatJob::from_openai(body)?)?;
        let n = job.sampling.n_choices;
        let turn = self.turn().await?;
        let (rx, logprobs) = self.submit(job, true).await?;
        let chunks = translate::chunk_stream(rx, model_id.to_string(), n, include_usage, logprobs);
        // The turn ends when the client has the last chunk or goes away.
        Ok(chunks.map(move |chunk| {
            let _turn = &turn;
            chunk
        }))
    }

    /// Refuses what this placement cannot serve correctly: several choices
    /// decode as one batch, which the CPU attention mixes up.
    fn admit(&self, job: ChatJob) -> Result<ChatJob, EngineError> {
        if self.one_at_a_time() && job.sampling.n_choices > 1 {
            return Err(RequestError::new(
                "n",
                "this node serves n = 1 only: its mistralrs runtime attends on the CPU, where batched sequences are not kept apart",
            )
            .into());
        }
        Ok(job)
    }

    /// One teacher-forced pass over `tokens`, judging those from index
    /// `from` on.
    pub async fn score(
        &self,
        tokens: Vec<u32>,
        from: usize,
        top_k: usize,
        replay: Option<Replay>,
    ) -> Result<Scores, EngineError> {
        let _turn = self.turn().await?;
        score::run(&self.model, tokens, from, top_k, replay).await
    }

    /// Token ids of a chat prompt as the model sees it.
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
async fn send(model: &Model, request: mistralrs::Request) -> Result<(), EngineError> {
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
