//! `tollgate-bench-ledger`: durable receipts per second into the SQLite
//! ledger, or with `--postgres URL` into the shared PostgreSQL one.
//!
//! Many concurrent writers (as under gateway load) each record receipts and
//! wait for durability; group commit lets them share fsyncs. Prints one JSON line.

use std::sync::Arc;
use std::time::Instant;

use clap::Parser;
use tollgate_ledger::{Ledger, Outcome, PostgresLedger, Receipt, SqliteLedger, UsageSource};

#[derive(Parser)]
struct Args {
    /// Receipts to record.
    #[arg(long, default_value_t = 20_000)]
    receipts: usize,
    /// Concurrent writers.
    #[arg(long, default_value_t = 256)]
    writers: usize,
    /// Directory for the SQLite database (a temp dir by default).
    #[arg(long)]
    dir: Option<std::path::PathBuf>,
    /// Record into this PostgreSQL database instead (it must be empty of `bench-*` receipts).
    #[arg(long)]
    postgres: Option<String>,
}

fn receipt(i: usize) -> Receipt {
    Receipt {
        request_id: format!("bench-{i}"),
        account: format!("acct-{}", i % 16),
        payer: "0x70997970C51812dc3A010C7d01b50e0d17dc79C8".into(),
        node: "n1".into(),
        provider: "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC".into(),
        model: "smollm2".into(),
        prompt_tokens: 40,
        completion_tokens: 64,
        price_in_per_1m: 100_000_000_000_000_000,
        price_out_per_1m: 200_000_000_000_000_000,
        amount: Receipt::amount_for(40, 64, 100_000_000_000_000_000, 200_000_000_000_000_000),
        response_hash: "ab".repeat(32),
        outcome: Outcome::Completed,
        usage_source: UsageSource::Upstream,
        finished_at_ms: 1,
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let tmp = tempfile::tempdir()?;
    let dir = args.dir.unwrap_or_else(|| tmp.path().to_path_buf());
    let path = dir.join(format!("bench-{}.sqlite", std::process::id()));
    let (ledger, durability): (Arc<dyn Ledger>, &str) = match &args.postgres {
        Some(url) => (
            Arc::new(PostgresLedger::connect(url).await?),
            "PostgreSQL, synchronous_commit=on, group commit",
        ),
        None => (
            Arc::new(SqliteLedger::open(&path)?),
            "SQLite WAL, synchronous=FULL, group commit",
        ),
    };
    let per_writer = args.receipts.div_ceil(args.writers);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..args.writers {
        let ledger = ledger.clone();
        tasks.push(tokio::spawn(async move {
            for k in 0..per_writer {
                ledger.record(receipt(w * per_writer + k)).await?;
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let secs = started.elapsed().as_secs_f64();
    let n = per_writer * args.writers;
    println!(
        "{}",
        serde_json::json!({
            "ledger_receipts_per_s": (n as f64 / secs).round(),
            "receipts": n,
            "writers": args.writers,
            "seconds": (secs * 1000.0).round() / 1000.0,
            "durability": durability,
        })
    );
    drop(ledger);
    let _ = std::fs::remove_file(&path);
    Ok(())
}
