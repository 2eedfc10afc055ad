//! The instant upstream over real HTTP: protocol shape, control API and faults.

use std::time::Duration;

use serde_json::{json, Value};
use tollgate_loadtest::upstream::{Config, Fault, Upstream};

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client")
}

async fn start(models: &[&str]) -> (Upstream, String) {
    let up = Upstream::start(Config::instant(models))
        .await
        .expect("start");
    let base = format!("http://{}", up.addr());
    (up, base)
}

fn hello(extra: Value) -> Value {
    let mut body =
        json!({"model": "instant-1", "messages": [{"role": "user", "content": "hi there"}]});
    if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
        b.extend(e.clone());
    }
    body
}

async fn post(base: &str, body: &Value) -> reqwest::Response {
    client()
        .post(format!("{base}/v1/chat/completions"))
        .json(body)
        .send()
        .await
        .expect("send")
}

fn sse_events(text: &str) -> Vec<&str> {
    text.split("\n\n")
        .filter(|e| !e.is_empty())
        .map(|e| {
            e.strip_prefix("data: ")
                .expect("every event is a data line")
        })
        .collect()
}

#[tokio::test]
async fn non_stream_completion() {
    let (_up, base) = start(&["instant-1"]).await;
    let r = post(&base, &hello(json!({"max_tokens": 3, "n": 2}))).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/json");
    let v: Value = r.json().await.expect("json");
    assert!(v["id"].as_str().expect("id").starts_with("chatcmpl-"));
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["model"], "instant-1");
    assert!(v["created"].is_u64() && v["system_fingerprint"].is_string());
    let choices = v["choices"].as_array().expect("choices");
    assert_eq!(choices.len(), 2);
    assert_eq!(choices[0]["message"]["role"], "assistant");
    assert_eq!(choices[0]["message"]["content"], "tok0 tok1 tok2 ");
    assert_eq!(choices[0]["finish_reason"], "length");
    assert_eq!(
        v["usage"],
        json!({"prompt_tokens": 5, "completion_tokens": 6, "total_tokens": 11})
    );
}

#[tokio::test]
async fn stream_completion_with_usage() {
    let (_up, base) = start(&["instant-1"]).await;
    let body =
        hello(json!({"stream": true, "stream_options": {"include_usage": true}, "stop": "tok3"}));
    let r = post(&base, &body).await;
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"]
        .to_str()
        .expect("ascii")
        .starts_with("text/event-stream"));
    let text = r.text().await.expect("body");
    assert!(text.ends_with("data: [DONE]\n\n"));
    let events = sse_events(&text);
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).expect("chunk"))
        .collect();
    let id = &chunks[0]["id"];
    assert!(chunks
        .iter()
        .all(|c| &c["id"] == id && c["object"] == "chat.completion.chunk"));
    assert_eq!(
        chunks[0]["choices"][0]["delta"],
        json!({"role": "assistant", "content": ""})
    );
    assert_eq!(
        chunks[1]["choices"][0]["delta"],
        json!({"content": "tok0 "})
    );
    let content: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(content, "tok0 tok1 tok2 ");
    let finish = &chunks[chunks.len() - 2];
    assert_eq!(finish["choices"][0]["finish_reason"], "stop");
    assert!(finish["usage"].is_null());
    let last = &chunks[chunks.len() - 1];
    assert_eq!(last["choices"], json!([]));
    assert_eq!(last["usage"]["completion_tokens"], 3);
}

#[tokio::test]
async fn paced_stream_takes_its_time() {
    let (up, base) = start(&["instant-1"]).await;
    up.settings()
        .apply(
            &serde_json::from_value(json!({"tokens_per_s": 50.0, "completion_tokens": 5}))
                .expect("patch"),
        )
        .expect("apply");
    let t = std::time::Instant::now();
    let text = post(&base, &hello(json!({"stream": true})))
        .await
        .text()
        .await
        .expect("body");
    assert!(
        t.elapsed() >= Duration::from_millis(100),
        "{:?}",
        t.elapsed()
    );
    assert_eq!(sse_events(&text).len(), 1 + 5 + 1 + 1);
}

