//! One session on a chain of stages, from the caller's side: generation,
//! failover to spare stages, and speculative decoding over the chain.

use tokio::net::TcpStream;

use super::{read_frame, write_frame, Codec, Forward, Frame, Payload, Sampling, StageError};

/// What the last stage picked.
#[derive(Clone, Debug, PartialEq)]
pub struct Picks {
    /// Argmax of every row sent.
    pub argmax: Vec<u32>,
    /// The next token.
    pub next: u32,
    /// Its log-prob.
    pub logprob: f32,
}

/// What speculative generation did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Speculation {
    /// Traversals of the chain.
    pub traversals: usize,
    /// Draft tokens sent.
    pub drafted: usize,
    /// Draft tokens the model confirmed.
    pub accepted: usize,
}

/// One session on a chain of stages.
///
/// The client keeps the session's tokens, so when a stage dies it puts a
/// spare for that span in its place and replays them: the chain rebuilds
/// its caches and the generation goes on as if nothing had happened.
pub struct ChainClient {
    stages: Vec<String>,
    spares: Vec<Vec<String>>,
    first: TcpStream,
    codec: Codec,
    session: u64,
    /// Every token the chain holds, in order.
    history: Vec<u32>,
    failovers: usize,
}

impl ChainClient {
    /// Connects to the first of `stages` (`host:port`, in chain order) for
    /// a new session; hidden states travel in `codec`.
    pub async fn open(stages: &[String], codec: Codec, session: u64) -> Result<Self, StageError> {
        let Some(first) = stages.first() else {
            return Err(StageError::Protocol(
                "a chain needs at least one stage".into(),
            ));
        };
        Ok(Self {
            first: connect(first).await?,
            stages: stages.to_vec(),
            spares: vec![Vec::new(); stages.len()],
            codec,
            session,
            history: Vec::new(),
            failovers: 0,
        })
    }

    /// Spare stages for each span (parallel to the stages), tried in order
    /// when the stage of that span fails.
    pub fn with_spares(mut self, spares: Vec<Vec<String>>) -> Self {
        self.spares = spares;
        self.spares.resize(self.stages.len(), Vec::new());
        self
    }

    /// Positions the chain holds for this session.
    pub fn len(&self) -> u32 {
        self.history.len() as u32
    }

    /// Whether the session holds no positions.
    pub fn is_empty(&self) -> bool {
        self.history.is_empty()
    }

    /// The stages now in use, in chain order.
    pub fn stages(&self) -> &[String] {
        &self.stages
    }

    /// Stages replaced by spares so far.
    pub fn failovers(&self) -> usize {
        self.failovers
    }

    /// Runs `tokens` as the session's next positions through the chain,
    /// failing over to spares when a stage dies.
    pub async fn forward(
        &mut self,
        tokens: Vec<u32>,
        sampling: Sampling,
    ) -> Result<Picks, StageError> {
        let start = self.len();
        self.forward_at(start, tokens, sampling).await
    }

    /// Forgets positions from `len` on, on every stage (0 ends the session).
    pub async fn truncate(&mut self, len: u32) -> Result<(), StageError> {
        let frame = Frame::Truncate {
            session: self.session,
            len,
            route: self.stages[1..].to_vec(),
        };
        match self.exchange(&frame).await? {
            Frame::Ack { .. } => {
                self.history.truncate(len as usize);
                Ok(())
            }
            other => Err(StageError::Protocol(format!("expected ack, got {other:?}"))),
        }
    }

    /// Generates up to `max_tokens` after `prompt`, stopping after any of
    /// `stop`; one traversal of the chain per token.
    pub async fn generate(
        &mut self,
        prompt: &[u32],
        max_tokens: usize,
        stop: &[u32],
        sampling: Sampling,
    ) -> Result<Vec<u32>, StageError> {
        let mut out = Vec::with_capacity(max_tokens);
        let mut next = prompt.to_vec();
        while out.len() < max_tokens {
            let step = Sampling {
                step: out.len() as u32,
                ..sampling
            };
            let token = self.forward(next, step).await?.next;
            out.push(token);
            if stop.contains(&token) {
                break;
            }
            next = vec![token];
        }
        Ok(out)
    }

    /// Greedy generation that drafts up to `k` tokens per traversal by
    /// prompt lookup (the continuation of the latest earlier occurrence of
    /// the last few tokens) and keeps the prefix the model confirms, so a
    /// traversal yields between 1 and `k + 1` tokens. The output equals
    /// [`ChainClient::generate`]'s greedy output.
    pub async fn generate_speculative(
        &mut self,
        prompt: &[u32],
        max_tokens: usize,
        stop: &[u32],
        k: usize,
    ) -> Result<(Vec<u32>, Speculation), StageError> {
        let mut stats = Speculation::default();
        let mut out: Vec<u32> = Vec::with_capacity(max_tokens);
        let first = self.forward(prompt.to_vec(), Sampling::GREEDY).await?;
        stats.traversals += 1;
        out.push(first.next);
        while out.len() < max_tokens && !out.last().is_some_and(|t| stop.contains(t)) {
            let last = *out.last().unwrap_or(&0);
            let mut context = self.history.clone();
            context.push(last);
            let room = max_tokens - out.len();
            let draft = lookup(&context, k.min(room.saturating_sub(1)));
            let start = self.len();
            let mut rows = vec![last];
            rows.extend(&draft);
            let picks = self.forward_at(start, rows, Sampling::GREEDY).await?;
            stats.traversals += 1;
            stats.drafted += draft.len();
            // Row i predicts the token after input i: the draft holds while
            // it matches, and the first mismatch is the model's own token.
            let accepted = draft
                .iter()
                .zip(&picks.argmax)
                .take_while(|(d, a)| d == a)
                .count();
            stats.accepted += accepted;
            let fresh = draft[..accepted]
                .iter()
                .copied()
                .chain(picks.argmax.get(accepted).copied());
            for t in fresh {
                if out.len() == max_tokens {
                    break;
                }
                out.push(t);
                if stop.contains(&t) {
                    break;
                }
            }
            // The chain keeps `last` and the confirmed draft; the next
            // forward starts there, which rewinds the rest on every stage.
            self.history.truncate(start as usize + 1 + accepted);
        }
        Ok((out, stats))
    }

