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

use crate::logits::{log_softmax, top_k, MAX_TOP};

/// The chosen token of one step, its log-prob, and the step's best alternatives.
pub struct Entry {
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
            logprob: chosen.1,
            top: s.top.clone(),
        })
    }
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
        assert!((e.logprob - log_softmax(&[0.0, 1.0, 2.0])[1]).abs() < 1e-6);
        assert!((e.logprob - log_softmax(&[0.0, 1.0, 2.0])[1]).abs() < 1e-6);
        assert_eq!(e.top[0].0, 2);
        step(&[3.0, 0.0, 0.0], &[7, 2]);
        // The second step's context says token 2 was chosen at step 0.
        let e = r.entry(0, Some(1)).unwrap();

        assert!((e.logprob - log_softmax(&[0.0, 1.0, 2.0])[2]).abs() < 1e-6);
        assert!(r.entry(5, None).is_none());
    }
}
