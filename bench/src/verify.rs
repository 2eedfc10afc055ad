//! `make bench-verify`: how well audits catch the cheat catalogue, and what
//! they cost.
//!
//! Starts real `tollgate-node` processes (SmolLM2 honest at two thread
//! counts, with the unfused attention kernel, and on mistralrs, the runtime
//! CUDA builds serve with; Gemma 3 270M; SmolLM2 with half its layers;
//! SmolLM2 with noisy weights) and `tollgate-cheat-node` fronts that claim the honest model,
//! collects at least 500 honest and 500 cheating completions over the node
//! protocol (half greedy, half sampled at temperature 0.7), and audits each
//! with the reference engine in this process, each answer alone and pooled
//! with its node's earlier audits. Every request asks for log-probs, as the
//! gateway does of audited nodes. Prints the detection rate per cheat,
//! false positives on honest answers, detection by completion length,
//! the audit's compute as a share of generation at the default audit share,
//! and the time from a response to its verdict; then one JSON line.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Parser;
use serde_json::{json, Value};
use tollgate_engine::EngineBuilder;
use tollgate_verify::{Auditor, RivalPass, Schedule, Thresholds};

/// The cheat the rival test is for.
const DROPS_SYSTEM: &str = "drops the system prompt";

mod fleet;
mod headroom;
mod rival;
mod tally;
mod workload;

use fleet::{spawn, Proc};
use tally::{audit_all, percentile, Spread, LENGTHS};
use workload::{collect, request};

#[derive(Parser)]
struct Args {
    /// The SmolLM2 GGUF (the claimed and reference model).
    #[arg(long, default_value = "models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")]
    model: PathBuf,
    /// The Gemma 3 GGUF (the other model a cheat runs).
    #[arg(long, default_value = "models/gemma3/gemma-3-270m-q4_k_m.gguf")]
    gemma: PathBuf,
    /// Honest completions (a fifth from a single-thread node).
    #[arg(long, default_value_t = 500)]
    honest: usize,
    /// Honest completions from a node on mistralrs, the runtime CUDA builds
    /// serve with, here on the CPU: other kernels than the reference's.
    #[arg(long, default_value_t = 60)]
    mistralrs: usize,
    /// Honest completions from a llama.cpp node with flash attention off:
    /// another attention kernel than the reference's fused one.
    #[arg(long, default_value_t = 60)]
    unfused: usize,
    /// Cheating completions, spread over the cheats.
    #[arg(long, default_value_t = 504)]
    cheating: usize,
    /// Generated tokens per completion.
    #[arg(long, default_value_t = 48)]
    max_tokens: u64,
    /// Requests in flight per node.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// Writes every audit (node, request, text, verdict, per-token scores)
    /// to this file as JSON lines, for calibrating thresholds offline.
    #[arg(long)]
    reports: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let bins = std::env::current_exe()?
        .parent()
        .context("no binary directory")?
        .to_path_buf();
    let node_bin = bins.join("tollgate-node");
    let cheat_bin = bins.join("tollgate-cheat-node");
    for (what, path) in [("model", &args.model), ("gemma", &args.gemma)] {
        if !path.exists() {
            bail!("{what} {} is missing: run `make model`", path.display());
        }
    }
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path();
    let model = args.model.to_string_lossy().to_string();
    let derive = |name: &str, flags: &[&str]| -> anyhow::Result<String> {
        let out = dir.join(format!("{name}.gguf"));
        let status = Command::new(&cheat_bin)
            .args(["derive", "--from", &model, "--to", &out.to_string_lossy()])
            .args(flags)
            .stdout(Stdio::null())
            .status()?;
        if !status.success() {
            bail!("deriving {name} failed");
        }
        Ok(out.to_string_lossy().to_string())
    };
    let half = derive("half", &["--skip-half-layers"])?;
    let noisy = derive("noisy", &["--weight-noise", "0.1"])?;
    let gemma = args.gemma.to_string_lossy().to_string();
    let node = |name: &str, file: &str, extra: &[&str]| -> anyhow::Result<(Proc, String)> {
        let key = dir
            .join(format!("{name}.key"))
            .to_string_lossy()
            .to_string();
        let mut a = vec![
            "serve",
            "--model",
            file,
            "--model-id",
            name,
            "--listen",
            "127.0.0.1:0",
            "--key-file",
            &key,
        ];
        a.extend_from_slice(extra);
        let a: Vec<String> = a.into_iter().map(str::to_string).collect();
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        spawn(&node_bin, &a, &dir.join(format!("{name}.log")))
    };
    eprintln!("bench-verify: starting nodes");
    let (_honest, honest) = node("smollm2", &model, &["--max-seqs", "8"])?;
    let (_honest_1t, honest_1t) =
        node("smollm2-1t", &model, &["--threads", "1", "--max-seqs", "2"])?;
    let (_honest_mr, honest_mr) = node(
        "smollm2-mistralrs",
        &model,
        &["--runtime", "mistralrs", "--max-seqs", "8"],
    )?;
    let (_honest_unfused, honest_unfused) = node(
        "smollm2-unfused",
        &model,
        &["--flash-attention", "off", "--max-seqs", "8"],
    )?;
    let (_gemma, gemma_url) = node("gemma3", &gemma, &["--max-seqs", "8"])?;
    let (_half, half_url) = node("half", &half, &["--max-seqs", "8"])?;
    let (_noisy, noisy_url) = node("noisy", &noisy, &["--max-seqs", "8"])?;
    // (what it does, honest answers it gives first, process and address)
    let cheat = |name: &str, upstream: &str, lie: &str, honest_first: &str| {
        let key = dir
            .join(format!("{name}.key"))
            .to_string_lossy()
            .to_string();
        spawn(
            &cheat_bin,
            &[
                "serve",
                "--upstream",
                upstream,
                "--imitate",
                &honest,
                "--lie",
                lie,
                "--honest-first",
                honest_first,
                "--key-file",
                &key,
            ],
            &dir.join(format!("cheat-{name}.log")),
        )
    };
    // A replaying cheat's first answer is a real one (it has nothing to
    // replay yet), so it counts as one honest answer first.
    let cheats = [
        (
            "other-model (Gemma 3 270M)",
            0,
            cheat("other", &gemma_url, "model", "0")?,
        ),
        (
            "half the layers",
            0,
            cheat("half", &half_url, "model", "0")?,
        ),
        (
            "noisy weights (10%)",
            0,
            cheat("noisy", &noisy_url, "model", "0")?,
        ),
        (DROPS_SYSTEM, 0, cheat("drop", &honest, "drop-system", "0")?),
        (
            "truncates the context",
            0,
            cheat("trunc", &honest, "truncate", "0")?,
        ),
        (
            "replays another answer",
            1,
            cheat("replay", &honest, "replay", "0")?,
        ),
        (
            "fabricated log-probs",
            0,
            cheat("logprobs", &honest, "fake-logprobs", "0")?,
        ),
        (
            "honest first, then cheats",
            4,
            cheat("later", &honest, "replay", "4")?,
        ),
    ];

