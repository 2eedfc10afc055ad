//! The routing state one request sees: an immutable snapshot, replaced whole
//! by a reload. Nodes outlive snapshots, so their health and connection pools
//! survive a reload that does not change them.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;
use tollgate_backends::{
    Backend, EmbeddedBackend, NodeHealth, OpenAiBackend, OpenAiNode, PipelineBackend,
    TollgateBackend,
};
use tollgate_engine::Engine;
use tollgate_policies::Candidate;
use tollgate_protocol::stage::Codec;

use crate::config::{AccountConfig, Diagnostic, Loaded, NodeConfig, NodeKind};
use crate::keys::{KeyRecord, KeyStore};
use crate::trust_book::TrustBook;

/// One inference node as the gateway knows it.
pub struct Node {
    /// Its config entry.
    pub config: NodeConfig,
    /// How to call it.
    pub backend: Arc<dyn Backend>,
    /// Its passive health and circuit breaker.
    pub health: NodeHealth,
    tollgate: Option<Arc<TollgateBackend>>,
    pipeline: Option<Arc<PipelineBackend>>,
    trust: Arc<TrustBook>,
    models: ArcSwap<Vec<String>>,
    reachable: AtomicBool,
}

impl Node {
    fn new(
        config: NodeConfig,
        health: NodeHealth,
        engine: Option<Arc<Engine>>,
        model_path: Option<PathBuf>,
        trust: Arc<TrustBook>,
    ) -> Result<Self, String> {
        let mut models = config.models.clone();
        let mut tollgate = None;
        let mut pipeline = None;
        let backend: Arc<dyn Backend> = match (config.kind, engine) {
            (NodeKind::Openai, _) => Arc::new(
                OpenAiBackend::new(OpenAiNode {
                    base_url: config.url.clone().unwrap_or_default(),
                    api_key: config.api_key.clone(),
                    timeouts: config.timeouts.to_timeouts(),
                })
                .map_err(|e| e.to_string())?,
            ),
            (NodeKind::Tollgate, _) => {
                let backend = TollgateBackend::new(
                    config.url.as_deref().unwrap_or_default(),
                    config.api_key.clone(),
                    config.timeouts.to_timeouts(),
                )
                .map_err(|e| e.to_string())?;
                let backend = Arc::new(match &config.signer {
                    Some(signer) => backend.pinned(
                        signer
                            .parse()
                            .map_err(|_| format!("signer '{signer}' is not an address"))?,
                    ),
                    None => backend,
                });
                tollgate = Some(backend.clone());
                backend
            }
            (NodeKind::Embedded, Some(engine)) => {
                if models.is_empty() {
                    models.push(engine.id().to_string());
                }
                Arc::new(EmbeddedBackend::new(engine))
            }
            (NodeKind::Pipeline, _) => {
                let path = model_path.ok_or("a pipeline needs a model_path")?;
                if models.is_empty() {
                    models.push(file_stem(&path));
                }
                let codec = match &config.codec {
                    Some(c) => c.parse()?,
                    None => Codec::F16,
                };
                let backend = Arc::new(
                    PipelineBackend::load(
                        models[0].clone(),
                        &path,
                        config.stages.clone(),
                        codec,
                        config.attention.clone().unwrap_or_else(|| "f32".into()),
                        config.timeouts.to_timeouts(),
                    )
                    .map_err(|e| format!("reading the vocabulary of {}: {e}", path.display()))?,
                );
                pipeline = Some(backend.clone());
                backend
            }
            (NodeKind::Embedded, None) => return Err(
                "its model was not loaded at start; restart the gateway to add an embedded model"
                    .into(),
            ),
        };
        Ok(Self {
            models: ArcSwap::from_pointee(models),
            backend,
            health,
            tollgate,
            pipeline,
            trust,
            reachable: AtomicBool::new(true),
            config,
        })
    }

    /// The node's id.
    pub fn id(&self) -> &str {
        &self.config.id
    }

    /// The models it serves: from the config, else from its last model list.
    pub fn models(&self) -> Arc<Vec<String>> {
        self.models.load_full()
    }

    /// The node as a `tollgate-node` (signed answers, pinned model), if it is one.
    pub fn tollgate(&self) -> Option<&TollgateBackend> {
        self.tollgate.as_deref()
    }

    /// The node as a pipeline of stages, if it is one.
    pub fn pipeline(&self) -> Option<&PipelineBackend> {
        self.pipeline.as_deref()
    }

    /// Its trust: the audits' posterior, or the configured trust before any audit.
    pub fn trust(&self) -> f64 {
        self.trust.score(&self.config.id, self.config.trust)
    }

    /// Whether a failed audit took it out of routing.
    pub fn quarantined(&self) -> bool {
        self.trust.quarantined(&self.config.id)
    }

