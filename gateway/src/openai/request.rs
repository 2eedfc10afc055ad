//! Validation of `/v1/chat/completions` bodies.
//!
//! The body is kept as a JSON map so that fields we do not know travel to the
//! node untouched; only the fields the gateway reads or OpenAI constrains are
//! checked, with OpenAI's wording and codes.

use bytes::Bytes;
use serde_json::{Map, Value};

use super::logprobs::Delivered;
use super::ApiError;
use tollgate_verify::claim::ALTERNATIVES;

/// Roles OpenAI accepts in `messages`.
const ROLES: &[&str] = &[
    "system",
    "developer",
    "user",
    "assistant",
    "tool",
    "function",
];

/// A validated chat completion request.
#[derive(Debug, Clone)]
pub struct ChatRequest {
    /// The whole body, unknown fields included.
    pub body: Map<String, Value>,
    /// The requested model.
    pub model: String,
    /// Whether the client asked for SSE.
    pub stream: bool,
    /// Whether the client asked for the final usage chunk.
    pub include_usage: bool,
    /// Whether the client asked for log-probs.
    pub logprobs: bool,
    /// Alternatives per token the client asked for (`top_logprobs`).
    pub top_logprobs: usize,
    /// `max_completion_tokens`, else `max_tokens`.
    pub max_output_tokens: Option<u64>,
    /// Choices requested.
    pub n: u64,
    prompt_chars: usize,
    messages: usize,
}

impl ChatRequest {
    /// Parses and validates a body.
    pub fn parse(bytes: &[u8]) -> Result<Self, ApiError> {
        let value: Value =
            serde_json::from_slice(bytes).map_err(|e| ApiError::malformed_json(&e.to_string()))?;
        let Value::Object(body) = value else {
            return Err(type_error("body", "an object", &value));
        };

        let model = match body.get("model") {
            None | Some(Value::Null) => {
                return Err(ApiError::invalid(
                    Some("model"),
                    "missing_required_parameter",
                    "you must provide a model parameter",
                ))
            }
            Some(Value::String(s)) if s.is_empty() => {
                return Err(ApiError::invalid(
                    Some("model"),
                    "invalid_value",
                    "Invalid 'model': empty string.",
                ))
            }
            Some(Value::String(s)) => s.clone(),
            Some(v) => return Err(type_error("model", "a string", v)),
        };

        let (prompt_chars, messages) = check_messages(body.get("messages"))?;
        let stream = optional_bool(&body, "stream")?.unwrap_or(false);
        let include_usage = match body.get("stream_options") {
            None | Some(Value::Null) => false,
            Some(Value::Object(o)) => {
                if !stream {
                    return Err(ApiError::invalid(
                        Some("stream_options"),
                        "invalid_value",
                        "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
                    ));
                }
                match o.get("include_usage") {
                    None | Some(Value::Null) => false,
                    Some(Value::Bool(b)) => *b,
                    Some(v) => {
                        return Err(type_error("stream_options.include_usage", "a boolean", v))
                    }
                }
            }
            Some(v) => return Err(type_error("stream_options", "an object", v)),
        };

        let n = optional_int(&body, "n", 1, 128)?.unwrap_or(1);
        let max_tokens = optional_int(&body, "max_tokens", 1, u32::MAX.into())?;
        let max_completion = optional_int(&body, "max_completion_tokens", 1, u32::MAX.into())?;
        optional_number(&body, "temperature", 0.0, 2.0)?;
        optional_number(&body, "top_p", 0.0, 1.0)?;
        optional_number(&body, "presence_penalty", -2.0, 2.0)?;
        optional_number(&body, "frequency_penalty", -2.0, 2.0)?;
        if let Some(v) = body.get("seed").filter(|v| !v.is_null()) {
            if !(v.is_i64() || v.is_u64()) {
                return Err(type_error("seed", "an integer", v));
            }
        }
        check_stop(body.get("stop"))?;
        let logprobs = optional_bool(&body, "logprobs")?.unwrap_or(false);
        let top_logprobs = optional_int(&body, "top_logprobs", 0, 20)?;
        if top_logprobs.is_some() && !logprobs {
            return Err(ApiError::invalid(
                Some("top_logprobs"),
                "invalid_value",
                "Invalid 'top_logprobs': 'logprobs' must be set to true when 'top_logprobs' is used.",
            ));
        }
        check_tools(&body)?;
        check_response_format(body.get("response_format"))?;
        if let Some(v) = body.get("user").filter(|v| !v.is_null()) {
            if !v.is_string() {
                return Err(type_error("user", "a string", v));
            }
        }

        Ok(Self {
            body,
            model,
            stream,
            include_usage,
            logprobs,
            top_logprobs: top_logprobs.unwrap_or(0) as usize,
            max_output_tokens: max_completion.or(max_tokens),
            n,
            prompt_chars,
            messages,
        })
    }

