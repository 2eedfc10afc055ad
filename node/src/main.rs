//! `tollgate-node`: serves one model to Tollgate gateways.
//!
//! `/v1/chat/completions` and `/v1/models` are OpenAI's; every answer carries
//! the node's signed attestation. `/node/info` says what the node serves and
//! at what price; `/node/score` runs a teacher-forced pass for audits.

mod server;
mod stage;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tollgate_engine::{EngineBuilder, Runtime};
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
    /// Serve one span of the model's layers to a pipeline (stage protocol).
    Stage(StageArgs),
}

#[derive(clap::Args)]
struct StageArgs {
    /// The GGUF model file (only the span's tensors are read).
    #[arg(long)]
    model: PathBuf,
    /// The blocks this stage runs, `a..b` (the first span also embeds
    /// tokens, the last also samples).
    #[arg(long, value_parser = parse_span)]
    layers: std::ops::Range<usize>,
    /// Address of the stage protocol (port 0 picks a free one).
    #[arg(long, default_value = "127.0.0.1:9200")]
    listen: SocketAddr,
    /// Number format of the attention and KV cache: f32, or f16 (what
    /// mistralrs computes on a CPU: a chain then picks exactly what it
    /// picks), or bf16. Every stage of a chain should use the same.
    #[arg(long, default_value = "f32")]
    attention: tollgate_engine::stage::AttentionPrecision,
}

fn parse_span(s: &str) -> Result<std::ops::Range<usize>, String> {
    let (a, b) = s
        .split_once("..")
        .ok_or_else(|| format!("{s:?} is not a span like 0..15"))?;
    let parse = |v: &str| v.trim().parse::<usize>().map_err(|e| format!("{v:?}: {e}"));
    Ok(parse(a)?..parse(b)?)
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
    /// Inference library: llama.cpp (CPU default) or mistralrs (CUDA builds' default).
    #[arg(long)]
    runtime: Option<Runtime>,
    /// CPU threads (default: every core).
    #[arg(long)]
    threads: Option<usize>,
    /// Sequences decoded together.
    #[arg(long, default_value_t = 8)]
    max_seqs: usize,
    /// Tokens of prompt plus completion per sequence.
    #[arg(long, default_value_t = 2048)]
    context_len: usize,
    /// Leading layers to put on GPU 0, overriding the placement plan.
    #[arg(long)]
    gpu_layers: Option<usize>,
    /// Attention kernel (llama.cpp runtime): auto (fused where the device
    /// supports it), on, or off.
    #[arg(long, default_value = "auto")]
    flash_attention: tollgate_engine::FlashAttention,
}

fn main() -> anyhow::Result<()> {
    let command = Cli::parse().command;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match command {
        Command::Serve(args) => runtime.block_on(serve(args)),
        Command::Stage(args) => runtime.block_on(serve_stage(args)),
    }
}

async fn serve_stage(args: StageArgs) -> anyhow::Result<()> {
    init_logging();
    let span = tollgate_engine::stage::LlamaSpan::load_with(
        &args.model,
        args.layers.clone(),
        &candle_core::Device::Cpu,
        args.attention,
    )
    .with_context(|| {
        format!(
            "loading blocks {:?} of {}",
            args.layers,
            args.model.display()
        )
    })?;
    let path = args.model.clone();
    let model = tokio::task::spawn_blocking(move || tollgate_engine::file_sha256(&path)).await??;
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    tracing::info!(layers = ?args.layers, "stage ready");
    println!("listening on {}", listener.local_addr()?);
    stage::serve(listener, span, model).await
}

fn init_logging() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    init_logging();
    let price_in =
        Price::parse(&args.price_in).with_context(|| format!("--price-in {}", args.price_in))?;
    let price_out =
        Price::parse(&args.price_out).with_context(|| format!("--price-out {}", args.price_out))?;
    let identity = Identity::load_or_create(&args.key_file)?;
    let mut builder = EngineBuilder::new(&args.model)
        .max_num_seqs(args.max_seqs)
        .context_len(args.context_len)
        .progress(true);
    if let Some(id) = &args.model_id {
        builder = builder.model_id(id.clone());
    }
    if let Some(runtime) = args.runtime {
        builder = builder.runtime(runtime);
    }
    let threads = args.threads.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    });
    // Plan first: the plan says how many layers the engine puts on the GPU.
    let plan = plan_placement(&args, threads);
    let gpu_layers = args
        .gpu_layers
        .unwrap_or_else(|| plan.as_ref().map(|p| p.chosen.gpu_layers(0)).unwrap_or(0));
    let engine = builder
        .threads(threads)
        .gpu_layers(gpu_layers)
        .flash_attention(args.flash_attention)
        .build()
        .await?;
    let placement = match &plan {
        Some(plan) => describe(&plan.chosen, engine.runtime().name(), threads),
        None => format!(
            "every layer on the CPU ({}, {threads} threads)",
            engine.runtime().name()
        ),
    };
    let threads = threads as u32;
    let info = NodeInfo {
        model: engine.id().to_string(),
        model_sha256: engine.sha256().to_string(),
        layers: engine.layers().map(|n| [0, n]),
        hardware: Hardware {
            class: "cpu".into(),
            cpu_threads: threads,
            gpus: Vec::new(),
        },
        runtime: engine.runtime().name().to_string(),
        placement,
        plan,
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

/// Runs the placement planner on the model's GGUF profile and this machine's
/// measured hardware. The engine applies its GPU prefix (llama.cpp's GPU
/// layer count, mistralrs's device map); without the `cuda` feature there is
/// no GPU and the plan is every layer on the CPU.
fn plan_placement(args: &ServeArgs, threads: usize) -> Option<tollgate_placement::Plan> {
    let profile = match tollgate_engine::profile::read(&args.model) {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!("no placement plan: {e}");
            return None;
        }
    };
    let hardware = tollgate_engine::hardware::measure(threads);
    let workload = tollgate_placement::Workload {
        context_tokens: args.context_len as u64,
        batch: args.max_seqs as u64,
    };
    match tollgate_placement::plan(&profile, &workload, &hardware) {
        Ok(plan) => {
            tracing::info!(
                strategy = %plan.chosen.strategy,
                predicted_tok_s = plan.chosen.predicted_tokens_per_s,
                "placement planned"
            );
            Some(plan)
        }
        Err(e) => {
            tracing::warn!("no placement plan: {e}");
            None
        }
    }
}

/// "cpu-only: layers 0..30 on the CPU (llama.cpp, 2 threads), predicted 120.5 tokens/s".
fn describe(p: &tollgate_placement::Placement, runtime: &str, threads: usize) -> String {
    let spans: Vec<String> = p
        .spans()
        .iter()
        .map(|s| {
            let device = match s.device {
                tollgate_placement::Device::Cpu => "the CPU".to_string(),
                tollgate_placement::Device::Gpu(i) => format!("GPU {i}"),
            };
            format!("layers {}..{} on {device}", s.start, s.start + s.count)
        })
        .collect();
    format!(
        "{}: {} ({runtime}, {threads} threads), predicted {:.1} tokens/s",
        p.strategy,
        spans.join(", "),
        p.predicted_tokens_per_s
    )
}
