//! A session's keys and values on one span.

use candle_core::Tensor;

use super::StageError;

/// Keys and values of every position a session has run through a span,
/// per block, `(1, kv_heads, positions, head_dim)` each.
#[derive(Clone, Debug)]
pub struct KvCache {
    layers: Vec<Option<(Tensor, Tensor)>>,
    len: usize,
}

impl KvCache {
    /// An empty cache for `blocks` blocks.
    pub fn new(blocks: usize) -> Self {
        Self {
            layers: vec![None; blocks],
            len: 0,
        }
    }

    /// Positions cached.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The same positions with every key and value tensor
    /// `(1, kv_heads, positions, head_dim)` passed through `f`: what a
    /// cache looks like after a trip through a lossy transfer codec.
    pub fn map_tensors(
        &self,
        mut f: impl FnMut(&Tensor) -> Result<Tensor, StageError>,
    ) -> Result<Self, StageError> {
        let layers = self
            .layers
            .iter()
            .map(|l| {
                l.as_ref()
                    .map(|(k, v)| Ok::<_, StageError>((f(k)?, f(v)?)))
                    .transpose()
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            layers,
            len: self.len,
        })
    }

    pub(super) fn layer(&mut self, i: usize) -> &mut Option<(Tensor, Tensor)> {
        &mut self.layers[i]
    }

    pub(super) fn advance(&mut self, positions: usize) {
        self.len += positions;
    }

    /// Forgets every position from `len` on (rejected speculative tokens,
    /// a replay from an earlier point).
    pub fn truncate(&mut self, len: usize) -> Result<(), StageError> {
        if len >= self.len {
            return Ok(());
        }
        for layer in &mut self.layers {
            if let Some((k, v)) = layer.take() {
                if len > 0 {
                    *layer = Some((k.narrow(2, 0, len)?, v.narrow(2, 0, len)?));
                }
            }
        }
        self.len = len;
        Ok(())
    }
}
