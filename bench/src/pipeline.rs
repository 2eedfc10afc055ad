//! `make bench-pipeline`: a model split across real `tollgate-node stage`
//! processes.
//!
//! In one run: tokens/s of one node against 2- and 3-span chains on
//! loopback; a 3-span chain across emulated regions (`tollgate-link`, 50 ms
//! round trip per hop) with and without speculative decoding on a
//! repetitive prompt; bytes per token of each hidden-state codec with its
//! greedy agreement with f32, against the floor f32 itself has when the last
//! bits of its hidden states change; and the chain planner against exo's and
//! Petals's layouts on simulated heterogeneous clusters. Ends with one JSON
//! line.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use serde_json::json;
use tollgate_engine::stage::even_spans;
use tollgate_engine::EngineBuilder;
use tollgate_loadtest::link::{Direction, Link, LinkConfig};
use tollgate_placement::chain::{
    memory_proportional, plan_chain, throughput_balanced, ChainNode, ChainRequest, Network,
};
use tollgate_placement::{Gpu, Hardware, Host, LayerCost, ModelProfile};
use tollgate_protocol::stage::{ChainClient, Codec, Sampling};

mod kv_migration;
mod noise_floor;

#[derive(Parser)]
struct Args {
    /// The SmolLM2 GGUF.
    #[arg(long, default_value = "models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")]
    model: PathBuf,
    /// Generated tokens per prompt.
    #[arg(long, default_value_t = 64)]
    tokens: usize,
    /// Prompts per measurement.
    #[arg(long, default_value_t = 8)]
    prompts: usize,
    /// Most draft tokens per traversal in the speculative run.
    #[arg(long, default_value_t = 10)]
    draft: usize,
    /// One-way delay of each emulated WAN hop, ms.
    #[arg(long, default_value_t = 25.0)]
    one_way_ms: f64,
}

/// A stage process, killed when dropped.
struct Stage(Child, String);

impl Drop for Stage {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn stage(bin: &Path, model: &Path, span: &std::ops::Range<usize>) -> anyhow::Result<Stage> {
    let mut child = Command::new(bin)
        .args(["stage", "--listen", "127.0.0.1:0", "--layers"])
        .arg(format!("{}..{}", span.start, span.end))
        .arg("--model")
        .arg(model)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| bin.display().to_string())?;
    let stdout = child.stdout.take().context("no stdout")?;
    let line = BufReader::new(stdout)
        .lines()
        .next()
        .context("no output")??;
    let Some(addr) = line.strip_prefix("listening on ") else {
        bail!("unexpected first line {line:?}");
    };
    Ok(Stage(child, addr.trim().to_string()))
}

fn stages(bin: &Path, model: &Path, parts: usize) -> anyhow::Result<Vec<Stage>> {
    even_spans(30, parts)
        .iter()
        .map(|s| stage(bin, model, s))
        .collect()
}

/// Greedy generation over every prompt; (tokens, seconds, outputs).
async fn run(
    route: &[String],
    codec: Codec,
    prompts: &[Vec<u32>],
    tokens: usize,
    speculate: Option<usize>,
    session: &mut u64,
) -> anyhow::Result<(usize, f64, Vec<Vec<u32>>, usize)> {
    let started = Instant::now();
    let (mut total, mut traversals) = (0, 0);
    let mut outs = Vec::new();
    for p in prompts {
        *session += 1;
        let mut c = ChainClient::open(route, codec, *session).await?;
        let out = match speculate {
            None => {
                let out = c.generate(p, tokens, &[], Sampling::GREEDY).await?;
                traversals += out.len();
                out
            }
            Some(k) => {
                let (out, stats) = c.generate_speculative(p, tokens, &[], k).await?;
                traversals += stats.traversals;
                out
            }
        };
        total += out.len();
        outs.push(out);
    }
    Ok((total, started.elapsed().as_secs_f64(), outs, traversals))
}

const TOPICS: &[&str] = &[
    "the ocean",
    "volcanoes",
    "Rome",
    "bread",
    "bees",
    "the moon",
    "rain",
    "cars",
    "chess",
    "tea",
    "owls",
    "trains",
    "paper",
    "whales",
    "coffee",
    "glaciers",
];

/// A 40 GB, 80-layer model (a 70B-class model at 4 bits).
fn big_model() -> ModelProfile {
    ModelProfile {
        layers: vec![
            LayerCost {
                weight_bytes: 1 << 29
            };
            80
        ],
        embedding_bytes: 1 << 29,
        head_bytes: 1 << 29,
        kv_bytes_per_token_per_layer: 4096,
        flops_per_token_per_layer: 1_700_000_000,
    }
}

