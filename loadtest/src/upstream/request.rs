//! Parsing and validating a chat completion request the way OpenAI does.

use serde::Deserialize;

use super::error::ApiError;

/// The fields of a chat completion request this upstream acts on.
#[derive(Debug, Deserialize)]
pub struct ChatRequest {
    model: Option<String>,
    messages: Option<Vec<Message>>,
    max_tokens: Option<u64>,
    max_completion_tokens: Option<u64>,
    n: Option<u64>,
    stop: Option<Stop>,
    stream: Option<bool>,
    stream_options: Option<StreamOptions>,
}

#[derive(Debug, Deserialize)]
struct Message {
    content: Option<Content>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Content {
    Text(String),
    Parts(Vec<Part>),
}

#[derive(Debug, Deserialize)]
struct Part {
    text: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Stop {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Deserialize)]
struct StreamOptions {
    include_usage: Option<bool>,
}

/// A request that passed validation, reduced to what generation needs.
#[derive(Debug, Clone, PartialEq)]
pub struct Validated {
    /// Requested model (known to exist).
    pub model: String,
    /// Prompt size in this upstream's simple token count.
    pub prompt_tokens: u64,
    /// Token cap from `max_completion_tokens` / `max_tokens`.
    pub max_tokens: Option<u64>,
    /// Number of choices.
    pub n: u64,
    /// Stop strings, empty ones dropped.
    pub stop: Vec<String>,
    /// Whether to answer as server-sent events.
    pub stream: bool,
    /// Whether a streamed answer ends with a usage chunk.
    pub include_usage: bool,
}

// OpenAI's own limits, so that a client that passes here passes there.
const MAX_N: u64 = 128;
const MAX_STOP: usize = 4;

impl ChatRequest {
    /// Parses a JSON body, answering OpenAI's 400 for anything malformed.
    pub fn parse(body: &[u8]) -> Result<ChatRequest, ApiError> {
        serde_json::from_slice(body).map_err(|e| {
            ApiError::invalid(
                format!(
                    "We could not parse the JSON body of your request. ({e}) \
                     (HINT: This likely means you aren't using your HTTP library correctly.)"
                ),
                None,
                None,
            )
        })
    }

    /// Checks the request against OpenAI's rules and the models served.
    pub fn validate(self, models: &[String]) -> Result<Validated, ApiError> {
        let model = match self.model {
            Some(m) if !m.is_empty() => m,
            _ => {
                return Err(ApiError::invalid(
                    "you must provide a model parameter".into(),
                    None,
                    None,
                ))
            }
        };
        let messages = self.messages.ok_or_else(|| {
            ApiError::invalid(
                "Missing required parameter: 'messages'.".into(),
                Some("messages"),
                Some("missing_required_parameter"),
            )
        })?;
        if messages.is_empty() {
            return Err(ApiError::invalid(
                "Invalid 'messages': empty array. Expected an array with minimum length 1, \
                 but got an empty array instead."
                    .into(),
                Some("messages"),
                Some("empty_array"),
            ));
        }
        let n = self.n.unwrap_or(1);
        if !(1..=MAX_N).contains(&n) {
            return Err(ApiError::invalid(
                format!("Invalid 'n': must be between 1 and {MAX_N}, got {n}."),
                Some("n"),
                Some("integer_out_of_range"),
            ));
        }
        let max_tokens = cap(self.max_tokens, self.max_completion_tokens);
        if max_tokens == Some(0) {
            return Err(ApiError::invalid(
                "Invalid 'max_tokens': integer below minimum value. Expected a value >= 1, \
                 but got 0 instead."
                    .into(),
                Some("max_tokens"),
                Some("integer_below_min_value"),
            ));
        }
        let stop: Vec<String> = match self.stop {
            None => Vec::new(),
            Some(Stop::One(s)) => vec![s],
            Some(Stop::Many(v)) => v,
        };
        if stop.len() > MAX_STOP {
            return Err(ApiError::invalid(
                format!(
                    "Invalid 'stop': array too long. Expected an array with maximum length \
                     {MAX_STOP}, but got an array with length {} instead.",
                    stop.len()
                ),
                Some("stop"),
                Some("array_above_max_length"),
            ));
        }
        if !models.contains(&model) {
            return Err(ApiError::model_not_found(&model));
        }
        let stream = self.stream.unwrap_or(false);
        Ok(Validated {
            model,
            prompt_tokens: messages.iter().map(Message::tokens).sum(),
            max_tokens,
            n,
            stop: stop.into_iter().filter(|s| !s.is_empty()).collect(),
            stream,
            include_usage: stream
                && self
                    .stream_options
                    .and_then(|o| o.include_usage)
                    .unwrap_or(false),
        })
    }
}

fn cap(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

impl Message {
    // Whitespace words plus 3 per message: close enough to a tokenizer for billing
    // tests, and trivially predictable by them.
    fn tokens(&self) -> u64 {
        let words = |s: &str| s.split_whitespace().count() as u64;
        let content = match &self.content {
            None => 0,
            Some(Content::Text(s)) => words(s),
            Some(Content::Parts(parts)) => parts
                .iter()
                .filter_map(|p| p.text.as_deref())
                .map(words)
                .sum(),
        };
        content + 3
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn validate(body: &str) -> Result<Validated, ApiError> {
        ChatRequest::parse(body.as_bytes())?.validate(&["m".to_string()])
    }

    #[test]
    fn counts_prompt_tokens_and_options() {
        let v = validate(
            r#"{"model":"m","messages":[{"role":"system","content":"be brief"},
                {"role":"user","content":[{"type":"text","text":"hi there you"}]}],
                "max_tokens":9,"max_completion_tokens":4,"n":2,"stop":["x",""],
                "stream":true,"stream_options":{"include_usage":true}}"#,
        )
        .expect("valid");
        assert_eq!(v.prompt_tokens, 2 + 3 + 3 + 3);
        assert_eq!(v.max_tokens, Some(4));
        assert_eq!(v.n, 2);
        assert_eq!(v.stop, vec!["x".to_string()]);
        assert!(v.stream && v.include_usage);
    }

    #[test]
    fn rejects_like_openai() {
        let code = |body: &str| validate(body).map(|_| ()).unwrap_err();
        assert_eq!(code("{").status, 400);
        assert_eq!(
            code(r#"{"messages":[{"role":"user","content":"x"}]}"#).status,
            400
        );
        let e = code(r#"{"model":"m","messages":[]}"#);
        assert_eq!((e.status, e.code), (400, Some("empty_array")));
        let e = code(r#"{"model":"m"}"#);
        assert_eq!(e.param, Some("messages"));
        let e = code(r#"{"model":"other","messages":[{"role":"user","content":"x"}]}"#);
        assert_eq!((e.status, e.code), (404, Some("model_not_found")));
        let e = code(r#"{"model":"m","messages":[{"role":"user","content":"x"}],"n":0}"#);
        assert_eq!(e.param, Some("n"));
    }
}
