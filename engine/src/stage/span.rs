//! One span of a llama-family model, on candle: the blocks `[a, b)` of a
//! GGUF file's quantized weights, the token embedding when the span starts
//! the model, the final norm and LM head when it ends it.

use std::fs::File;
use std::ops::Range;
use std::path::Path;

use candle_core::quantized::{gguf_file, QMatMul};
use candle_core::{DType, Device, Module, Tensor, D};
use candle_nn::Embedding;

use super::cache::KvCache;
use super::config::LlamaConfig;
use super::StageError;

/// What enters a span.
#[derive(Debug)]
pub enum StageInput {
    /// Token ids (the first span).
    Tokens(Vec<u32>),
    /// Hidden states `(positions, hidden)` from the span before.
    Hidden(Tensor),
}

/// What leaves a span.
#[derive(Debug)]
pub enum StageOutput {
    /// Hidden states `(positions, hidden)` for the next span.
    Hidden(Tensor),
    /// Logits `(positions, vocab)` (the last span).
    Logits(Tensor),
}

struct Attention {
    q: QMatMul,
    k: QMatMul,
    v: QMatMul,
    o: QMatMul,
}

struct Mlp {
    gate: QMatMul,
    up: QMatMul,
    down: QMatMul,
}

struct Block {
    attn_norm: Tensor,
    attn: Attention,
    ffn_norm: Tensor,
    mlp: Mlp,
}

struct Head {
    norm: Tensor,
    out: QMatMul,
}

/// The blocks `[a, b)` of a model, ready to run.
pub struct LlamaSpan {
    config: LlamaConfig,
    span: Range<usize>,
    embed: Option<Embedding>,
    blocks: Vec<Block>,
    head: Option<Head>,
    cos: Tensor,
    sin: Tensor,
    device: Device,
}

impl LlamaSpan {
    /// Loads the blocks `span` of the GGUF file at `path`, reading only the
    /// tensors the span runs.
    pub fn load(path: &Path, span: Range<usize>, device: &Device) -> Result<Self, StageError> {
        let mut file = File::open(path)?;
        let content = gguf_file::Content::read(&mut file)?;
        let config = LlamaConfig::from_gguf(&content)?;
        config.check_span(&span)?;
        let mut tensor = |name: &str| content.tensor(&mut file, name, device);
        let embed = if span.start == 0 {
            let table = tensor("token_embd.weight")?.dequantize(device)?;
            Some(Embedding::new(table, config.hidden))
        } else {
            None
        };
        let mut blocks = Vec::with_capacity(span.len());
        for i in span.clone() {
            let mut q = |what: &str| -> Result<QMatMul, StageError> {
                Ok(QMatMul::from_qtensor(tensor(&format!(
                    "blk.{i}.{what}.weight"
                ))?)?)
            };
            let attn = Attention {
                q: q("attn_q")?,
                k: q("attn_k")?,
                v: q("attn_v")?,
                o: q("attn_output")?,
            };
            let mlp = Mlp {
                gate: q("ffn_gate")?,
                up: q("ffn_up")?,
                down: q("ffn_down")?,
            };
            blocks.push(Block {
                attn_norm: tensor(&format!("blk.{i}.attn_norm.weight"))?.dequantize(device)?,
                attn,
                ffn_norm: tensor(&format!("blk.{i}.ffn_norm.weight"))?.dequantize(device)?,
                mlp,
            });
        }
        let head = if span.end == config.layers {
            // Models with tied embeddings have no output.weight.
            let out = match tensor("output.weight") {
                Ok(t) => t,
                Err(_) => tensor("token_embd.weight")?,
            };
            Some(Head {
                norm: tensor("output_norm.weight")?.dequantize(device)?,
                out: QMatMul::from_qtensor(out)?,
            })
        } else {
            None
        };
        let (cos, sin) = rope_tables(&config, device)?;
        Ok(Self {
            config,
            span,
            embed,
            blocks,
            head,
            cos,
            sin,
            device: device.clone(),
        })
    }

    /// The model's shape.
    pub fn config(&self) -> &LlamaConfig {
        &self.config
    }

    /// The blocks this span runs.
    pub fn span(&self) -> Range<usize> {
        self.span.clone()
    }

    /// Whether the span starts the model (takes tokens).
    pub fn is_first(&self) -> bool {
        self.embed.is_some()
    }

    /// Whether the span ends the model (gives logits).
    pub fn is_last(&self) -> bool {
        self.head.is_some()
    }

    /// An empty KV cache for one session on this span.
    pub fn new_cache(&self) -> KvCache {
        KvCache::new(self.blocks.len())
    }

    /// Runs the span over the next positions of a session, appending them
    /// to its cache.
    pub fn forward(
        &self,
        input: StageInput,
        cache: &mut KvCache,
    ) -> Result<StageOutput, StageError> {
        let x = match (input, &self.embed) {
            (StageInput::Tokens(tokens), Some(embed)) => {
                let ids = Tensor::new(tokens.as_slice(), &self.device)?;
                embed.forward(&ids)?
            }
            (StageInput::Hidden(h), None) => h.to_dtype(DType::F32)?,
            (StageInput::Tokens(_), None) => {
                return Err(StageError::Input(
                    "this span takes hidden states, not tokens".into(),
                ))
            }
            (StageInput::Hidden(_), Some(_)) => {
                return Err(StageError::Input(
                    "this span takes tokens, not hidden states".into(),
                ))
            }
        };
        let (positions, hidden) = x.dims2()?;
        if hidden != self.config.hidden || positions == 0 {
            return Err(StageError::Input(format!(
                "hidden states of shape ({positions}, {hidden}); this model needs (n >= 1, {})",
                self.config.hidden
            )));
        }
        let start = cache.len();
        if start + positions > self.config.context {
            return Err(StageError::Input(format!(
                "{} positions exceed the context of {}",
                start + positions,
                self.config.context
            )));
        }
        let mut x = x.unsqueeze(0)?;
        for (i, block) in self.blocks.iter().enumerate() {
            x = self.block(block, &x, start, cache.layer(i))?;
        }
        cache.advance(positions);
        let x = x.squeeze(0)?;
        match &self.head {
            None => Ok(StageOutput::Hidden(x)),
            Some(head) => {
                let x = candle_nn::ops::rms_norm(&x, &head.norm, self.config.eps as f32)?;
                Ok(StageOutput::Logits(head.out.forward(&x)?))
            }
        }
    }

