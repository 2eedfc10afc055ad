//! An OpenAI chat-completion body, translated into a mistralrs request.

use std::collections::HashMap;

use either::Either;
use indexmap::IndexMap;
use mistralrs::core::RequestMessage;
use mistralrs::{Constraint, MessageContent, SamplingParams, StopTokens, Tool, ToolChoice};
use serde_json::Value;

use crate::messages::chat_messages;
use crate::RequestError;

/// What mistralrs needs to run one chat completion.
pub struct ChatJob {
    /// The conversation.
    pub messages: RequestMessage,
    /// Sampling and length settings.
    pub sampling: SamplingParams,
    /// Whether per-token log-probs are wanted.
    pub logprobs: bool,
    /// How many alternatives per token the client wants.
    pub top_logprobs: usize,
    /// Structured-output constraint.
    pub constraint: Constraint,
    /// Tools the model may call.
    pub tools: Option<Vec<Tool>>,
    /// How it may call them.
    pub tool_choice: Option<ToolChoice>,
}

impl ChatJob {
    /// Translates an OpenAI request body. OpenAI's defaults apply: temperature
    /// 1, top_p 1, one choice; temperature 0 is greedy.
    pub fn from_openai(body: &Value) -> Result<Self, RequestError> {
        let obj = body
            .as_object()
            .ok_or_else(|| RequestError::new("body", "expected a JSON object"))?;
        let messages = messages(obj.get("messages"))?;

        let number = |key: &str| obj.get(key).and_then(Value::as_f64);
        let temperature = number("temperature").unwrap_or(1.0);
        let max_len = obj
            .get("max_completion_tokens")
            .and_then(Value::as_u64)
            .or_else(|| obj.get("max_tokens").and_then(Value::as_u64))
            .map(|n| n as usize);
        let stop_toks = match obj.get("stop") {
            Some(Value::String(s)) => Some(StopTokens::Seqs(vec![s.clone()])),
            Some(Value::Array(list)) => Some(StopTokens::Seqs(
                list.iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect(),
            )),
            _ => None,
        };
        let logprobs = obj
            .get("logprobs")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let top_logprobs = if logprobs {
            obj.get("top_logprobs").and_then(Value::as_u64).unwrap_or(0) as usize
        } else {
            0
        };
        let n_choices = obj.get("n").and_then(Value::as_u64).unwrap_or(1).max(1) as usize;
        if logprobs && n_choices > 1 {
            return Err(RequestError::new(
                "n",
                "log-probs are served with n = 1 only",
            ));
        }
        let logits_bias = match obj.get("logit_bias") {
            Some(Value::Object(m)) => {
                let mut bias = HashMap::new();
                for (k, v) in m {
                    let id = k.parse::<u32>().map_err(|_| {
                        RequestError::new("logit_bias", format!("'{k}' is not a token id"))
                    })?;
                    bias.insert(id, v.as_f64().unwrap_or(0.0) as f32);
                }
                Some(bias)
            }
            _ => None,
        };
        let sampling = SamplingParams {
            // mistralrs reads a missing temperature as 1.0 and treats values
            // below 1e-7 as argmax, so greedy must be sent as an explicit 0.
            temperature: Some(temperature.max(0.0)),
            top_k: None,
            top_p: number("top_p").filter(|p| *p < 1.0),
            min_p: None,
            // mistralrs is asked for the most alternatives so that the token
            // texts of the recorder's exact top-k are known.
            top_n_logprobs: if logprobs { crate::logits::MAX_TOP } else { 0 },
            frequency_penalty: number("frequency_penalty").map(|v| v as f32),
            presence_penalty: number("presence_penalty").map(|v| v as f32),
            repetition_penalty: None,
            stop_toks,
            max_len,
            logits_bias,
            n_choices,
            dry_params: None,
        };

        let tools = match obj.get("tools") {
            Some(v @ Value::Array(_)) => Some(
                serde_json::from_value::<Vec<Tool>>(v.clone())
                    .map_err(|e| RequestError::new("tools", e.to_string()))?,
            ),
            _ => None,
        };
        let tool_choice = match obj.get("tool_choice") {
            None | Some(Value::Null) => None,
            Some(v) => Some(
                serde_json::from_value::<ToolChoice>(v.clone())
                    .map_err(|e| RequestError::new("tool_choice", e.to_string()))?,
            ),
        };
        let constraint = match obj.get("response_format") {
            Some(rf) => match rf.get("type").and_then(Value::as_str) {
                Some("json_schema") => {
                    let schema = rf
                        .get("json_schema")
                        .and_then(|s| s.get("schema"))
                        .cloned()
                        .ok_or_else(|| {
                            RequestError::new(
                                "response_format.json_schema.schema",
                                "a json_schema response format needs a schema",
                            )
                        })?;
                    Constraint::JsonSchema(schema)
                }
                Some("json_object") => {
                    Constraint::JsonSchema(serde_json::json!({"type": "object"}))
                }
                _ => Constraint::None,
            },
            None => Constraint::None,
        };

        Ok(Self {
            messages: RequestMessage::Chat {
                messages,
                enable_thinking: None,
                reasoning_effort: None,
            },
            sampling,
            logprobs,
            top_logprobs,
            constraint,
            tools,
            tool_choice,
        })
    }
}

