//! `tollgate-upstream`: an instant OpenAI-compatible server with injectable faults.

use std::io::Write as _;
use std::net::SocketAddr;

use anyhow::Context as _;
use clap::Parser;
use tollgate_loadtest::upstream::{Config, Fault, Snapshot, Upstream};

/// Instant OpenAI-compatible upstream for benchmarks and fault-injection tests.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// Address to listen on; port 0 picks a free port (printed on stdout).
    #[arg(long, default_value = "127.0.0.1:9001")]
    listen: SocketAddr,
    /// Model id to serve (repeatable).
    #[arg(long = "model", default_values_t = ["instant-1".to_string()])]
    models: Vec<String>,
    /// Delay before response headers of chat completions.
    #[arg(long, default_value_t = 0)]
    latency_ms: u64,
    /// Streaming pace; 0 sends as fast as possible.
    #[arg(long, default_value_t = 0.0)]
    tokens_per_s: f64,
    /// Tokens per answer unless the request caps them lower.
    #[arg(long, default_value_t = 16)]
    completion_tokens: u64,
    /// none|refuse|500|429|hang|die-mid-stream|bad-json (also settable via POST /control).
    #[arg(long, default_value = "none")]
    fault: Fault,
    /// Name reported in /control, the x-upstream-node header and system_fingerprint.
    #[arg(long, default_value = "")]
    node_name: String,
    /// Runtime worker threads; one core serves thousands of requests a second.
    #[arg(long, default_value_t = 1)]
    threads: usize,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if !(args.tokens_per_s.is_finite() && args.tokens_per_s >= 0.0) {
        anyhow::bail!("--tokens-per-s must be >= 0");
    }
    let config = Config {
        listen: args.listen,
        models: args.models,
        node_name: args.node_name,
        initial: Snapshot {
            fault: args.fault,
            latency_ms: args.latency_ms,
            tokens_per_s: args.tokens_per_s,
            completion_tokens: args.completion_tokens,
        },
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads.max(1))
        .enable_all()
        .build()
        .context("building the tokio runtime")?;
    runtime.block_on(async move {
        let upstream = Upstream::start(config)
            .await
            .with_context(|| format!("binding {}", args.listen))?;
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "listening on {}", upstream.addr())?;
        stdout.flush()?;
        drop(stdout);
        shutdown_signal().await;
        Ok(())
    })
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
