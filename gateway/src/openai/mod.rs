//! The OpenAI wire format: error objects, request validation, SSE events.

pub mod error;
pub mod request;
pub mod sse;

pub use error::ApiError;
pub use request::ChatRequest;
