//! The engine on the real SmolLM2 GGUF (fetched by `scripts/fetch-model`).

use std::path::PathBuf;

use futures_util::StreamExt;
use serde_json::json;
use tollgate_engine::{Engine, EngineBuilder, Runtime};

fn model_path() -> PathBuf {
    std::env::var_os("TOLLGATE_MODEL")
        .map(PathBuf::from)
        .unwrap_or_else(|| crate_dir().join("../models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"))
}

async fn engine(runtime: Runtime) -> Engine {
    let path = model_path();
    assert!(
        path.exists(),
        "{} is missing: run scripts/fetch-model",
        path.display()
    );
    EngineBuilder::new(path)
        .model_id("smollm2")
        .runtime(runtime)
        .build()
        .await
        .expect("model loads")
}

fn question(extra: serde_json::Value) -> serde_json::Value {
    let mut body = json!({
        "model": "smollm2",
        "messages": [{"role": "user", "content": "What is the capital of France? Answer in one sentence."}],
        "temperature": 0,
        "max_tokens": 24,
    });
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    body
}

/// Runs an async test body once per runtime.
macro_rules! for_each_runtime {
    ($name:ident) => {
        mod $name {
            use super::*;
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn llama_cpp() {
                super::$name(engine(Runtime::LlamaCpp).await).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn mistralrs() {
                super::$name(engine(Runtime::Mistralrs).await).await
            }
        }
    };
}

for_each_runtime!(greedy_completion_is_reproduced_by_teacher_forced_scoring);
for_each_runtime!(streams_in_openai_order_and_serves_concurrent_requests);
for_each_runtime!(bad_parameters_are_request_errors);

async fn greedy_completion_is_reproduced_by_teacher_forced_scoring(engine: Engine) {
    assert_eq!(
        engine.sha256(),
        "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
    );
    let body = question(json!({"logprobs": true, "top_logprobs": 3}));
    let completion = engine.complete(&body).await.unwrap();
    let choice = &completion.choices[0];
    let text = choice.message.content.clone().unwrap();
    assert!(text.contains("Paris"), "SmolLM2 knows this one: {text:?}");
    assert_eq!(completion.model, "smollm2");
    let logprobs = choice.logprobs.as_ref().unwrap().content.as_ref().unwrap();
    assert_eq!(logprobs.len() as u64, completion.usage.completion_tokens);
    assert!(logprobs
        .iter()
        .all(|l| l.top_logprobs.len() == 3 && l.logprob <= 0.0));

    // Teacher forcing: prompt + completion in one pass; at every completion
    // position the argmax is the token greedy decoding chose.
    let prompt = engine.tokenize_chat(&body).await.unwrap();
    assert_eq!(prompt.len() as u64, completion.usage.prompt_tokens);
    let generated = engine.tokenize_text(&text).await.unwrap();
    let mut all = prompt.clone();
    all.extend(&generated);
    let scores = engine.score(all.clone(), 5, None).await.unwrap();
    assert_eq!(scores.positions.len(), all.len() - 1);
    for (i, pos) in scores.positions.iter().enumerate().skip(prompt.len() - 1) {
        assert_eq!(pos.token, all[i + 1]);
        assert_eq!(
            pos.argmax, pos.token,
            "position {i}: greedy token is the argmax"
        );
        assert!(pos.logprob > -5.0);
    }
    // Judging only the answer gives the answer's entries of the whole pass.
    let tail = engine
        .score_from(all.clone(), prompt.len(), 5, None)
        .await
        .unwrap();
    assert_eq!(tail.positions.len(), generated.len());
    for (k, (part, whole)) in tail
        .positions
        .iter()
        .zip(&scores.positions[prompt.len() - 1..])
        .enumerate()
    {
        assert_eq!((part.token, part.argmax), (whole.token, whole.argmax));
        assert!(
            (part.logprob - whole.logprob).abs() < 1e-3,
            "token {k}: {} judged alone, {} in the whole pass",
            part.logprob,
            whole.logprob
        );
    }
    // The reported log-probs (natural log, as OpenAI's) agree with the
    // teacher-forced ones up to the decode-vs-prefill numeric path, and so do
    // the alternatives.
    for (k, lp) in logprobs.iter().take(generated.len()).enumerate() {
        let pos = &scores.positions[prompt.len() - 1 + k];
        assert!(
            (lp.logprob - pos.logprob).abs() < 0.1,
            "token {k}: reported {} vs scored {}",
            lp.logprob,
            pos.logprob
        );
        assert!(
            (lp.top_logprobs[0].logprob - pos.top[0].1).abs() < 0.1,
            "token {k}: best alternative"
        );
        assert_eq!(
            lp.top_logprobs[0].token, lp.token,
            "greedy: the chosen token is the best one"
        );
    }
    // Greedy is reproducible.
    let again = engine.complete(&body).await.unwrap();
    assert_eq!(
        again.choices[0].message.content.as_deref(),
        Some(text.as_str())
    );
}

async fn streams_in_openai_order_and_serves_concurrent_requests(engine: Engine) {
    let engine = std::sync::Arc::new(engine);
    let chunks: Vec<_> = engine
        .stream(&question(json!({})), true)
        .await
        .unwrap()
        .collect()
        .await;
    let chunks: Vec<_> = chunks.into_iter().map(Result::unwrap).collect();
    assert_eq!(
        chunks[0].choices[0].delta.role.as_deref(),
        Some("assistant")
    );
    let text: String = chunks
        .iter()
        .flat_map(|c| c.choices.iter())
        .filter_map(|c| c.delta.content.clone())
        .collect();
    assert!(text.contains("Paris"), "{text:?}");
    let last = chunks.last().unwrap();
    assert!(last.choices.is_empty());
    let usage = last.usage.unwrap().unwrap();
    let finishing: Vec<_> = chunks
        .iter()
        .flat_map(|c| c.choices.iter())
        .filter(|c| c.finish_reason.is_some())
        .collect();
    assert_eq!(finishing.len(), 1);
    assert!(chunks[..chunks.len() - 1]
        .iter()
        .all(|c| c.usage == Some(None)));
    let greedy = engine.complete(&question(json!({}))).await.unwrap();
    assert_eq!(
        greedy.choices[0].message.content.as_deref(),
        Some(text.as_str()),
        "stream and whole answer agree"
    );
    assert_eq!(greedy.usage, usage);

    // Concurrent requests all finish (the scheduler batches them).
    let tasks: Vec<_> = (0..4)
        .map(|i| {
            let engine = engine.clone();
            tokio::spawn(async move {
                let body = json!({"model": "smollm2", "messages": [{"role": "user", "content": format!("Count to {}.", i + 3)}], "max_tokens": 16, "temperature": 0.7});
                engine.complete(&body).await
            })
        })
        .collect();
    for t in tasks {
        let c = t.await.unwrap().unwrap();
        assert!(c.usage.completion_tokens > 0 && c.usage.completion_tokens <= 16);
    }

    // Concurrent requests keep to their own prompts: each answer names its
    // own capital and no other request's.
    let capitals = [
        ("France", "Paris"),
        ("Italy", "Rome"),
        ("Japan", "Tokyo"),
        ("Germany", "Berlin"),
    ];
    let tasks: Vec<_> = capitals
        .iter()
        .map(|&(country, _)| {
            let engine = engine.clone();
            tokio::spawn(async move {
                let body = json!({"model": "smollm2", "messages": [{"role": "user", "content": format!("What is the capital of {country}? Answer in one sentence.")}], "max_tokens": 16, "temperature": 0});
                engine.complete(&body).await
            })
        })
        .collect();
    for (t, (country, city)) in tasks.into_iter().zip(capitals) {
        let text = text_of(&t.await.unwrap().unwrap(), 0);
        assert!(text.contains(city), "{country}: {text:?}");
        for (_, other) in capitals.iter().filter(|c| c.1 != city) {
            assert!(!text.contains(other), "{country}: {text:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mistralrs_attending_on_the_cpu_serves_one_choice_per_request() {
    let engine = engine(Runtime::Mistralrs).await;
    let err = engine
        .complete(&question(json!({"n": 2, "temperature": 0.7})))
        .await
        .expect_err("n = 2 is refused");
    assert!(
        matches!(err, tollgate_engine::EngineError::Request(ref r) if r.param == "n"),
        "{err}"
    );
    let one = engine.complete(&question(json!({"n": 1}))).await.unwrap();
    assert!(text_of(&one, 0).contains("Paris"));
}

async fn bad_parameters_are_request_errors(engine: Engine) {
    let err = engine
        .complete(&json!({"messages": []}))
        .await
        .err()
        .unwrap();
    assert!(
        matches!(err, tollgate_engine::EngineError::Request(ref r) if r.param == "messages"),
        "{err}"
    );
}

fn text_of(c: &tollgate_engine::openai::ChatCompletion, i: usize) -> String {
    c.choices[i].message.content.clone().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn llama_cpp_sampling_controls() {
    let engine = engine(Runtime::LlamaCpp).await;
    // A seed reproduces a sampled answer; choices of one request differ.
    let sampled = question(json!({"temperature": 0.9, "seed": 11, "n": 2, "max_tokens": 16}));
    let a = engine.complete(&sampled).await.unwrap();
    let b = engine.complete(&sampled).await.unwrap();
    assert_eq!(a.choices.len(), 2);
    assert_eq!(
        (text_of(&a, 0), text_of(&a, 1)),
        (text_of(&b, 0), text_of(&b, 1))
    );
    // Each choice draws its own noise: over a few seeds, the two choices of
    // a request differ (one peaked answer may coincide by chance).
    let mut differ = false;
    for seed in 11..17 {
        let c = engine
            .complete(&question(
                json!({"temperature": 1.2, "seed": seed, "n": 2, "max_tokens": 16}),
            ))
            .await
            .unwrap();
        differ |= text_of(&c, 0) != text_of(&c, 1);
    }
    assert!(differ, "each choice has its own stream");
    assert_eq!(a.usage.completion_tokens, b.usage.completion_tokens);
    assert_eq!(
        a.usage.total_tokens,
        a.usage.prompt_tokens + a.usage.completion_tokens
    );

    // max_tokens ends with "length" after exactly that many tokens.
    let short = engine
        .complete(&question(json!({"max_tokens": 3})))
        .await
        .unwrap();
    assert_eq!(short.choices[0].finish_reason.as_deref(), Some("length"));
    assert_eq!(short.usage.completion_tokens, 3);

    // A stop sequence cuts the text before it, and ends with "stop".
    let greedy = engine.complete(&question(json!({}))).await.unwrap();
    let full = text_of(&greedy, 0);
    let cut_at = full.find("Paris").expect("greedy answer names Paris");
    let stopped = engine
        .complete(&question(json!({"stop": ["Paris"]})))
        .await
        .unwrap();
    assert_eq!(text_of(&stopped, 0), full[..cut_at]);
    assert_eq!(stopped.choices[0].finish_reason.as_deref(), Some("stop"));

    // A prompt over the context is refused before it runs.
    let long = "word ".repeat(3000);
    let err = engine
        .complete(&json!({"messages": [{"role": "user", "content": long}]}))
        .await
        .err()
        .unwrap();
    assert!(
        matches!(err, tollgate_engine::EngineError::Request(ref r) if r.param == "messages" && r.message.contains("context length")),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn llama_cpp_batches_concurrent_streams_and_cancels_dropped_ones() {
    let engine = std::sync::Arc::new(engine(Runtime::LlamaCpp).await);
    // Four streams at once: with continuous batching each one's first token
    // arrives before any of them has finished.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let mut tasks = Vec::new();
    for i in 0..4 {
        let (engine, tx) = (engine.clone(), tx.clone());
        tasks.push(tokio::spawn(async move {
            let body = json!({"messages": [{"role": "user", "content": format!("Write a story about the number {i}.")}], "max_tokens": 40, "temperature": 0});
            let mut s = engine.stream(&body, false).await.unwrap();
            while let Some(chunk) = s.next().await {
                let chunk = chunk.unwrap();
                for c in &chunk.choices {
                    if c.delta.content.as_deref().is_some_and(|t| !t.is_empty()) {
                        let _ = tx.send((i, "token"));
                    }
                    if c.finish_reason.is_some() {
                        let _ = tx.send((i, "finish"));
                    }
                }
            }
        }));
    }
    drop(tx);
    for t in tasks {
        t.await.unwrap();
    }
    let mut order = Vec::new();
    while let Some(e) = rx.recv().await {
        order.push(e);
    }
    let first_finish = order.iter().position(|e| e.1 == "finish").unwrap();
    for i in 0..4 {
        let first_token = order.iter().position(|e| *e == (i, "token")).unwrap();
        assert!(
            first_token < first_finish,
            "stream {i} started only after another finished: {order:?}"
        );
    }

    // Dropping streams mid-way frees their sequences: more requests than
    // there are sequences, each dropped after its first chunk, then a normal
    // request still completes.
    for _ in 0..12 {
        let mut s = engine
            .stream(&question(json!({"max_tokens": 200})), false)
            .await
            .unwrap();
        s.next().await.unwrap().unwrap();
        drop(s);
    }
    let after = engine.complete(&question(json!({}))).await.unwrap();
    assert!(text_of(&after, 0).contains("Paris"));

    // A whole (non-streamed) request whose caller goes away is cancelled too:
    // long generations abandoned after 200 ms leave the engine idle again
    // well before they could have finished.
    for _ in 0..4 {
        let body = question(json!({"max_tokens": 1500, "logit_bias": {"0": -100, "2": -100}}));
        let abandoned = tokio::time::timeout(
            std::time::Duration::from_millis(200),
            engine.complete(&body),
        )
        .await;
        assert!(abandoned.is_err(), "1500 tokens take longer than 200 ms");
    }
    let mut idle = false;
    for _ in 0..50 {
        // The loop records its load once per step; a short request makes it step.
        engine
            .complete(&question(json!({"max_tokens": 1})))
            .await
            .unwrap();
        if engine.busy() == Some(0) {
            idle = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(
        idle,
        "abandoned requests still running: {:?}",
        engine.busy()
    );
}

#[test]
fn gguf_profile_of_smollm2() {
    let path = model_path();
    let p = tollgate_engine::profile::read(&path).unwrap();
    assert_eq!(p.layers.len(), 30, "SmolLM2-135M has 30 blocks");
    // 3 KV heads of 64 dims, K and V, f16.
    assert_eq!(p.kv_bytes_per_token_per_layer, 2 * 3 * 64 * 2);
    assert!(p
        .layers
        .iter()
        .all(|l| l.weight_bytes == p.layers[0].weight_bytes));
    // Blocks plus the embedding are the file, less its metadata; the head is
    // tied to the embedding.
    let file = std::fs::metadata(&path).unwrap().len();
    let tensors = p.layer_weight_bytes() + p.embedding_bytes;
    assert!(
        tensors < file && tensors > file * 9 / 10,
        "{tensors} of {file}"
    );
    assert!(p.head_bytes >= p.embedding_bytes);
    // About 2 x 3.4M parameters per block.
    assert!(
        (5_000_000..9_000_000).contains(&p.flops_per_token_per_layer),
        "{}",
        p.flops_per_token_per_layer
    );
    assert!(tollgate_engine::profile::read(std::path::Path::new("Cargo.toml")).is_err());
}

/// A seeded sampled completion is reproduced by replaying the request's
/// sampler over the teacher-forced logits: what an audit of a sampled answer
/// rests on. (llama.cpp runtime: its sampler is Tollgate's own.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seeded_sampling_is_replayed_by_scoring() {
    let engine = engine(Runtime::LlamaCpp).await;
    let body = question(
        json!({"temperature": 0.7, "top_p": 0.95, "seed": 42, "max_tokens": 40,
        "frequency_penalty": 0.3}),
    );
    let completion = engine.complete(&body).await.unwrap();
    let text = completion.choices[0].message.content.clone().unwrap();
    let prompt = engine.tokenize_chat(&body).await.unwrap();
    let generated = engine.tokenize_text(&text).await.unwrap();
    let mut all = prompt.clone();
    all.extend(&generated);
    let replay = tollgate_engine::Replay {
        from: prompt.len(),
        sampling: Engine::sampling_of(&body).unwrap(),
        choice: 0,
    };
    let scores = engine.score(all.clone(), 1, Some(replay)).await.unwrap();
    let replayed: Vec<_> = scores.positions[prompt.len() - 1..]
        .iter()
        .map(|p| p.replayed.expect("replayed past the prompt"))
        .collect();
    assert!(scores.positions[..prompt.len() - 1]
        .iter()
        .all(|p| p.replayed.is_none()));
    let matched = replayed
        .iter()
        .zip(&generated)
        .filter(|(r, &t)| r.token == t)
        .count();
    assert!(
        matched + 1 >= generated.len(),
        "{matched} of {} sampled tokens replayed: {text:?}",
        generated.len()
    );
    for (r, &t) in replayed.iter().zip(&generated) {
        assert_eq!(
            r.margin == 0.0,
            r.token == t,
            "a miss has a margin, a hit none"
        );
    }

    // Another seed draws other tokens: most positions miss, by wide margins.
    let other = tollgate_engine::Replay {
        from: prompt.len(),
        sampling: Engine::sampling_of(&question(json!({"temperature": 0.7, "seed": 7}))).unwrap(),
        choice: 0,
    };
    let scores = engine.score(all, 1, Some(other)).await.unwrap();
    let misses = scores.positions[prompt.len() - 1..]
        .iter()
        .filter(|p| p.replayed.is_some_and(|r| r.token != p.token))
        .count();
    assert!(misses > 0, "a different seed cannot replay the same text");
}

/// The unfused attention kernel is another numeric path to the same model:
/// scores move (so the switch takes effect), by rounding's size, and the
/// greedy answer is the fused path's argmax at every position.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unfused_attention_rounds_differently_but_answers_alike() {
    let fused = engine(Runtime::LlamaCpp).await;
    let unfused = EngineBuilder::new(model_path())
        .model_id("smollm2")
        .flash_attention(tollgate_engine::FlashAttention::Off)
        .build()
        .await
        .expect("model loads");
    let body = question(json!({"max_tokens": 32}));
    let text = unfused.complete(&body).await.unwrap().choices[0]
        .message
        .content
        .clone()
        .unwrap();
    let prompt = fused.tokenize_chat(&body).await.unwrap();
    let mut all = prompt.clone();
    all.extend(fused.tokenize_text(&text).await.unwrap());
    let a = fused
        .score_from(all.clone(), prompt.len(), 5, None)
        .await
        .unwrap();
    let b = unfused
        .score_from(all, prompt.len(), 5, None)
        .await
        .unwrap();
    assert_eq!(a.positions.len(), b.positions.len());
    let mut largest = 0f32;
    for (k, (a, b)) in a.positions.iter().zip(&b.positions).enumerate() {
        assert_eq!(a.argmax, b.argmax, "token {k}: {text:?}");
        largest = largest.max((a.logprob - b.logprob).abs());
    }
    assert!(
        largest > 0.0,
        "the kernels round alike: is the switch ignored?"
    );
    assert!(largest < 0.1, "rounding moved a log-prob by {largest}");
}

/// This crate's directory: the one cargo runs the test from (a binary cached
/// from another checkout keeps its build path in `env!`), else the build's.
fn crate_dir() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
}
