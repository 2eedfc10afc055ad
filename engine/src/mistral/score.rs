//! Teacher-forced scoring: one parallel pass over a whole token sequence.

use mistralrs::core::RequestMessage;
use mistralrs::{Constraint, Model, NormalRequest, Response, SamplingParams};
use tokio::sync::mpsc;

use crate::logits::{Replay, ScoreRun, Scores};
use crate::EngineError;

/// Runs the pass and reduces each position's logits to log-probs.
pub async fn run(
    model: &Model,
    tokens: Vec<u32>,
    from: usize,
    top_k: usize,
    replay: Option<Replay>,
) -> Result<Scores, EngineError> {
    if tokens.len() <= from {
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
    super::send(model, request).await?;
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
    let mut run = ScoreRun::new(top_k, from, replay);
    for (at, (logits, &next)) in rows.iter().zip(tokens.iter().skip(1)).enumerate() {
        if run.wants(at + 1) {
            run.push(logits, at + 1, next);
        }
    }
    Ok(run.finish())
}
