//! Bulk KV migration, measured in process: a session's keys and values on
//! the second of two spans (blocks 15..30) are moved to a fresh copy of that
//! span, by one of several transfers, and the rest of the answer is then
//! teacher-forced through the moved cache. Agreement is the share of those
//! positions whose argmax equals the unmoved cache's.

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use tollgate_engine::stage::{KvCache, LlamaSpan, StageError, StageInput, StageOutput};

/// One way to move a cache, and what it cost and kept.
pub struct Measured {
    /// What crosses the network.
    pub name: &'static str,
    /// Bytes sent, over every prompt.
    pub bytes: usize,
    /// Positions moved, over every prompt.
    pub positions: usize,
    /// Positions compared and positions whose argmax was kept.
    pub compared: usize,
    /// See `compared`.
    pub kept: usize,
}

/// How a cache crosses the network.
#[derive(Clone, Copy)]
enum Transfer {
    /// Keys and values as f32: the baseline.
    F32,
    /// Keys and values as f16.
    F16,
    /// Each 64-value row in 8 bits under its own f16 scale.
    Int8,
    /// Per block, keys (and values) of all positions as one
    /// (positions x 192) matrix cut to its top `rank` singular directions;
    /// the left factor (times the singular values) in 8 bits per column
    /// scale, the right one in f16.
    LowRank(usize),
    /// The span's input hidden states (f32): the new span runs them in the
    /// batches they first came in and computes the very same cache.
    SpanInputs,
}

impl Transfer {
    fn name(self) -> &'static str {
        match self {
            Self::F32 => "f32 KV",
            Self::F16 => "f16 KV",
            Self::Int8 => "int8 KV",
            Self::LowRank(8) => "SVD rank 8 + int8",
            Self::LowRank(16) => "SVD rank 16 + int8",
            Self::LowRank(_) => "SVD + int8",
            Self::SpanInputs => "span inputs",
        }
    }
}

const TRANSFERS: [Transfer; 6] = [
    Transfer::F32,
    Transfer::F16,
    Transfer::Int8,
    Transfer::LowRank(16),
    Transfer::LowRank(8),
    Transfer::SpanInputs,
];

/// Measures every transfer over `prompts` with their greedy `answers`.
pub fn measure(
    model: &Path,
    prompts: &[Vec<u32>],
    answers: &[Vec<u32>],
) -> anyhow::Result<Vec<Measured>> {
    let first = LlamaSpan::load(model, 0..15, &Device::Cpu)?;
    let second = LlamaSpan::load(model, 15..30, &Device::Cpu)?;
    let mut out: Vec<Measured> = TRANSFERS
        .iter()
        .map(|t| Measured {
            name: t.name(),
            bytes: 0,
            positions: 0,
            compared: 0,
            kept: 0,
        })
        .collect();
    for (prompt, answer) in prompts.iter().zip(answers) {
        if answer.len() < 16 {
            continue;
        }
        let half = answer.len() / 2;
        let prefix = [prompt.as_slice(), &answer[..half]].concat();
        let rest = answer[half..answer.len() - 1].to_vec();
        let mut c0 = first.new_cache();
        let inputs = hidden(first.forward(StageInput::Tokens(prefix), &mut c0)?)?;
        let mut c1 = second.new_cache();
        second.forward(StageInput::Hidden(inputs.clone()), &mut c1)?;
        let next = hidden(first.forward(StageInput::Tokens(rest), &mut c0)?)?;
        let want = picks(&second, &next, c1.clone())?;
        for (t, m) in TRANSFERS.iter().zip(&mut out) {
            let (moved, bytes) = match *t {
                Transfer::SpanInputs => {
                    let mut rebuilt = second.new_cache();
                    second.forward(StageInput::Hidden(inputs.clone()), &mut rebuilt)?;
                    (rebuilt, inputs.elem_count() * 4)
                }
                lossy => {
                    let mut bytes = 0;
                    let moved = c1.map_tensors(|x| {
                        let (y, b) = through(lossy, x)?;
                        bytes += b;
                        Ok(y)
                    })?;
                    (moved, bytes)
                }
            };
            let got = picks(&second, &next, moved)?;
            m.bytes += bytes;
            m.positions += c1.len();
            m.compared += want.len();
            m.kept += want.iter().zip(&got).filter(|(a, b)| a == b).count();
        }
    }
    Ok(out)
}

fn hidden(o: StageOutput) -> anyhow::Result<Tensor> {
    match o {
        StageOutput::Hidden(h) => Ok(h),
        StageOutput::Logits(_) => anyhow::bail!("the first span gave logits"),
    }
}

/// The argmax of each row the span gives for `next` on top of `cache`.
fn picks(span: &LlamaSpan, next: &Tensor, mut cache: KvCache) -> anyhow::Result<Vec<u32>> {
    match span.forward(StageInput::Hidden(next.clone()), &mut cache)? {
        StageOutput::Logits(l) => Ok(tollgate_engine::stage::argmax_rows(&l)?),
        StageOutput::Hidden(_) => anyhow::bail!("the second span gave hidden states"),
    }
}

