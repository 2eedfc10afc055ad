//! What a node's answer claims, gathered from the OpenAI shapes it came in.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// How many alternatives (`top_logprobs`) nodes are asked for with every
/// token's log-prob, and the audit compares with the reference's best.
pub const ALTERNATIVES: usize = 5;

/// One generated token as the node reported it in `logprobs.content`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReportedToken {
    /// The token's bytes (its `bytes`, else its text).
    pub bytes: Vec<u8>,
    /// The log-prob the node reported.
    pub logprob: f32,
    /// The log-probs of the alternatives it reported (`top_logprobs`), as
    /// given; an alternative without a number reads as NaN.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub top: Vec<f32>,
    /// The bytes of those alternatives, in the same order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub top_bytes: Vec<Vec<u8>>,
}

/// A node's answer to one request, as the audit sees it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Claim {
    /// The request body the node was sent.
    pub request: Value,
    /// The first choice's text.
    pub text: String,
    /// Why the first choice ended.
    pub finish_reason: Option<String>,
    /// Per-token log-probs of the first choice, where the node reported them.
    pub logprobs: Option<Vec<ReportedToken>>,
}

impl Claim {
    /// The claim of a whole `chat.completion` body.
    pub fn from_completion(request: Value, completion: &Value) -> Option<Self> {
        let choice = first_choice(completion)?;
        let text = choice
            .pointer("/message/content")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let logprobs = choice
            .pointer("/logprobs/content")
            .and_then(Value::as_array)
            .map(|tokens| tokens.iter().map(reported).collect());
        Some(Self {
            request,
            text,
            finish_reason: choice
                .get("finish_reason")
                .and_then(Value::as_str)
                .map(str::to_string),
            logprobs,
        })
    }
}

/// Gathers a claim from a stream of `chat.completion.chunk`s.
#[derive(Debug, Default)]
pub struct ClaimBuilder {
    text: String,
    finish_reason: Option<String>,
    logprobs: Option<Vec<ReportedToken>>,
}

impl ClaimBuilder {
    /// Takes one chunk's JSON (other choices than the first are ignored).
    pub fn push(&mut self, chunk: &Value) {
        let Some(choice) = first_choice(chunk) else {
            return;
        };
        if let Some(delta) = choice.pointer("/delta/content").and_then(Value::as_str) {
            self.text.push_str(delta);
        }
        if let Some(tokens) = choice
            .pointer("/logprobs/content")
            .and_then(Value::as_array)
        {
            self.logprobs
                .get_or_insert_with(Vec::new)
                .extend(tokens.iter().map(reported));
        }
        if let Some(reason) = choice.get("finish_reason").and_then(Value::as_str) {
            self.finish_reason = Some(reason.to_string());
        }
    }

    /// The claim, once the stream has ended.
    pub fn finish(self, request: Value) -> Claim {
        Claim {
            request,
            text: self.text,
            finish_reason: self.finish_reason,
            logprobs: self.logprobs,
        }
    }
}

fn first_choice(v: &Value) -> Option<&Value> {
    v.get("choices")?
        .as_array()?
        .iter()
        .find(|c| c.get("index").and_then(Value::as_u64).unwrap_or(0) == 0)
}

fn reported(token: &Value) -> ReportedToken {
    let alternatives = token
        .get("top_logprobs")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    ReportedToken {
        bytes: bytes_of(token),
        logprob: number(token.get("logprob")),
        top: alternatives
            .iter()
            .map(|a| number(a.get("logprob")))
            .collect(),
        top_bytes: alternatives.iter().map(bytes_of).collect(),
    }
}

/// A reported token's bytes: its `bytes`, else its text.
fn bytes_of(token: &Value) -> Vec<u8> {
    token
        .get("bytes")
        .and_then(Value::as_array)
        .map(|b| {
            b.iter()
                .filter_map(|x| x.as_u64().and_then(|x| u8::try_from(x).ok()))
                .collect()
        })
        .unwrap_or_else(|| {
            token
                .get("token")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .as_bytes()
                .to_vec()
        })
}

/// A reported log-prob; a missing or non-numeric one is a claim that cannot
/// match (NaN).
fn number(v: Option<&Value>) -> f32 {
    v.and_then(Value::as_f64).map_or(f32::NAN, |l| l as f32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_whole_completion() {
        let body = json!({"choices": [
            {"index": 1, "message": {"content": "other"}, "finish_reason": "length"},
            {"index": 0, "message": {"role": "assistant", "content": "Paris."},
             "finish_reason": "stop",
             "logprobs": {"content": [
                {"token": "Paris", "logprob": -0.1, "bytes": [80, 97, 114, 105, 115],
                 "top_logprobs": [{"token": "Paris", "logprob": -0.1}, {"token": "Rome"}]},
                {"token": ".", "logprob": -0.2},
                {"token": "?"}]}}]});
        let c = Claim::from_completion(json!({"model": "m"}), &body).unwrap();
        assert_eq!(c.text, "Paris.");
        assert_eq!(c.finish_reason.as_deref(), Some("stop"));
        let lp = c.logprobs.unwrap();
        assert_eq!(lp[0].bytes, b"Paris");
        assert_eq!(lp[1].bytes, b".");
        assert_eq!(lp[0].top.len(), 2);
        assert!((lp[0].top[0] + 0.1).abs() < 1e-6 && lp[0].top[1].is_nan());
        assert_eq!(lp[0].top_bytes, [b"Paris".to_vec(), b"Rome".to_vec()]);
        assert!(lp[1].top.is_empty());
        assert!((lp[1].logprob + 0.2).abs() < 1e-6);
        assert!(lp[2].logprob.is_nan());
        assert!(Claim::from_completion(json!({}), &json!({"choices": []})).is_none());
        assert!(Claim::from_completion(json!({}), &json!({"error": {}})).is_none());
    }

    #[test]
    fn a_stream_of_chunks() {
        let mut b = ClaimBuilder::default();
        b.push(&json!({"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]}));
        b.push(
            &json!({"choices": [{"index": 0, "delta": {"content": "Par"},
            "logprobs": {"content": [{"token": "Par", "logprob": -0.5}]}}]}),
        );
        b.push(&json!({"choices": [{"index": 1, "delta": {"content": "zzz"}}]}));
        b.push(&json!({"choices": [{"index": 0, "delta": {"content": "is"},
            "logprobs": {"content": [{"token": "is", "logprob": -0.25}]}}]}));
        b.push(&json!({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}));
        b.push(&json!({"choices": [], "usage": {"prompt_tokens": 3}}));
        let c = b.finish(json!({"stream": true}));
        assert_eq!(c.text, "Paris");
        assert_eq!(c.finish_reason.as_deref(), Some("stop"));
        assert_eq!(c.logprobs.unwrap().len(), 2);
        let plain = ClaimBuilder::default().finish(json!({}));
        assert!(plain.logprobs.is_none() && plain.text.is_empty());
    }
}