    /// A rough prompt token count (4 characters a token, plus framing per
    /// message) for routing and limits; billing uses the node's count.
    pub fn estimated_prompt_tokens(&self) -> u64 {
        (self.prompt_chars as u64).div_ceil(4) + 4 * self.messages as u64
    }

    /// The body to send to a node: the client's, with the node's model name;
    /// for streams, usage always requested (the gateway meters from it and
    /// strips it again if the client did not ask); and for sampled requests
    /// without a seed, a fresh random one, so that an audit can replay the
    /// node's draws (the answer is as random to the client as without it).
    /// `audited` nodes are asked for log-probs and their best alternatives
    /// whatever the client asked (see [`super::logprobs`]).
    pub fn upstream_body(&self, model: &str, audited: bool) -> Bytes {
        let mut body = self.body.clone();
        body.insert("model".into(), Value::String(model.to_string()));
        if audited && !self.logprobs {
            body.insert("logprobs".into(), Value::Bool(true));
        }
        if audited && self.top_logprobs < ALTERNATIVES {
            body.insert("top_logprobs".into(), Value::from(ALTERNATIVES));
        }
        let greedy = body
            .get("temperature")
            .and_then(Value::as_f64)
            .is_some_and(|t| t == 0.0);
        if !greedy && body.get("seed").is_none_or(Value::is_null) {
            body.insert("seed".into(), Value::from(rand::random::<u32>()));
        }
        if self.stream {
            let mut opts = match body.remove("stream_options") {
                Some(Value::Object(o)) => o,
                _ => Map::new(),
            };
            opts.insert("include_usage".into(), Value::Bool(true));
            body.insert("stream_options".into(), Value::Object(opts));
        }
        // Serialising a map of JSON values cannot fail.
        Bytes::from(serde_json::to_vec(&body).unwrap_or_default())
    }

    /// What the client gets of the log-probs in an answer to
    /// [`Self::upstream_body`]: no more than it asked for.
    pub fn delivered_logprobs(&self, audited: bool) -> Delivered {
        if !audited {
            Delivered::AsSent
        } else if !self.logprobs {
            Delivered::Null
        } else if self.top_logprobs < ALTERNATIVES {
            Delivered::Top(self.top_logprobs)
        } else {
            Delivered::AsSent
        }
    }
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(n) if n.is_f64() => "a decimal",
        Value::Number(_) => "an integer",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn type_error(param: &str, expected: &str, got: &Value) -> ApiError {
    ApiError::invalid(
        Some(param),
        "invalid_type",
        format!(
            "Invalid type for '{param}': expected {expected}, but got {} instead.",
            kind_of(got)
        ),
    )
}

fn optional_bool(body: &Map<String, Value>, key: &str) -> Result<Option<bool>, ApiError> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(v) => Err(type_error(key, "a boolean", v)),
    }
}

fn optional_int(
    body: &Map<String, Value>,
    key: &str,
    min: u64,
    max: u64,
) -> Result<Option<u64>, ApiError> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => {
            let n = match (v.as_u64(), v.as_i64()) {
                (Some(n), _) => n,
                (None, Some(_)) => {
                    return Err(ApiError::invalid(
                        Some(key),
                        "integer_below_min_value",
                        format!("Invalid '{key}': integer below minimum value. Expected a value >= {min}, but got {v} instead."),
                    ))
                }
                _ => return Err(type_error(key, "an integer", v)),
            };
            if n < min {
                return Err(ApiError::invalid(
                    Some(key),
                    "integer_below_min_value",
                    format!("Invalid '{key}': integer below minimum value. Expected a value >= {min}, but got {n} instead."),
                ));
            }
            if n > max {
                return Err(ApiError::invalid(
                    Some(key),
                    "integer_above_max_value",
                    format!("Invalid '{key}': integer above maximum value. Expected a value <= {max}, but got {n} instead."),
                ));
            }
            Ok(Some(n))
        }
    }
}

fn optional_number(
    body: &Map<String, Value>,
    key: &str,
    min: f64,
    max: f64,
) -> Result<Option<f64>, ApiError> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => {
            let x = v.as_f64().ok_or_else(|| type_error(key, "a decimal", v))?;
            if x < min {
                return Err(ApiError::invalid(
                    Some(key),
                    "decimal_below_min_value",
                    format!("Invalid '{key}': decimal below minimum value. Expected a value >= {min}, but got {x} instead."),
                ));
            }
            if x > max {
                return Err(ApiError::invalid(
                    Some(key),
                    "decimal_above_max_value",
                    format!("Invalid '{key}': decimal above maximum value. Expected a value <= {max}, but got {x} instead."),
                ));
            }
            Ok(Some(x))
        }
    }
}

