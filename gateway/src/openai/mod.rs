//! The OpenAI wire format: error objects, request validation, SSE events,
//! and the log-probs the gateway adds for audits and removes again.

pub mod error;
pub mod logprobs;
pub mod request;
pub mod sse;

pub use error::ApiError;
pub use request::ChatRequest;
