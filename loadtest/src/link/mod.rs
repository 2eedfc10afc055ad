//! A user-space WAN link emulator: a TCP relay that delays each direction by
//! a one-way latency with jitter, paces it to a bandwidth, and can be cut.
//!
//! The kernel here has no traffic-control qdiscs (no `netem`, no `tbf`), so
//! multi-region runs put one of these in front of each remote node. Both
//! directions follow [`schedule`]; a cut is either *silent* (nothing passes,
//! connections hang and resume if the link comes back, as TCP rides out a
//! brief outage) or a *reset* (every connection closes and new ones are
//! closed at once) until [`LinkHandle::restore`].

pub mod schedule;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Query, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use bytes::Bytes;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

pub use schedule::{Direction, Schedule};

/// What one link does.
#[derive(Clone, Debug)]
pub struct LinkConfig {
    /// Where connections are relayed to.
    pub upstream: SocketAddr,
    /// Client to upstream.
    pub up: Direction,
    /// Upstream to client.
    pub down: Direction,
    /// Seeds the jitter draws.
    pub seed: u64,
}

/// Whether bytes pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LinkState {
    /// Bytes pass as configured.
    Up,
    /// Nothing passes; connections hang.
    Silent,
    /// Every connection is closed; new ones are closed at once.
    Reset,
}

/// Counters since the link started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkStats {
    /// Connections accepted.
    pub connections: u64,
    /// Bytes delivered upstream.
    pub up_bytes: u64,
    /// Bytes delivered to clients.
    pub down_bytes: u64,
}

#[derive(Default)]
struct Counters {
    connections: AtomicU64,
    up_bytes: AtomicU64,
    down_bytes: AtomicU64,
}

/// Cuts, restores and reads a running link.
#[derive(Clone)]
pub struct LinkHandle {
    state: Arc<watch::Sender<LinkState>>,
    counters: Arc<Counters>,
}

impl LinkHandle {
    /// Cuts the link: `LinkState::Silent` or `LinkState::Reset`.
    pub fn cut(&self, how: LinkState) {
        self.state.send_replace(how);
    }

    /// Lets bytes pass again.
    pub fn restore(&self) {
        self.state.send_replace(LinkState::Up);
    }

    /// Whether bytes pass now.
    pub fn state(&self) -> LinkState {
        *self.state.borrow()
    }

    /// Counters since the start.
    pub fn stats(&self) -> LinkStats {
        LinkStats {
            connections: self.counters.connections.load(Ordering::Relaxed),
            up_bytes: self.counters.up_bytes.load(Ordering::Relaxed),
            down_bytes: self.counters.down_bytes.load(Ordering::Relaxed),
        }
    }
}

/// A running link; dropping it closes every connection.
pub struct Link {
    addr: SocketAddr,
    handle: LinkHandle,
    accept: JoinHandle<()>,
}

impl Drop for Link {
    fn drop(&mut self) {
        self.handle.cut(LinkState::Reset);
        self.accept.abort();
    }
}

impl Link {
    /// Listens on `listen` and relays each connection to `config.upstream`.
    pub async fn start(listen: SocketAddr, config: LinkConfig) -> std::io::Result<Self> {
        let listener = TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let (state, _) = watch::channel(LinkState::Up);
        let handle = LinkHandle {
            state: Arc::new(state),
            counters: Arc::default(),
        };
        let accept = tokio::spawn(accept_loop(listener, config, handle.clone()));
        Ok(Self {
            addr,
            handle,
            accept,
        })
    }

    /// The address clients connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Control of this link.
    pub fn handle(&self) -> LinkHandle {
        self.handle.clone()
    }
}

