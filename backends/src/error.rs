//! What can go wrong talking to a node.

use bytes::Bytes;
use http::StatusCode;

/// A failed call to a node.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// The node could not be reached.
    #[error("could not connect to node: {0}")]
    Connect(String),
    /// The node took longer than allowed for one phase of the call.
    #[error("node timed out waiting for {0}")]
    Timeout(&'static str),
    /// The node answered with a non-success status.
    #[error("node answered {status}")]
    Status {
        /// The node's status.
        status: StatusCode,
        /// The node's body (bounded), usually an OpenAI error object.
        body: Bytes,
    },
    /// The node's answer broke the protocol.
    #[error("node broke the protocol: {0}")]
    Protocol(String),
    /// The body failed after it had started.
    #[error("node's response was cut off: {0}")]
    Body(String),
}

impl BackendError {
    /// True when another node may well succeed where this one failed; false
    /// when the request itself was refused (a client error that every node
    /// would repeat).
    pub fn is_retryable(&self) -> bool {
        match self {
            BackendError::Status { status, .. } => {
                status.is_server_error()
                    || *status == StatusCode::TOO_MANY_REQUESTS
                    || *status == StatusCode::NOT_FOUND
                    || *status == StatusCode::REQUEST_TIMEOUT
                    || *status == StatusCode::UNAUTHORIZED
                    || *status == StatusCode::FORBIDDEN
            }
            _ => true,
        }
    }

    /// True when the failure says something about the node's health (a
    /// client error passed through does not).
    pub fn counts_against_node(&self) -> bool {
        self.is_retryable()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(code: u16) -> BackendError {
        BackendError::Status {
            status: StatusCode::from_u16(code).unwrap(),
            body: Bytes::new(),
        }
    }

    #[test]
    fn client_errors_are_not_retried_but_node_failures_are() {
        assert!(!status(400).is_retryable());
        assert!(!status(422).is_retryable());
        for code in [404, 408, 429, 500, 502, 503] {
            assert!(status(code).is_retryable(), "{code}");
        }
        assert!(BackendError::Connect("refused".into()).is_retryable());
        assert!(BackendError::Timeout("first byte").is_retryable());
        assert!(!status(400).counts_against_node());
    }
}
