//! The instant OpenAI-compatible upstream: a fast fake model server with faults.

mod body;
mod completion;
mod error;
mod handler;
mod request;
mod settings;

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

pub use settings::{ControlPatch, ControlView, Fault, Settings, Snapshot};

/// How to start an upstream.
#[derive(Debug, Clone)]
pub struct Config {
    /// Address to bind; port 0 picks a free one.
    pub listen: SocketAddr,
    /// Model ids served.
    pub models: Vec<String>,
    /// Name reported in `/control`, `x-upstream-node` and `system_fingerprint`.
    pub node_name: String,
    /// Initial fault and pacing.
    pub initial: Snapshot,
}

impl Config {
    /// A well-behaved instant server for `models` on a free loopback port.
    pub fn instant(models: &[&str]) -> Config {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            models: models.iter().map(|m| m.to_string()).collect(),
            node_name: String::new(),
            initial: Snapshot {
                fault: Fault::None,
                latency_ms: 0,
                tokens_per_s: 0.0,
                completion_tokens: 16,
            },
        }
    }
}

/// State shared by every connection.
struct Shared {
    settings: Settings,
    models: Vec<String>,
    node_name: String,
    fingerprint: String,
    id_prefix: String,
    next_id: AtomicU64,
    models_body: Bytes,
    model_bodies: HashMap<String, Bytes>,
}

impl Shared {
    fn new(config: Config) -> Shared {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let created = now.as_secs();
        let model = |id: &str| json!({"id": id, "object": "model", "created": created, "owned_by": "tollgate-upstream"});
        let models_body = json!({
            "object": "list",
            "data": config.models.iter().map(|m| model(m)).collect::<Vec<_>>(),
        });
        let model_bodies = config
            .models
            .iter()
            .map(|m| (m.clone(), Bytes::from(model(m).to_string())))
            .collect();
        let fingerprint = if config.node_name.is_empty() {
            "fp_tollgate".to_owned()
        } else {
            format!("fp_{}", config.node_name)
        };
        Shared {
            settings: Settings::new(config.initial),
            // Ids must differ across restarts of a node, so the prefix carries the
            // start time; the counter makes them unique within one run.
            id_prefix: format!("chatcmpl-{:08x}", now.subsec_nanos() ^ (created as u32)),
            next_id: AtomicU64::new(0),
            models_body: Bytes::from(models_body.to_string()),
            model_bodies,
            models: config.models,
            node_name: config.node_name,
            fingerprint,
        }
    }
}

/// A running upstream; dropping it stops accepting connections.
pub struct Upstream {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: JoinHandle<()>,
}

impl Upstream {
    /// Binds and starts serving on the current tokio runtime.
    pub async fn start(config: Config) -> io::Result<Upstream> {
        let listener = TcpListener::bind(config.listen).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::new(config));
        let accept = tokio::spawn(accept_loop(listener, shared.clone()));
        Ok(Upstream {
            addr,
            shared,
            accept,
        })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The live settings, for in-process tests.
    pub fn settings(&self) -> &Settings {
        &self.shared.settings
    }

    /// What `GET /control` would answer.
    pub fn view(&self) -> ControlView {
        self.shared
            .settings
            .view(&self.shared.node_name, &self.shared.models)
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    let builder = auto::Builder::new(TokioExecutor::new());
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(_) => {
                // Out of descriptors or a reset during the handshake: back off a
                // little instead of spinning on the error.
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        // Small SSE chunks must not wait for Nagle.
        let _ = stream.set_nodelay(true);
        let shared = shared.clone();
        let builder = builder.clone();
        tokio::spawn(async move {
            let service =
                hyper::service::service_fn(move |req| handler::handle(shared.clone(), req));
            // Connection errors are the client's business (or a fault we caused).
            let _ = builder
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
