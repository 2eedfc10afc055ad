//! Attention on the CPU, computed in the order mistralrs's CPU kernel
//! computes it, so that the stage runtime's numbers equal the reference
//! engine's bit for bit.
//!
//! Why not "close enough": the weights' matmuls quantize their input to
//! 8 bits per block, so a difference in the last bit of one value can move a
//! whole quantization step, and SmolLM2's logits then differ by ~0.04 nats
//! on average: a few percent of greedy picks. Equal numbers give equal picks.
//!
//! Two orders, as in mistralrs: rows of a prefill each run one online
//! softmax over the positions they may see; a single row (decoding) runs the
//! keys in tiles of [`TILE`] and merges the tiles' partial sums in order.

use candle_core::{Device, Tensor, WithDType};

use super::StageError;

/// Keys per tile when one row attends (mistralrs's `TILE_KV`).
const TILE: usize = 16;

/// `softmax(q kᵀ · scale) v` for queries `(1, heads, rows, dim)` at
/// positions `start..start + rows`, over keys and values
/// `(1, kv_heads, start + rows, dim)`; causal. The output has the queries'
/// shape and type.
pub(super) fn attend<T: WithDType>(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    start: usize,
    scale: f32,
) -> Result<Tensor, StageError> {
    let (_, heads, rows, dim) = q.dims4()?;
    let (_, kv_heads, keys, _) = k.dims4()?;
    if keys != start + rows || heads % kv_heads != 0 {
        return Err(StageError::Input(format!(
            "attention over {keys} keys for {rows} rows from {start}, {heads} heads on {kv_heads}"
        )));
    }
    let q: Vec<f32> = flat::<T>(q)?;
    let k: Vec<f32> = flat::<T>(k)?;
    let v: Vec<f32> = flat::<T>(v)?;
    let group = heads / kv_heads;
    let mut out = Vec::with_capacity(heads * rows * dim);
    for h in 0..heads {
        let kv = h / group;
        let k = &k[kv * keys * dim..(kv + 1) * keys * dim];
        let v = &v[kv * keys * dim..(kv + 1) * keys * dim];
        for r in 0..rows {
            let q = &q[(h * rows + r) * dim..(h * rows + r + 1) * dim];
            let row = if rows == 1 {
                tiled_row(q, k, v, keys, scale)
            } else {
                causal_row(q, k, v, start + r + 1, scale)
            };
            out.extend(row.into_iter().map(|x| T::from_f64(f64::from(x))));
        }
    }
    Ok(Tensor::from_vec(out, (1, heads, rows, dim), &Device::Cpu)?)
}

/// Every value of `t` as f32 (exact for f16, bf16 and f32).
fn flat<T: WithDType>(t: &Tensor) -> Result<Vec<f32>, StageError> {
    Ok(t.flatten_all()?
        .to_vec1::<T>()?
        .into_iter()
        .map(|x| x.to_f64() as f32)
        .collect())
}

/// mistralrs's `vec_dot_f32`: four products summed, then added.
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut sum = 0f32;
    let chunks = a.len() / 4;
    for i in 0..chunks {
        let j = i * 4;
        sum += a[j] * b[j] + a[j + 1] * b[j + 1] + a[j + 2] * b[j + 2] + a[j + 3] * b[j + 3];
    }
    for j in chunks * 4..a.len() {
        sum += a[j] * b[j];
    }
    sum
}

/// Running maximum, sum of weights and weighted values over keys.
struct Online {
    acc: Vec<f32>,
    sum: f32,
    max: f32,
}

impl Online {
    fn new(dim: usize) -> Self {
        Self {
            acc: vec![0f32; dim],
            sum: 0.0,
            max: f32::NEG_INFINITY,
        }
    }

    fn push(&mut self, score: f32, value: &[f32]) {
        let old = self.max;
        let (mut rescale, mut weight) = (1.0f32, 1.0f32);
        if score > self.max {
            self.max = score;
            rescale = (old - self.max).exp();
            for a in &mut self.acc {
                *a *= rescale;
            }
        } else {
            weight = (score - self.max).exp();
        }
        for (a, x) in self.acc.iter_mut().zip(value) {
            *a += x * weight;
        }
        self.sum = self.sum * rescale + weight;
    }

    fn finish(self) -> Vec<f32> {
        let inv = 1.0 / self.sum;
        self.acc.into_iter().map(|a| a * inv).collect()
    }
}

