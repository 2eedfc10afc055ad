//! An OpenAI chat-completion body, read into what the llama.cpp runtime runs.

use serde_json::{json, Value};

use crate::messages::chat_messages;
use crate::sampler::SamplingParams;
use crate::RequestError;

/// Most choices one request may ask for.
pub const MAX_CHOICES: usize = 8;

/// One chat completion to generate.
#[derive(Clone, Debug, PartialEq)]
pub struct GenRequest {
    /// The conversation, each message reduced to `role` and text `content`.
    pub messages: Vec<Value>,
    /// How tokens are drawn.
    pub sampling: SamplingParams,
    /// Cap on generated tokens per choice.
    pub max_tokens: Option<usize>,
    /// Stop sequences.
    pub stops: Vec<String>,
    /// Number of choices.
    pub n: usize,
    /// Whether per-token log-probs are returned.
    pub logprobs: bool,
    /// Alternatives per token.
    pub top_logprobs: usize,
}

fn number(
    obj: &serde_json::Map<String, Value>,
    key: &str,
    lo: f64,
    hi: f64,
) -> Result<Option<f64>, RequestError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => {
            let x = v
                .as_f64()
                .ok_or_else(|| RequestError::new(key, "expected a number"))?;
            if !(lo..=hi).contains(&x) {
                return Err(RequestError::new(
                    key,
                    format!("{x} is outside [{lo}, {hi}]"),
                ));
            }
            Ok(Some(x))
        }
    }
}

fn count(obj: &serde_json::Map<String, Value>, key: &str) -> Result<Option<u64>, RequestError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_u64()
            .map(Some)
            .ok_or_else(|| RequestError::new(key, "expected a non-negative integer")),
    }
}

impl GenRequest {
    /// Reads an OpenAI request body. OpenAI's defaults apply: temperature 1,
    /// top_p 1, one choice; temperature 0 is greedy.
    pub fn from_openai(body: &Value) -> Result<Self, RequestError> {
        let obj = body
            .as_object()
            .ok_or_else(|| RequestError::new("body", "expected a JSON object"))?;
        let messages = messages(obj.get("messages"))?;
        if obj
            .get("tools")
            .and_then(Value::as_array)
            .is_some_and(|t| !t.is_empty())
        {
            return Err(RequestError::new(
                "tools",
                "this model does not support tool calls",
            ));
        }
        if let Some(kind) = obj
            .get("response_format")
            .and_then(|f| f.get("type"))
            .and_then(Value::as_str)
        {
            if kind != "text" {
                return Err(RequestError::new(
                    "response_format",
                    format!("'{kind}' output is not supported by this model"),
                ));
            }
        }
        let max_tokens = match count(obj, "max_completion_tokens")? {
            Some(n) => Some(n),
            None => count(obj, "max_tokens")?,
        };
        if max_tokens == Some(0) {
            return Err(RequestError::new("max_tokens", "must be at least 1"));
        }
        let stops = match obj.get("stop") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::String(s)) => vec![s.clone()],
            Some(Value::Array(list)) => list
                .iter()
                .map(|v| {
                    v.as_str()
                        .map(str::to_string)
                        .ok_or_else(|| RequestError::new("stop", "expected strings"))
                })
                .collect::<Result<_, _>>()?,
            Some(_) => {
                return Err(RequestError::new(
                    "stop",
                    "expected a string or an array of strings",
                ))
            }
        };
        if stops.len() > 4 {
            return Err(RequestError::new("stop", "at most 4 stop sequences"));
        }
        let logprobs = obj
            .get("logprobs")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let top_logprobs = count(obj, "top_logprobs")?.unwrap_or(0) as usize;
        if top_logprobs > crate::logits::MAX_TOP {
            return Err(RequestError::new("top_logprobs", "at most 20"));
        }
        if top_logprobs > 0 && !logprobs {
            return Err(RequestError::new("top_logprobs", "needs logprobs: true"));
        }
        let n = count(obj, "n")?.unwrap_or(1) as usize;
        if !(1..=MAX_CHOICES).contains(&n) {
            return Err(RequestError::new(
                "n",
                format!("must be between 1 and {MAX_CHOICES}"),
            ));
        }
        let mut logit_bias = Vec::new();
        if let Some(Value::Object(m)) = obj.get("logit_bias") {
            for (k, v) in m {
                let id = k.parse::<u32>().map_err(|_| {
                    RequestError::new("logit_bias", format!("'{k}' is not a token id"))
                })?;
                let bias = v
                    .as_f64()
                    .filter(|b| (-100.0..=100.0).contains(b))
                    .ok_or_else(|| {
                        RequestError::new("logit_bias", "biases are numbers in [-100, 100]")
                    })?;
                logit_bias.push((id, bias as f32));
            }
        }
        let sampling = SamplingParams {
            temperature: number(obj, "temperature", 0.0, 2.0)?.unwrap_or(1.0) as f32,
            top_p: number(obj, "top_p", 0.0, 1.0)?.unwrap_or(1.0) as f32,
            frequency_penalty: number(obj, "frequency_penalty", -2.0, 2.0)?.unwrap_or(0.0) as f32,
            presence_penalty: number(obj, "presence_penalty", -2.0, 2.0)?.unwrap_or(0.0) as f32,
            logit_bias,
            seed: match obj.get("seed") {
                None | Some(Value::Null) => None,
                Some(v) => Some(
                    v.as_i64()
                        .map(|s| s as u64)
                        .ok_or_else(|| RequestError::new("seed", "expected an integer"))?,
                ),
            },
        };
        Ok(Self {
            messages,
            sampling,
            max_tokens: max_tokens.map(|n| n as usize),
            stops,
            n,
            logprobs,
            top_logprobs,
        })
    }
}

