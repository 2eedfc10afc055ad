//! What the real-model audit tests share: the SmolLM2 GGUF that
//! `scripts/fetch-model` fetches, loaded as the reference engine.

use std::path::PathBuf;
use std::sync::Arc;

use tollgate_engine::{Engine, EngineBuilder};

/// The model file (`TOLLGATE_MODEL` overrides it).
fn model_path() -> PathBuf {
    let crate_dir = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    std::env::var_os("TOLLGATE_MODEL")
        .map(PathBuf::from)
        .unwrap_or_else(|| crate_dir.join("../models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"))
}

/// The real model, loaded; a missing file fails the test with the fix.
pub async fn engine() -> Arc<Engine> {
    let path = model_path();
    assert!(
        path.exists(),
        "{} is missing: run scripts/fetch-model",
        path.display()
    );
    Arc::new(EngineBuilder::new(path).build().await.expect("model loads"))
}
