//! One span of a llama-family model, on candle: the blocks `[a, b)` of a
//! GGUF file's quantized weights, the token embedding when the span starts
//! the model, the final norm and LM head when it ends it.

use std::fs::File;
use std::ops::Range;
use std::path::Path;

use candle_core::quantized::{gguf_file, QMatMul};
use candle_core::{DType, Device, Module, Tensor, D};
use candle_nn::Embedding;

use super::attention;
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

/// The number format of queries, keys, values and the attention's output.
///
/// Everything else (weights' matmuls, norms, the residual stream) runs in
/// f32 either way.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AttentionPrecision {
    /// bf16, as mistralrs computes attention on bf16-capable GPUs.
    Bf16,
    /// f16, as mistralrs computes attention on a CPU: with mistralrs's
    /// order of sums, a span's numbers equal the reference engine's.
    F16,
    /// f32 throughout, with candle's matmuls: a cache twice the size, no
    /// rounding, and the fastest on a CPU.
    #[default]
    F32,
}

impl AttentionPrecision {
    fn dtype(self) -> DType {
        match self {
            Self::Bf16 => DType::BF16,
            Self::F16 => DType::F16,
            Self::F32 => DType::F32,
        }
    }
}

impl std::fmt::Display for AttentionPrecision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Bf16 => "bf16",
            Self::F16 => "f16",
            Self::F32 => "f32",
        })
    }
}

impl std::str::FromStr for AttentionPrecision {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "bf16" => Ok(Self::Bf16),
            "f16" => Ok(Self::F16),
            "f32" => Ok(Self::F32),
            other => Err(format!(
                "attention precision {other:?}: expected bf16, f16 or f32"
            )),
        }
    }
}

/// The blocks `[a, b)` of a model, ready to run.
pub struct LlamaSpan {
    config: LlamaConfig,
    span: Range<usize>,
    precision: AttentionPrecision,
    embed: Option<Embedding>,
    blocks: Vec<Block>,
    head: Option<Head>,
    cos: Tensor,
    sin: Tensor,
    device: Device,
}

impl LlamaSpan {
    /// Loads the blocks `span` of the GGUF file at `path`, reading only the
    /// tensors the span runs, with f32 attention.
    pub fn load(path: &Path, span: Range<usize>, device: &Device) -> Result<Self, StageError> {
        Self::load_with(path, span, device, AttentionPrecision::default())
    }

    /// [`LlamaSpan::load`] with the attention computed at `precision`.
    pub fn load_with(
        path: &Path,
        span: Range<usize>,
        device: &Device,
        precision: AttentionPrecision,
    ) -> Result<Self, StageError> {
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
        let (cos, sin) = rope_tables(&config, precision.dtype(), device)?;
        Ok(Self {
            config,
            span,
            precision,
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

    /// The number format of this span's attention and KV cache.
    pub fn precision(&self) -> AttentionPrecision {
        self.precision
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
        let dtype = self.precision.dtype();
        // Rounded to the attention's format right after the projection, and
        // rotated in it, as mistralrs does: the same numbers, not just close.
        let heads = |w: &QMatMul, n: usize| -> Result<Tensor, StageError> {
            Ok(w.forward(x)?
                .to_dtype(dtype)?
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
        let scale = 1.0 / (hd as f32).sqrt();
        let y = match (self.precision, self.device.is_cpu()) {
            (AttentionPrecision::Bf16, true) => {
                attention::attend::<half::bf16>(&q, &k, &v, start, scale)?
            }
            (AttentionPrecision::F16, true) => {
                attention::attend::<half::f16>(&q, &k, &v, start, scale)?
            }
            _ => attend_with_tensors(&q, &k, &v, start, c.heads / c.kv_heads, scale)?,
        };
        let y = y.to_dtype(DType::F32)?;
        let y = y.transpose(1, 2)?.reshape((b, t, c.hidden))?;
        Ok(a.o.forward(&y)?)
    }
}

/// Attention from candle's tensor ops, on any device: f32 attention, and
/// half precisions where [`attention::attend`] does not run.
fn attend_with_tensors(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    start: usize,
    groups: usize,
    scale: f32,
) -> Result<Tensor, StageError> {
    let dtype = q.dtype();
    let t = q.dim(2)?;
    let q = q.to_dtype(DType::F32)?;
    let k = repeat_kv(k, groups)?.to_dtype(DType::F32)?;
    let v = repeat_kv(v, groups)?.to_dtype(DType::F32)?;
    let scores = (q.matmul(&k.t()?)? * f64::from(scale))?;
    let scores = if t > 1 {
        scores.broadcast_add(&causal_mask(t, start, q.device())?)?
    } else {
        scores
    };
    let weights = candle_nn::ops::softmax_last_dim(&scores)?;
    Ok(weights.matmul(&v)?.to_dtype(dtype)?)
}

/// cos and sin of every position's rotation, `(context, head_dim / 2)`,
/// computed in f32 and stored in `dtype`.
fn rope_tables(
    c: &LlamaConfig,
    dtype: DType,
    device: &Device,
) -> Result<(Tensor, Tensor), StageError> {
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
    Ok((
        angles.cos()?.to_dtype(dtype)?,
        angles.sin()?.to_dtype(dtype)?,
    ))
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
