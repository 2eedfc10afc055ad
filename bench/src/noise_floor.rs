//! The floor under "equal output", measured in process: how often the
//! argmax moves when the hidden states crossing a hop lose nothing but the
//! last bit of every other value.
//!
//! SmolLM2's quantized matmuls round their inputs to 8-bit blocks, so a
//! change far below any codec's error still flips some of those roundings,
//! and the flips grow through the blocks into logit changes of about half a
//! logit: near-tied positions then pick otherwise. A codec cannot keep the
//! output more equal than this floor; the bench asks whether it stays on it.

use std::path::Path;

use candle_core::{Device, Tensor};
use tollgate_engine::stage::{
    argmax_rows, even_spans, KvCache, LlamaSpan, StageInput, StageOutput,
};

/// Picks compared and picks that differ.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Count {
    /// Picks that differ from f32's.
    pub differ: usize,
    /// Picks compared.
    pub total: usize,
}

impl Count {
    /// Counts the positions where `a` and `b` differ, over every answer.
    pub fn compare(a: &[Vec<u32>], b: &[Vec<u32>]) -> Self {
        a.iter().zip(b).fold(Self::default(), |c, (x, y)| Self {
            differ: c.differ + x.iter().zip(y).filter(|(p, q)| p != q).count(),
            total: c.total + x.len().min(y.len()),
        })
    }

    /// The share of picks that agree.
    pub fn agreement(self) -> f64 {
        1.0 - self.differ as f64 / self.total.max(1) as f64
    }
}

/// What the nudge did: teacher-forced picks against f32's, and the free-running
/// tokens generated before the first difference.
pub struct Floor {
    /// Teacher-forced picks (prompt + the f32 answer in one pass).
    pub forced: Count,
    /// Free-running tokens equal to the f32 answer before its first difference.
    pub free_prefix: usize,
    /// Free-running tokens generated.
    pub free_total: usize,
}

/// Flips the lowest mantissa bit of every other value: a relative change of
/// about 6e-8, far below f16's rounding.
pub fn nudge(values: &mut [f32]) {
    for v in values.iter_mut().step_by(2) {
        *v = f32::from_bits(v.to_bits() ^ 1);
    }
}

/// The one-sided two-proportion z statistic of `codec` differing more often
/// than `floor`; 0 when neither ever differs.
pub fn excess_z(codec: Count, floor: Count) -> f64 {
    let (n1, n2) = (codec.total.max(1) as f64, floor.total.max(1) as f64);
    let (p1, p2) = (codec.differ as f64 / n1, floor.differ as f64 / n2);
    let p = (codec.differ + floor.differ) as f64 / (n1 + n2);
    let se = (p * (1.0 - p) * (1.0 / n1 + 1.0 / n2)).sqrt();
    if se == 0.0 {
        return 0.0;
    }
    (p1 - p2) / se
}

/// A codec keeps output as equal as f32 itself does when it differs from f32
/// no more often than the nudge, at one-sided 5%.
pub fn at_the_floor(codec: Count, floor: Count) -> bool {
    excess_z(codec, floor) < 1.645
}

/// Measures the nudge over `prompts` with their f32 greedy `answers`, on the
/// two spans the bench's codec rows use.
pub fn measure(model: &Path, prompts: &[Vec<u32>], answers: &[Vec<u32>]) -> anyhow::Result<Floor> {
    let spans = even_spans(30, 2);
    let first = LlamaSpan::load(model, spans[0].clone(), &Device::Cpu)?;
    let second = LlamaSpan::load(model, spans[1].clone(), &Device::Cpu)?;
    let hop = Hop {
        first: &first,
        second: &second,
    };
    let (mut exact, mut nudged) = (Vec::new(), Vec::new());
    let (mut free_prefix, mut free_total) = (0, 0);
    for (p, a) in prompts.iter().zip(answers) {
        let rows = [p.as_slice(), &a[..a.len().saturating_sub(1)]].concat();
        let from = p.len().saturating_sub(1);
        exact.push(hop.forced(&rows, false)?[from..].to_vec());
        nudged.push(hop.forced(&rows, true)?[from..].to_vec());
        let free = hop.greedy(p, a.len())?;
        free_prefix += free.iter().zip(a).take_while(|(x, y)| x == y).count();
        free_total += free.len();
    }
    Ok(Floor {
        forced: Count::compare(&nudged, &exact),
        free_prefix,
        free_total,
    })
}

