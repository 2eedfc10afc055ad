//! `make bench-verify`: how well audits catch the cheat catalogue, and what
//! they cost.
//!
//! Starts real `tollgate-node` processes (SmolLM2 honest at two thread
//! counts, and on mistralrs, the runtime CUDA builds serve with; Gemma 3 270M; SmolLM2 with half its layers; SmolLM2 with noisy
//! weights) and `tollgate-cheat-node` fronts that claim the honest model,
//! collects at least 500 honest and 500 cheating completions over the node
//! protocol (half greedy, half sampled at temperature 0.7), and audits each
//! with the reference engine in this process, each answer alone and pooled
//! with its node's earlier audits. Every request asks for log-probs, as the
//! gateway does of audited nodes. Prints the detection rate per cheat,
//! false positives on honest answers, detection by completion length,
//! the audit's compute as a share of generation at the default audit share,
//! and the time from a response to its verdict; then one JSON line.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use futures_util::StreamExt;
use serde_json::{json, Value};
use tollgate_engine::EngineBuilder;
use tollgate_verify::stats::{aligned, judge, Mode, Outcome};
use tollgate_verify::{Auditor, Claim, History, Position, Schedule, Thresholds};

mod footprint;

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

/// A child process killed when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts a server binary and waits for its "listening on ADDR" line.
fn spawn(bin: &Path, args: &[&str], log: &Path) -> anyhow::Result<(Proc, String)> {
    let mut child = Command::new(bin)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(log)?)
        .spawn()
        .with_context(|| bin.display().to_string())?;
    let stdout = child.stdout.take().context("no stdout")?;
    let proc = Proc(child);
    let mut lines = BufReader::new(stdout).lines();
    loop {
        match lines.next() {
            Some(line) => {
                if let Some(addr) = line?.strip_prefix("listening on ") {
                    let addr = format!("http://{}", addr.trim());
                    // Keep draining stdout so the child never blocks on it.
                    std::thread::spawn(move || lines.for_each(drop));
                    return Ok((proc, addr));
                }
            }
            None => bail!(
                "{} exited before listening (log: {})",
                bin.display(),
                log.display()
            ),
        }
    }
}

const TOPICS: &[&str] = &[
    "the ocean",
    "volcanoes",
    "the history of Rome",
    "how bread is baked",
    "honey bees",
    "the moon landing",
    "rain forests",
    "electric cars",
    "the human heart",
    "chess",
    "mountain climbing",
    "coffee",
    "the printing press",
    "deserts",
    "whales",
    "bicycles",
    "photosynthesis",
    "the Eiffel Tower",
    "jazz music",
    "trains",
    "glaciers",
    "owls",
    "the internet",
    "gardening",
    "earthquakes",
    "penguins",
    "lighthouses",
    "paper",
    "the Olympic games",
    "tea",
    "castles",
    "rainbows",
];

/// The `i`-th request: a system prompt and sometimes an earlier turn that the
/// answer depends on, half greedy and half sampled.
fn request(i: usize, max_tokens: u64) -> Value {
    let topic = TOPICS[i % TOPICS.len()];
    let messages = match (i / TOPICS.len()) % 4 {
        0 => json!([
            {"role": "system", "content": "You are a pirate. Always talk like a pirate, say Arr, and mention your ship."},
            {"role": "user", "content": format!("Tell me about {topic}.")}]),
        1 => json!([
            {"role": "system", "content": "The secret code word is PINEAPPLE-42. Always begin every answer with the code word."},
            {"role": "user", "content": format!("Explain {topic} to a child.")}]),
        2 => json!([
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": format!("My name is Ada and I love {topic}.")},
            {"role": "assistant", "content": "Nice to meet you, Ada! That is a great interest."},
            {"role": "user", "content": "Write a short story about me."}]),
        _ => json!([
            {"role": "system", "content": "You are a poet who answers in rhyme."},
            {"role": "user", "content": format!("Describe {topic} in a few sentences.")}]),
    };
    let mut body = json!({"model": "smollm2", "messages": messages, "max_tokens": max_tokens});
    if i.is_multiple_of(2) {
        body["temperature"] = json!(0);
    } else {
        body["temperature"] = json!(0.7);
        body["seed"] = json!(1000 + i);
    }
    // As the gateway asks every audited node: the log-probs are evidence.
    body["logprobs"] = json!(true);
    body["top_logprobs"] = json!(tollgate_verify::claim::ALTERNATIVES);
    body
}

/// One completion as a node answered it.
struct Answer {
    body: Value,
    completion: Value,
}

