//! What `make bench-verify` asks nodes, and how it gathers their answers.

use std::time::{Duration, Instant};

use anyhow::bail;
use futures_util::StreamExt;
use serde_json::{json, Value};

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
pub fn request(i: usize, max_tokens: u64) -> Value {
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
pub struct Answer {
    /// The request body sent.
    pub body: Value,
    /// The node's `chat.completion`.
    pub completion: Value,
}

impl Answer {
    /// The first choice's text.
    pub fn text(&self) -> &str {
        self.completion["choices"][0]["message"]["content"]
            .as_str()
            .unwrap_or_default()
    }
}

/// Sends `bodies` to the node at `root`, `concurrency` at a time; returns
/// the answers and the wall time.
pub async fn collect(
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
