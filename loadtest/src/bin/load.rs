//! `tollgate-load`: open-loop constant-rate load against a chat completions URL.

use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use tollgate_loadtest::load::{loopback_uri, parse_header, run, LoadConfig};

/// Open-loop load generator: latency counts from each request's due time.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// Chat completions URL on a loopback address.
    #[arg(long)]
    url: String,
    /// Requests per second.
    #[arg(long, default_value_t = 1000.0)]
    rps: f64,
    /// Measured seconds.
    #[arg(long, default_value_t = 10.0)]
    duration_s: f64,
    /// Unmeasured seconds at the same rate before measuring.
    #[arg(long, default_value_t = 2.0)]
    warmup_s: f64,
    /// Ask for streamed answers (also reports time to first byte).
    #[arg(long)]
    stream: bool,
    /// Extra request header `name: value` (repeatable).
    #[arg(long = "header")]
    headers: Vec<String>,
    /// Model to ask for.
    #[arg(long, default_value = "instant-1")]
    model: String,
    /// Outstanding requests beyond which new ones count as `overload` errors.
    #[arg(long, default_value_t = 2000)]
    max_in_flight: usize,
    /// Seconds to wait for stragglers after the last request is due.
    #[arg(long, default_value_t = 10.0)]
    drain_s: f64,
    /// End with one line of JSON holding the figures.
    #[arg(long)]
    json: bool,
    /// Runtime worker threads.
    #[arg(long, default_value_t = 1)]
    threads: usize,
}

fn seconds(name: &str, s: f64) -> anyhow::Result<Duration> {
    Duration::try_from_secs_f64(s).with_context(|| format!("--{name} must be >= 0, got {s}"))
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let config = LoadConfig {
        url: loopback_uri(&args.url)?,
        rps: args.rps,
        duration: seconds("duration-s", args.duration_s)?,
        warmup: seconds("warmup-s", args.warmup_s)?,
        stream: args.stream,
        headers: args
            .headers
            .iter()
            .map(|h| parse_header(h))
            .collect::<anyhow::Result<_>>()?,
        model: args.model,
        max_in_flight: args.max_in_flight,
        drain: seconds("drain-s", args.drain_s)?,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads.max(1))
        .enable_all()
        .build()
        .context("building the tokio runtime")?;
    let report = runtime.block_on(run(config))?;
    print!("{}", report.table());
    if args.json {
        println!("{}", report.to_json());
    }
    // Stragglers past the drain limit must not keep the process alive.
    runtime.shutdown_timeout(Duration::from_millis(100));
    Ok(())
}
