//! Reading requests: what is accepted, refused and forwarded.

use super::*;
use proptest::prelude::*;
use serde_json::json;

fn parse(v: Value) -> Result<ChatRequest, ApiError> {
    ChatRequest::parse(&serde_json::to_vec(&v).unwrap())
}

fn ok_body() -> Value {
    json!({"model": "m", "messages": [{"role": "user", "content": "hello there"}]})
}

fn with(key: &str, v: Value) -> Value {
    let mut b = ok_body();
    b[key] = v;
    b
}

#[test]
fn accepts_the_full_parameter_set_and_keeps_unknown_fields() {
    let r = parse(json!({
        "model": "m", "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": [{"type": "text", "text": "hi"}]}],
        "stream": true, "stream_options": {"include_usage": true}, "n": 2, "stop": ["\n", "END"],
        "max_tokens": 10, "max_completion_tokens": 20, "temperature": 0.7, "top_p": 0.9, "seed": 42,
        "logprobs": true, "top_logprobs": 3, "tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}],
        "tool_choice": "auto", "response_format": {"type": "json_object"}, "user": "u1", "x_vendor_knob": {"a": 1}
    }))
    .unwrap();
    assert!(r.stream && r.include_usage);
    assert_eq!(r.max_output_tokens, Some(20), "max_completion_tokens wins");
    assert_eq!(r.n, 2);
    let up: Value = serde_json::from_slice(&r.upstream_body("node-model", false)).unwrap();
    assert_eq!(up["model"], "node-model");
    assert_eq!(
        up["top_logprobs"], 3,
        "the client's log-prob request is kept"
    );
    assert_eq!(up["x_vendor_knob"], json!({"a": 1}));
    assert_eq!(up["stream_options"]["include_usage"], true);
    assert_eq!(up["seed"], 42, "the client's seed is kept");
}

#[test]
fn sampled_requests_without_a_seed_get_one_and_greedy_ones_do_not() {
    let seed_of = |body: Value| {
        let r = parse(body).unwrap();
        serde_json::from_slice::<Value>(&r.upstream_body("m", true)).unwrap()["seed"].clone()
    };
    assert!(seed_of(with("temperature", json!(0.7))).is_u64());
    assert!(
        seed_of(ok_body()).is_u64(),
        "the default temperature samples"
    );
    assert!(seed_of(with("seed", Value::Null)).is_u64());
    assert!(seed_of(with("temperature", json!(0))).is_null());
    assert!(seed_of(with("temperature", json!(0.0))).is_null());
}

#[test]
fn audited_nodes_are_always_asked_for_logprobs() {
    let r = parse(ok_body()).unwrap();
    assert!(!r.logprobs);
    let up = |audited| {
        serde_json::from_slice::<Value>(&r.upstream_body("m", audited)).unwrap()["logprobs"].clone()
    };
    assert_eq!(up(true), true);
    assert!(up(false).is_null(), "other backends get the client's body");
    let top = |r: &ChatRequest, audited| {
        serde_json::from_slice::<Value>(&r.upstream_body("m", audited)).unwrap()["top_logprobs"]
            .clone()
    };
    assert_eq!(top(&r, true), json!(ALTERNATIVES));
    assert!(top(&r, false).is_null());
    assert_eq!(r.delivered_logprobs(true), Delivered::Null);
    assert_eq!(r.delivered_logprobs(false), Delivered::AsSent);
    let r = parse(with("logprobs", json!(true))).unwrap();
    assert!(r.logprobs);
    assert_eq!(top(&r, true), json!(ALTERNATIVES));
    assert_eq!(r.delivered_logprobs(true), Delivered::Top(0));
    let mut body = ok_body();
    body["logprobs"] = json!(true);
    body["top_logprobs"] = json!(2);
    let r = parse(body.clone()).unwrap();
    assert_eq!(top(&r, true), json!(ALTERNATIVES));
    assert_eq!(r.delivered_logprobs(true), Delivered::Top(2));
    // A client that asks for more gets what it asked, untouched.
    body["top_logprobs"] = json!(ALTERNATIVES + 3);
    let r = parse(body).unwrap();
    assert_eq!(top(&r, true), json!(ALTERNATIVES + 3));
    assert_eq!(r.delivered_logprobs(true), Delivered::AsSent);
}

#[test]
fn streams_always_ask_the_node_for_usage() {
    let r = parse(with("stream", json!(true))).unwrap();
    assert!(!r.include_usage);
    let up: Value = serde_json::from_slice(&r.upstream_body("m", true)).unwrap();
    assert_eq!(up["stream_options"]["include_usage"], true);
    let r = parse(ok_body()).unwrap();
    let up: Value = serde_json::from_slice(&r.upstream_body("m", true)).unwrap();
    assert!(
        up.get("stream_options").is_none(),
        "non-streaming bodies are not given stream_options"
    );
}

