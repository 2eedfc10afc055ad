//! A llama-family model's shape, read from its GGUF metadata.

use std::ops::Range;

use candle_core::quantized::gguf_file::{Content, Value};

use super::StageError;

/// What a span needs to know about the whole model.
#[derive(Clone, Debug, PartialEq)]
pub struct LlamaConfig {
    /// Transformer blocks in the whole model.
    pub layers: usize,
    /// Hidden size.
    pub hidden: usize,
    /// Attention heads.
    pub heads: usize,
    /// Key/value heads (grouped-query attention).
    pub kv_heads: usize,
    /// RMS-norm epsilon.
    pub eps: f64,
    /// RoPE frequency base.
    pub rope_base: f32,
    /// Positions the RoPE tables cover.
    pub context: usize,
    /// Vocabulary size.
    pub vocab: usize,
}

impl LlamaConfig {
    /// Reads the shape of a `llama` GGUF file.
    pub fn from_gguf(content: &Content) -> Result<Self, StageError> {
        let md = &content.metadata;
        let arch = md
            .get("general.architecture")
            .and_then(|v| v.to_string().ok())
            .cloned()
            .unwrap_or_default();
        if arch != "llama" {
            return Err(StageError::Unsupported(format!(
                "architecture {arch:?} (the stage runtime runs llama-family models)"
            )));
        }
        let int = |key: &str| -> Result<usize, StageError> {
            md.get(&format!("llama.{key}"))
                .and_then(|v| {
                    v.to_u32()
                        .ok()
                        .or_else(|| v.to_u64().ok().map(|x| x as u32))
                })
                .map(|v| v as usize)
                .ok_or_else(|| StageError::Format(format!("missing llama.{key}")))
        };
        let float = |key: &str| {
            md.get(&format!("llama.{key}"))
                .and_then(|v| v.to_f32().ok())
        };
        let heads = int("attention.head_count")?;
        let vocab = match md.get("tokenizer.ggml.tokens") {
            Some(Value::Array(tokens)) => tokens.len(),
            _ => content
                .tensor_infos
                .get("token_embd.weight")
                .map(|t| t.shape.dims()[0])
                .ok_or_else(|| StageError::Format("no token_embd.weight".into()))?,
        };
        Ok(Self {
            layers: int("block_count")?,
            hidden: int("embedding_length")?,
            heads,
            kv_heads: int("attention.head_count_kv").unwrap_or(heads),
            eps: f64::from(float("attention.layer_norm_rms_epsilon").unwrap_or(1e-5)),
            rope_base: float("rope.freq_base").unwrap_or(10_000.0),
            context: int("context_length").unwrap_or(4096).min(32_768),
            vocab,
        })
    }

    /// Size of one attention head.
    pub fn head_dim(&self) -> usize {
        self.hidden / self.heads
    }

    /// Checks a span against the model: non-empty and within its blocks.
    pub fn check_span(&self, span: &Range<usize>) -> Result<(), StageError> {
        if span.start >= span.end || span.end > self.layers {
            return Err(StageError::Span {
                span: span.clone(),
                layers: self.layers,
            });
        }
        Ok(())
    }
}
