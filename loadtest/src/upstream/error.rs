//! OpenAI-shaped error answers.

use bytes::Bytes;
use serde::Serialize;

/// An error answered as `{"error":{"message","type","param","code"}}`.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    /// HTTP status.
    pub status: u16,
    /// Human-readable message.
    pub message: String,
    /// OpenAI's error `type`.
    pub kind: &'static str,
    /// The offending parameter, if any.
    pub param: Option<&'static str>,
    /// OpenAI's machine-readable code, if any.
    pub code: Option<&'static str>,
}

#[derive(Serialize)]
struct Envelope<'a> {
    error: Inner<'a>,
}

#[derive(Serialize)]
struct Inner<'a> {
    message: &'a str,
    #[serde(rename = "type")]
    kind: &'a str,
    param: Option<&'a str>,
    code: Option<&'a str>,
}

impl ApiError {
    /// A 400 `invalid_request_error`.
    pub fn invalid(
        message: String,
        param: Option<&'static str>,
        code: Option<&'static str>,
    ) -> Self {
        ApiError {
            status: 400,
            message,
            kind: "invalid_request_error",
            param,
            code,
        }
    }

    /// OpenAI's 404 for a model it does not serve.
    pub fn model_not_found(model: &str) -> Self {
        ApiError {
            status: 404,
            message: format!("The model `{model}` does not exist or you do not have access to it."),
            kind: "invalid_request_error",
            param: None,
            code: Some("model_not_found"),
        }
    }

    /// OpenAI's 404 for a path or method it does not know.
    pub fn unknown_url(method: &str, path: &str) -> Self {
        ApiError {
            status: 404,
            message: format!("Invalid URL ({method} {path})"),
            kind: "invalid_request_error",
            param: None,
            code: None,
        }
    }

    /// OpenAI's 500.
    pub fn server_error() -> Self {
        ApiError {
            status: 500,
            message: "The server had an error while processing your request. Sorry about that!"
                .into(),
            kind: "server_error",
            param: None,
            code: None,
        }
    }

    /// OpenAI's 429 for too many requests.
    pub fn rate_limited() -> Self {
        ApiError {
            status: 429,
            message: "Rate limit reached for requests. Please try again in 1s.".into(),
            kind: "requests",
            param: None,
            code: Some("rate_limit_exceeded"),
        }
    }

    /// A 413 for bodies past the size limit.
    pub fn too_large() -> Self {
        ApiError {
            status: 413,
            message: "Request body too large.".into(),
            kind: "invalid_request_error",
            param: None,
            code: None,
        }
    }

    /// The JSON body.
    pub fn body(&self) -> Bytes {
        let envelope = Envelope {
            error: Inner {
                message: &self.message,
                kind: self.kind,
                param: self.param,
                code: self.code,
            },
        };
        // Serialising plain strings cannot fail.
        Bytes::from(serde_json::to_vec(&envelope).unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_has_openai_shape() {
        let v: serde_json::Value =
            serde_json::from_slice(&ApiError::model_not_found("x").body()).expect("json");
        assert_eq!(v["error"]["code"], "model_not_found");
        assert_eq!(v["error"]["type"], "invalid_request_error");
        assert!(v["error"]["param"].is_null());
        assert!(v["error"]["message"].as_str().is_some());
    }
}
