//! `tollgate-link`: a WAN link in user space, in front of one address.
//!
//! Relays TCP connections from `--listen` to `--upstream`, each direction
//! delayed by `--latency-ms` (one way) with `--jitter-ms` and paced to
//! `--bandwidth-mbit`. A control API on `--control` cuts and restores the
//! link (`POST /cut?mode=silent|reset`, `POST /restore`, `GET /stats`).
//! Exits by itself after `--seconds`, so no run outlives its test.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use tollgate_loadtest::link::{control, Direction, Link, LinkConfig};

#[derive(Parser)]
#[command(
    name = "tollgate-link",
    about = "User-space WAN link emulator (TCP relay)"
)]
struct Cli {
    /// Address clients connect to.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Address connections are relayed to.
    #[arg(long)]
    upstream: SocketAddr,
    /// One-way latency of each direction, in ms (RTT is twice this).
    #[arg(long, default_value_t = 0.0)]
    latency_ms: f64,
    /// Each chunk's one-way delay varies within +- this, in ms.
    #[arg(long, default_value_t = 0.0)]
    jitter_ms: f64,
    /// Bandwidth of each direction in Mbit/s (0: unlimited).
    #[arg(long, default_value_t = 0.0)]
    bandwidth_mbit: f64,
    /// Address of the control API.
    #[arg(long, default_value = "127.0.0.1:0")]
    control: SocketAddr,
    /// Seed of the jitter draws.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Exit after this many seconds.
    #[arg(long, default_value_t = 600)]
    seconds: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let ms = |v: f64| Duration::from_secs_f64(v.max(0.0) / 1e3);
    let direction = Direction {
        latency: ms(cli.latency_ms),
        jitter: ms(cli.jitter_ms),
        bandwidth: (cli.bandwidth_mbit > 0.0).then_some(cli.bandwidth_mbit * 1e6 / 8.0),
    };
    let link = Link::start(
        cli.listen,
        LinkConfig {
            upstream: cli.upstream,
            up: direction,
            down: direction,
            seed: cli.seed,
        },
    )
    .await?;
    let listener = tokio::net::TcpListener::bind(cli.control).await?;
    println!("control on {}", listener.local_addr()?);
    println!("listening on {}", link.addr());
    let api = control(link.handle());
    tokio::select! {
        r = axum::serve(listener, api) => r?,
        _ = tokio::time::sleep(Duration::from_secs(cli.seconds)) => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    Ok(())
}