    async fn forward_at(
        &mut self,
        start: u32,
        tokens: Vec<u32>,
        sampling: Sampling,
    ) -> Result<Picks, StageError> {
        self.history.truncate(start as usize);
        loop {
            let frame = Frame::Forward(Forward {
                session: self.session,
                start: self.len(),
                route: self.stages[1..].to_vec(),
                codec: self.codec,
                sampling,
                payload: Payload::Tokens(tokens.clone()),
            });
            match self.exchange(&frame).await {
                Ok(Frame::Picks {
                    argmax,
                    next,
                    logprob,
                    ..
                }) => {
                    self.history.extend(&tokens);
                    return Ok(Picks {
                        argmax,
                        next,
                        logprob,
                    });
                }
                Ok(other) => {
                    return Err(StageError::Protocol(format!(
                        "expected picks, got {other:?}"
                    )))
                }
                Err(e) => self.fail_over(e).await?,
            }
        }
    }

    /// Replaces the stage that failed with a spare for its span and
    /// rebuilds the session on the new chain by replaying its tokens; the
    /// error itself when no spare is left or the failure is not a stage's.
    async fn fail_over(&mut self, error: StageError) -> Result<(), StageError> {
        let dead = match &error {
            StageError::Io(_) | StageError::Protocol(_) => Some(0),
            StageError::Remote(m) => self.stages.iter().position(|s| {
                m.contains(&format!("next stage {s}:")) || m.contains(&format!("next stage {s} "))
            }),
            StageError::Frame(_) => None,
        };
        let Some(i) = dead else { return Err(error) };
        let Some(spare) = self
            .spares
            .get_mut(i)
            .and_then(|s| (!s.is_empty()).then(|| s.remove(0)))
        else {
            return Err(error);
        };
        self.stages[i] = spare;
        self.failovers += 1;
        // A new connection and session: the old ones' caches go with the
        // old connection, down the old route.
        self.first = connect(&self.stages[0]).await?;
        self.session = self.session.wrapping_add(1 << 32);
        let replay = std::mem::take(&mut self.history);
        if !replay.is_empty() {
            let frame = Frame::Forward(Forward {
                session: self.session,
                start: 0,
                route: self.stages[1..].to_vec(),
                codec: self.codec,
                sampling: Sampling::GREEDY,
                payload: Payload::Tokens(replay.clone()),
            });
            match self.exchange(&frame).await? {
                Frame::Picks { .. } => self.history = replay,
                other => return Err(StageError::Protocol(format!("replay answered {other:?}"))),
            }
        }
        Ok(())
    }

    async fn exchange(&mut self, frame: &Frame) -> Result<Frame, StageError> {
        write_frame(&mut self.first, frame).await?;
        match read_frame(&mut self.first).await? {
            Some(Frame::Error { message, .. }) => Err(StageError::Remote(message)),
            Some(f) => Ok(f),
            None => Err(StageError::Protocol(
                "the first stage closed the connection".into(),
            )),
        }
    }
}

async fn connect(addr: &str) -> Result<TcpStream, StageError> {
    let s = TcpStream::connect(addr).await?;
    s.set_nodelay(true)?;
    Ok(s)
}

/// Up to `k` draft tokens: what followed the latest earlier occurrence of
/// the longest suffix (3 tokens down to 1) of `context` that occurred before.
fn lookup(context: &[u32], k: usize) -> Vec<u32> {
    if k == 0 {
        return Vec::new();
    }
    for n in (1..=3usize).rev() {
        if context.len() <= n {
            continue;
        }
        let suffix = &context[context.len() - n..];
        let found = (0..context.len() - n)
            .rev()
            .find(|&i| &context[i..i + n] == suffix);
        if let Some(i) = found {
            let from = i + n;
            let to = (from + k).min(context.len());
            if from < to {
                return context[from..to].to_vec();
            }
        }
    }
    Vec::new()
}

#[cfg(test)]
mod tests {
    use super::lookup;

    #[test]
    fn lookup_continues_the_latest_earlier_occurrence() {
        // "a b c d a b" -> after "a b" came "c d".
        assert_eq!(lookup(&[1, 2, 3, 4, 1, 2], 2), vec![3, 4]);
        assert_eq!(lookup(&[1, 2, 3, 4, 1, 2], 8), vec![3, 4, 1, 2]);
        // The longest matching suffix wins over a shorter, later one.
        assert_eq!(lookup(&[5, 1, 2, 9, 7, 2, 8, 5, 1, 2], 1), vec![9]);
        // Nothing repeats, or nothing asked for: no draft.
        assert!(lookup(&[1, 2, 3], 4).is_empty());
        assert!(lookup(&[1, 2, 1], 0).is_empty());
        assert!(lookup(&[], 3).is_empty());
    }
}