/// Two spans with a hop between them.
struct Hop<'a> {
    first: &'a LlamaSpan,
    second: &'a LlamaSpan,
}

impl Hop<'_> {
    /// The argmax of every row after `tokens`, fed on top of the caches.
    fn step(
        &self,
        tokens: Vec<u32>,
        nudged: bool,
        caches: &mut (KvCache, KvCache),
    ) -> anyhow::Result<Vec<u32>> {
        let StageOutput::Hidden(h) = self
            .first
            .forward(StageInput::Tokens(tokens), &mut caches.0)?
        else {
            anyhow::bail!("the first span gave logits");
        };
        let h = if nudged {
            let shape = h.dims2()?;
            let mut values = h.flatten_all()?.to_vec1::<f32>()?;
            nudge(&mut values);
            Tensor::from_vec(values, shape, &Device::Cpu)?
        } else {
            h
        };
        match self.second.forward(StageInput::Hidden(h), &mut caches.1)? {
            StageOutput::Logits(l) => Ok(argmax_rows(&l)?),
            StageOutput::Hidden(_) => anyhow::bail!("the second span gave hidden states"),
        }
    }

    fn caches(&self) -> (KvCache, KvCache) {
        (self.first.new_cache(), self.second.new_cache())
    }

    /// Every row's argmax, `rows` in one pass.
    fn forced(&self, rows: &[u32], nudged: bool) -> anyhow::Result<Vec<u32>> {
        self.step(rows.to_vec(), nudged, &mut self.caches())
    }

    /// Greedy tokens after `prompt`, nudged at every step.
    fn greedy(&self, prompt: &[u32], tokens: usize) -> anyhow::Result<Vec<u32>> {
        let mut caches = self.caches();
        let mut next = prompt.to_vec();
        let mut out = Vec::with_capacity(tokens);
        while out.len() < tokens {
            let Some(&t) = self.step(next, true, &mut caches)?.last() else {
                break;
            };
            out.push(t);
            next = vec![t];
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_nudge_moves_every_other_value_by_one_unit_in_the_last_place() {
        let mut v = vec![1.0f32, 1.0, -3.5, 2.0e-3, 0.0];
        nudge(&mut v);
        assert_eq!(v[0], f32::from_bits(1.0f32.to_bits() + 1));
        assert_eq!(v[1], 1.0);
        assert!(((v[2] + 3.5) / 3.5).abs() < 1e-6 && v[2] != -3.5);
        assert_eq!(v[3], 2.0e-3);
        assert!(v[4] != 0.0 && v[4].abs() < 1e-44);
    }

    #[test]
    fn counts_compare_answers_position_by_position() {
        let a = vec![vec![1, 2, 3], vec![4, 5]];
        let b = vec![vec![1, 9, 3], vec![4, 5, 6]];
        let c = Count::compare(&a, &b);
        assert_eq!(
            c,
            Count {
                differ: 1,
                total: 5
            }
        );
        assert!((c.agreement() - 0.8).abs() < 1e-12);
    }

    #[test]
    fn the_floor_test_tells_noise_from_a_lossy_codec() {
        let floor = Count {
            differ: 11,
            total: 512,
        };
        // 13 of 512 against 11 of 512: the same rate within noise.
        assert!(at_the_floor(
            Count {
                differ: 13,
                total: 512
            },
            floor
        ));
        // Fewer differences than the floor pass too.
        assert!(at_the_floor(
            Count {
                differ: 0,
                total: 512
            },
            floor
        ));
        // 63 of 512 is a lossy codec.
        assert!(!at_the_floor(
            Count {
                differ: 63,
                total: 512
            },
            floor
        ));
        assert!(
            excess_z(
                Count {
                    differ: 63,
                    total: 512
                },
                floor
            ) > 5.0
        );
        // Twice the floor's rate over many positions is caught as well.
        let big = Count {
            differ: 220,
            total: 10_000,
        };
        assert!(!at_the_floor(
            Count {
                differ: 440,
                total: 10_000
            },
            big
        ));
        assert_eq!(excess_z(Count::default(), Count::default()), 0.0);
    }
}
