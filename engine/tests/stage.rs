//! The stage runtime on the real SmolLM2 GGUF: one span agrees with the
//! engine's runtimes, chains of spans equal one span, caches behave.

use std::path::PathBuf;

use candle_core::Device;
use serde_json::json;
use tollgate_engine::stage::{argmax_rows, even_spans, AttentionPrecision, LocalChain};
use tollgate_engine::{Engine, EngineBuilder, Runtime};

fn model_path() -> PathBuf {
    std::env::var_os("TOLLGATE_MODEL")
        .map(PathBuf::from)
        .unwrap_or_else(|| crate_dir().join("../models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"))
}

fn chain(parts: usize) -> LocalChain {
    let path = model_path();
    assert!(
        path.exists(),
        "{} is missing: run scripts/fetch-model",
        path.display()
    );
    LocalChain::load(&path, &even_spans(30, parts), &Device::Cpu).expect("spans load")
}

async fn engine(runtime: Runtime) -> Engine {
    EngineBuilder::new(model_path())
        .model_id("smollm2")
        .runtime(runtime)
        .build()
        .await
        .expect("model loads")
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
    "the heart",
    "chess",
    "coffee",
    "paper",
    "whales",
    "trains",
    "owls",
    "tea",
];

const ASKS: &[&str] = &[
    "Tell me about {}.",
    "Write two sentences about {}.",
    "What should a child know about {}?",
    "Give me one surprising fact about {}.",
];

