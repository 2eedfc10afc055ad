//! `tollgate-node`: serves one model to Tollgate gateways.
//!
//! `/v1/chat/completions` and `/v1/models` are OpenAI's; every answer carries
//! the node's signed attestation. `/node/info` says what the node serves and
//! at what price; `/node/score` runs a teacher-forced pass for audits.

mod server;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tollgate_engine::EngineBuilder;
use tollgate_policies::Price;
use tollgate_protocol::{Hardware, Identity, NodeInfo};

#[derive(Parser)]
#[command(
    name = "tollgate-node",
    version,
    about = "Serve a model to Tollgate gateways"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Load the model and serve it.
    Serve(ServeArgs),
}

#[derive(clap::Args)]
struct ServeArgs {
    /// The GGUF model file.
    #[arg(long)]
    model: PathBuf,
    /// The model id clients name (default: the file name).
    #[arg(long)]
    model_id: Option<String>,
    /// Address to listen on (port 0 picks a free one).
    #[arg(long, default_value = "127.0.0.1:9100")]
    listen: SocketAddr,
    /// Asking price per 1M input tokens, in fee-token units.
    #[arg(long, default_value = "0")]
    price_in: String,
    /// Asking price per 1M output tokens, in fee-token units.
    #[arg(long, default_value = "0")]
    price_out: String,
    /// Region label.
    #[arg(long, default_value = "unknown")]
    region: String,
    /// The node's secp256k1 key file (created on first start, mode 0600).
    #[arg(long, default_value = "node.key")]
    key_file: PathBuf,
}

fn main() -> anyhow::Result<()> {
    let Command::Serve(args) = Cli::parse().command;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(serve(args))
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let price_in =
        Price::parse(&args.price_in).with_context(|| format!("--price-in {}", args.price_in))?;
    let price_out =
        Price::parse(&args.price_out).with_context(|| format!("--price-out {}", args.price_out))?;
    let identity = Identity::load_or_create(&args.key_file)?;
    let mut builder = EngineBuilder::new(&args.model);
    if let Some(id) = &args.model_id {
        builder = builder.model_id(id.clone());
    }
    let engine = builder.build().await?;
    let threads = std::thread::available_parallelism()
        .map(|n| n.get() as u32)
        .unwrap_or(1);
    let info = NodeInfo {
        model: engine.id().to_string(),
        model_sha256: engine.sha256().to_string(),
        layers: None,
        hardware: Hardware {
            class: "cpu".into(),
            cpu_threads: threads,
            gpus: Vec::new(),
        },
        placement: "every layer on the CPU".into(),
        price_in_per_1m: price_in.to_string(),
        price_out_per_1m: price_out.to_string(),
        region: args.region.clone(),
        address: identity.address(),
    };
    tracing::info!(model = %info.model, address = %info.address, "node ready");
    let state = Arc::new(server::NodeState {
        engine,
        identity,
        info,
    });
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    // Tests and scripts wait for this exact line.
    println!("listening on {}", listener.local_addr()?);
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, server::router(state))
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}