#[tokio::test]
async fn openai_errors() {
    let (_up, base) = start(&["instant-1"]).await;
    let r = post(
        &base,
        &json!({"model": "nope", "messages": [{"role": "user", "content": "x"}]}),
    )
    .await;
    assert_eq!(r.status(), 404);
    let v: Value = r.json().await.expect("json");
    assert_eq!(v["error"]["code"], "model_not_found");
    let r = post(&base, &json!({"model": "instant-1", "messages": []})).await;
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.expect("json");
    assert_eq!(v["error"]["type"], "invalid_request_error");
    assert_eq!(v["error"]["param"], "messages");
}

#[tokio::test]
async fn models_endpoints() {
    let (_up, base) = start(&["instant-1", "other"]).await;
    let c = client();
    let v: Value = c
        .get(format!("{base}/v1/models"))
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    assert_eq!(v["data"][1]["id"], "other");
    let r = c
        .get(format!("{base}/v1/models/other"))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 200);
    let r = c
        .get(format!("{base}/v1/models/missing"))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 404);
}

#[tokio::test]
async fn control_flips_faults_and_counts() {
    let (_up, base) = start(&["instant-1"]).await;
    let c = client();
    let set = |fault: &str| {
        c.post(format!("{base}/control"))
            .json(&json!({"fault": fault}))
            .send()
    };
    assert_eq!(set("500").await.expect("send").status(), 200);
    let r = post(&base, &hello(json!({}))).await;
    assert_eq!(r.status(), 500);
    let v: Value = r.json().await.expect("json");
    assert_eq!(v["error"]["type"], "server_error");

    set("429").await.expect("send");
    let r = post(&base, &hello(json!({}))).await;
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["retry-after"], "1");

    set("bad-json").await.expect("send");
    let r = post(&base, &hello(json!({}))).await;
    assert_eq!(r.status(), 200);
    assert!(serde_json::from_slice::<Value>(&r.bytes().await.expect("body")).is_err());

    set("die-mid-stream").await.expect("send");
    let r = post(&base, &hello(json!({"stream": true}))).await;
    assert_eq!(r.status(), 200);
    assert!(r.text().await.is_err(), "stream must break off");
    let r = post(&base, &hello(json!({}))).await;
    assert!(r.bytes().await.is_err(), "body must break off");

    set("refuse").await.expect("send");
    let e = client()
        .post(format!("{base}/v1/chat/completions"))
        .json(&hello(json!({})))
        .send()
        .await;
    assert!(e.is_err(), "refused connection must fail before a response");

    assert_eq!(set("teapot").await.expect("send").status(), 400);
    let v: Value = set("none").await.expect("send").json().await.expect("json");
    assert_eq!(v["fault"], "none");
    // 500, 429, bad-json, two die-mid-stream; the refused one never got in.
    assert_eq!(v["requests"], 5);
    assert_eq!(v["served"], 0);
    assert_eq!(post(&base, &hello(json!({}))).await.status(), 200);
    let v: Value = c
        .get(format!("{base}/control"))
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    assert_eq!(
        (v["requests"].as_u64(), v["served"].as_u64()),
        (Some(6), Some(1))
    );
}

#[tokio::test]
async fn hang_never_answers() {
    let (up, base) = start(&["instant-1"]).await;
    up.settings()
        .apply(&serde_json::from_value(json!({"fault": Fault::Hang.name()})).expect("patch"))
        .expect("apply");
    let r = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_millis(300))
        .build()
        .expect("client")
        .post(format!("{base}/v1/chat/completions"))
        .json(&hello(json!({})))
        .send()
        .await;
    assert!(r.expect_err("must time out").is_timeout());
}

#[test]
fn binary_prints_its_address() {
    use std::io::{BufRead as _, BufReader};
    use std::process::{Command, Stdio};
    let mut child = Command::new(env!("CARGO_BIN_EXE_tollgate-upstream"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--model",
            "instant-1",
            "--node-name",
            "n1",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut line = String::new();
    let read = BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line);
    let _ = child.kill();
    let _ = child.wait();
    read.expect("read");
    let addr = line.trim().strip_prefix("listening on ").expect("prefix");
    let addr: std::net::SocketAddr = addr.parse().expect("address");
    assert_ne!(addr.port(), 0);
}