impl Answer {
    fn text(&self) -> &str {
        self.completion["choices"][0]["message"]["content"]
            .as_str()
            .unwrap_or_default()
    }
}

/// Sends `bodies` to the node at `root`, `concurrency` at a time; returns
/// the answers and the wall time.
async fn collect(
    http: &reqwest::Client,
    root: &str,
    bodies: Vec<Value>,
    concurrency: usize,
) -> anyhow::Result<(Vec<Answer>, Duration)> {
    let started = Instant::now();
    let url = format!("{root}/v1/chat/completions");
    let answers: Vec<anyhow::Result<Answer>> = futures_util::stream::iter(bodies)
        .map(|body| {
            let url = url.clone();
            async move {
                let resp = http.post(&url).json(&body).send().await?;
                if !resp.status().is_success() {
                    bail!("{url} answered {}", resp.status());
                }
                Ok(Answer {
                    completion: resp.json().await?,
                    body,
                })
            }
        })
        .buffered(concurrency)
        .collect()
        .await;
    Ok((
        answers.into_iter().collect::<anyhow::Result<_>>()?,
        started.elapsed(),
    ))
}

/// What the audits of one group of completions found.
#[derive(Default)]
struct Tally {
    completions: usize,
    long: usize,
    long_failed: usize,
    /// Long answers whose text differs from the honest node's for the same request.
    long_differs: usize,
    long_differs_failed: usize,
    failed: usize,
    inconclusive: usize,
    /// (prefix length, judged, failed)
    by_length: Vec<(usize, usize, usize)>,
    audit_time: Duration,
    latencies_ms: Vec<f64>,
    /// A line per failed audit: what was asked and why it failed.
    failures: Vec<String>,
    /// Per-token |reported - reference| log-prob gaps.
    gaps: Vec<f64>,
    /// Per-token gaps of the reported alternatives (rank by rank, the largest).
    alternative_gaps: Vec<f64>,
    /// Failed by its own audit or by the node's recent audits pooled.
    failed_pooled: usize,
    long_failed_pooled: usize,
    /// The node's first audit (1-based) that failed, alone or pooled.
    first_caught: Option<usize>,
    /// Long answers failed by the decisive test (one position far off).
    long_failed_decisive: usize,
    /// The farthest an aligned position was off (a replay miss's margin in
    /// logits, a reported log-prob's gap in nats): what the decisive test
    /// would see, against its tolerance.
    worst_aligned: f32,
    /// Every audit, as JSON (for `--reports`).
    reports: Vec<Value>,
    /// Every long answer's request, audited positions and whether its own
    /// audit failed it (for the footprint of a changed context).
    long_answers: Vec<(Value, Vec<Position>, bool)>,
}

/// The cheat whose footprint is measured.
const DROPS_SYSTEM: &str = "drops the system prompt";

const LENGTHS: &[usize] = &[8, 16, 24, 32, 48];