    eprintln!("bench-verify: loading the reference model");
    let engine = Arc::new(
        EngineBuilder::new(&args.model)
            .max_num_seqs(2)
            .build()
            .await?,
    );
    let sha = engine.sha256().to_string();
    let auditor = Auditor::new(engine, Thresholds::default());
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(600))
        .build()?;

    // Honest completions; the default node's wall time is the generation cost.
    let n_1t = args.honest / 5;
    let n_main = args.honest - n_1t;
    eprintln!(
        "bench-verify: {} honest completions",
        args.honest + args.mistralrs + args.unfused
    );
    let bodies: Vec<Value> = (0..n_main).map(|i| request(i, args.max_tokens)).collect();
    let (main_answers, gen_wall) = collect(&http, &honest, bodies, args.concurrency).await?;
    let bodies: Vec<Value> = (0..n_1t).map(|i| request(i + 7, args.max_tokens)).collect();
    let (answers_1t, _) = collect(&http, &honest_1t, bodies, 2).await?;
    let bodies: Vec<Value> = (0..args.mistralrs)
        .map(|i| request(i + 13, args.max_tokens))
        .collect();
    let (answers_mr, _) = collect(&http, &honest_mr, bodies, args.concurrency).await?;
    let bodies: Vec<Value> = (0..args.unfused)
        .map(|i| request(i + 19, args.max_tokens))
        .collect();
    let (answers_unfused, _) = collect(&http, &honest_unfused, bodies, args.concurrency).await?;
    let generated: u64 = main_answers
        .iter()
        .map(|a| {
            a.completion["usage"]["completion_tokens"]
                .as_u64()
                .unwrap_or(0)
        })
        .sum();

    let per_cheat = args.cheating.div_ceil(cheats.len());
    let mut cheat_answers = Vec::new();
    for (k, (name, honest_first, (_proc, url))) in cheats.iter().enumerate() {
        eprintln!("bench-verify: {per_cheat} completions from the cheat that {name}");
        let mut bodies: Vec<Value> = (0..per_cheat + honest_first)
            .map(|i| request(i * 3 + k, args.max_tokens))
            .collect();
        // Its honest answers first, one at a time so they are the first it
        // serves; only what follows is cheating.
        let rest = bodies.split_off(*honest_first);
        collect(&http, url, bodies, 1).await?;
        let lies = collect(&http, url, rest.clone(), args.concurrency).await?.0;
        // What the honest node answers to the same (greedy or seeded) requests.
        let truth: Vec<String> = collect(&http, &honest, rest, args.concurrency)
            .await?
            .0
            .iter()
            .map(|a| a.text().to_string())
            .collect();
        cheat_answers.push((*name, lies, truth));
    }

    eprintln!("bench-verify: auditing");
    // Honest answers are judged by the rival test everywhere, a stricter
    // verdict than the gateway's; cheats as the gateway judges them.
    let always = RivalPass::Always;
    let honest_main =
        audit_all("honest", &auditor, &sha, &main_answers, None, true, always).await?;
    let honest_1t_tally =
        audit_all("honest-1t", &auditor, &sha, &answers_1t, None, true, always).await?;
    // mistralrs draws with its own sampler: seeded answers are not replayed.
    let honest_mr_tally = audit_all(
        "honest-mistralrs",
        &auditor,
        &sha,
        &answers_mr,
        None,
        false,
        always,
    )
    .await?;
    let honest_unfused_tally = audit_all(
        "honest-unfused",
        &auditor,
        &sha,
        &answers_unfused,
        None,
        true,
        always,
    )
    .await?;
    let honest_groups = [
        ("honest (all threads, batch 8)", &honest_main),
        ("honest (1 thread, batch 2)", &honest_1t_tally),
        ("honest (mistralrs runtime)", &honest_mr_tally),
        ("honest (unfused attention)", &honest_unfused_tally),
    ];
    let honest_tallies = || honest_groups.iter().map(|g| g.1);
    let mut rows = Vec::new();
    for (name, answers, truth) in &cheat_answers {
        rows.push((
            *name,
            audit_all(
                name,
                &auditor,
                &sha,
                answers,
                Some(truth),
                true,
                RivalPass::AsNeeded,
            )
            .await?,
        ));
    }
    if let Some(path) = &args.reports {
        let mut out = String::new();
        for t in honest_tallies().chain(rows.iter().map(|r| &r.1)) {
            for r in &t.reports {
                out.push_str(&r.to_string());
                out.push('\n');
            }
        }
        std::fs::write(path, out).with_context(|| format!("writing {}", path.display()))?;
    }

    println!("\naudits of {} honest and {} cheating completions ({} tokens max, half greedy, half T=0.7)\n",
        honest_tallies().map(|t| t.completions).sum::<usize>(),
        rows.iter().map(|r| r.1.completions).sum::<usize>(), args.max_tokens);
    println!(
        "{:<28} {:>7} {:>8} | {:>6} {:>7} {:>8} | {:>6} {:>7} {:>6} | {:>6} {:>6} {:>7}",
        "node",
        "answers",
        ">=32 tok",
        "alone",
        "rate",
        "decisive",
        "pooled",
        "rate",
        "first",
        "differ",
        "alone",
        "rate"
    );
    let ratio = |a: usize, b: usize| if b > 0 { a as f64 / b as f64 } else { 0.0 };
    let mut min_rate = 1.0f64;
    let mut min_rate_pooled = 1.0f64;
    let mut min_rate_differing = 1.0f64;
    for (name, t) in &rows {
        let rate = ratio(t.long_failed, t.long);
        let rate_pooled = ratio(t.long_failed_pooled, t.long);
        let rate_differing = ratio(t.long_differs_failed, t.long_differs);
        min_rate = min_rate.min(rate);
        min_rate_pooled = min_rate_pooled.min(rate_pooled);
        if t.long_differs > 0 {
            min_rate_differing = min_rate_differing.min(rate_differing);
        }
        println!(
            "{:<28} {:>7} {:>8} | {:>6} {:>6.1}% {:>8} | {:>6} {:>6.1}% {:>6} | {:>6} {:>6} {:>6.1}%",
            name,
            t.completions,
            t.long,
            t.long_failed,
            rate * 100.0,
            t.long_failed_decisive,
            t.long_failed_pooled,
            rate_pooled * 100.0,
            t.first_caught.map_or("never".into(), |n| format!("#{n}")),
            t.long_differs,
            t.long_differs_failed,
            rate_differing * 100.0
        );
    }
    println!("(alone: the answer's own audit fails it; decisive: of those, by one position far off; pooled: it or the node's last {} audits pooled fail it;", tollgate_verify::history::WINDOW);
    println!(" first: the node's first failed audit; differ: long answers unlike the honest node's to the same greedy or seeded request)");
    let false_positives: usize = honest_tallies().map(|t| t.failed).sum();
    let false_positives_pooled: usize = honest_tallies().map(|t| t.failed_pooled).sum();
    for (name, t) in honest_groups {
        println!(
            "{:<28} {:>7} {:>8} | {:>23} | {:>21} | {} inconclusive",
            name,
            t.completions,
            t.long,
            format!("{} failed", t.failed),
            format!("{} failed", t.failed_pooled),
            t.inconclusive
        );
    }
    let mut gaps: Vec<f64> = honest_tallies()
        .flat_map(|t| t.gaps.iter().copied())
        .collect();
    println!(
        "honest log-prob gaps (nats, {} tokens): p50 {:.3}, p99 {:.3}, max {:.3}; tolerance {}",
        gaps.len(),
        percentile(&mut gaps, 0.5),
        percentile(&mut gaps, 0.99),
        percentile(&mut gaps, 1.0),
        Thresholds::default().logprob_tolerance
    );
    let th = Thresholds::default();
    let alternatives = Spread::of(
        honest_tallies()
            .flat_map(|t| t.alternative_gaps.iter().copied())
            .collect(),
        f64::from(th.alternatives_tolerance),
    );
    let alternatives_rate = alternatives.beyond;
    println!(
        "honest alternatives' gaps (nats, rank by rank, {} tokens): p50 {:.3}, p99 {:.3}, max {:.3}; beyond tolerance {}: {:.2}% of tokens (the test assumes at most {:.0}%)",
        alternatives.tokens,
        alternatives.p50,
        alternatives.p99,
        alternatives.max,
        th.alternatives_tolerance,
        alternatives_rate * 100.0,
        th.honest_alternatives_rate * 100.0
    );
    let shapes = Spread::of(
        honest_tallies()
            .flat_map(|t| t.shape_gaps.iter().copied())
            .collect(),
        f64::from(th.shape_tolerance),
    );
    let shape_rate = shapes.beyond;
    println!(
        "honest shape gaps (nats squared, token by token, {} tokens): p50 {:.4}, p99 {:.4}, max {:.4} (inf: an alternative the reference ranks nowhere); beyond tolerance {}: {:.2}% of tokens (the test assumes at most {:.0}%)",
        shapes.tokens,
        shapes.p50,
        shapes.p99,
        shapes.max,
        th.shape_tolerance,
        shape_rate * 100.0,
        th.honest_shape_rate * 100.0
    );
    let worst_aligned = honest_tallies().fold(0f32, |w, t| w.max(t.worst_aligned));
    println!(
        "honest aligned positions, farthest off (a miss's margin, a log-prob's or an alternative's gap): {:.3}; decisive tolerance {}",
        worst_aligned,
        Thresholds::default().decisive_tolerance
    );
    for line in honest_tallies().flat_map(|t| t.failures.iter()) {
        println!("  honest answer failed: {line}");
    }
    let honest_nodes: Vec<&headroom::NodeAnswers> =
        honest_tallies().map(|t| &t.judged[..]).collect();
    let room = headroom::headroom(&honest_nodes, &th);
    println!(
        "honest headroom: every honest audit (alone and pooled) still passes with each deviation from the reference {:.2}x as large{}",
        room.factor,
        room.next.as_ref().map_or(String::new(), |f| format!(
            "; at {:.2}x one fails: {}",
            f.factor,
            f.reasons.join("; ")
        ))
    );
    for (name, t) in honest_groups {
        let r = headroom::headroom(&[&t.judged[..]], &th);
        let beyond = |gaps: &[f64], tolerance: f32| {
            100.0 * Spread::of(gaps.to_vec(), f64::from(tolerance)).beyond
        };
        println!(
            "  {name}: {:.2}x (beyond tolerance: alternatives {:.2}%, shape {:.2}% of tokens)",
            r.factor,
            beyond(&t.alternative_gaps, th.alternatives_tolerance),
            beyond(&t.shape_gaps, th.shape_tolerance)
        );
    }
    let without_shape = Thresholds {
        shape_tolerance: f32::INFINITY,
        ..th.clone()
    };
    println!(
        "  without the shape test: {:.2}x",
        headroom::headroom(&honest_nodes, &without_shape).factor
    );
    let rival_only = Thresholds {
        tie_tolerance: f32::INFINITY,
        logprob_tolerance: f32::INFINITY,
        alternatives_tolerance: f32::INFINITY,
        shape_tolerance: f32::INFINITY,
        decisive_tolerance: f32::INFINITY,
        ..th.clone()
    };
    println!(
        "  the rival test alone: {:.2}x",
        headroom::headroom(&honest_nodes, &rival_only).factor
    );
    let rival = rival::report(
        honest_tallies(),
        rows.iter().find(|r| r.0 == DROPS_SYSTEM).map(|r| &r.1),
        &th,
    );
    println!("\ndetection by completion length (all cheats; a prefix of k tokens judged alone)");
    for (i, &k) in LENGTHS.iter().enumerate() {
        let (judged, failed) = rows.iter().fold((0, 0), |(j, f), (_, t)| {
            (j + t.by_length[i].1, f + t.by_length[i].2)
        });
        let honest_failed: usize = honest_tallies().map(|t| t.by_length[i].2).sum();
        println!(
            "  {k:>3} tokens: {failed}/{judged} caught ({:.1}%), honest failed {honest_failed}",
            100.0 * failed as f64 / judged.max(1) as f64
        );
    }
    let mut latencies: Vec<f64> = honest_tallies()
        .chain(rows.iter().map(|r| &r.1))
        .flat_map(|t| t.latencies_ms.iter().copied())
        .collect();
    let audits = latencies.len();
    let audit_total: Duration = honest_tallies()
        .chain(rows.iter().map(|r| &r.1))
        .map(|t| t.audit_time)
        .sum();
    let audit_per_completion = audit_total.as_secs_f64() / audits.max(1) as f64;
    let gen_per_completion = gen_wall.as_secs_f64() / main_answers.len().max(1) as f64;
    let share = Schedule::default().share;
    let cost_share = share * audit_per_completion / gen_per_completion;
    let p50 = percentile(&mut latencies, 0.5);
    let p99 = percentile(&mut latencies, 0.99);
    println!("\ngeneration: {} completions, {generated} tokens in {:.1}s at {} in flight ({:.2}s of node time per completion)",
        main_answers.len(), gen_wall.as_secs_f64(), args.concurrency, gen_per_completion);
    println!("audit: {:.0} ms of reference compute per completion; at the default share of {:.0}%: {:.2}% of generation",
        audit_per_completion * 1e3, share * 100.0, cost_share * 100.0);
    println!("response to verdict (empty queue): p50 {p50:.0} ms, p99 {p99:.0} ms");
    println!(
        "{}",
        json!({
            "bench": "verify",
            "min_detection_rate": (min_rate * 1e4).round() / 1e4,
            "min_detection_rate_pooled": (min_rate_pooled * 1e4).round() / 1e4,
            "min_detection_rate_differing": (min_rate_differing * 1e4).round() / 1e4,
            "false_positives": false_positives,
            "false_positives_pooled": false_positives_pooled,
            "honest_worst_aligned": (f64::from(worst_aligned) * 1e3).round() / 1e3,
            "honest_alternatives_rate": (alternatives_rate * 1e5).round() / 1e5,
            "honest_shape_rate": (shape_rate * 1e5).round() / 1e5,
            "honest_headroom": (f64::from(room.factor) * 100.0).round() / 100.0,
            "honest": honest_tallies().map(|t| t.completions).sum::<usize>(),
            "honest_mistralrs": honest_mr_tally.completions,
            "false_positives_mistralrs": honest_mr_tally.failed,
            "honest_unfused": honest_unfused_tally.completions,
            "false_positives_unfused": honest_unfused_tally.failed,
            "cheating": rows.iter().map(|r| r.1.completions).sum::<usize>(),
            "audit_cost_share": (cost_share * 1e4).round() / 1e4,
            "rival_honest_failed": rival.honest_failed,
            "rival_honest_wanted": (rival.honest_wanted * 1e4).round() / 1e4,
            "rival_honest_worst_ratio": (rival.worst_ratio * 1e3).round() / 1e3,
            "verdict_latency_ms": p50.round(),
            "verdict_latency_p99_ms": p99.round(),
        })
    );
    Ok(())
}
