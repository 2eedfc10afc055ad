//! The Tollgate side of `make bench-engine`: the embedded engine, in process,
//! on the workload `scripts/bench-engine` also gives llama.cpp. Prints one
//! JSON object.

use std::time::Instant;

use anyhow::{bail, Context};
use clap::Parser;
use futures_util::StreamExt;
use serde_json::{json, Value};
use tollgate_engine::{Engine, EngineBuilder, Runtime};

#[derive(Parser)]
struct Args {
    /// The GGUF file.
    #[arg(long)]
    model: std::path::PathBuf,
    /// CPU threads.
    #[arg(long)]
    threads: usize,
    /// The workload, as JSON (see scripts/bench-engine).
    #[arg(long)]
    spec: String,
    /// llama.cpp or mistralrs.
    #[arg(long, default_value = "llama.cpp")]
    runtime: Runtime,
}

/// One streamed greedy completion: (time to first token, total, tokens).
async fn stream_once(
    engine: &Engine,
    messages: &Value,
    max_tokens: u64,
    bias: &Value,
) -> anyhow::Result<(f64, f64, u64)> {
    let body = json!({"messages": messages, "max_tokens": max_tokens, "temperature": 0, "logit_bias": bias, "stream": true});
    let start = Instant::now();
    let mut first = None;
    let mut tokens = 0;
    let mut chunks = engine.stream(&body, true).await?;
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk?;
        if first.is_none()
            && chunk
                .choices
                .iter()
                .any(|c| c.delta.content.as_deref().is_some_and(|t| !t.is_empty()))
        {
            first = Some(start.elapsed().as_secs_f64());
        }
        if let Some(Some(usage)) = chunk.usage {
            tokens = usage.completion_tokens;
        }
    }
    let total = start.elapsed().as_secs_f64();
    Ok((first.context("no token came back")?, total, tokens))
}

fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| {
                l.split_whitespace()
                    .nth(1)
                    .and_then(|v| v.parse::<f64>().ok())
            })
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(f64::NAN)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let spec: Value = serde_json::from_str(&args.spec).context("--spec")?;
    let streams = spec["streams"].as_u64().unwrap_or(8) as usize;
    let engine = EngineBuilder::new(&args.model)
        .runtime(args.runtime)
        .threads(args.threads)
        .max_num_seqs(streams)
        .context_len(spec["context_len"].as_u64().unwrap_or(2048) as usize)
        .build()
        .await?;
    let (short, long, bias) = (
        &spec["short_messages"],
        &spec["long_messages"],
        &spec["logit_bias"],
    );
    let new = spec["new_tokens"].as_u64().unwrap_or(256);

    stream_once(&engine, short, 8, bias).await?;
    let (ttft, total, tokens) = stream_once(&engine, short, new, bias).await?;
    if tokens < 2 {
        bail!("only {tokens} tokens generated");
    }
    let decode = (tokens - 1) as f64 / (total - ttft);
    let long_prompt_tokens = engine
        .tokenize_chat(&json!({"messages": long}))
        .await?
        .len();
    let (pre_ttft, _, _) = stream_once(&engine, long, 1, bias).await?;
    let prefill = long_prompt_tokens as f64 / pre_ttft;

    let engine = std::sync::Arc::new(engine);
    let start = Instant::now();
    let tasks: Vec<_> = (0..streams)
        .map(|_| {
            let (engine, short, bias) = (engine.clone(), short.clone(), bias.clone());
            tokio::spawn(async move { stream_once(&engine, &short, new, &bias).await })
        })
        .collect();
    let mut results = Vec::new();
    for t in tasks {
        results.push(t.await??);
    }
    let wall = start.elapsed().as_secs_f64();
    let agg = results.iter().map(|r| r.2).sum::<u64>() as f64 / wall;
    let mut ttft8: Vec<f64> = results.iter().map(|r| r.0).collect();
    ttft8.sort_by(f64::total_cmp);

    println!(
        "{}",
        json!({
            "engine": format!("tollgate ({})", args.runtime.name()),
            "ttft_ms": ttft * 1000.0,
            "decode_tok_s": decode,
            "prefill_tok_s": prefill,
            "agg8_tok_s": agg,
            "ttft8_p50_ms": ttft8[ttft8.len() / 2] * 1000.0,
            "completion_tokens": tokens,
            "long_prompt_tokens": long_prompt_tokens,
            "peak_rss_mb": peak_rss_mb(),
        })
    );
    Ok(())
}