/// Audits `answers`; `honest_texts`, where given, are the honest node's
/// answers to the same requests (a cheat that wrote exactly those is
/// indistinguishable from honesty, and harmless for that answer).
async fn audit_all(
    label: &str,
    auditor: &Auditor,
    sha: &str,
    answers: &[Answer],
    honest_texts: Option<&[String]>,
    replayable: bool,
) -> anyhow::Result<Tally> {
    let mut t = Tally {
        by_length: LENGTHS.iter().map(|&k| (k, 0, 0)).collect(),
        ..Default::default()
    };
    let thresholds = Thresholds::default();
    // The answers are one node's, audited in order: its pooled history.
    let mut history = History::<()>::default();
    for (n, a) in answers.iter().enumerate() {
        let claim = Claim::from_completion(a.body.clone(), &a.completion)
            .context("answer is not a chat completion")?;
        let report = auditor.audit(&claim, sha, replayable).await?;
        t.audit_time += report.elapsed;
        t.latencies_ms.push(report.elapsed.as_secs_f64() * 1e3);
        t.completions += 1;
        for p in &report.positions {
            t.gaps.extend(p.logprob_gap().map(f64::from));
            t.alternative_gaps.extend(p.top_gap().map(f64::from));
        }
        let replays = report.verdict.mode != Mode::Unreplayable;
        for p in aligned(&report.positions) {
            t.worst_aligned = t.worst_aligned.max(p.decisive_off(replays));
        }
        t.reports.push(json!({
            "node": label,
            "request": a.body,
            "text": claim.text,
            "honest_text": honest_texts.and_then(|h| h.get(n)),
            "verdict": report.verdict,
            "positions": report.positions,
        }));
        let pooled = history.observe(&report.verdict, (), &thresholds);
        let pooled =
            tollgate_verify::history::with_pooled(report.verdict.clone(), pooled, &thresholds);
        let caught = pooled.outcome == Outcome::Fail;
        t.failed_pooled += usize::from(caught);
        t.long_failed_pooled += usize::from(caught && report.verdict.tokens >= 32);
        if caught && t.first_caught.is_none() {
            t.first_caught = Some(n + 1);
        }
        match report.verdict.outcome {
            Outcome::Fail => {
                t.failed += 1;
                let misses: Vec<String> = report
                    .positions
                    .iter()
                    .enumerate()
                    .filter_map(|(i, p)| {
                        let r = p.replayed?;
                        let gap = p.logprob_gap().unwrap_or(0.0);
                        (r.token != p.claimed || gap > thresholds.logprob_tolerance).then(|| {
                            format!(
                                "#{i} {}->{} margin {:.2} gap {:.2}",
                                p.claimed, r.token, r.margin, gap
                            )
                        })
                    })
                    .collect();
                t.failures.push(format!(
                    "temperature {} seed {}: {:?}; text {:?}; {}",
                    a.body["temperature"],
                    a.body["seed"],
                    report.verdict.reasons,
                    claim.text,
                    misses.join(", ")
                ));
            }
            Outcome::Inconclusive => t.inconclusive += 1,
            Outcome::Pass => {}
        }
        if report.verdict.tokens >= 32 {
            let failed = usize::from(report.verdict.outcome == Outcome::Fail);
            t.long_answers
                .push((a.body.clone(), report.positions.clone(), failed == 1));
            t.long += 1;
            t.long_failed += failed;
            t.long_failed_decisive += usize::from(report.verdict.decisive.failed());
            if honest_texts.is_some_and(|h| h.get(n).is_some_and(|h| h != a.text())) {
                t.long_differs += 1;
                t.long_differs_failed += failed;
            }
        }
        for (k, judged, failed) in &mut t.by_length {
            if report.positions.len() >= *k {
                *judged += 1;
                let v = judge(&report.positions[..*k], report.verdict.mode, &thresholds);
                *failed += usize::from(v.outcome == Outcome::Fail);
            }
        }
    }
    Ok(t)
}

/// What the footprint of the dropped system prompt showed.
struct DropFootprint {
    /// Long answers whose footprint is within what rounding may do.
    within_rounding: usize,
    /// The audit's detection rate over the other long answers.
    detection_beyond: f64,
}

/// Scores the dropped-system-prompt cheat's long answers again in the
/// context it used, and prints how far that moves the reference's best
/// log-probs next to how far honest nodes' rounding moves them.
async fn report_drop_footprint<'a>(
    engine: &tollgate_engine::Engine,
    rows: &[(&str, Tally)],
    honest: impl Iterator<Item = &'a Tally>,
    honest_rate: f64,
    t: &Thresholds,
) -> anyhow::Result<DropFootprint> {
    let tolerance = t.alternatives_tolerance;
    let mut honest_shares: Vec<f64> = honest
        .flat_map(|tally| &tally.long_answers)
        .map(|(_, positions, _)| {
            let gaps: Vec<f32> = positions.iter().filter_map(Position::top_gap).collect();
            footprint::Footprint { per_token: gaps }.share_beyond(tolerance)
        })
        .collect();
    let Some((_, drop)) = rows.iter().find(|(name, _)| *name == DROPS_SYSTEM) else {
        return Ok(DropFootprint {
            within_rounding: 0,
            detection_beyond: 0.0,
        });
    };
    let mut medians = Vec::new();
    let mut shares = Vec::new();
    let (mut within, mut within_caught, mut beyond, mut beyond_caught) = (0, 0, 0, 0);
    for (request, positions, failed) in &drop.long_answers {
        let used = footprint::without_system(request);
        let f = footprint::measure(engine, &used, positions).await?;
        medians.push(f64::from(f.median()));
        shares.push(f.share_beyond(tolerance));
        if f.visible(honest_rate, t) {
            beyond += 1;
            beyond_caught += usize::from(*failed);
        } else {
            within += 1;
            within_caught += usize::from(*failed);
        }
    }
    let detection_beyond = if beyond > 0 {
        beyond_caught as f64 / beyond as f64
    } else {
        0.0
    };
    println!("\nthe dropped system prompt's footprint: its {} long answers scored again in the context the cheat used", drop.long_answers.len());
    println!("  per answer, the best log-probs' largest rank-by-rank move (median over tokens): p50 {:.3}, min {:.3} nats",
        percentile(&mut medians, 0.5), percentile(&mut medians, 0.0));
    println!("  per answer, tokens moved past the {tolerance} tolerance: p50 {:.1}%, min {:.1}%; honest rounding moves p50 {:.1}%, max {:.1}% (the test allows {:.0}%)",
        percentile(&mut shares, 0.5) * 100.0, percentile(&mut shares, 0.0) * 100.0,
        percentile(&mut honest_shares, 0.5) * 100.0, percentile(&mut honest_shares, 1.0) * 100.0,
        t.honest_alternatives_rate * 100.0);
    println!("  answers whose footprint alone could not fail an audit assuming the {:.2}% honest nodes showed: {within} ({within_caught} caught alone, with rounding's help); the others: {beyond_caught} of {beyond} caught alone ({:.1}%)",
        honest_rate * 100.0, detection_beyond * 100.0);
    Ok(DropFootprint {
        within_rounding: within,
        detection_beyond,
    })
}

