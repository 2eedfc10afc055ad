//! The conversation of an OpenAI request, read the same way by both runtimes.

use serde_json::Value;

use crate::RequestError;

/// One message: its role and its text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChatMessage {
    /// "system", "user", "assistant", ...
    pub role: String,
    /// The text; array content has its text parts joined by newlines.
    pub content: String,
}

/// Reads `messages`: a non-empty array of objects with a string `role` and a
/// string, array or null `content`.
pub fn chat_messages(v: Option<&Value>) -> Result<Vec<ChatMessage>, RequestError> {
    let list = v
        .and_then(Value::as_array)
        .ok_or_else(|| RequestError::new("messages", "expected an array"))?;
    if list.is_empty() {
        return Err(RequestError::new(
            "messages",
            "expected at least one message",
        ));
    }
    list.iter()
        .enumerate()
        .map(|(i, m)| {
            let role = m.get("role").and_then(Value::as_str).ok_or_else(|| {
                RequestError::new(format!("messages[{i}].role"), "expected a string")
            })?;
            let content = match m.get("content") {
                None | Some(Value::Null) => String::new(),
                Some(Value::String(s)) => s.clone(),
                // Text parts are joined: the engine serves text-only models.
                Some(Value::Array(parts)) => parts
                    .iter()
                    .filter_map(|p| p.get("text").and_then(Value::as_str))
                    .collect::<Vec<_>>()
                    .join("\n"),
                Some(_) => {
                    return Err(RequestError::new(
                        format!("messages[{i}].content"),
                        "expected a string or an array",
                    ))
                }
            };
            Ok(ChatMessage {
                role: role.to_string(),
                content,
            })
        })
        .collect()
}
