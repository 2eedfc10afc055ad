//! Exact per-token log-probs, recorded from the logits of every sampling step.
//!
//! mistralrs 0.8's own log-probs are base-10, and on the greedy path they are
//! taken of raw logits rather than probabilities, so they cannot be reported
//! as OpenAI's (natural-log) log-probs, nor used as audit evidence. The
//! recorder sits in the sampler as a logits processor: it sees the exact
//! distribution of each step, and the next step's context tells which token
//! was chosen.

use std::sync::Mutex;

use mistralrs::{CustomLogitsProcessor, Tensor};

/// How many alternatives are kept per step (OpenAI's `top_logprobs` maximum).
pub const MAX_TOP: usize = 20;

/// The chosen token of one step, its log-prob, and the step's best alternatives.
pub struct Entry {
    /// The chosen token.
    pub token: u32,
    /// Its natural-log probability.
    pub logprob: f32,
    /// The best (token, log-prob) pairs, best first.
    pub top: Vec<(u32, f32)>,
}

struct Step {
    top: Vec<(u32, f32)>,
    chosen: Option<(u32, f32)>,
}

#[derive(Default)]
struct Inner {
    steps: Vec<Step>,
    /// The last step's full log-probs, until its chosen token is known.
    pending: Option<Vec<f32>>,
}

/// Records one sequence's sampling steps (requests with `n > 1` are refused
/// log-probs, since their sequences would share a recorder).
#[derive(Default)]
pub struct Recorder {
    inner: Mutex<Inner>,
}

impl Recorder {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The log-prob of the token chosen at `step` and the step's alternatives.
    /// `hint` names the chosen token when the next step has not run yet.
    pub fn entry(&self, step: usize, hint: Option<u32>) -> Option<Entry> {
        let inner = self.lock();
        let s = inner.steps.get(step)?;
        let chosen = match (s.chosen, hint) {
            (Some(c), _) => Some(c),
            (None, Some(id)) if step + 1 == inner.steps.len() => inner
                .pending
                .as_ref()
                .and_then(|lp| lp.get(id as usize).map(|v| (id, *v))),
            _ => None,
        }?;
        Some(Entry {
            token: chosen.0,
            logprob: chosen.1,
            top: s.top.clone(),
        })
    }
}

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

impl CustomLogitsProcessor for Recorder {
    fn apply(&self, logits: &Tensor, context: &[u32]) -> mistralrs::Result<Tensor> {
        let row: Vec<f32> = logits
            .to_dtype(mistralrs::DType::F32)?
            .flatten_all()?
            .to_vec1()?;
        let lp = log_softmax(&row);
        let mut inner = self.lock();
        // This step's context ends with the token chosen at the previous step.
        if let (Some(prev), Some(&chosen)) = (inner.pending.take(), context.last()) {
            if let Some(last) = inner.steps.last_mut() {
                last.chosen = prev.get(chosen as usize).map(|v| (chosen, *v));
            }
        }
        inner.steps.push(Step {
            top: top_k(&lp, MAX_TOP),
            chosen: None,
        });
        inner.pending = Some(lp);
        Ok(logits.clone())
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
    fn chosen_tokens_come_from_the_next_context_or_the_hint() {
        let r = Recorder::default();
        let dev = mistralrs::Device::Cpu;
        let step = |logits: &[f32], ctx: &[u32]| {
            let t = Tensor::new(logits, &dev).unwrap();
            r.apply(&t, ctx).unwrap();
        };
        step(&[0.0, 1.0, 2.0], &[7]);
        // Before the next step, only a hint can name the chosen token.
        assert!(r.entry(0, None).is_none());
        let e = r.entry(0, Some(1)).unwrap();
        assert_eq!(e.token, 1);
        assert!((e.logprob - log_softmax(&[0.0, 1.0, 2.0])[1]).abs() < 1e-6);
        assert_eq!(e.top[0].0, 2);
        step(&[3.0, 0.0, 0.0], &[7, 2]);
        // The second step's context says token 2 was chosen at step 0.
        let e = r.entry(0, Some(1)).unwrap();
        assert_eq!(e.token, 2);
        assert!((e.logprob - log_softmax(&[0.0, 1.0, 2.0])[2]).abs() < 1e-6);
        assert!(r.entry(5, None).is_none());
    }
}