fn percentile(values: &mut [f64], p: f64) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(|a, b| a.total_cmp(b));
    values[((values.len() - 1) as f64 * p).round() as usize]
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
    eprintln!("bench-verify: {} honest completions", args.honest);
    let bodies: Vec<Value> = (0..n_main).map(|i| request(i, args.max_tokens)).collect();
    let (main_answers, gen_wall) = collect(&http, &honest, bodies, args.concurrency).await?;
    let bodies: Vec<Value> = (0..n_1t).map(|i| request(i + 7, args.max_tokens)).collect();
    let (answers_1t, _) = collect(&http, &honest_1t, bodies, 2).await?;
    let bodies: Vec<Value> = (0..args.mistralrs)
        .map(|i| request(i + 13, args.max_tokens))
        .collect();
    let (answers_mr, _) = collect(&http, &honest_mr, bodies, args.concurrency).await?;
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
    let honest_main = audit_all("honest", &auditor, &sha, &main_answers, None, true).await?;
    let honest_1t_tally = audit_all("honest-1t", &auditor, &sha, &answers_1t, None, true).await?;
    // mistralrs draws with its own sampler: seeded answers are not replayed.
    let honest_mr_tally =
        audit_all("honest-mistralrs", &auditor, &sha, &answers_mr, None, false).await?;
    let honest_groups = [
        ("honest (all threads, batch 8)", &honest_main),
        ("honest (1 thread, batch 2)", &honest_1t_tally),
        ("honest (mistralrs runtime)", &honest_mr_tally),
    ];
    let honest_tallies = || honest_groups.iter().map(|g| g.1);
    let mut rows = Vec::new();
    for (name, answers, truth) in &cheat_answers {
        rows.push((
            *name,
            audit_all(name, &auditor, &sha, answers, Some(truth), true).await?,
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
    let mut alternative_gaps: Vec<f64> = honest_tallies()
        .flat_map(|t| t.alternative_gaps.iter().copied())
        .collect();
    let th = Thresholds::default();
    let alternatives_rate = ratio(
        alternative_gaps
            .iter()
            .filter(|&&g| g > f64::from(th.alternatives_tolerance))
            .count(),
        alternative_gaps.len(),
    );
    println!(
        "honest alternatives' gaps (nats, rank by rank, {} tokens): p50 {:.3}, p99 {:.3}, max {:.3}; beyond tolerance {}: {:.2}% of tokens (the test assumes at most {:.0}%)",
        alternative_gaps.len(),
        percentile(&mut alternative_gaps, 0.5),
        percentile(&mut alternative_gaps, 0.99),
        percentile(&mut alternative_gaps, 1.0),
        th.alternatives_tolerance,
        alternatives_rate * 100.0,
        th.honest_alternatives_rate * 100.0
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
    let drop_footprint = report_drop_footprint(
        auditor.engine(),
        &rows,
        honest_tallies(),
        alternatives_rate,
        &th,
    )
    .await?;
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
            "honest": honest_tallies().map(|t| t.completions).sum::<usize>(),
            "honest_mistralrs": honest_mr_tally.completions,
            "false_positives_mistralrs": honest_mr_tally.failed,
            "cheating": rows.iter().map(|r| r.1.completions).sum::<usize>(),
            "audit_cost_share": (cost_share * 1e4).round() / 1e4,
            "drop_system_within_rounding": drop_footprint.within_rounding,
            "drop_system_detection_beyond_rounding": (drop_footprint.detection_beyond * 1e4).round() / 1e4,
            "verdict_latency_ms": p50.round(),
            "verdict_latency_p99_ms": p99.round(),
        })
    );
    Ok(())
}
