//! The rival test on the real SmolLM2 GGUF (fetched by
//! `scripts/fetch-model`): a node that answers without the system prompt
//! reports log-probs nearer what the claimed model gives the request
//! without it, even where the system prompt changes little; an honest
//! node's do not.

mod common;

use serde_json::{json, Value};
use tollgate_engine::Engine;
use tollgate_verify::rival::without_system;
use tollgate_verify::{Auditor, Claim, Outcome, RivalPass, Thresholds};

/// A request as the gateway sends an audited node: with log-probs and
/// alternatives.
fn request(system: &str, turns: &[(&str, &str)], seed: Option<u64>) -> Value {
    let mut messages = vec![json!({"role": "system", "content": system})];
    messages.extend(
        turns
            .iter()
            .map(|(role, content)| json!({"role": role, "content": content})),
    );
    let mut body = json!({
        "model": "smollm2",
        "messages": messages,
        "max_tokens": 48,
        "temperature": 0,
        "logprobs": true,
        "top_logprobs": 5,
    });
    if let Some(seed) = seed {
        body["temperature"] = json!(0.7);
        body["seed"] = json!(seed);
    }
    body
}

/// The engine's answer to `asked`, claimed as the answer to `claimed`.
async fn answer(engine: &Engine, asked: &Value, claimed: &Value) -> Claim {
    let completion =
        serde_json::to_value(engine.complete(asked).await.expect("generates")).expect("serializes");
    Claim::from_completion(claimed.clone(), &completion).expect("a chat completion")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_system_prompt_leans_to_the_request_without_it() {
    let engine = common::engine().await;
    let sha = engine.sha256().to_string();
    let auditor = Auditor::new(engine.clone(), Thresholds::default());
    let ada = |topic: &str| {
        [
            ("user", format!("My name is Ada and I love {topic}.")),
            (
                "assistant",
                "Nice to meet you, Ada! That is a great interest.".to_string(),
            ),
            ("user", "Write a short story about me.".to_string()),
        ]
    };
    let cases = [
        // The template's own default system prompt is nearly this one: the
        // tests that ask only how far a report is from the reference passed
        // these cheats' answers in `make bench-verify`.
        ("You are a helpful assistant.", ada("whales"), None),
        ("You are a helpful assistant.", ada("the human heart"), None),
        (
            "You are a helpful assistant.",
            ada("the moon landing"),
            Some(1069),
        ),
    ];
    for (system, turns, seed) in cases {
        let turns: Vec<(&str, &str)> = turns.iter().map(|(r, c)| (*r, c.as_str())).collect();
        let body = request(system, &turns, seed);
        let rival = without_system(&body).expect("a system prompt");

        let honest = answer(&engine, &body, &body).await;
        let h = auditor
            .audit_with(&honest, &sha, true, RivalPass::Always)
            .await
            .expect("audits");
        assert_eq!(h.verdict.outcome, Outcome::Pass, "{:?}", h.verdict);
        assert!(
            h.verdict.rival.checked > 0 && h.verdict.rival.errors < h.verdict.rival.limit,
            "{:?}",
            h.verdict.rival
        );
        assert!(h.rival_elapsed > std::time::Duration::ZERO);

        let cheat = answer(&engine, &rival, &body).await;
        let c = auditor
            .audit_with(&cheat, &sha, true, RivalPass::Always)
            .await
            .expect("audits");
        assert!(c.verdict.rival.failed(), "{:?}", c.verdict);
        assert!(
            c.verdict
                .reasons
                .iter()
                .any(|r| r.contains("without its system prompt")),
            "{:?}",
            c.verdict.reasons
        );
        // As the gateway runs it: the first pass calls for the rival one.
        let gated = auditor.audit(&cheat, &sha, true).await.expect("audits");
        assert!(gated.rival_wanted, "{:?}", gated.verdict);
        assert_eq!(gated.verdict.outcome, Outcome::Fail);
    }

    // Without a system prompt there is no rival to score.
    let plain = json!({
        "model": "smollm2",
        "messages": [{"role": "user", "content": "Tell me about whales."}],
        "max_tokens": 16, "temperature": 0, "logprobs": true, "top_logprobs": 5,
    });
    let claim = answer(&engine, &plain, &plain).await;
    let report = auditor
        .audit_with(&claim, &sha, true, RivalPass::Always)
        .await
        .expect("audits");
    assert_eq!(report.rival_elapsed, std::time::Duration::ZERO);
    assert!(report.positions.iter().all(|p| p.rival.is_empty()));
    assert_eq!(report.verdict.rival.checked, 0);
}