    fn block(
        &self,
        b: &Block,
        x: &Tensor,
        start: usize,
        cache: &mut Option<(Tensor, Tensor)>,
    ) -> Result<Tensor, StageError> {
        let eps = self.config.eps as f32;
        let h = candle_nn::ops::rms_norm(x, &b.attn_norm, eps)?;
        let x = (x + self.attention(&b.attn, &h, start, cache)?)?;
        let h = candle_nn::ops::rms_norm(&x, &b.ffn_norm, eps)?;
        let gate = candle_nn::ops::silu(&b.mlp.gate.forward(&h)?)?;
        let up = b.mlp.up.forward(&h)?;
        Ok((x + b.mlp.down.forward(&(gate * up)?)?)?)
    }

    fn attention(
        &self,
        a: &Attention,
        x: &Tensor,
        start: usize,
        cache: &mut Option<(Tensor, Tensor)>,
    ) -> Result<Tensor, StageError> {
        let c = &self.config;
        let (b, t, _) = x.dims3()?;
        let hd = c.head_dim();
        let heads = |w: &QMatMul, n: usize| -> Result<Tensor, StageError> {
            Ok(w.forward(x)?
                .reshape((b, t, n, hd))?
                .transpose(1, 2)?
                .contiguous()?)
        };
        let cos = self.cos.narrow(0, start, t)?;
        let sin = self.sin.narrow(0, start, t)?;
        let q = candle_nn::rotary_emb::rope_i(&heads(&a.q, c.heads)?, &cos, &sin)?;
        let k = candle_nn::rotary_emb::rope_i(&heads(&a.k, c.kv_heads)?, &cos, &sin)?;
        let v = heads(&a.v, c.kv_heads)?;
        let (k, v) = match cache.take() {
            None => (k, v),
            Some((pk, pv)) => (Tensor::cat(&[&pk, &k], 2)?, Tensor::cat(&[&pv, &v], 2)?),
        };
        *cache = Some((k.clone(), v.clone()));
        let groups = c.heads / c.kv_heads;
        let k = repeat_kv(&k, groups)?;
        let v = repeat_kv(&v, groups)?;
        let scores = (q.matmul(&k.t()?)? / (hd as f64).sqrt())?;
        let scores = if t > 1 {
            let mask = causal_mask(t, start, &self.device)?;
            scores.broadcast_add(&mask)?
        } else {
            scores
        };
        let weights = candle_nn::ops::softmax_last_dim(&scores)?;
        let y = weights.matmul(&v)?;
        let y = y.transpose(1, 2)?.reshape((b, t, c.hidden))?;
        Ok(a.o.forward(&y)?)
    }
}

/// cos and sin of every position's rotation, `(context, head_dim / 2)`.
fn rope_tables(c: &LlamaConfig, device: &Device) -> Result<(Tensor, Tensor), StageError> {
    let hd = c.head_dim();
    let theta: Vec<f32> = (0..hd)
        .step_by(2)
        .map(|i| 1.0 / c.rope_base.powf(i as f32 / hd as f32))
        .collect();
    let theta = Tensor::new(theta.as_slice(), device)?.reshape((1, hd / 2))?;
    let positions = Tensor::arange(0u32, c.context as u32, device)?
        .to_dtype(DType::F32)?
        .reshape((c.context, 1))?;
    let angles = positions.matmul(&theta)?;
    Ok((angles.cos()?, angles.sin()?))
}

/// Each key/value head repeated for the query heads that share it.
fn repeat_kv(x: &Tensor, groups: usize) -> Result<Tensor, StageError> {
    if groups == 1 {
        return Ok(x.clone());
    }
    let (b, kv, t, hd) = x.dims4()?;
    Ok(x.unsqueeze(2)?
        .expand((b, kv, groups, t, hd))?
        .reshape((b, kv * groups, t, hd))?)
}

/// `(t, start + t)`: 0 where query `i` may see key `j`, -inf after it.
fn causal_mask(t: usize, start: usize, device: &Device) -> Result<Tensor, StageError> {
    let total = start + t;
    let mask: Vec<f32> = (0..t)
        .flat_map(|i| {
            (0..total).map(move |j| {
                if j > start + i {
                    f32::NEG_INFINITY
                } else {
                    0.0
                }
            })
        })
        .collect();
    Ok(Tensor::from_vec(mask, (t, total), device)?)
}

/// The greedy pick of each row of `(positions, vocab)` logits.
pub fn argmax_rows(logits: &Tensor) -> Result<Vec<u32>, StageError> {
    Ok(logits.argmax(D::Minus1)?.to_vec1::<u32>()?)
}