fn card(name: &str, vram_gb: u64, tb_s: f64, tflops: f64, price: f64) -> ChainNode {
    ChainNode {
        id: name.into(),
        hardware: Hardware {
            gpus: vec![Gpu {
                name: name.into(),
                free_vram_bytes: vram_gb << 30,
                mem_bandwidth_bytes_per_s: tb_s * 1e12,
                flops_per_s: tflops * 1e12,
                h2d_bandwidth_bytes_per_s: 25e9,
            }],
            host: Host {
                free_ram_bytes: 64 << 30,
                mem_bandwidth_bytes_per_s: 60e9,
                flops_per_s: 1.5e12,
            },
        },
        price_per_layer_token: price,
    }
}

/// Simulated clusters: consumer 16-24 GB cards to 80 GB cards, 10-150 ms.
fn clusters() -> Vec<(&'static str, Vec<ChainNode>, Network)> {
    let rtt = |n: usize, f: &dyn Fn(usize, usize) -> f64| Network {
        rtt_s: (0..n)
            .map(|i| {
                (0..n)
                    .map(|j| if i == j { 0.0 } else { f(i, j) / 1e3 })
                    .collect()
            })
            .collect(),
        bandwidth: vec![vec![125e6; n]; n],
        gateway_rtt_s: (0..n).map(|i| (10.0 + 15.0 * i as f64) / 1e3).collect(),
    };
    let consumer = |i: usize| card(&format!("rtx4080-{i}"), 16, 0.72, 49.0, 1.0);
    vec![
        (
            "4x 16 GB + 1x 80 GB, 10-150 ms",
            vec![
                consumer(0),
                consumer(1),
                consumer(2),
                consumer(3),
                card("a100-80", 80, 2.0, 312.0, 3.0),
            ],
            rtt(5, &|i, j| 10.0 + 35.0 * ((i + j) % 5) as f64),
        ),
        (
            "2x 24 GB + 2x 16 GB, one region",
            vec![
                card("rtx4090-0", 24, 1.0, 82.0, 1.5),
                card("rtx4090-1", 24, 1.0, 82.0, 1.5),
                consumer(0),
                consumer(1),
            ],
            rtt(4, &|_, _| 10.0),
        ),
        (
            "6x 16 GB across continents",
            (0..6).map(consumer).collect(),
            rtt(6, &|i, j| if (i < 3) == (j < 3) { 20.0 } else { 150.0 }),
        ),
        (
            "80 GB far, 24 GB near",
            vec![
                card("h100-80", 80, 3.35, 990.0, 4.0),
                card("rtx4090-0", 24, 1.0, 82.0, 1.5),
                card("rtx4090-1", 24, 1.0, 82.0, 1.5),
            ],
            rtt(3, &|i, j| if i == 0 || j == 0 { 150.0 } else { 10.0 }),
        ),
    ]
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let bin = std::env::current_exe()?
        .parent()
        .context("no binary directory")?
        .join("tollgate-node");
    if !args.model.exists() {
        bail!("{} is missing: run `make model`", args.model.display());
    }
    let engine = EngineBuilder::new(&args.model).build().await?;
    let mut prompts = Vec::new();
    for i in 0..args.prompts {
        let body = json!({"model": "m", "messages": [
            {"role": "user", "content": format!("Tell me about {}.", TOPICS[i % TOPICS.len()])}]});
        prompts.push(engine.tokenize_chat(&body).await?);
    }
    drop(engine);
    let mut session = 0u64;

    // Loopback: one node against chains.
    println!(
        "\nloopback, greedy, {} prompts x {} tokens, f32 hidden states",
        args.prompts, args.tokens
    );
    let mut rates = Vec::new();
    let mut reference = Vec::new();
    for parts in [1usize, 2, 3] {
        let procs = stages(&bin, &args.model, parts)?;
        let route: Vec<String> = procs.iter().map(|s| s.1.clone()).collect();
        let (n, secs, outs, _) = run(
            &route,
            Codec::F32,
            &prompts,
            args.tokens,
            None,
            &mut session,
        )
        .await?;
        if parts == 1 {
            reference = outs;
        } else if outs != reference {
            bail!("a {parts}-span chain generated other tokens than one node");
        }
        let rate = n as f64 / secs;
        rates.push(rate);
        println!("  {parts} span(s): {rate:.1} tokens/s (same tokens as one node)");
    }
    let penalty = |k: usize| 1.0 - rates[k] / rates[0];
    println!(
        "  penalty: 2 spans {:.1}%, 3 spans {:.1}%",
        penalty(1) * 100.0,
        penalty(2) * 100.0
    );

    // Compression: bytes per token and agreement with f32, on 2 spans.
    println!("\nhidden-state codecs (2 spans; a hop carries 576 values per token)");
    // The floor first: what f32 itself keeps when its last bits change.
    let floor = noise_floor::measure(&args.model, &prompts, &reference)?;
    let procs = stages(&bin, &args.model, 2)?;
    let route: Vec<String> = procs.iter().map(|s| s.1.clone()).collect();
    let f32_bytes = Codec::F32.byte_len(1, 576) as f64;
    let prompt_len = prompts.iter().map(Vec::len).sum::<usize>() / prompts.len().max(1);
    let mut codecs = serde_json::Map::new();
    // Teacher-forced: each codec runs prompt + the f32 answer in one pass;
    // its argmax at every answer position is compared with f32's.
    let mut f32_argmax: Vec<Vec<u32>> = Vec::new();
    for codec in Codec::ALL {
        let mut forced = Vec::new();
        for (p, a) in prompts.iter().zip(&reference) {
            session += 1;
            let mut c = ChainClient::open(&route, codec, session).await?;
            let rows = [p.as_slice(), &a[..a.len().saturating_sub(1)]].concat();
            let picks = c.forward(rows, Sampling::GREEDY).await?;
            forced.push(picks.argmax[p.len() - 1..].to_vec());
        }
        if codec == Codec::F32 {
            f32_argmax = forced.clone();
        }
        let count = noise_floor::Count::compare(&forced, &f32_argmax);
        let at_floor = noise_floor::at_the_floor(count, floor.forced);
        let (n, _, outs, _) = run(&route, codec, &prompts, args.tokens, None, &mut session).await?;
        let prefix: usize = outs
            .iter()
            .zip(&reference)
            .map(|(a, b)| a.iter().zip(b).take_while(|(x, y)| x == y).count())
            .sum();
        let per_token = codec.byte_len(1, 576) as f64;
        let reduction = 1.0 - per_token / f32_bytes;
        println!(
            "  {:<5} {:>5} bytes/token, {:>6} bytes/prompt ({} tokens): {:>5.1}% less than f32; argmax equal to f32's {:.1}% (teacher-forced, {} of {} differ: {}); free-running {:.1}% of tokens before the first difference",
            codec.name(),
            per_token,
            codec.byte_len(prompt_len as u32, 576),
            prompt_len,
            reduction * 100.0,
            count.agreement() * 100.0,
            count.differ,
            count.total,
            if at_floor { "at the floor" } else { "above the floor" },
            100.0 * prefix as f64 / n as f64
        );
        codecs.insert(
            codec.name().into(),
            json!({
                "bytes_per_token": per_token,
                "reduction": (reduction * 1e4).round() / 1e4,
                "token_agreement": (count.agreement() * 1e4).round() / 1e4,
                "at_floor": at_floor,
            }),
        );
    }
    // f32 in one pass against the same f32 row by row: only the order of
    // the sums differs.
    let reordered = noise_floor::Count::compare(&f32_argmax, &reference);
    println!(
        "  the floor: f32 with the last bit of every other value flipped: argmax equal to f32's {:.1}% ({} of {} differ), free-running {:.1}% before the first difference; f32 in one pass against f32 row by row (the order of sums alone): {:.1}% ({} of {} differ)",
        floor.forced.agreement() * 100.0,
        floor.forced.differ,
        floor.forced.total,
        100.0 * floor.free_prefix as f64 / floor.free_total.max(1) as f64,
        reordered.agreement() * 100.0,
        reordered.differ,
        reordered.total,
    );
    println!("  (\"at the floor\": no more differences than the flipped bits make, one-sided 5% two-proportion test)");
    drop(procs);

    // WAN: three regions, every hop 2 x one_way_ms round trip.
    let procs = stages(&bin, &args.model, 3)?;
    let delay = Direction::delay(Duration::from_secs_f64(args.one_way_ms / 1e3));
    let mut links = Vec::new();
    for p in &procs {
        let upstream = p.1.parse()?;
        links.push(
            Link::start(
                "127.0.0.1:0".parse()?,
                LinkConfig {
                    upstream,
                    up: delay,
                    down: delay,
                    seed: 1,
                },
            )
            .await?,
        );
    }
    let route: Vec<String> = links.iter().map(|l| l.addr().to_string()).collect();
    // Repetitive prompts: the model's own answer, then the question again.
    let repetitive: Vec<Vec<u32>> = prompts
        .iter()
        .zip(&reference)
        .take(4)
        .map(|(p, a)| [p.as_slice(), a.as_slice(), p.as_slice()].concat())
        .collect();
    println!(
        "\n3 spans across emulated regions ({:.0} ms round trip per hop, gateway hop included), {} repetitive prompts",
        2.0 * args.one_way_ms,
        repetitive.len()
    );
    let (n, plain_s, plain, plain_trips) = run(
        &route,
        Codec::F16,
        &repetitive,
        args.tokens,
        None,
        &mut session,
    )
    .await?;
    let (m, spec_s, spec, spec_trips) = run(
        &route,
        Codec::F16,
        &repetitive,
        args.tokens,
        Some(args.draft),
        &mut session,
    )
    .await?;
    if plain != spec {
        bail!("speculation changed the greedy output");
    }
    let speedup = (m as f64 / spec_s) / (n as f64 / plain_s);
    println!(
        "  plain:       {:.1} tokens/s, {plain_trips} traversals",
        n as f64 / plain_s
    );
    println!(
        "  speculative: {:.1} tokens/s, {spec_trips} traversals (drafts of up to {} tokens by prompt lookup, grown while they hold), same tokens",
        m as f64 / spec_s,
        args.draft
    );
    println!("  speedup {speedup:.2}x");
    drop(links);
    drop(procs);

    // The planner against exo and Petals, predicted.
    println!("\nchain planner vs memory-proportional (exo) and throughput-balanced (Petals) spans: predicted tokens/s");
    println!(
        "  (80-layer 40 GB model, 512-token prompt, 128 output tokens, f16 hidden states of 16 KB)"
    );
    let req = ChainRequest {
        prompt_tokens: 512,
        output_tokens: 128,
        hidden_bytes_per_token: 16 * 1024,
    };
    let model = big_model();
    let mut planner_wins = 0;
    let clusters = clusters();
    for (name, nodes, net) in &clusters {
        let ours = plan_chain(&model, nodes, net, &req, None, 4)?;
        let exo = memory_proportional(&model, nodes, net, &req).map(|c| c.tokens_per_s);
        let petals = throughput_balanced(&model, nodes, net, &req).map(|c| c.tokens_per_s);
        let shown = |r: &Result<f64, _>| {
            r.as_ref()
                .map_or("does not fit".to_string(), |v| format!("{v:.2}"))
        };
        let chain: Vec<String> = ours
            .stages
            .iter()
            .map(|s| format!("{}[{}..{})", nodes[s.node].id, s.layers.start, s.layers.end))
            .collect();
        println!(
            "  {name:<34} planner {:>6.2}  exo {:>12}  petals {:>12}   {}",
            ours.tokens_per_s,
            shown(&exo),
            shown(&petals),
            chain.join(" -> ")
        );
        if exo.as_ref().is_ok_and(|e| ours.tokens_per_s >= *e)
            && petals.as_ref().is_ok_and(|p| ours.tokens_per_s >= *p)
        {
            planner_wins += 1;
        }
    }
    // Bulk KV migration, in process.
    println!("\nbulk KV migration (the cache of blocks 15..30 after the prompt and half the answer, moved to a fresh span; the other half teacher-forced)");
    let f32_kv = 15.0 * 2.0 * 192.0 * 4.0;
    let mut migrations = serde_json::Map::new();
    let mut best: Option<f64> = None;
    for m in kv_migration::measure(&args.model, &prompts, &reference)? {
        let per_token = m.bytes as f64 / m.positions.max(1) as f64;
        let reduction = 1.0 - per_token / f32_kv;
        let agreement = m.kept as f64 / m.compared.max(1) as f64;
        println!(
            "  {:<19} {:>6.0} bytes/token: {:>5.1}% less than f32 KV; argmax equal to the unmoved cache's {:.1}% of {} positions",
            m.name,
            per_token,
            reduction * 100.0,
            agreement * 100.0,
            m.compared
        );
        if agreement >= 0.99 && m.name != "f32 KV" {
            best = Some(best.map_or(reduction, |b: f64| b.max(reduction)));
        }
        migrations.insert(
            m.name.to_string(),
            json!({"bytes_per_token": per_token.round(), "reduction": (reduction * 1e4).round() / 1e4, "token_agreement": (agreement * 1e4).round() / 1e4}),
        );
    }
    println!(
        "{}",
        json!({
            "bench": "pipeline",
            "penalty_2span": (penalty(1) * 1e4).round() / 1e4,
            "penalty_3span": (penalty(2) * 1e4).round() / 1e4,
            "speculation_speedup": (speedup * 100.0).round() / 100.0,
            // The smallest codec: outliers exact, the rest in 7 bits.
            "bytes_per_token_reduction": codecs["int7o"]["reduction"],
            "token_agreement": codecs["int7o"]["token_agreement"],
            // int7o changes the output no more than f32 changes its own when
            // its last bits are flipped.
            "equal_output": codecs["int7o"]["at_floor"],
            "f32_nudged_agreement": (floor.forced.agreement() * 1e4).round() / 1e4,
            "f32_reordered_agreement": (reordered.agreement() * 1e4).round() / 1e4,
            "codecs": codecs,
            // The most a transfer saved while keeping >= 99% of argmaxes.
            "kv_migration_reduction": best.map(|b| (b * 1e4).round() / 1e4),
            "kv_migration": migrations,
            "planner_not_worse_clusters": planner_wins,
            "clusters": clusters.len(),
        })
    );
    Ok(())
}
