//! The engine on the real SmolLM2 GGUF (fetched by `scripts/fetch-model`).

use std::path::PathBuf;

use futures_util::StreamExt;
use serde_json::json;
use tollgate_engine::{Engine, EngineBuilder};

fn model_path() -> PathBuf {
    std::env::var_os("TOLLGATE_MODEL")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
        })
}

async fn engine() -> Engine {
    let path = model_path();
    assert!(
        path.exists(),
        "{} is missing: run scripts/fetch-model",
        path.display()
    );
    EngineBuilder::new(path)
        .model_id("smollm2")
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn greedy_completion_is_reproduced_by_teacher_forced_scoring() {
    let engine = engine().await;
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
    let scores = engine.score(all.clone(), 5).await.unwrap();
    assert_eq!(scores.positions.len(), all.len() - 1);
    for (i, pos) in scores.positions.iter().enumerate().skip(prompt.len() - 1) {
        assert_eq!(pos.token, all[i + 1]);
        assert_eq!(
            pos.argmax, pos.token,
            "position {i}: greedy token is the argmax"
        );
        assert!(pos.logprob > -5.0);
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_in_openai_order_and_serves_concurrent_requests() {
    let engine = std::sync::Arc::new(engine().await);
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
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_parameters_are_request_errors() {
    let engine = engine().await;
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