async fn accept_loop(listener: TcpListener, config: LinkConfig, handle: LinkHandle) {
    let epoch = Instant::now();
    let mut n = 0u64;
    loop {
        let Ok((client, _)) = listener.accept().await else {
            continue;
        };
        n += 1;
        handle.counters.connections.fetch_add(1, Ordering::Relaxed);
        let (config, handle) = (config.clone(), handle.clone());
        tokio::spawn(async move {
            let mut state = handle.state.subscribe();
            // A connection made during a cut waits for the link (or dies
            // with a reset); only then does it reach the upstream.
            if !wait_up(&mut state).await {
                return;
            }
            let _ = client.set_nodelay(true);
            let Ok(server) = TcpStream::connect(config.upstream).await else {
                return;
            };
            let _ = server.set_nodelay(true);
            let (client_r, client_w) = client.into_split();
            let (server_r, server_w) = server.into_split();
            let seed = config.seed ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
            let up = pipe(
                client_r,
                server_w,
                Schedule::new(config.up),
                seed,
                epoch,
                handle.state.subscribe(),
                handle.counters.clone(),
                true,
            );
            let down = pipe(
                server_r,
                client_w,
                Schedule::new(config.down),
                seed ^ 1,
                epoch,
                handle.state.subscribe(),
                handle.counters.clone(),
                false,
            );
            tokio::join!(up, down);
        });
    }
}

/// Waits until the link is up: true; false once it is reset.
async fn wait_up(state: &mut watch::Receiver<LinkState>) -> bool {
    match state.wait_for(|s| *s != LinkState::Silent).await {
        Ok(s) => *s == LinkState::Up,
        Err(_) => false,
    }
}

/// Resolves once the link is reset.
async fn reset(mut state: watch::Receiver<LinkState>) {
    let _ = state.wait_for(|s| *s == LinkState::Reset).await;
}

/// One direction: reads what enters, delivers it on schedule.
#[allow(clippy::too_many_arguments)]
async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut schedule: Schedule,
    seed: u64,
    epoch: Instant,
    state: watch::Receiver<LinkState>,
    counters: Arc<Counters>,
    upward: bool,
) {
    // Bounded: a slow line pushes back on the sender, as a real one does.
    let (tx, mut rx) = mpsc::channel::<(Instant, Bytes)>(64);
    let mut read_state = state.clone();
    let reader = async move {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let mut buf = vec![0u8; schedule.max_chunk()];
        loop {
            if !wait_up(&mut read_state).await {
                return;
            }
            let n = tokio::select! {
                r = from.read(&mut buf) => match r {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                },
                // A cut stops reading at once; the read is cancel-safe.
                _ = read_state.changed() => continue,
            };
            let now = epoch.elapsed().as_secs_f64();
            let at = schedule.arrival(now, n, rng.random::<f64>());
            let at = epoch + std::time::Duration::from_secs_f64(at);
            if tx
                .send((at, Bytes::copy_from_slice(&buf[..n])))
                .await
                .is_err()
            {
                return;
            }
        }
    };
    let mut write_state = state.clone();
    let writer = async move {
        while let Some((at, bytes)) = rx.recv().await {
            tokio::time::sleep_until(at.into()).await;
            if !wait_up(&mut write_state).await || to.write_all(&bytes).await.is_err() {
                return;
            }
            let counter = if upward {
                &counters.up_bytes
            } else {
                &counters.down_bytes
            };
            counter.fetch_add(bytes.len() as u64, Ordering::Relaxed);
        }
        // The sender closed its side: pass the half-close on.
        let _ = to.shutdown().await;
    };
    tokio::select! {
        _ = async { tokio::join!(reader, writer) } => {}
        _ = reset(state) => {}
    }
}

#[derive(Deserialize)]
struct CutQuery {
    #[serde(default = "silent")]
    mode: LinkState,
}

fn silent() -> LinkState {
    LinkState::Silent
}

/// The control API: `POST /cut?mode=silent|reset`, `POST /restore`,
/// `GET /stats` (state and counters).
pub fn control(handle: LinkHandle) -> Router {
    async fn cut(State(h): State<LinkHandle>, Query(q): Query<CutQuery>) -> Json<LinkState> {
        if q.mode != LinkState::Up {
            h.cut(q.mode);
        }
        Json(h.state())
    }
    async fn restore(State(h): State<LinkHandle>) -> Json<LinkState> {
        h.restore();
        Json(h.state())
    }
    async fn stats(State(h): State<LinkHandle>) -> Json<serde_json::Value> {
        Json(serde_json::json!({"state": h.state(), "stats": h.stats()}))
    }
    Router::new()
        .route("/cut", post(cut))
        .route("/restore", post(restore))
        .route("/stats", get(stats))
        .with_state(handle)
}