/// Checks `messages`; returns (characters of text content, message count).
fn check_messages(messages: Option<&Value>) -> Result<(usize, usize), ApiError> {
    let list = match messages {
        None | Some(Value::Null) => {
            return Err(ApiError::invalid(
                Some("messages"),
                "missing_required_parameter",
                "Missing required parameter: 'messages'.",
            ))
        }
        Some(Value::Array(list)) => list,
        Some(v) => return Err(type_error("messages", "an array", v)),
    };
    if list.is_empty() {
        return Err(ApiError::invalid(
            Some("messages"),
            "empty_array",
            "Invalid 'messages': empty array. Expected an array with minimum length 1, but got an empty array instead.",
        ));
    }
    let mut chars = 0;
    for (i, m) in list.iter().enumerate() {
        let Value::Object(m) = m else {
            return Err(type_error(&format!("messages[{i}]"), "an object", m));
        };
        match m.get("role") {
            Some(Value::String(r)) if ROLES.contains(&r.as_str()) => {}
            Some(Value::String(r)) => {
                return Err(ApiError::invalid(
                    Some(&format!("messages[{i}].role")),
                    "invalid_value",
                    format!(
                        "Invalid value: '{r}'. Supported values are: 'system', 'assistant', 'user', 'function', 'tool', and 'developer'."
                    ),
                ))
            }
            None => {
                return Err(ApiError::invalid(
                    Some(&format!("messages[{i}].role")),
                    "missing_required_parameter",
                    format!("Missing required parameter: 'messages[{i}].role'."),
                ))
            }
            Some(v) => return Err(type_error(&format!("messages[{i}].role"), "a string", v)),
        }
        match m.get("content") {
            None | Some(Value::Null) => {}
            Some(Value::String(s)) => chars += s.len(),
            Some(Value::Array(parts)) => {
                for p in parts {
                    if let Some(t) = p.get("text").and_then(Value::as_str) {
                        chars += t.len();
                    }
                }
            }
            Some(v) => {
                return Err(type_error(
                    &format!("messages[{i}].content"),
                    "a string or an array",
                    v,
                ))
            }
        }
    }
    Ok((chars, list.len()))
}

fn check_stop(stop: Option<&Value>) -> Result<(), ApiError> {
    match stop {
        None | Some(Value::Null) | Some(Value::String(_)) => Ok(()),
        Some(Value::Array(list)) => {
            if list.len() > 4 {
                return Err(ApiError::invalid(
                    Some("stop"),
                    "array_above_max_length",
                    format!("Invalid 'stop': array too long. Expected an array with maximum length 4, but got an array with length {} instead.", list.len()),
                ));
            }
            match list.iter().find(|v| !v.is_string()) {
                Some(v) => Err(type_error("stop", "a string or an array of strings", v)),
                None => Ok(()),
            }
        }
        Some(v) => Err(type_error("stop", "a string or an array of strings", v)),
    }
}

fn check_tools(body: &Map<String, Value>) -> Result<(), ApiError> {
    match body.get("tools") {
        None | Some(Value::Null) => {}
        Some(Value::Array(tools)) => {
            for (i, t) in tools.iter().enumerate() {
                let name = t.get("function").and_then(|f| f.get("name"));
                if !matches!(name, Some(Value::String(_))) {
                    return Err(ApiError::invalid(
                        Some(&format!("tools[{i}].function.name")),
                        "missing_required_parameter",
                        format!("Missing required parameter: 'tools[{i}].function.name'."),
                    ));
                }
            }
        }
        Some(v) => return Err(type_error("tools", "an array", v)),
    }
    match body.get("tool_choice") {
        None | Some(Value::Null) | Some(Value::Object(_)) => Ok(()),
        Some(Value::String(s)) if ["none", "auto", "required"].contains(&s.as_str()) => Ok(()),
        Some(Value::String(s)) => Err(ApiError::invalid(
            Some("tool_choice"),
            "invalid_value",
            format!("Invalid value: '{s}'. Supported values are: 'none', 'auto', and 'required'."),
        )),
        Some(v) => Err(type_error("tool_choice", "a string or an object", v)),
    }
}

fn check_response_format(rf: Option<&Value>) -> Result<(), ApiError> {
    match rf {
        None | Some(Value::Null) => Ok(()),
        Some(Value::Object(o)) => match o.get("type") {
            Some(Value::String(t)) if ["text", "json_object", "json_schema"].contains(&t.as_str()) => Ok(()),
            Some(Value::String(t)) => Err(ApiError::invalid(
                Some("response_format.type"),
                "invalid_value",
                format!("Invalid value: '{t}'. Supported values are: 'text', 'json_object', and 'json_schema'."),
            )),
            _ => Err(ApiError::invalid(
                Some("response_format.type"),
                "missing_required_parameter",
                "Missing required parameter: 'response_format.type'.",
            )),
        },
        Some(v) => Err(type_error("response_format", "an object", v)),
    }
}

#[cfg(test)]
mod tests;
