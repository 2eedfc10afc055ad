//! The deterministic answer and its OpenAI wire forms (JSON object and SSE chunks).

use bytes::{BufMut, Bytes, BytesMut};
use serde::Serialize;

use super::request::Validated;

/// The generated text of one choice (all `n` choices are identical).
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    /// Text pieces, one per token; their concatenation is the content.
    pub pieces: Vec<String>,
    /// `stop` or `length`.
    pub finish_reason: &'static str,
}

impl Answer {
    /// Generates `tok0 tok1 ...`, capped by the request and cut at its stop strings.
    pub fn generate(req: &Validated, default_tokens: u64) -> Answer {
        let count = req
            .max_tokens
            .map_or(default_tokens, |m| m.min(default_tokens));
        let capped = req.max_tokens.is_some_and(|m| m < default_tokens);
        let mut pieces: Vec<String> = (0..count).map(|i| format!("tok{i} ")).collect();
        if let Some(cut) = first_stop(&pieces.concat(), &req.stop) {
            truncate_pieces(&mut pieces, cut);
            return Answer {
                pieces,
                finish_reason: "stop",
            };
        }
        Answer {
            pieces,
            finish_reason: if capped { "length" } else { "stop" },
        }
    }

    /// The full content of one choice.
    pub fn content(&self) -> String {
        self.pieces.concat()
    }

    fn tokens(&self) -> u64 {
        self.pieces.len() as u64
    }
}

fn first_stop(text: &str, stops: &[String]) -> Option<usize> {
    stops.iter().filter_map(|s| text.find(s.as_str())).min()
}

// Keeps the text before byte `cut`; a piece straddling it is shortened, not dropped.
fn truncate_pieces(pieces: &mut Vec<String>, cut: usize) {
    let mut seen = 0;
    let mut keep = 0;
    for piece in pieces.iter_mut() {
        if seen >= cut {
            break;
        }
        let room = cut - seen;
        seen += piece.len();
        if piece.len() > room {
            piece.truncate(room);
        }
        keep += 1;
    }
    pieces.truncate(keep);
}

/// Identity of one response, shared by all its chunks.
#[derive(Debug, Clone)]
pub struct Meta<'a> {
    /// `chatcmpl-...`.
    pub id: &'a str,
    /// Unix seconds.
    pub created: u64,
    /// Echoed model name.
    pub model: &'a str,
    /// `system_fingerprint`.
    pub fingerprint: &'a str,
}

#[derive(Serialize, Clone, Copy)]
struct Usage {
    prompt_tokens: u64,
    completion_tokens: u64,
    total_tokens: u64,
}

fn usage(req: &Validated, answer: &Answer) -> Usage {
    let completion = answer.tokens() * req.n;
    Usage {
        prompt_tokens: req.prompt_tokens,
        completion_tokens: completion,
        total_tokens: req.prompt_tokens + completion,
    }
}

#[derive(Serialize)]
struct Completion<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    system_fingerprint: &'a str,
    choices: Vec<Choice<'a>>,
    usage: Usage,
}

#[derive(Serialize)]
struct Choice<'a> {
    index: u64,
    message: Message<'a>,
    logprobs: Option<()>,
    finish_reason: &'a str,
}

#[derive(Serialize)]
struct Message<'a> {
    role: &'static str,
    content: &'a str,
    refusal: Option<()>,
}

/// The non-streamed `chat.completion` body.
pub fn completion_body(meta: &Meta<'_>, req: &Validated, answer: &Answer) -> Bytes {
    let content = answer.content();
    let body = Completion {
        id: meta.id,
        object: "chat.completion",
        created: meta.created,
        model: meta.model,
        system_fingerprint: meta.fingerprint,
        choices: (0..req.n)
            .map(|index| Choice {
                index,
                message: Message {
                    role: "assistant",
                    content: &content,
                    refusal: None,
                },
                logprobs: None,
                finish_reason: answer.finish_reason,
            })
            .collect(),
        usage: usage(req, answer),
    };
    Bytes::from(serde_json::to_vec(&body).unwrap_or_default())
}

#[derive(Serialize)]
struct Chunk<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    system_fingerprint: &'a str,
    choices: Vec<ChunkChoice<'a>>,
    // Absent without include_usage, null on every chunk but the last with it.
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<Option<Usage>>,
}

#[derive(Serialize)]
struct ChunkChoice<'a> {
    index: u64,
    delta: Delta<'a>,
    logprobs: Option<()>,
    finish_reason: Option<&'a str>,
}

#[derive(Serialize, Default)]
struct Delta<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    content: Option<&'a str>,
}

/// A streamed answer cut where pacing and faults need it cut.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamPlan {
    /// The role chunk of every choice.
    pub head: Bytes,
    /// One entry per token position, holding that token's chunk for every choice.
    pub tokens: Vec<Bytes>,
    /// Finish chunks, the usage chunk if asked for, and `[DONE]`.
    pub tail: Bytes,
}

