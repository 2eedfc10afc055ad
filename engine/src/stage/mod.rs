//! The stage runtime: a llama-family model split into layer spans, each
//! run on its own (by one node of a pipeline), on candle's quantized CPU and
//! GPU kernels.
//!
//! A [`LlamaSpan`] loads only its blocks of a GGUF file; it takes tokens
//! (first span) or hidden states and gives hidden states or logits (last
//! span), keeping each session's keys and values in a [`KvCache`]. A
//! [`LocalChain`] runs spans in order in one process: the reference that a
//! chain of nodes must equal.

mod attention;
mod cache;
mod config;
mod span;

use std::ops::Range;
use std::path::Path;

pub use cache::KvCache;
pub use config::LlamaConfig;
pub use span::{argmax_rows, AttentionPrecision, LlamaSpan, StageInput, StageOutput};

/// Why a span could not load or run.
#[derive(Debug, thiserror::Error)]
pub enum StageError {
    /// The model file could not be read.
    #[error("reading the model: {0}")]
    Io(#[from] std::io::Error),
    /// A tensor operation failed.
    #[error("tensor: {0}")]
    Tensor(#[from] candle_core::Error),
    /// The GGUF file lacks what a llama model needs.
    #[error("model file: {0}")]
    Format(String),
    /// The model is not one the stage runtime runs.
    #[error("unsupported model: {0}")]
    Unsupported(String),
    /// A span outside the model's blocks.
    #[error("span {}..{} is not within the model's {layers} blocks", span.start, span.end)]
    Span {
        /// The span asked for.
        span: Range<usize>,
        /// Blocks in the model.
        layers: usize,
    },
    /// Input a span cannot take.
    #[error("input: {0}")]
    Input(String),
}

/// `layers` blocks cut into `parts` contiguous spans of near-equal size.
pub fn even_spans(layers: usize, parts: usize) -> Vec<Range<usize>> {
    let parts = parts.clamp(1, layers.max(1));
    (0..parts)
        .map(|i| (i * layers / parts)..((i + 1) * layers / parts))
        .collect()
}

/// Spans run in order in one process, one session at a time.
pub struct LocalChain {
    spans: Vec<LlamaSpan>,
}

impl LocalChain {
    /// Loads the model at `path` cut at `spans` (which must tile its blocks).
    pub fn load(
        path: &Path,
        spans: &[Range<usize>],
        device: &candle_core::Device,
    ) -> Result<Self, StageError> {
        Self::load_with(path, spans, device, AttentionPrecision::default())
    }

    /// [`LocalChain::load`] with every span's attention at `precision`.
    pub fn load_with(
        path: &Path,
        spans: &[Range<usize>],
        device: &candle_core::Device,
        precision: AttentionPrecision,
    ) -> Result<Self, StageError> {
        let spans = spans
            .iter()
            .map(|s| LlamaSpan::load_with(path, s.clone(), device, precision))
            .collect::<Result<Vec<_>, _>>()?;
        let tiled = spans.first().is_some_and(LlamaSpan::is_first)
            && spans.last().is_some_and(LlamaSpan::is_last)
            && spans
                .windows(2)
                .all(|w| w[0].span().end == w[1].span().start);
        if !tiled {
            return Err(StageError::Input(
                "the spans must run from the first block to the last without gaps".into(),
            ));
        }
        Ok(Self { spans })
    }

    /// Fresh caches, one per span.
    pub fn new_session(&self) -> Vec<KvCache> {
        self.spans.iter().map(LlamaSpan::new_cache).collect()
    }

    /// Runs `tokens` through every span; the logits of each position.
    pub fn forward(
        &self,
        tokens: Vec<u32>,
        caches: &mut [KvCache],
    ) -> Result<candle_core::Tensor, StageError> {
        let mut input = StageInput::Tokens(tokens);
        for (span, cache) in self.spans.iter().zip(caches.iter_mut()) {
            input = match span.forward(input, cache)? {
                StageOutput::Hidden(h) => StageInput::Hidden(h),
                StageOutput::Logits(l) => return Ok(l),
            };
        }
        Err(StageError::Input("the chain has no last span".into()))
    }

    /// Greedy continuation of `prompt`: up to `max_tokens`, stopping after
    /// any of `stop`.
    pub fn greedy(
        &self,
        prompt: &[u32],
        max_tokens: usize,
        stop: &[u32],
    ) -> Result<Vec<u32>, StageError> {
        let mut caches = self.new_session();
        let mut out = Vec::with_capacity(max_tokens);
        let mut next = prompt.to_vec();
        while out.len() < max_tokens {
            let logits = self.forward(next, &mut caches)?;
            let rows = argmax_rows(&logits)?;
            let Some(&token) = rows.last() else { break };
            out.push(token);
            if stop.contains(&token) {
                break;
            }
            next = vec![token];
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn even_spans_tile_the_blocks() {
        assert_eq!(even_spans(30, 1), vec![0..30]);
        assert_eq!(even_spans(30, 2), vec![0..15, 15..30]);
        assert_eq!(even_spans(30, 4), vec![0..7, 7..15, 15..22, 22..30]);
        assert_eq!(even_spans(3, 5), vec![0..1, 1..2, 2..3]);
        for parts in 1..10 {
            let s = even_spans(30, parts);
            assert_eq!(s.first().unwrap().start, 0);
            assert_eq!(s.last().unwrap().end, 30);
            assert!(s
                .windows(2)
                .all(|w| w[0].end == w[1].start && !w[0].is_empty()));
        }
    }
}
