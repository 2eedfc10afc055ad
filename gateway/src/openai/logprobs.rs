//! Log-probs as audit evidence.
//!
//! The gateway asks every `tollgate` node for the log-prob of each token it
//! generates, on every request, so that an audited answer carries them and
//! the node cannot tell an audited request from another. A client that did
//! not ask gets the answer as OpenAI shapes it then: `"logprobs": null`.

use bytes::Bytes;
use serde_json::Value;

/// Nulls every choice's `logprobs` in a whole `chat.completion` body; the
/// body as it was when it is not one.
pub fn strip_whole(body: &Bytes) -> Bytes {
    let Ok(mut v) = serde_json::from_slice::<Value>(body) else {
        return body.clone();
    };
    if !null_choices(&mut v) {
        return body.clone();
    }
    serde_json::to_vec(&v).map_or_else(|_| body.clone(), Bytes::from)
}

/// The SSE event with every choice's `logprobs` nulled, or None when it has
/// none to remove (most events are then passed on untouched).
pub fn strip_event(event: &[u8]) -> Option<Vec<u8>> {
    memchr::memmem::find(event, b"\"logprobs\":{")?;
    let start = memchr::memmem::find(event, b"data:")?;
    let data = event[start + 5..].trim_ascii();
    let mut v: Value = serde_json::from_slice(data).ok()?;
    if !null_choices(&mut v) {
        return None;
    }
    let mut out = event[..start].to_vec();
    out.extend_from_slice(b"data: ");
    out.extend_from_slice(&serde_json::to_vec(&v).ok()?);
    out.extend_from_slice(b"\n\n");
    Some(out)
}

/// Sets `choices[].logprobs` to null; whether any was set.
fn null_choices(v: &mut Value) -> bool {
    let Some(choices) = v.get_mut("choices").and_then(Value::as_array_mut) else {
        return false;
    };
    let mut changed = false;
    for c in choices {
        if let Some(l) = c.get_mut("logprobs").filter(|l| !l.is_null()) {
            *l = Value::Null;
            changed = true;
        }
    }
    changed
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn whole_answers_lose_their_logprobs_and_nothing_else() {
        let body = json!({"id": "c", "object": "chat.completion", "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "Hi"}, "finish_reason": "stop",
             "logprobs": {"content": [{"token": "Hi", "logprob": -0.1, "bytes": [72, 105], "top_logprobs": []}]}}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}});
        let out: Value =
            serde_json::from_slice(&strip_whole(&Bytes::from(body.to_string()))).unwrap();
        let mut want = body.clone();
        want["choices"][0]["logprobs"] = Value::Null;
        assert_eq!(out, want);
        // Not a completion, or nothing to strip: untouched bytes.
        for raw in [
            "{not json",
            r#"{"choices":[{"logprobs":null}]}"#,
            r#"{"error":{}}"#,
        ] {
            let b = Bytes::from(raw);
            assert_eq!(strip_whole(&b), b);
        }
    }

    #[test]
    fn stream_chunks_lose_their_logprobs() {
        let chunk = b"data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"},\"logprobs\":{\"content\":[{\"token\":\"Hi\",\"logprob\":-0.1}]},\"finish_reason\":null}],\"usage\":null}\n\n";
        let out = strip_event(chunk).expect("has logprobs");
        let text = std::str::from_utf8(&out).unwrap();
        assert!(
            text.starts_with("data: {") && text.ends_with("}\n\n"),
            "{text}"
        );
        let v: Value = serde_json::from_str(text.trim_start_matches("data: ").trim()).unwrap();
        assert_eq!(v["choices"][0]["logprobs"], Value::Null);
        assert_eq!(v["choices"][0]["delta"]["content"], "Hi");
        assert_eq!(v["usage"], Value::Null);
        assert!(
            strip_event(b"data: {\"choices\":[{\"delta\":{},\"logprobs\":null}]}\n\n").is_none()
        );
        assert!(strip_event(b": comment\n\n").is_none());
    }
}