fn messages(v: Option<&Value>) -> Result<Vec<Value>, RequestError> {
    Ok(chat_messages(v)?
        .into_iter()
        .map(|m| {
            // "developer" is OpenAI's newer name for the system role.
            let role = if m.role == "developer" {
                "system"
            } else {
                &m.role
            };
            json!({"role": role, "content": m.content})
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(extra: Value) -> Result<GenRequest, RequestError> {
        let mut body = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]});
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        GenRequest::from_openai(&body)
    }

    #[test]
    fn openai_defaults() {
        let r = parse(json!({})).unwrap();
        assert_eq!(r.sampling, SamplingParams::default());
        assert_eq!((r.n, r.max_tokens, r.logprobs), (1, None, false));
        assert!(r.stops.is_empty());
        assert!(parse(json!({"temperature": 0}))
            .unwrap()
            .sampling
            .is_greedy());
    }

    #[test]
    fn maps_every_supported_parameter() {
        let r = parse(json!({
            "messages": [{"role": "developer", "content": "s"}, {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}],
            "temperature": 0.7, "top_p": 0.9, "max_tokens": 10, "max_completion_tokens": 12, "stop": ["x", "y"], "n": 2,
            "logprobs": true, "top_logprobs": 3, "frequency_penalty": 0.5, "presence_penalty": 0.25,
            "logit_bias": {"42": -100}, "seed": 7, "response_format": {"type": "text"}, "tools": [],
        }))
        .unwrap();
        let s = &r.sampling;
        assert_eq!((s.temperature, s.top_p, s.seed), (0.7, 0.9, Some(7)));
        assert_eq!((s.frequency_penalty, s.presence_penalty), (0.5, 0.25));
        assert_eq!(s.logit_bias, vec![(42, -100.0)]);
        assert_eq!((r.max_tokens, r.n, r.top_logprobs), (Some(12), 2, 3));
        assert_eq!(r.stops, vec!["x", "y"]);
        assert_eq!(r.messages[0], json!({"role": "system", "content": "s"}));
        assert_eq!(r.messages[1]["content"], "a\nb");
        assert_eq!(parse(json!({"stop": "z"})).unwrap().stops, vec!["z"]);
    }

    #[test]
    fn names_the_parameter_at_fault() {
        let cases = [
            (json!({"messages": []}), "messages"),
            (json!({"messages": [{"content": "x"}]}), "messages[0].role"),
            (
                json!({"messages": [{"role": "user", "content": 5}]}),
                "messages[0].content",
            ),
            (json!({"temperature": 3}), "temperature"),
            (json!({"temperature": "hot"}), "temperature"),
            (json!({"top_p": -0.1}), "top_p"),
            (json!({"n": 0}), "n"),
            (json!({"n": 99}), "n"),
            (json!({"max_tokens": 0}), "max_tokens"),
            (json!({"max_tokens": -1}), "max_tokens"),
            (json!({"stop": 5}), "stop"),
            (json!({"stop": ["a", "b", "c", "d", "e"]}), "stop"),
            (json!({"logit_bias": {"abc": 1}}), "logit_bias"),
            (json!({"logit_bias": {"1": 1000}}), "logit_bias"),
            (json!({"top_logprobs": 3}), "top_logprobs"),
            (
                json!({"logprobs": true, "top_logprobs": 21}),
                "top_logprobs",
            ),
            (json!({"seed": "x"}), "seed"),
            (
                json!({"tools": [{"type": "function", "function": {"name": "f"}}]}),
                "tools",
            ),
            (
                json!({"response_format": {"type": "json_object"}}),
                "response_format",
            ),
        ];
        for (extra, param) in cases {
            let err = parse(extra.clone()).expect_err(&extra.to_string());
            assert_eq!(err.param, param, "{extra}");
        }
    }
}
