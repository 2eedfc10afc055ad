//! `tollgate-cheat-node`: a node that lies, for testing Tollgate's audits.
//!
//! `serve` puts a lying front on a real `tollgate-node`; `derive` writes the
//! altered model files a lying node runs.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};
use tollgate_loadtest::cheat::{self, derive, CheatConfig, Lie};
use tollgate_protocol::Identity;

#[derive(Parser)]
#[command(
    name = "tollgate-cheat-node",
    about = "A dishonest node, for testing audits"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the node protocol in front of a real node, lying as told.
    Serve {
        /// The real node that generates.
        #[arg(long)]
        upstream: String,
        /// The node whose model (id and file hash) this one claims.
        #[arg(long)]
        imitate: String,
        /// The lie.
        #[arg(long, value_enum)]
        lie: Lie,
        /// Answer honestly for this many requests first.
        #[arg(long, default_value_t = 0)]
        honest_first: u64,
        /// Hold every answer this many milliseconds before sending its first byte.
        #[arg(long, default_value_t = 0)]
        delay_ms: u64,
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: SocketAddr,
        /// Signing key file (created when missing).
        #[arg(long)]
        key_file: Option<PathBuf>,
    },
    /// Write an altered copy of a GGUF model.
    Derive {
        /// The source GGUF.
        #[arg(long)]
        from: PathBuf,
        /// Where the altered copy goes.
        #[arg(long)]
        to: PathBuf,
        /// Keep every other transformer block.
        #[arg(long, conflicts_with = "weight_noise")]
        skip_half_layers: bool,
        /// Add noise of this share of each weight's standard deviation.
        #[arg(long)]
        weight_noise: Option<f64>,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Serve {
            upstream,
            imitate,
            lie,
            honest_first,
            delay_ms,
            listen,
            key_file,
        } => {
            let identity = match key_file {
                Some(path) => Identity::load_or_create(&path)?,
                None => Identity::random(),
            };
            let app = cheat::router(
                CheatConfig {
                    upstream,
                    imitate,
                    lie,
                    honest_first,
                    delay: std::time::Duration::from_millis(delay_ms),
                },
                identity,
            );
            let listener = tokio::net::TcpListener::bind(listen).await?;
            // Test harnesses wait for this exact line.
            println!("listening on {}", listener.local_addr()?);
            axum::serve(listener, app).await?;
        }
        Command::Derive {
            from,
            to,
            skip_half_layers,
            weight_noise,
        } => {
            let change = match (skip_half_layers, weight_noise) {
                (true, _) => derive::Change::SkipHalfLayers,
                (false, Some(share)) => derive::Change::WeightNoise(share),
                (false, None) => anyhow::bail!("say --skip-half-layers or --weight-noise SHARE"),
            };
            derive::derive(&from, &to, change)?;
            println!("{}", to.display());
        }
    }
    Ok(())
}
