//! Reductions of one row of logits: natural-log probabilities, the best
//! alternatives, and what a teacher-forced position says about its token.

use serde::{Deserialize, Serialize};

use crate::sampler::{Replayed, Sampler, SamplingParams};

/// How many alternatives are kept per step (OpenAI's `top_logprobs` maximum).
pub const MAX_TOP: usize = 20;

/// Natural-log softmax of one row of logits.
pub fn log_softmax(logits: &[f32]) -> Vec<f32> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let lse = logits.iter().map(|l| (l - max).exp()).sum::<f32>().ln() + max;
    logits.iter().map(|l| l - lse).collect()
}

/// The `k` best (id, log-prob) pairs, best first, ties to the lower id.
pub fn top_k(logprobs: &[f32], k: usize) -> Vec<(u32, f32)> {
    let k = k.min(logprobs.len());
    if k == 0 {
        return Vec::new();
    }
    let mut order: Vec<usize> = (0..logprobs.len()).collect();
    order.select_nth_unstable_by(k - 1, |a, b| {
        logprobs[*b].total_cmp(&logprobs[*a]).then(a.cmp(b))
    });
    order.truncate(k);
    order.sort_by(|a, b| logprobs[*b].total_cmp(&logprobs[*a]).then(a.cmp(b)));
    order.into_iter().map(|i| (i as u32, logprobs[i])).collect()
}

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
    /// What the request's own sampler picks here, for positions a replay covers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replayed: Option<Replayed>,
}

/// Scores for positions 0..len-1 of a sequence: entry `i` judges token `i + 1`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Scores {
    /// One entry per predicted token.
    pub positions: Vec<PositionScore>,
}

/// Log-softmax of one row, reduced to what an audit needs.
pub fn position_score(logits: &[f32], next: u32, top_k_n: usize) -> PositionScore {
    let lp = log_softmax(logits);
    let top = top_k(&lp, top_k_n.max(1));
    PositionScore {
        token: next,
        logprob: lp.get(next as usize).copied().unwrap_or(f32::NEG_INFINITY),
        argmax: top.first().map(|t| t.0).unwrap_or(0),
        top: top.into_iter().take(top_k_n).collect(),
        replayed: None,
    }
}

/// Replays a generation's sampling over a scored sequence: from token index
/// `from` on (the first completion token), the request's seeded sampler is
/// run on the reference logits, as the node's sampler ran on its own.
#[derive(Clone, Debug, PartialEq)]
pub struct Replay {
    /// Index in the scored tokens of the first generated token.
    pub from: usize,
    /// The request's sampling settings, seed included.
    pub sampling: SamplingParams,
    /// The choice index (a seeded request's choice `i` draws from `seed + i`).
    pub choice: u64,
}

/// Accumulates one teacher-forced pass, position by position.
pub(crate) struct ScoreRun {
    top_k: usize,
    /// The index of the first token judged.
    from: usize,
    replay: Option<(usize, Sampler)>,
    positions: Vec<PositionScore>,
}

impl ScoreRun {
    pub(crate) fn new(top_k: usize, from: usize, replay: Option<Replay>) -> Self {
        Self {
            top_k: top_k.min(MAX_TOP),
            from: from.max(1),
            replay: replay.map(|r| (r.from, Sampler::new(r.sampling, r.choice))),
            positions: Vec::new(),
        }
    }

    /// Scores the logits that predict `next`, the token at index `at`.
    pub(crate) fn push(&mut self, logits: &[f32], at: usize, next: u32) {
        let mut score = position_score(logits, next, self.top_k);
        if let Some((from, sampler)) = &mut self.replay {
            if at >= *from {
                score.replayed = Some(sampler.replay(logits, next));
            }
        }
        self.positions.push(score);
    }

    /// Whether the token at index `at` is judged (its logits are wanted).
    pub(crate) fn wants(&self, at: usize) -> bool {
        at >= self.from
    }

    /// Whether every judged token of a sequence of `len` tokens is scored.
    pub(crate) fn complete(&self, len: usize) -> bool {
        self.from + self.positions.len() >= len
    }

    pub(crate) fn finish(self) -> Scores {
        Scores {
            positions: self.positions,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn softmax_and_top_k() {
        let lp = log_softmax(&[0.0, 2.0, 1.0, 2.0]);
        let total: f32 = lp.iter().map(|v| v.exp()).sum();
        assert!((total - 1.0).abs() < 1e-6);
        assert_eq!(
            top_k(&lp, 3).iter().map(|t| t.0).collect::<Vec<_>>(),
            vec![1, 3, 2]
        );
        assert!(top_k(&lp, 0).is_empty());
        assert_eq!(top_k(&lp, 9).len(), 4);
    }

    #[test]
    fn position_score_has_argmax_top_k_and_the_tokens_logprob() {
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
        assert!(position_score(&logits, 1, 0).top.is_empty());
    }
}