    /// Whether it serves `model`.
    pub fn serves(&self, model: &str) -> bool {
        self.models.load().iter().any(|m| m == model)
    }

    /// Records what the node's model list said (ignored when the config lists models).
    pub fn set_discovered_models(&self, models: Vec<String>) {
        if self.config.models.is_empty() {
            self.models.store(Arc::new(models));
        }
    }

    /// Records whether the node answered its last check.
    pub fn set_reachable(&self, ok: bool) {
        self.reachable.store(ok, Ordering::Relaxed);
    }

    /// Whether the last health check reached it.
    pub fn reachable(&self) -> bool {
        self.reachable.load(Ordering::Relaxed)
    }

    /// Whether routing may send it traffic at `now`.
    pub fn available(&self, now: Instant) -> bool {
        self.reachable() && self.health.is_available(now) && !self.quarantined()
    }

    /// The routing facts for a request to this node.
    pub fn candidate(&self, now: Instant) -> Candidate {
        let h = self.health.snapshot(now);
        Candidate {
            node: self.config.id.clone(),
            provider: self.config.provider.clone(),
            region: self.config.region.clone(),
            hardware: self.config.hardware.clone(),
            prices: self.config.prices,
            trust: self.trust(),
            tokens_per_s: h.tokens_per_s,
            ttft_ms: h.ttft_ms,
            error_rate: h.error_rate,
            healthy: self.reachable() && h.available && !self.quarantined(),
        }
    }
}

/// A model file's name without its extension: a model id nobody configured.
fn file_stem(path: &std::path::Path) -> String {
    path.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "model".into())
}

/// Everything one request reads, consistent with itself.
pub struct Snapshot {
    /// Counts reloads; 1 is the state loaded at start.
    pub generation: u64,
    /// The config and policies it was built from.
    pub loaded: Loaded,
    /// Nodes in config order.
    pub nodes: Vec<Arc<Node>>,
    /// Accounts by id.
    pub accounts: HashMap<String, AccountConfig>,
    /// Live API keys by sha256.
    pub keys: HashMap<String, KeyRecord>,
}

impl Snapshot {
    /// Builds a snapshot, reusing the nodes of `previous` whose config is
    /// unchanged; embedded nodes get the engines loaded at start (by GGUF path).
    pub fn build(
        loaded: Loaded,
        previous: Option<&Snapshot>,
        generation: u64,
        engines: &HashMap<PathBuf, Arc<Engine>>,
        trust: &Arc<TrustBook>,
    ) -> Result<Self, Vec<Diagnostic>> {
        let keys_path = loaded.resolve(&loaded.config.keys_path());
        let keys = KeyStore::read(&keys_path)
            .map_err(|e| vec![Diagnostic::file(&keys_path, e.to_string())])?;
        let mut nodes = Vec::with_capacity(loaded.config.nodes.len());
        let mut errors = Vec::new();
        for cfg in &loaded.config.nodes {
            let reused = previous
                .and_then(|p| p.node(&cfg.id))
                .filter(|n| n.config == *cfg);
            match reused {
                Some(n) => nodes.push(n.clone()),
                None => {
                    let path = cfg.model_path.as_ref().map(|p| loaded.resolve(p));
                    let engine = path.as_ref().and_then(|p| engines.get(p).cloned());
                    let health = NodeHealth::new(loaded.config.health.breaker());
                    match Node::new(cfg.clone(), health, engine, path, trust.clone()) {
                        Ok(n) => nodes.push(Arc::new(n)),
                        Err(e) => errors.push(Diagnostic::file(
                            &loaded.path,
                            format!("node '{}': {e}", cfg.id),
                        )),
                    }
                }
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        let accounts = loaded
            .config
            .accounts
            .iter()
            .map(|a| (a.id.clone(), a.clone()))
            .collect();
        Ok(Self {
            generation,
            nodes,
            accounts,
            keys: keys.index(),
            loaded,
        })
    }

    /// A node by id.
    pub fn node(&self, id: &str) -> Option<&Arc<Node>> {
        self.nodes.iter().find(|n| n.id() == id)
    }

    /// Routing facts of every node that serves `model`, healthy or not.
    pub fn candidates(&self, model: &str, now: Instant) -> Vec<Candidate> {
        self.nodes
            .iter()
            .filter(|n| n.serves(model))
            .map(|n| n.candidate(now))
            .collect()
    }

    /// Models served by at least one available node, sorted.
    pub fn served_models(&self, now: Instant) -> Vec<String> {
        let mut models: Vec<String> = self
            .nodes
            .iter()
            .filter(|n| n.available(now))
            .flat_map(|n| n.models().iter().cloned().collect::<Vec<_>>())
            .collect();
        models.sort();
        models.dedup();
        models
    }
}