/// The SSE events of a streamed answer.
pub fn stream_plan(meta: &Meta<'_>, req: &Validated, answer: &Answer) -> StreamPlan {
    let usage_field = req.include_usage.then_some(None);
    let event = |buf: &mut BytesMut, choices: Vec<ChunkChoice<'_>>, usage| {
        let chunk = Chunk {
            id: meta.id,
            object: "chat.completion.chunk",
            created: meta.created,
            model: meta.model,
            system_fingerprint: meta.fingerprint,
            choices,
            usage,
        };
        buf.put_slice(b"data: ");
        buf.put_slice(&serde_json::to_vec(&chunk).unwrap_or_default());
        buf.put_slice(b"\n\n");
    };
    let choice = |index, delta, finish_reason| ChunkChoice {
        index,
        delta,
        logprobs: None,
        finish_reason,
    };

    let mut head = BytesMut::new();
    for index in 0..req.n {
        let delta = Delta {
            role: Some("assistant"),
            content: Some(""),
        };
        event(&mut head, vec![choice(index, delta, None)], usage_field);
    }
    let tokens = answer
        .pieces
        .iter()
        .map(|piece| {
            let mut buf = BytesMut::new();
            for index in 0..req.n {
                let delta = Delta {
                    role: None,
                    content: Some(piece),
                };
                event(&mut buf, vec![choice(index, delta, None)], usage_field);
            }
            buf.freeze()
        })
        .collect();
    let mut tail = BytesMut::new();
    for index in 0..req.n {
        let finish = Some(answer.finish_reason);
        event(
            &mut tail,
            vec![choice(index, Delta::default(), finish)],
            usage_field,
        );
    }
    if req.include_usage {
        event(&mut tail, Vec::new(), Some(Some(usage(req, answer))));
    }
    tail.put_slice(b"data: [DONE]\n\n");
    StreamPlan {
        head: head.freeze(),
        tokens,
        tail: tail.freeze(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn req(max_tokens: Option<u64>, stop: &[&str], n: u64, include_usage: bool) -> Validated {
        Validated {
            model: "m".into(),
            prompt_tokens: 7,
            max_tokens,
            n,
            stop: stop.iter().map(|s| s.to_string()).collect(),
            stream: include_usage,
            include_usage,
        }
    }

    const META: Meta<'static> = Meta {
        id: "chatcmpl-1",
        created: 5,
        model: "m",
        fingerprint: "fp_x",
    };

    #[test]
    fn caps_and_stops() {
        let a = Answer::generate(&req(None, &[], 1, false), 3);
        assert_eq!(
            (a.content().as_str(), a.finish_reason),
            ("tok0 tok1 tok2 ", "stop")
        );
        let a = Answer::generate(&req(Some(2), &[], 1, false), 3);
        assert_eq!(
            (a.content().as_str(), a.finish_reason),
            ("tok0 tok1 ", "length")
        );
        let a = Answer::generate(&req(Some(9), &[], 1, false), 3);
        assert_eq!(a.finish_reason, "stop");
        let a = Answer::generate(&req(Some(2), &["k1", "1 t"], 1, false), 16);
        assert_eq!((a.content().as_str(), a.finish_reason), ("tok0 to", "stop"));
        assert_eq!(a.pieces.len(), 2);
        let a = Answer::generate(&req(None, &["tok0"], 1, false), 4);
        assert!(a.pieces.is_empty());
    }

    #[test]
    fn completion_has_openai_shape() {
        let r = req(None, &[], 2, false);
        let a = Answer::generate(&r, 2);
        let v: Value = serde_json::from_slice(&completion_body(&META, &r, &a)).expect("json");
        assert_eq!(v["object"], "chat.completion");
        assert_eq!(v["choices"][1]["index"], 1);
        assert_eq!(v["choices"][0]["message"]["content"], "tok0 tok1 ");
        assert!(v["choices"][0]["message"]["refusal"].is_null());
        assert!(v["choices"][0]["logprobs"].is_null());
        assert_eq!(v["usage"]["completion_tokens"], 4);
        assert_eq!(v["usage"]["total_tokens"], 11);
    }

    #[test]
    fn stream_events_concatenate_to_the_content() {
        let r = req(None, &[], 1, true);
        let a = Answer::generate(&r, 3);
        let plan = stream_plan(&META, &r, &a);
        let mut all = plan.head.to_vec();
        plan.tokens.iter().for_each(|t| all.extend_from_slice(t));
        all.extend_from_slice(&plan.tail);
        let text = String::from_utf8(all).expect("utf8");
        let events: Vec<&str> = text
            .split("\n\n")
            .filter(|e| !e.is_empty())
            .map(|e| e.strip_prefix("data: ").expect("data prefix"))
            .collect();
        assert_eq!(events.last(), Some(&"[DONE]"));
        let chunks: Vec<Value> = events[..events.len() - 1]
            .iter()
            .map(|e| serde_json::from_str(e).expect("chunk json"))
            .collect();
        assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
        let content: String = chunks
            .iter()
            .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
            .collect();
        assert_eq!(content, a.content());
        assert!(chunks[..chunks.len() - 1]
            .iter()
            .all(|c| c["usage"].is_null()));
        let finish = &chunks[chunks.len() - 2];
        assert_eq!(finish["choices"][0]["delta"], serde_json::json!({}));
        assert_eq!(finish["choices"][0]["finish_reason"], "stop");
        let last = &chunks[chunks.len() - 1];
        assert_eq!(last["choices"], serde_json::json!([]));
        assert_eq!(last["usage"]["completion_tokens"], 3);
    }
}