#[test]
fn rejects_bad_input_with_openai_codes() {
    let cases: Vec<(Value, &str, &str)> = vec![
        (
            json!({"messages": [{"role": "user", "content": "x"}]}),
            "model",
            "missing_required_parameter",
        ),
        (
            json!({"model": "m"}),
            "messages",
            "missing_required_parameter",
        ),
        (
            json!({"model": "m", "messages": []}),
            "messages",
            "empty_array",
        ),
        (
            json!({"model": "m", "messages": "hi"}),
            "messages",
            "invalid_type",
        ),
        (
            json!({"model": 3, "messages": [{"role": "user", "content": "x"}]}),
            "model",
            "invalid_type",
        ),
        (
            json!({"model": "m", "messages": [{"role": "wizard", "content": "x"}]}),
            "messages[0].role",
            "invalid_value",
        ),
        (
            json!({"model": "m", "messages": [{"content": "x"}]}),
            "messages[0].role",
            "missing_required_parameter",
        ),
        (
            json!({"model": "m", "messages": [{"role": "user", "content": 5}]}),
            "messages[0].content",
            "invalid_type",
        ),
        (
            with("temperature", json!("hot")),
            "temperature",
            "invalid_type",
        ),
        (
            with("temperature", json!(3)),
            "temperature",
            "decimal_above_max_value",
        ),
        (
            with("top_p", json!(-0.1)),
            "top_p",
            "decimal_below_min_value",
        ),
        (with("n", json!(0)), "n", "integer_below_min_value"),
        (with("n", json!(1.5)), "n", "invalid_type"),
        (
            with("max_tokens", json!(-1)),
            "max_tokens",
            "integer_below_min_value",
        ),
        (with("stream", json!("yes")), "stream", "invalid_type"),
        (
            with("stream_options", json!({"include_usage": true})),
            "stream_options",
            "invalid_value",
        ),
        (with("stop", json!([1])), "stop", "invalid_type"),
        (
            with("stop", json!(["a", "b", "c", "d", "e"])),
            "stop",
            "array_above_max_length",
        ),
        (
            with("top_logprobs", json!(2)),
            "top_logprobs",
            "invalid_value",
        ),
        (with("seed", json!("s")), "seed", "invalid_type"),
        (
            with("tools", json!([{"type": "function"}])),
            "tools[0].function.name",
            "missing_required_parameter",
        ),
        (
            with("tool_choice", json!("sometimes")),
            "tool_choice",
            "invalid_value",
        ),
        (
            with("response_format", json!({"type": "yaml"})),
            "response_format.type",
            "invalid_value",
        ),
        (with("user", json!(7)), "user", "invalid_type"),
    ];
    for (body, param, code) in cases {
        let e = parse(body.clone()).expect_err(&body.to_string());
        assert_eq!(e.status, http::StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(e.param.as_deref(), Some(param), "{body}");
        assert_eq!(e.code, Some(code), "{body}");
    }
}

#[test]
fn malformed_json_and_non_objects() {
    let e = ChatRequest::parse(b"{\"model\": ").unwrap_err();
    assert!(e.message.starts_with("We could not parse the JSON body"));
    assert_eq!(
        ChatRequest::parse(b"[1,2]").unwrap_err().code,
        Some("invalid_type")
    );
}

#[test]
fn prompt_estimate_counts_text_and_framing() {
    let r = parse(ok_body()).unwrap();
    assert_eq!(r.estimated_prompt_tokens(), 3 + 4);
}

proptest! {
    #[test]
    fn never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = ChatRequest::parse(&bytes);
    }

    #[test]
    fn never_panics_on_arbitrary_json(v in arb_json()) {
        let mut body = json!({"model": "m", "messages": [{"role": "user", "content": "x"}]});
        for key in ["messages", "n", "stop", "temperature", "max_tokens", "tools", "stream_options", "response_format", "tool_choice"] {
            let mut b = body.clone();
            b[key] = v.clone();
            if let Ok(r) = parse(b) {
                // Whatever was accepted must re-serialise for the node.
                prop_assert!(serde_json::from_slice::<Value>(&r.upstream_body("m", true)).is_ok());
            }
        }
        body["extra"] = v;
        prop_assert!(parse(body).is_ok(), "unknown fields are tolerated");
    }
}

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| json!(f)),
        ".{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::btree_map("[a-z_]{1,8}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}