/// One prefill row: the keys `0..visible` in order.
fn causal_row(q: &[f32], k: &[f32], v: &[f32], visible: usize, scale: f32) -> Vec<f32> {
    let dim = q.len();
    let mut run = Online::new(dim);
    for p in 0..visible {
        let score = dot(q, &k[p * dim..(p + 1) * dim]) * scale;
        run.push(score, &v[p * dim..(p + 1) * dim]);
    }
    run.finish()
}

/// One decoding row: tiles of keys, then the tiles merged in order.
fn tiled_row(q: &[f32], k: &[f32], v: &[f32], keys: usize, scale: f32) -> Vec<f32> {
    let dim = q.len();
    let mut merged: Option<Online> = None;
    for tile in (0..keys).step_by(TILE) {
        let mut run = Online::new(dim);
        for p in tile..(tile + TILE).min(keys) {
            let score = dot(q, &k[p * dim..(p + 1) * dim]) * scale;
            run.push(score, &v[p * dim..(p + 1) * dim]);
        }
        merged = Some(match merged {
            None => run,
            Some(mut m) => {
                if m.max >= run.max {
                    let factor = (run.max - m.max).exp();
                    for (a, b) in m.acc.iter_mut().zip(&run.acc) {
                        *a += b * factor;
                    }
                    m.sum += run.sum * factor;
                    m
                } else {
                    let factor = (m.max - run.max).exp();
                    for (a, b) in m.acc.iter_mut().zip(&run.acc) {
                        *a = b + *a * factor;
                    }
                    m.sum = run.sum + m.sum * factor;
                    m.max = run.max;
                    m
                }
            }
        });
    }
    merged
        .map(Online::finish)
        .unwrap_or_else(|| vec![0f32; dim])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(q: &[f32], k: &[f32], v: &[f32], visible: usize, scale: f32) -> Vec<f32> {
        let dim = q.len();
        let scores: Vec<f32> = (0..visible)
            .map(|p| q.iter().zip(&k[p * dim..]).map(|(a, b)| a * b).sum::<f32>() * scale)
            .collect();
        let max = scores.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
        let w: Vec<f32> = scores.iter().map(|s| (s - max).exp()).collect();
        let total: f32 = w.iter().sum();
        (0..dim)
            .map(|d| (0..visible).map(|p| w[p] * v[p * dim + d]).sum::<f32>() / total)
            .collect()
    }

    fn values(n: usize, seed: u32) -> Vec<f32> {
        (0..n)
            .map(|i| (((i as u32).wrapping_mul(2654435761) ^ seed) % 1000) as f32 / 250.0 - 2.0)
            .collect()
    }

    #[test]
    fn both_orders_compute_softmax_attention() {
        let dim = 8;
        for keys in [1, 5, 16, 17, 40] {
            let (q, k, v) = (values(dim, 1), values(keys * dim, 2), values(keys * dim, 3));
            let want = naive(&q, &k, &v, keys, 0.3);
            for got in [
                tiled_row(&q, &k, &v, keys, 0.3),
                causal_row(&q, &k, &v, keys, 0.3),
            ] {
                for (a, b) in got.iter().zip(&want) {
                    assert!((a - b).abs() < 1e-5, "{keys} keys: {a} vs {b}");
                }
            }
        }
    }

    #[test]
    fn rows_see_only_their_past_and_shapes_are_checked() {
        let dim = 4;
        let (heads, kv_heads, rows, start) = (4, 2, 3, 2);
        let keys = start + rows;
        let q = Tensor::from_vec(
            values(heads * rows * dim, 4),
            (1, heads, rows, dim),
            &Device::Cpu,
        )
        .unwrap();
        let k = Tensor::from_vec(
            values(kv_heads * keys * dim, 5),
            (1, kv_heads, keys, dim),
            &Device::Cpu,
        )
        .unwrap();
        let v = Tensor::from_vec(
            values(kv_heads * keys * dim, 6),
            (1, kv_heads, keys, dim),
            &Device::Cpu,
        )
        .unwrap();
        let out = attend::<f32>(&q, &k, &v, start, 0.5).unwrap();
        let out = out.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let (qf, kf, vf) = (
            q.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            k.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            v.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
        );
        for h in 0..heads {
            let kv = h / (heads / kv_heads);
            for r in 0..rows {
                let want = naive(
                    &qf[(h * rows + r) * dim..][..dim],
                    &kf[kv * keys * dim..],
                    &vf[kv * keys * dim..],
                    start + r + 1,
                    0.5,
                );
                let got = &out[(h * rows + r) * dim..][..dim];
                for (a, b) in got.iter().zip(&want) {
                    assert!((a - b).abs() < 1e-5, "head {h} row {r}");
                }
            }
        }
        assert!(attend::<f32>(&q, &k, &v, start + 1, 0.5).is_err());
    }
}
