//! Audits on the real SmolLM2 GGUF (fetched by `scripts/fetch-model`) of an
//! honest answer whose sampler drew a split of its text that the tokenizer
//! would not make.

mod common;

use serde_json::{json, Value};
use tollgate_verify::{Auditor, Claim, Mode, Outcome, Thresholds};

fn request(seed: u64) -> Value {
    json!({
        "model": "smollm2",
        "messages": [{"role": "user", "content": "Invent a name for a new animal and describe it."}],
        "temperature": 1.0,
        "seed": seed,
        "max_tokens": 40,
        "logprobs": true,
        "top_logprobs": 5,
    })
}

/// The node's tokens of an answer, by their bytes.
fn reported_pieces(claim: &Claim) -> Vec<Vec<u8>> {
    claim
        .logprobs
        .as_deref()
        .expect("log-probs were asked for")
        .iter()
        .map(|t| t.bytes.clone())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_honest_answer_split_otherwise_than_the_tokenizer_is_judged_in_its_own_context() {
    let engine = common::engine().await;
    let auditor = Auditor::new(engine.clone(), Thresholds::default());

    // Sampling at temperature 1 draws a split the tokenizer would not make
    // within a few seeds; the search is bounded.
    let mut found = None;
    for seed in 1..=64 {
        let body = request(seed);
        let completion = serde_json::to_value(engine.complete(&body).await.unwrap()).unwrap();
        let claim = Claim::from_completion(body, &completion).expect("a chat completion");
        let canonical = engine.tokenize_text(&claim.text).await.unwrap();
        let pieces = engine.pieces(&canonical).unwrap();
        if pieces != reported_pieces(&claim) {
            found = Some((seed, claim, canonical));
            break;
        }
    }
    let (seed, claim, canonical) = found.expect("no seed in 1..=64 drew another split");

    // Judged as the node split it: the reference sees the node's tokens, and
    // the answer passes as an unreplayable sampler's (a mistralrs node's)
    // would, with no position's alternatives out of line.
    let report = auditor.audit(&claim, engine.sha256(), false).await.unwrap();
    let judged: Vec<u32> = report.positions.iter().map(|p| p.claimed).collect();
    assert_eq!(
        engine.pieces(&judged).unwrap(),
        reported_pieces(&claim),
        "seed {seed}"
    );
    assert_ne!(judged, canonical);
    assert_eq!(
        report.verdict.outcome,
        Outcome::Pass,
        "seed {seed}: {:?} {:?}",
        claim.text,
        report.verdict
    );
    assert!(report
        .positions
        .iter()
        .all(|p| p.reported_logprob.is_some()));
    // Every position is surely the node's own, so the decisive test weighs
    // them all, not only those before the first place another split was
    // within reach (without a replay, that is the first token).
    assert!(report.positions.iter().all(|p| !p.other_split));
    assert_eq!(report.verdict.decisive.checked, report.positions.len());
    // Replayed, the request's own sampler draws exactly the node's split.
    let seeded = auditor.audit(&claim, engine.sha256(), true).await.unwrap();
    assert_eq!(seeded.verdict.mode, Mode::Seeded);
    assert_eq!(
        seeded.verdict.outcome,
        Outcome::Pass,
        "{:?}",
        seeded.verdict
    );
    assert!(seeded
        .positions
        .iter()
        .all(|p| p.replayed.is_some_and(|r| r.token == p.claimed)));

    // Reported tokens that spell other text are no split of this one: the
    // tokenizer's split is judged, against the impossible log-probs.
    let mut lying = claim.clone();
    if let Some(tokens) = lying.logprobs.as_mut() {
        tokens[0].bytes = b"Arr".to_vec();
    }
    let report = auditor.audit(&lying, engine.sha256(), false).await.unwrap();
    let judged: Vec<u32> = report.positions.iter().map(|p| p.claimed).collect();
    assert_eq!(judged, canonical);
    assert_eq!(report.verdict.outcome, Outcome::Fail);
    assert_eq!(report.verdict.decisive.checked, 1);
}

/// The vocabulary maps bytes back to the one token spelled so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_piece_names_its_token() {
    let engine = common::engine().await;
    let tokens = engine.tokenize_text(" Paris is the capital").await.unwrap();
    for (token, piece) in tokens.iter().zip(engine.pieces(&tokens).unwrap()) {
        assert_eq!(engine.token_spelled(&piece), Some(*token));
    }
    assert_eq!(
        engine.token_spelled(b""),
        None,
        "control tokens share no bytes"
    );
    assert_eq!(engine.token_spelled(b"not one token at all"), None);
}
