//! Log-probs as audit evidence.
//!
//! The gateway asks every `tollgate` node for the log-prob of each token it
//! generates and its best alternatives, on every request, so that an audited
//! answer carries them and the node cannot tell an audited request from
//! another. The client gets no more than it asked for: `"logprobs": null`
//! when it asked for none, and each token's `top_logprobs` cut to its own
//! `top_logprobs` (OpenAI's default is none: `[]`).

use bytes::Bytes;
use serde_json::Value;

/// What a client gets of the log-probs a node returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Delivered {
    /// As the node sent them: the client asked for at least as much.
    AsSent,
    /// None (`"logprobs": null`): the client did not ask.
    Null,
    /// Each token's alternatives cut to this many.
    Top(usize),
}

/// A whole `chat.completion` body with its log-probs cut to `how`; the body
/// as it was when it is not one or nothing needed cutting.
pub fn deliver_whole(body: &Bytes, how: Delivered) -> Bytes {
    if how == Delivered::AsSent {
        return body.clone();
    }
    let Ok(mut v) = serde_json::from_slice::<Value>(body) else {
        return body.clone();
    };
    if !cut_choices(&mut v, how) {
        return body.clone();
    }
    serde_json::to_vec(&v).map_or_else(|_| body.clone(), Bytes::from)
}

/// The SSE event with its log-probs cut to `how`, or None when it has none
/// to cut (most events are then passed on untouched).
pub fn deliver_event(event: &[u8], how: Delivered) -> Option<Vec<u8>> {
    if how == Delivered::AsSent {
        return None;
    }
    memchr::memmem::find(event, b"\"logprobs\":{")?;
    let start = memchr::memmem::find(event, b"data:")?;
    let data = event[start + 5..].trim_ascii();
    let mut v: Value = serde_json::from_slice(data).ok()?;
    if !cut_choices(&mut v, how) {
        return None;
    }
    let mut out = event[..start].to_vec();
    out.extend_from_slice(b"data: ");
    out.extend_from_slice(&serde_json::to_vec(&v).ok()?);
    out.extend_from_slice(b"\n\n");
    Some(out)
}

/// Cuts `choices[].logprobs` to `how`; whether anything changed.
fn cut_choices(v: &mut Value, how: Delivered) -> bool {
    let Some(choices) = v.get_mut("choices").and_then(Value::as_array_mut) else {
        return false;
    };
    let mut changed = false;
    for c in choices {
        let Some(l) = c.get_mut("logprobs").filter(|l| !l.is_null()) else {
            continue;
        };
        match how {
            Delivered::AsSent => {}
            Delivered::Null => {
                *l = Value::Null;
                changed = true;
            }
            Delivered::Top(keep) => {
                let Some(parts) = l.as_object_mut() else {
                    continue;
                };
                let tokens = parts
                    .iter_mut()
                    .filter(|(part, _)| *part == "content" || *part == "refusal")
                    .filter_map(|(_, tokens)| tokens.as_array_mut())
                    .flatten();
                for token in tokens {
                    if let Some(top) = token.get_mut("top_logprobs").and_then(Value::as_array_mut) {
                        if top.len() > keep {
                            top.truncate(keep);
                            changed = true;
                        }
                    }
                }
            }
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
        let out: Value = serde_json::from_slice(&deliver_whole(
            &Bytes::from(body.to_string()),
            Delivered::Null,
        ))
        .unwrap();
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
            assert_eq!(deliver_whole(&b, Delivered::Null), b);
        }
    }

    #[test]
    fn stream_chunks_lose_their_logprobs() {
        let chunk = b"data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"},\"logprobs\":{\"content\":[{\"token\":\"Hi\",\"logprob\":-0.1}]},\"finish_reason\":null}],\"usage\":null}\n\n";
        let out = deliver_event(chunk, Delivered::Null).expect("has logprobs");
        let text = std::str::from_utf8(&out).unwrap();
        assert!(
            text.starts_with("data: {") && text.ends_with("}\n\n"),
            "{text}"
        );
        let v: Value = serde_json::from_str(text.trim_start_matches("data: ").trim()).unwrap();
        assert_eq!(v["choices"][0]["logprobs"], Value::Null);
        assert_eq!(v["choices"][0]["delta"]["content"], "Hi");
        assert_eq!(v["usage"], Value::Null);
        assert!(deliver_event(
            b"data: {\"choices\":[{\"delta\":{},\"logprobs\":null}]}\n\n",
            Delivered::Null
        )
        .is_none());
        assert!(deliver_event(b": comment\n\n", Delivered::Null).is_none());
        assert!(deliver_event(chunk, Delivered::AsSent).is_none());
    }

    #[test]
    fn alternatives_are_cut_to_what_the_client_asked() {
        let alts = json!([{"token": "Hi", "logprob": -0.1}, {"token": "Yo", "logprob": -2.5},
                          {"token": "Hey", "logprob": -3.0}]);
        let body = json!({"choices": [{"index": 0, "message": {"content": "Hi"},
            "logprobs": {"content": [{"token": "Hi", "logprob": -0.1, "top_logprobs": alts}]}}]});
        let raw = Bytes::from(body.to_string());
        let cut = |how| serde_json::from_slice::<Value>(&deliver_whole(&raw, how)).unwrap();
        let top = |v: &Value| v["choices"][0]["logprobs"]["content"][0]["top_logprobs"].clone();
        assert_eq!(top(&cut(Delivered::Top(0))), json!([]));
        assert_eq!(top(&cut(Delivered::Top(2))), json!([alts[0], alts[1]]));
        assert_eq!(top(&cut(Delivered::Top(3))), alts);
        assert_eq!(
            deliver_whole(&raw, Delivered::Top(3)),
            raw,
            "nothing to cut: untouched"
        );
        assert_eq!(deliver_whole(&raw, Delivered::AsSent), raw);
        let mut want = body.clone();
        want["choices"][0]["logprobs"]["content"][0]["top_logprobs"] = json!([alts[0]]);
        assert_eq!(cut(Delivered::Top(1)), want, "nothing else changes");

        let event = format!(
            "data: {}\n\n",
            json!({"choices": [{"index": 0, "delta": {"content": "Hi"},
            "logprobs": {"content": [{"token": "Hi", "logprob": -0.1, "top_logprobs": alts}]}}]})
        );
        let out = deliver_event(event.as_bytes(), Delivered::Top(1)).expect("cut");
        let v: Value = serde_json::from_slice(out.strip_prefix(b"data: ").unwrap()).unwrap();
        assert_eq!(
            v["choices"][0]["logprobs"]["content"][0]["top_logprobs"],
            json!([alts[0]])
        );
        assert!(deliver_event(event.as_bytes(), Delivered::Top(3)).is_none());
    }
}
