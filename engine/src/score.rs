//! Teacher-forced scoring: one parallel pass over a whole token sequence.

use mistralrs::core::RequestMessage;
use mistralrs::{Constraint, Model, NormalRequest, Response, SamplingParams};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::logprobs::{log_softmax, top_k as best};
use crate::EngineError;

/// What the model thinks of the token that follows one position.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PositionScore {
    /// The token that actually follows.
    pub token: u32,
    /// Its log-probability under the model.
    pub logprob: f32,
    /// The model's most likely token here.
    pub argmax: u32,
    /// The `k` most likely tokens with their log-probabilities, best first.
    pub top: Vec<(u32, f32)>,
}

/// Scores for positions 0..len-1 of a sequence: entry `i` judges token `i + 1`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Scores {
    /// One entry per predicted token.
    pub positions: Vec<PositionScore>,
}

/// Runs the pass and reduces each position's logits to log-probs.
pub async fn run(model: &Model, tokens: Vec<u32>, top_k: usize) -> Result<Scores, EngineError> {
    if tokens.len() < 2 {
        return Ok(Scores {
            positions: Vec::new(),
        });
    }
    let (tx, mut rx) = mpsc::channel(1);
    let sampling = SamplingParams {
        max_len: Some(0),
        ..SamplingParams::deterministic()
    };
    let request = mistralrs::Request::Normal(Box::new(NormalRequest {
        messages: RequestMessage::CompletionTokens(tokens.clone()),
        sampling_params: sampling,
        response: tx,
        return_logprobs: false,
        is_streaming: false,
        id: 0,
        constraint: Constraint::None,
        suffix: None,
        tools: None,
        tool_choice: None,
        logits_processors: None,
        return_raw_logits: true,
        web_search_options: None,
        model_id: None,
        truncate_sequence: false,
    }));
    crate::send(model, request).await?;
    let logits_chunks = match rx.recv().await {
        Some(Response::Raw { logits_chunks, .. }) => logits_chunks,
        Some(Response::InternalError(e)) | Some(Response::ValidationError(e)) => {
            return Err(EngineError::Inference(e.to_string()))
        }
        Some(_) => {
            return Err(EngineError::Inference(
                "unexpected response to a scoring request".into(),
            ))
        }
        None => return Err(EngineError::Closed),
    };
    let mut rows: Vec<Vec<f32>> = Vec::with_capacity(tokens.len());
    for chunk in logits_chunks {
        let chunk = chunk
            .to_dtype(mistralrs::DType::F32)
            .and_then(|t| t.squeeze(0).or(Ok(t)))
            .map_err(|e| EngineError::Inference(e.to_string()))?;
        let chunk_rows = match chunk.rank() {
            1 => vec![chunk
                .to_vec1::<f32>()
                .map_err(|e| EngineError::Inference(e.to_string()))?],
            _ => chunk
                .to_vec2::<f32>()
                .map_err(|e| EngineError::Inference(e.to_string()))?,
        };
        rows.extend(chunk_rows);
    }
    if rows.len() < tokens.len() - 1 {
        return Err(EngineError::Inference(format!(
            "scoring returned {} positions for {} tokens",
            rows.len(),
            tokens.len()
        )));
    }
    let positions = rows
        .iter()
        .zip(tokens.iter().skip(1))
        .map(|(logits, &next)| position_score(logits, next, top_k))
        .collect();
    Ok(Scores { positions })
}

/// Log-softmax of one row, reduced to what an audit needs.
pub fn position_score(logits: &[f32], next: u32, top_k: usize) -> PositionScore {
    let lp = log_softmax(logits);
    let top = best(&lp, top_k.max(1));
    PositionScore {
        token: next,
        logprob: lp.get(next as usize).copied().unwrap_or(f32::NEG_INFINITY),
        argmax: top.first().map(|t| t.0).unwrap_or(0),
        top: top.into_iter().take(top_k).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_softmax_argmax_and_top_k() {
        let logits = [1.0f32, 3.0, 2.0, 3.0];
        let s = position_score(&logits, 2, 3);
        assert_eq!(s.argmax, 1, "ties go to the lower id");
        assert_eq!(s.top.iter().map(|t| t.0).collect::<Vec<_>>(), vec![1, 3, 2]);
        let total: f32 = logits.iter().map(|l| (l - 3.0f32).exp()).sum();
        assert!((s.logprob - (2.0 - 3.0 - total.ln())).abs() < 1e-6);
        let probs: f32 = (0..4)
            .map(|i| position_score(&logits, i, 1).logprob.exp())
            .sum();
        assert!((probs - 1.0).abs() < 1e-5);
        assert_eq!(position_score(&logits, 99, 1).logprob, f32::NEG_INFINITY);
    }
}