/// `x` `(1, heads, positions, dim)` after a trip through `t`, and the bytes
/// the trip sent.
fn through(t: Transfer, x: &Tensor) -> Result<(Tensor, usize), StageError> {
    let n = x.elem_count();
    match t {
        Transfer::F32 | Transfer::SpanInputs => Ok((x.clone(), n * 4)),
        Transfer::F16 => Ok((x.to_dtype(DType::F16)?.to_dtype(DType::F32)?, n * 2)),
        Transfer::Int8 => {
            let (_, _, _, dim) = x.dims4()?;
            let rows = x.flatten_all()?.to_vec1::<f32>()?;
            let back: Vec<f32> = rows.chunks(dim).flat_map(int8_row).collect();
            Ok((
                Tensor::from_vec(back, x.shape(), x.device())?,
                n + (n / dim) * 2,
            ))
        }
        Transfer::LowRank(rank) => {
            let (_, heads, positions, dim) = x.dims4()?;
            // (positions, heads * dim): one matrix per block for all heads.
            let m = x.squeeze(0)?.transpose(0, 1)?.contiguous()?;
            let data = m.flatten_all()?.to_vec1::<f32>()?;
            let (back, bytes) = low_rank(&data, positions, heads * dim, rank);
            let back = Tensor::from_vec(back, (positions, heads, dim), x.device())?
                .transpose(0, 1)?
                .contiguous()?
                .unsqueeze(0)?;
            Ok((back, bytes))
        }
    }
}

/// A row in 8 bits under its max-abs scale (kept as f16).
fn int8_row(row: &[f32]) -> Vec<f32> {
    let max = row.iter().fold(0f32, |m, v| m.max(v.abs()));
    let scale = f32::from(half::f16::from_f32(max / 127.0));
    row.iter()
        .map(|v| {
            if scale == 0.0 {
                0.0
            } else {
                (v / scale).round().clamp(-127.0, 127.0) * scale
            }
        })
        .collect()
}

/// The best rank-`rank` approximation of a row-major (rows x cols) matrix,
/// as sent: left factor (with the singular values) in 8 bits per column,
/// right factor in f16. Returns the matrix rebuilt and the bytes sent.
pub fn low_rank(data: &[f32], rows: usize, cols: usize, rank: usize) -> (Vec<f32>, usize) {
    let m = nalgebra::DMatrix::from_row_slice(rows, cols, data);
    let svd = m.svd(true, true);
    let (Some(u), Some(v_t)) = (svd.u, svd.v_t) else {
        return (data.to_vec(), data.len() * 4);
    };
    let r = rank.min(svd.singular_values.len());
    let mut left = nalgebra::DMatrix::<f32>::zeros(rows, r);
    for j in 0..r {
        let column: Vec<f32> = (0..rows)
            .map(|i| u[(i, j)] * svd.singular_values[j])
            .collect();
        for (i, v) in int8_row(&column).into_iter().enumerate() {
            left[(i, j)] = v;
        }
    }
    let mut right = nalgebra::DMatrix::<f32>::zeros(r, cols);
    for i in 0..r {
        for j in 0..cols {
            right[(i, j)] = f32::from(half::f16::from_f32(v_t[(i, j)]));
        }
    }
    let back = left * right;
    let flat = (0..rows)
        .flat_map(|i| (0..cols).map(move |j| (i, j)))
        .map(|(i, j)| back[(i, j)])
        .collect();
    (flat, rows * r + r * 2 + r * cols * 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_rank_rebuilds_the_matrix_and_low_rank_keeps_its_main_direction() {
        // A rank-2 matrix plus a little noise.
        let (rows, cols) = (12, 6);
        let data: Vec<f32> = (0..rows * cols)
            .map(|k| {
                let (i, j) = ((k / cols) as f32, (k % cols) as f32);
                (i + 1.0) * (j - 2.5) + 0.5 * (i * 0.3).sin() * j + 0.01 * ((k * 7919) % 13) as f32
            })
            .collect();
        let err = |back: &[f32]| {
            back.iter()
                .zip(&data)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max)
        };
        let max = data.iter().fold(0f32, |m, v| m.max(v.abs()));
        let (full, _) = low_rank(&data, rows, cols, cols);
        assert!(err(&full) < max * 0.02, "full rank: {}", err(&full));
        let (two, bytes) = low_rank(&data, rows, cols, 2);
        assert!(err(&two) < max * 0.05, "rank 2: {}", err(&two));
        assert_eq!(bytes, rows * 2 + 2 * 2 + 2 * cols * 2);
        assert!(bytes < rows * cols * 4);
    }

    #[test]
    fn int8_rows_are_within_half_a_step() {
        let row: Vec<f32> = (0..64).map(|i| (i as f32 - 30.0) * 0.37).collect();
        let step = row.iter().fold(0f32, |m, v| m.max(v.abs())) / 127.0;
        for (a, b) in int8_row(&row).iter().zip(&row) {
            assert!((a - b).abs() <= step * 0.51, "{a} vs {b}");
        }
        assert!(int8_row(&[0.0; 4]).iter().all(|v| *v == 0.0));
    }
}
