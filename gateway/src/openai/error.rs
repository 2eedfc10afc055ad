//! Errors in OpenAI's shape, mapped from every failure once, at the HTTP edge.

use axum::response::{IntoResponse, Response};
use http::{header, HeaderValue, StatusCode};
use serde_json::json;
use tollgate_backends::BackendError;

/// An error as the client sees it: status code plus OpenAI's error object.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Human-readable message.
    pub message: String,
    /// OpenAI's `type` field.
    pub kind: &'static str,
    /// The request parameter at fault.
    pub param: Option<String>,
    /// OpenAI's machine-readable `code`.
    pub code: Option<&'static str>,
    /// Seconds to wait before retrying, sent as `retry-after`.
    pub retry_after_s: Option<u64>,
}

impl ApiError {
    fn new(
        status: StatusCode,
        kind: &'static str,
        code: Option<&'static str>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            status,
            message: message.into(),
            kind,
            param: None,
            code,
            retry_after_s: None,
        }
    }

    /// A 400 about one parameter.
    pub fn invalid(param: Option<&str>, code: &'static str, message: impl Into<String>) -> Self {
        let mut e = Self::new(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            Some(code),
            message,
        );
        e.param = param.map(str::to_string);
        e
    }

    /// The body is not JSON.
    pub fn malformed_json(detail: &str) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            None,
            format!("We could not parse the JSON body of your request. ({detail})"),
        )
    }

    /// Body larger than the limit.
    pub fn too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalid_request_error",
            Some("request_too_large"),
            format!("Request body is larger than the limit of {limit} bytes."),
        )
    }

    /// No node serves the model.
    pub fn model_not_found(model: &str) -> Self {
        let mut e = Self::new(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            Some("model_not_found"),
            format!("The model `{model}` does not exist or you do not have access to it."),
        );
        e.param = Some("model".into());
        e
    }

    /// Missing or unknown API key.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "invalid_request_error",
            Some("invalid_api_key"),
            message,
        )
    }

    /// Admin API without the admin token.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "invalid_request_error",
            Some("forbidden"),
            message,
        )
    }

    /// Over a rate limit.
    pub fn rate_limited(message: impl Into<String>, retry_after_s: u64) -> Self {
        let mut e = Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            "requests",
            Some("rate_limit_exceeded"),
            message,
        );
        e.retry_after_s = Some(retry_after_s.max(1));
        e
    }

    /// Budget spent.
    pub fn insufficient_quota(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            "insufficient_quota",
            Some("insufficient_quota"),
            message,
        )
    }

    /// Nodes serve the model, but none is healthy now.
    pub fn no_healthy_node(model: &str, retry_after_s: u64) -> Self {
        let mut e = Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "server_error",
            Some("no_healthy_node"),
            format!("No healthy node can serve `{model}` right now. Please retry shortly."),
        );
        e.retry_after_s = Some(retry_after_s.max(1));
        e
    }

    /// Every route was tried and failed.
    pub fn all_routes_failed(last: &BackendError, tried: usize) -> Self {
        let mut e = Self::new(
            StatusCode::BAD_GATEWAY,
            "server_error",
            Some("upstream_error"),
            format!(
                "All {tried} node(s) that could serve this request failed; the last said: {last}"
            ),
        );
        e.retry_after_s = Some(1);
        e
    }

    /// An unknown path.
    pub fn not_found(path: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            Some("unknown_url"),
            format!("Unknown request URL: {path}."),
        )
    }

    /// A lookup that found nothing (unknown invoice or request).
    pub fn missing(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            Some("not_found"),
            message,
        )
    }

    /// A dependency (the chain) is unreachable or failing.
    pub fn unavailable(message: impl Into<String>) -> Self {
        let mut e = Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "server_error",
            Some("service_unavailable"),
            message,
        );
        e.retry_after_s = Some(5);
        e
    }

    /// A server-side failure that is ours, not the node's.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            Some("internal_error"),
            message,
        )
    }

    /// The error object alone, as it appears in a body or an SSE error event.
    pub fn body(&self) -> serde_json::Value {
        json!({"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}})
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut resp = (self.status, axum::Json(self.body())).into_response();
        if let Some(s) = self.retry_after_s {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shape_matches_openai() {
        let e = ApiError::model_not_found("gpt-x");
        assert_eq!(e.status, StatusCode::NOT_FOUND);
        let b = e.body();
        assert_eq!(b["error"]["code"], "model_not_found");
        assert_eq!(b["error"]["type"], "invalid_request_error");
        assert_eq!(b["error"]["param"], "model");
        let r = ApiError::no_healthy_node("m", 0).into_response();
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(r.headers()[header::RETRY_AFTER], "1");
    }
}
