//! Model files a cheating node serves while claiming the honest one: the
//! same GGUF with half of its layers skipped, or with noise on its weights
//! (a stand-in for running at a lower precision than claimed).

use std::fs::File;
use std::io::{BufReader, BufWriter, Write};
use std::path::Path;

use anyhow::{bail, Context};
use candle_core::quantized::gguf_file::{self, Value};
use candle_core::quantized::QTensor;
use candle_core::{Device, Tensor};
use rand::{Rng, SeedableRng};

/// How the derived file differs from its source.
#[derive(Clone, Copy, Debug)]
pub enum Change {
    /// Keeps every other transformer block (0, 2, 4, ...), renumbered.
    SkipHalfLayers,
    /// Adds Gaussian noise of this share of each block weight's standard
    /// deviation, then quantizes back to the weight's own type.
    WeightNoise(f64),
}

/// Writes `from` with `change` applied to `to`.
pub fn derive(from: &Path, to: &Path, change: Change) -> anyhow::Result<()> {
    let mut reader = BufReader::new(File::open(from).with_context(|| from.display().to_string())?);
    let content = gguf_file::Content::read(&mut reader)?;
    let arch = match content.metadata.get("general.architecture") {
        Some(Value::String(a)) => a.clone(),
        _ => bail!("{} names no architecture", from.display()),
    };
    let count_key = format!("{arch}.block_count");
    let blocks = content
        .metadata
        .get(&count_key)
        .and_then(|v| v.to_u32().ok())
        .with_context(|| format!("{count_key} missing"))?;
    let mut metadata: Vec<(String, Value)> = content
        .metadata
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let mut tensors: Vec<(String, QTensor)> = Vec::new();
    let device = Device::Cpu;
    // Seeded: the same cheat file every time, so tests judge the same lie.
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x7011_6A7E);
    for name in content.tensor_infos.keys() {
        let block = name
            .strip_prefix("blk.")
            .and_then(|rest| rest.split('.').next())
            .and_then(|n| n.parse::<u32>().ok());
        let tensor = content.tensor(&mut reader, name, &device)?;
        match (change, block) {
            (Change::SkipHalfLayers, Some(b)) => {
                if b % 2 == 0 {
                    let renamed =
                        name.replacen(&format!("blk.{b}."), &format!("blk.{}.", b / 2), 1);
                    tensors.push((renamed, tensor));
                }
            }
            (Change::WeightNoise(share), Some(_)) if tensor.shape().dims().len() == 2 => {
                let dtype = tensor.dtype();
                let w = tensor.dequantize(&device)?;
                let std = w
                    .flatten_all()?
                    .sqr()?
                    .mean_all()?
                    .sqrt()?
                    .to_scalar::<f32>()?;
                let noise = Tensor::from_vec(
                    gaussian(&mut rng, w.elem_count(), (share as f32) * std),
                    w.shape(),
                    &device,
                )?;
                tensors.push((name.clone(), QTensor::quantize(&(w + noise)?, dtype)?));
            }
            _ => tensors.push((name.clone(), tensor)),
        }
    }
    if let Change::SkipHalfLayers = change {
        for (k, v) in &mut metadata {
            if *k == count_key {
                *v = Value::U32(blocks.div_ceil(2));
            }
        }
    }
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    let mut out = BufWriter::new(File::create(to).with_context(|| to.display().to_string())?);
    let meta: Vec<(&str, &Value)> = metadata.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let ts: Vec<(&str, &QTensor)> = tensors.iter().map(|(k, t)| (k.as_str(), t)).collect();
    gguf_file::write(&mut out, &meta, &ts)?;
    out.flush()?;
    Ok(())
}

/// `n` samples of N(0, std²) (Box-Muller).
fn gaussian(rng: &mut impl Rng, n: usize, std: f32) -> Vec<f32> {
    (0..n)
        .map(|_| {
            let u1: f32 = rng.random::<f32>().max(f32::MIN_POSITIVE);
            let u2: f32 = rng.random();
            std * (-2.0 * u1.ln()).sqrt() * (std::f32::consts::TAU * u2).cos()
        })
        .collect()
}