fn messages(v: Option<&Value>) -> Result<Vec<IndexMap<String, MessageContent>>, RequestError> {
    Ok(chat_messages(v)?
        .into_iter()
        .map(|m| {
            let mut msg = IndexMap::new();
            msg.insert("role".to_string(), Either::Left(m.role));
            msg.insert("content".to_string(), Either::Left(m.content));
            msg
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn openai_defaults_and_greedy() {
        let job = ChatJob::from_openai(
            &json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}),
        )
        .unwrap();
        assert_eq!(
            job.sampling.temperature,
            Some(1.0),
            "OpenAI samples at temperature 1 by default"
        );
        assert_eq!(job.sampling.n_choices, 1);
        assert!(!job.logprobs);
        let greedy = ChatJob::from_openai(
            &json!({"messages": [{"role": "user", "content": "hi"}], "temperature": 0}),
        )
        .unwrap();
        assert_eq!(
            greedy.sampling.temperature,
            Some(0.0),
            "temperature 0 is sent explicitly (argmax)"
        );
    }

    #[test]
    fn maps_every_supported_parameter() {
        let job = ChatJob::from_openai(&json!({
            "messages": [{"role": "system", "content": "s"}, {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}],
            "temperature": 0.7, "top_p": 0.9, "max_tokens": 10, "max_completion_tokens": 12, "stop": ["x", "y"], "n": 1,
            "logprobs": true, "top_logprobs": 3, "frequency_penalty": 0.5, "presence_penalty": 0.25, "logit_bias": {"42": -100},
            "response_format": {"type": "json_object"},
        }))
        .unwrap();
        let s = &job.sampling;
        assert_eq!(
            (s.temperature, s.top_p, s.max_len, s.n_choices),
            (Some(0.7), Some(0.9), Some(12), 1)
        );
        assert_eq!(
            (job.top_logprobs, s.top_n_logprobs),
            (3, crate::logits::MAX_TOP)
        );
        assert!(matches!(&s.stop_toks, Some(StopTokens::Seqs(v)) if v == &["x", "y"]));
        assert_eq!(s.logits_bias.as_ref().unwrap()[&42], -100.0);
        assert_eq!(
            (s.frequency_penalty, s.presence_penalty),
            (Some(0.5), Some(0.25))
        );
        assert!(job.logprobs);
        assert!(matches!(job.constraint, Constraint::JsonSchema(_)));
        let RequestMessage::Chat { messages, .. } = job.messages else {
            panic!("chat")
        };
        assert_eq!(messages.len(), 2);
        assert_eq!(messages[1]["content"], Either::Left("a\nb".to_string()));
    }

    #[test]
    fn rejects_what_it_cannot_run() {
        let e = ChatJob::from_openai(&json!({"messages": []}))
            .err()
            .unwrap();
        assert_eq!(e.param, "messages");
        let e = ChatJob::from_openai(
            &json!({"messages": [{"role": "user", "content": "x"}], "logit_bias": {"abc": 1}}),
        )
        .err()
        .unwrap();
        assert_eq!(e.param, "logit_bias");
        let e = ChatJob::from_openai(&json!({"messages": [{"content": "x"}]}))
            .err()
            .unwrap();
        assert_eq!(e.param, "messages[0].role");
        let e = ChatJob::from_openai(
            &json!({"messages": [{"role": "user", "content": "x"}], "n": 2, "logprobs": true}),
        )
        .err()
        .unwrap();
        assert_eq!(e.param, "n");
    }
}
