//! A model's placement profile read from its GGUF file: the quantized size of
//! every transformer block, the embedding and the head, the KV-cache bytes per
//! token, and the work per token. What the placement planner prices.

use std::collections::BTreeMap;
use std::path::Path;

use candle_core::quantized::gguf_file;
use tollgate_placement::{LayerCost, ModelProfile};

/// Why a profile could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    /// The file is not a readable GGUF file.
    #[error("cannot read GGUF {0}")]
    Read(String),
    /// A needed metadata key is missing or has the wrong type.
    #[error("GGUF metadata '{0}' is missing")]
    Missing(String),
}

/// Bytes of a KV-cache element (llama.cpp and mistralrs keep f16 caches).
const KV_ELEMENT_BYTES: u64 = 2;

/// Reads the profile of the GGUF file at `path` (tensor directory only).
pub fn read(path: &Path) -> Result<ModelProfile, ProfileError> {
    let mut file = std::fs::File::open(path).map_err(|e| ProfileError::Read(e.to_string()))?;
    let content =
        gguf_file::Content::read(&mut file).map_err(|e| ProfileError::Read(e.to_string()))?;
    let meta_u64 = |key: &str| -> Result<u64, ProfileError> {
        content
            .metadata
            .get(key)
            .and_then(|v| v.to_u64().ok().or_else(|| v.to_u32().ok().map(u64::from)))
            .ok_or_else(|| ProfileError::Missing(key.to_string()))
    };
    let arch = content
        .metadata
        .get("general.architecture")
        .and_then(|v| v.to_string().ok())
        .cloned()
        .ok_or_else(|| ProfileError::Missing("general.architecture".into()))?;
    let n_layers = meta_u64(&format!("{arch}.block_count"))? as usize;
    let embd = meta_u64(&format!("{arch}.embedding_length"))?;
    let heads = meta_u64(&format!("{arch}.attention.head_count"))?.max(1);
    let kv_heads = meta_u64(&format!("{arch}.attention.head_count_kv")).unwrap_or(heads);

    let mut layer_bytes = vec![0u64; n_layers];
    let mut layer_params = vec![0u64; n_layers];
    let mut other: BTreeMap<&str, u64> = BTreeMap::new();
    for (name, info) in &content.tensor_infos {
        let elems = info.shape.elem_count() as u64;
        let bytes =
            elems / info.ggml_dtype.block_size() as u64 * info.ggml_dtype.type_size() as u64;
        let block = name
            .strip_prefix("blk.")
            .and_then(|rest| rest.split('.').next())
            .and_then(|i| i.parse::<usize>().ok());
        match block {
            Some(i) if i < n_layers => {
                layer_bytes[i] += bytes;
                layer_params[i] += elems;
            }
            _ => {
                other.insert(name.as_str(), bytes);
            }
        }
    }
    let embedding_bytes = other.get("token_embd.weight").copied().unwrap_or(0);
    // Tied embeddings: the head reads the embedding matrix, so a device that
    // holds the head needs its own copy.
    let lm_head = other
        .get("output.weight")
        .copied()
        .unwrap_or(embedding_bytes);
    let head_bytes = lm_head + other.get("output_norm.weight").copied().unwrap_or(0);
    let head_dim = embd / heads;
    let max_params = layer_params.iter().copied().max().unwrap_or(0);
    Ok(ModelProfile {
        layers: layer_bytes
            .into_iter()
            .map(|weight_bytes| LayerCost { weight_bytes })
            .collect(),
        embedding_bytes,
        head_bytes,
        kv_bytes_per_token_per_layer: 2 * kv_heads * head_dim * KV_ELEMENT_BYTES,
        flops_per_token_per_layer: 2 * max_params,
    })
}