/// The `i`-th of 64 distinct greedy chat requests.
fn chat(i: usize) -> serde_json::Value {
    let ask = ASKS[(i / TOPICS.len()) % ASKS.len()].replace("{}", TOPICS[i % TOPICS.len()]);
    json!({"model": "smollm2", "temperature": 0, "max_tokens": 32, "messages": [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": ask}]})
}

/// With f16 attention the stage runtime rounds queries, keys and values to the precision
/// mistralrs picks on this device (f16 on a CPU) and attends in the order
/// of mistralrs's CPU kernel, so on 50 prompts x 32 tokens its greedy
/// text is mistralrs's, and so is every teacher-forced
/// pick along the way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_span_generates_what_mistralrs_generates() {
    let reference = engine(Runtime::Mistralrs).await;
    let vocab = engine(Runtime::LlamaCpp).await;
    let chain = LocalChain::load_with(
        &model_path(),
        &even_spans(30, 1),
        &Device::Cpu,
        AttentionPrecision::F16,
    )
    .expect("spans load");
    let stop = [2u32];
    let (mut equal, mut generated, mut forced_equal, mut forced) = (0, 0, 0, 0);
    let mut identical = 0;
    for i in 0..50 {
        let body = chat(i);
        let prompt = reference.tokenize_chat(&body).await.unwrap();
        let answer = reference.complete(&body).await.unwrap();
        let text = answer.choices[0]
            .message
            .content
            .clone()
            .unwrap_or_default();
        let theirs = reference.tokenize_text(&text).await.unwrap();
        let mut ours = chain.greedy(&prompt, 32, &stop).unwrap();
        ours.retain(|t| !stop.contains(t));
        // Compared as text: the same text may split into other tokens
        // ("\n\n" is one token or two) when mistralrs's answer is re-read.
        let pieces = vocab.pieces(&ours).expect("llama.cpp spells tokens");
        let mut spelled = Vec::new();
        generated += ours.len();
        for piece in pieces {
            spelled.extend(piece);
            if !text.as_bytes().starts_with(&spelled) {
                break;
            }
            equal += 1;
        }
        identical += usize::from(spelled == text.as_bytes());
        // Teacher-forced over mistralrs's answer: row p picks token p + 1.
        let mut tokens = prompt.clone();
        tokens.extend(&theirs);
        let scores = reference.score(tokens.clone(), 1, None).await.unwrap();
        let picks = argmax_rows(&chain.forward(tokens, &mut chain.new_session()).unwrap()).unwrap();
        for (p, s) in scores.positions.iter().enumerate().skip(prompt.len() - 1) {
            forced += 1;
            forced_equal += usize::from(picks[p] == s.argmax);
        }
    }
    let rate = |a: usize, b: usize| a as f64 / b.max(1) as f64;
    println!(
        "one span vs mistralrs, 50 prompts x 32 tokens: {equal} of {generated} greedy tokens equal ({:.4}), {identical} of 50 answers identical; teacher-forced picks equal {forced_equal} of {forced} ({:.4})",
        rate(equal, generated),
        rate(forced_equal, forced)
    );
    assert!(generated >= 50 * 16, "{generated} tokens generated");
    assert!(rate(equal, generated) >= 0.99, "greedy agreement");
    assert!(
        rate(forced_equal, forced) >= 0.99,
        "teacher-forced agreement"
    );
}

#[test]
fn chains_of_two_and_three_spans_equal_one_span() {
    let prompts: Vec<Vec<u32>> = vec![
        vec![
            1, 9690, 198, 2683, 359, 253, 5356, 5646, 11173, 30, 2, 198, 1, 4093, 198, 19161, 549,
            563, 260, 4594, 30, 2, 198, 1, 520, 9531, 198,
        ],
        vec![
            1, 4093, 198, 57, 2103, 314, 2428, 30, 2, 198, 1, 520, 9531, 198,
        ],
    ];
    let stop = [2u32];
    for precision in [AttentionPrecision::F32, AttentionPrecision::F16] {
        let chain = |parts| {
            LocalChain::load_with(
                &model_path(),
                &even_spans(30, parts),
                &Device::Cpu,
                precision,
            )
            .expect("spans load")
        };
        let one = chain(1);
        let want: Vec<Vec<u32>> = prompts
            .iter()
            .map(|p| one.greedy(p, 24, &stop).unwrap())
            .collect();
        assert!(want.iter().all(|w| w.len() >= 5), "{want:?}");
        for parts in [2, 3] {
            let c = chain(parts);
            for (p, w) in prompts.iter().zip(&want) {
                assert_eq!(
                    &c.greedy(p, 24, &stop).unwrap(),
                    w,
                    "{parts} spans, {precision:?}"
                );
            }
        }
    }
}

#[test]
fn decoding_with_the_cache_equals_one_pass_and_truncation_rewinds() {
    let c = chain(2);
    let tokens: Vec<u32> = vec![
        1, 4093, 198, 57, 2103, 314, 2428, 30, 2, 198, 1, 520, 9531, 198, 504, 2103,
    ];
    let whole = c.forward(tokens.clone(), &mut c.new_session()).unwrap();
    let mut caches = c.new_session();
    let head = c.forward(tokens[..10].to_vec(), &mut caches).unwrap();
    let mut rows = vec![head];
    for &t in &tokens[10..] {
        rows.push(c.forward(vec![t], &mut caches).unwrap());
    }
    let stepped = candle_core::Tensor::cat(&rows, 0).unwrap();
    let diff = (whole.clone() - &stepped)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert!(diff < 1e-2, "max logit difference {diff}");
    assert_eq!(argmax_rows(&whole).unwrap(), argmax_rows(&stepped).unwrap());
    // Rewind to 12 positions and run the rest again: the same logits.
    for cache in &mut caches {
        cache.truncate(12).unwrap();
        assert_eq!(cache.len(), 12);
    }
    let again = c.forward(tokens[12..].to_vec(), &mut caches).unwrap();
    let tail = whole.narrow(0, 12, tokens.len() - 12).unwrap();
    let diff = (tail - again)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert!(diff < 1e-2, "after truncation {diff}");
}

#[test]
fn bad_spans_and_inputs_are_typed_errors() {
    let path = model_path();
    let err = LocalChain::load(&path, &[0..10, 11..30], &Device::Cpu)
        .err()
        .expect("a gap");
    assert!(err.to_string().contains("without gaps"), "{err}");
    let err = tollgate_engine::stage::LlamaSpan::load(&path, 20..31, &Device::Cpu)
        .err()
        .expect("past the end");
    assert!(err.to_string().contains("30 blocks"), "{err}");
    let middle = tollgate_engine::stage::LlamaSpan::load(&path, 10..20, &Device::Cpu).unwrap();
    assert!(!middle.is_first() && !middle.is_last());
    let mut cache = middle.new_cache();
    let err = middle
        .forward(
            tollgate_engine::stage::StageInput::Tokens(vec![1]),
            &mut cache,
        )
        .expect_err("tokens into a middle span");
    assert!(err.to_string().contains("hidden states"), "{err}");
    let wrong =
        candle_core::Tensor::zeros((2, 100), candle_core::DType::F32, &Device::Cpu).unwrap();
    let err = middle
        .forward(
            tollgate_engine::stage::StageInput::Hidden(wrong),
            &mut cache,
        )
        .expect_err("wrong width");
    assert!(err.to_string().contains("576"), "{err}");
    assert!(
        cache.is_empty(),
        "a refused input leaves the cache as it was"
    );
}

/// This crate's directory: the one cargo runs the test from (a binary cached
/// from another checkout keeps its build path in `env!`), else the build's.
fn crate_dir() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
}
