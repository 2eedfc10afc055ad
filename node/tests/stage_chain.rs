//! Real `tollgate-node stage` processes on loopback, chained: the chain's
//! tokens equal one in-process span's, greedy and sampled; a dead stage is a
//! clear error.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use candle_core::Device;
use tollgate_engine::stage::{even_spans, LocalChain};
use tollgate_engine::{Sampler, SamplingParams};
use tollgate_protocol::stage::{ChainClient, Codec, Sampling, StageError};

fn model() -> PathBuf {
    let path = crate_dir().join("../models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf");
    assert!(
        path.exists(),
        "{} is missing: run scripts/fetch-model",
        path.display()
    );
    path
}

/// A stage process, killed when dropped.
struct Stage {
    child: Child,
    addr: String,
}

impl Drop for Stage {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn stage(layers: std::ops::Range<usize>) -> Stage {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tollgate-node"))
        .args(["stage", "--listen", "127.0.0.1:0", "--layers"])
        .arg(format!("{}..{}", layers.start, layers.end))
        .arg("--model")
        .arg(model())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("tollgate-node starts");
    let stdout = child.stdout.take().expect("stdout");
    let line = BufReader::new(stdout)
        .lines()
        .next()
        .expect("a line")
        .expect("utf-8");
    let addr = line
        .strip_prefix("listening on ")
        .expect("its address")
        .trim()
        .to_string();
    Stage { child, addr }
}

fn chain_of(parts: usize) -> Vec<Stage> {
    even_spans(30, parts).into_iter().map(stage).collect()
}

/// `<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n`
/// in SmolLM2's vocabulary, close enough: any tokens do for equality.
const PROMPT: &[u32] = &[
    1, 4093, 198, 1780, 314, 260, 3575, 282, 4649, 47, 2, 198, 1, 520, 9531, 198,
];

/// What one in-process span generates, sampling as the last stage does.
fn local(max: usize, sampling: Sampling) -> Vec<u32> {
    let one = LocalChain::load(&model(), &even_spans(30, 1), &Device::Cpu).unwrap();
    let mut caches = one.new_session();
    let mut sampler = Sampler::new(
        SamplingParams {
            temperature: sampling.temperature,
            top_p: sampling.top_p,
            seed: Some(sampling.seed),
            ..SamplingParams::default()
        },
        0,
    );
    let mut next = PROMPT.to_vec();
    let mut out = Vec::new();
    while out.len() < max {
        let logits = one.forward(next, &mut caches).unwrap();
        let rows = logits.dim(0).unwrap();
        let last: Vec<f32> = logits.get(rows - 1).unwrap().to_vec1().unwrap();
        let token = if sampling.temperature <= 0.0 {
            tollgate_engine::stage::argmax_rows(&logits).unwrap()[rows - 1]
        } else {
            sampler.sample(&last)
        };
        out.push(token);
        next = vec![token];
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_three_stage_chain_generates_what_one_span_generates() {
    let stages = chain_of(3);
    let addrs: Vec<String> = stages.iter().map(|s| s.addr.clone()).collect();
    let sampled = Sampling {
        temperature: 0.7,
        top_p: 0.95,
        seed: 1234,
        step: 0,
    };
    for (session, sampling) in [(1u64, Sampling::GREEDY), (2, sampled)] {
        let want = local(24, sampling);
        let mut chain = ChainClient::open(&addrs, Codec::F32, session)
            .await
            .unwrap();
        let got = chain.generate(PROMPT, 24, &[], sampling).await.unwrap();
        assert_eq!(got, want, "{sampling:?}");
        assert_eq!(chain.len() as usize, PROMPT.len() + 23);
    }
    // Compressed hidden states: report how often they pick the same tokens.
    let want = local(24, Sampling::GREEDY);
    for (session, codec) in [(3u64, Codec::F16), (4, Codec::Int8Row)] {
        let mut chain = ChainClient::open(&addrs, codec, session).await.unwrap();
        let got = chain
            .generate(PROMPT, 24, &[], Sampling::GREEDY)
            .await
            .unwrap();
        let same = got.iter().zip(&want).take_while(|(a, b)| a == b).count();
        println!(
            "{}: first {same} of 24 greedy tokens as with f32",
            codec.name()
        );
        assert!(same >= 4, "{codec:?} diverged at once: {got:?} vs {want:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rewinds_replay_and_skips_and_dead_stages_are_clear_errors() {
    let mut stages = chain_of(2);
    let addrs: Vec<String> = stages.iter().map(|s| s.addr.clone()).collect();
    let mut chain = ChainClient::open(&addrs, Codec::F32, 9).await.unwrap();
    let first = chain
        .forward(PROMPT.to_vec(), Sampling::GREEDY)
        .await
        .unwrap();
    assert_eq!(first.argmax.len(), PROMPT.len(), "an argmax per row");
    // Rewind two positions and run them again: the same picks.
    chain.truncate(PROMPT.len() as u32 - 2).await.unwrap();
    let again = chain
        .forward(PROMPT[PROMPT.len() - 2..].to_vec(), Sampling::GREEDY)
        .await
        .unwrap();
    assert_eq!(again.next, first.next);
    assert_eq!(again.argmax, first.argmax[PROMPT.len() - 2..]);
    // The second stage dies: the next forward fails naming it.
    let dead = stages.pop().unwrap();
    let dead_addr = dead.addr.clone();
    drop(dead);
    let err = chain
        .forward(vec![first.next], Sampling::GREEDY)
        .await
        .expect_err("a dead stage");
    match err {
        StageError::Unreachable { stage, .. } => assert_eq!(stage, dead_addr),
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_middle_stage_dies_mid_generation_and_a_spare_takes_its_span() {
    let spans = even_spans(30, 3);
    let stages: Vec<Stage> = spans.iter().cloned().map(stage).collect();
    let spare = stage(spans[1].clone());
    let addrs: Vec<String> = stages.iter().map(|s| s.addr.clone()).collect();
    let sampled = Sampling {
        temperature: 0.7,
        top_p: 0.95,
        seed: 99,
        step: 0,
    };
    let want = local(24, sampled);
    let mut stages = stages;
    let mut chain = ChainClient::open(&addrs, Codec::F32, 5)
        .await
        .unwrap()
        .with_spares(vec![vec![], vec![spare.addr.clone()], vec![]]);
    let mut got = Vec::new();
    let mut next = PROMPT.to_vec();
    for step in 0..24u32 {
        if step == 8 {
            // Kill the middle stage between two tokens of the generation.
            drop(stages.remove(1));
        }
        let token = chain
            .forward(next, Sampling { step, ..sampled })
            .await
            .expect("the chain fails over")
            .next;
        got.push(token);
        next = vec![token];
    }
    assert_eq!(got, want, "the same text as an undisturbed run");
    assert_eq!(chain.failovers(), 1);
    assert_eq!(chain.stages()[1], spare.addr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn speculation_over_the_chain_keeps_greedy_output_in_fewer_traversals() {
    let stages = chain_of(2);
    let addrs: Vec<String> = stages.iter().map(|s| s.addr.clone()).collect();
    // A repetitive prompt: the model's own answer, then the question again.
    let answer = local(24, Sampling::GREEDY);
    let mut prompt = PROMPT.to_vec();
    prompt.extend(&answer);
    prompt.extend(PROMPT);
    let mut plain = ChainClient::open(&addrs, Codec::F32, 11).await.unwrap();
    let want = plain
        .generate(&prompt, 24, &[], Sampling::GREEDY)
        .await
        .unwrap();
    let mut fast = ChainClient::open(&addrs, Codec::F32, 12).await.unwrap();
    let (got, stats) = fast
        .generate_speculative(&prompt, 24, &[], 4)
        .await
        .unwrap();
    println!("speculation: {stats:?}");
    assert_eq!(got, want);
    assert!(stats.accepted > 0 && stats.traversals < 24, "{stats:?}");
    assert_eq!(
        fast.len() as usize,
        prompt.len() + 23,
        "the chain holds exactly what was kept"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chain_across_three_emulated_regions_generates_the_same_tokens() {
    use std::time::Duration;
    use tollgate_loadtest::link::{Direction, Link, LinkConfig};
    // Gateway -> eu (20 ms round trip), eu -> us (80 ms), us -> asia (50 ms),
    // every hop capped at 10 Mbit/s with a little jitter.
    let stages = chain_of(3);
    let mut links = Vec::new();
    for (s, rtt_ms) in stages.iter().zip([20u64, 80, 50]) {
        let dir = Direction {
            latency: Duration::from_millis(rtt_ms / 2),
            jitter: Duration::from_millis(2),
            bandwidth: Some(10e6 / 8.0),
        };
        let config = LinkConfig {
            upstream: s.addr.parse().unwrap(),
            up: dir,
            down: dir,
            seed: rtt_ms,
        };
        links.push(
            Link::start("127.0.0.1:0".parse().unwrap(), config)
                .await
                .unwrap(),
        );
    }
    let route: Vec<String> = links.iter().map(|l| l.addr().to_string()).collect();
    let want = local(12, Sampling::GREEDY);
    let run = async {
        let mut chain = ChainClient::open(&route, Codec::F16, 21).await.unwrap();
        chain
            .generate(PROMPT, 12, &[], Sampling::GREEDY)
            .await
            .unwrap()
    };
    let got = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("bounded in time");
    let same = got.iter().zip(&want).take_while(|(a, b)| a == b).count();
    assert!(same >= 8, "{got:?} vs {want:?}");
    assert!(
        links.iter().all(|l| l.handle().stats().up_bytes > 0),
        "every hop carried the chain"
    );
}

/// This crate's directory: the one cargo runs the test from (a binary cached
/// from another checkout keeps its build path in `env!`), else the build's.
fn crate_dir() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
}
