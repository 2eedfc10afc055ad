//! One session on a chain of stages, from the caller's side: generation,
//! failover to spare stages, and speculative decoding over the chain.

use tokio::net::TcpStream;

use super::{
    read_frame, write_frame, Codec, Forward, Frame, Payload, Sampling, StageError, ROW_BY_ROW,
};

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
    /// Every token the chain holds, and how it was fed.
    history: Fed,
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
            history: Fed::default(),
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
        self.history.tokens.len() as u32
    }

    /// Whether the session holds no positions.
    pub fn is_empty(&self) -> bool {
        self.history.tokens.is_empty()
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
        // Drafts grow while they hold and shrink to what held when they
        // fail: a rejected draft token costs a row of compute on every
        // stage, an accepted one saves a whole traversal.
        let mut k_now = k;
        while out.len() < max_tokens && !out.last().is_some_and(|t| stop.contains(t)) {
            let last = *out.last().unwrap_or(&0);
            let mut context = self.history.tokens.clone();
            context.push(last);
            let room = max_tokens - out.len();
            let draft = lookup(&context, k_now.min(room.saturating_sub(1)));
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
            k_now = next_draft_len(k_now, k, draft.len(), accepted);
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
                    self.history.push(&tokens);
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
            StageError::Unreachable { stage, .. } => self.stages.iter().position(|s| s == stage),
            StageError::Remote(_) | StageError::Frame(_) => None,
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
        // The positions are fed again in the same pieces as before: a
        // stage's arithmetic depends on how rows are batched, and only the
        // same batching rebuilds the same caches bit for bit, so the
        // generation goes on exactly as it would have.
        let replay = std::mem::take(&mut self.history);
        for piece in replay.pieces() {
            let frame = Frame::Forward(Forward {
                session: self.session,
                start: self.len(),
                route: self.stages[1..].to_vec(),
                codec: self.codec,
                sampling: Sampling::GREEDY,
                payload: Payload::Tokens(piece.to_vec()),
            });
            match self.exchange(&frame).await? {
                Frame::Picks { .. } => self.history.push(piece),
                other => return Err(StageError::Protocol(format!("replay answered {other:?}"))),
            }
        }
        Ok(())
    }

    async fn exchange(&mut self, frame: &Frame) -> Result<Frame, StageError> {
        write_frame(&mut self.first, frame).await?;
        match read_frame(&mut self.first).await? {
            Some(Frame::Error { message, .. }) => Err(StageError::Remote(message)),
            Some(Frame::Unreachable { stage, message, .. }) => {
                Err(StageError::Unreachable { stage, message })
            }
            Some(f) => Ok(f),
            None => Err(StageError::Protocol(
                "the first stage closed the connection".into(),
            )),
        }
    }
}

/// What a stage serves, as it says itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StageInfo {
    /// Its blocks, `first..end`.
    pub span: std::ops::Range<u32>,
    /// Blocks in the whole model.
    pub layers: u32,
    /// Most positions one session may hold.
    pub context: u32,
    /// sha256 (hex) of the model file.
    pub model: String,
    /// The number format of its attention.
    pub attention: String,
}

/// Asks the stage at `addr` what it serves.
pub async fn describe(addr: &str) -> Result<StageInfo, StageError> {
    let mut s = connect(addr).await?;
    write_frame(&mut s, &Frame::Describe).await?;
    match read_frame(&mut s).await? {
        Some(Frame::Span {
            first,
            end,
            layers,
            context,
            model,
            attention,
        }) => Ok(StageInfo {
            span: first..end,
            layers,
            context,
            model,
            attention,
        }),
        Some(Frame::Error { message, .. }) => Err(StageError::Remote(message)),
        other => Err(StageError::Protocol(format!(
            "expected a span, got {other:?}"
        ))),
    }
}

async fn connect(addr: &str) -> Result<TcpStream, StageError> {
    let s = TcpStream::connect(addr).await?;
    s.set_nodelay(true)?;
    Ok(s)
}

/// The tokens a session holds, and the pieces they were fed in.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Fed {
    tokens: Vec<u32>,
    /// Length of each forward that fed them, in order.
    segments: Vec<usize>,
}

impl Fed {
    fn push(&mut self, tokens: &[u32]) {
        if !tokens.is_empty() {
            self.tokens.extend(tokens);
            self.segments.push(tokens.len());
        }
    }

    fn truncate(&mut self, len: usize) {
        self.tokens.truncate(len);
        let mut at = 0;
        self.segments.retain_mut(|s| {
            let keep = (len - at.min(len)).min(*s);
            at += *s;
            *s = keep;
            keep > 0
        });
    }

    /// The forwards that feed the same tokens with the same batching: the
    /// first piece (a fresh session's prefill) alone, a piece longer than
    /// [`ROW_BY_ROW`] alone, and runs of shorter pieces (which stages
    /// compute one row at a time anyway) joined up to [`ROW_BY_ROW`] rows.
    fn pieces(&self) -> Vec<&[u32]> {
        let mut out: Vec<&[u32]> = Vec::new();
        let (mut at, mut open) = (0usize, None::<usize>);
        for (i, &len) in self.segments.iter().enumerate() {
            let joinable = i > 0 && len <= ROW_BY_ROW;
            match open {
                Some(from) if joinable && at + len - from <= ROW_BY_ROW => {}
                _ => {
                    if let Some(from) = open.take() {
                        out.push(&self.tokens[from..at]);
                    }
                    if joinable {
                        open = Some(at);
                    } else {
                        out.push(&self.tokens[at..at + len]);
                    }
                }
            }
            at += len;
        }
        if let Some(from) = open {
            out.push(&self.tokens[from..at]);
        }
        out
    }
}

/// How many tokens to draft next, at most `k`, after `accepted` of
/// `drafted` held under a limit of `now`: twice as many after a full
/// acceptance, one more than held after a miss.
fn next_draft_len(now: usize, k: usize, drafted: usize, accepted: usize) -> usize {
    if drafted == 0 {
        now
    } else if accepted == drafted {
        (now * 2).clamp(1, k.max(1))
    } else {
        (accepted + 1).min(k.max(1))
    }
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
    use super::{lookup, Fed, ROW_BY_ROW};

    #[test]
    fn a_replay_feeds_tokens_in_the_pieces_they_came_in() {
        let mut fed = Fed::default();
        fed.push(&[1, 2, 3, 4, 5]); // prefill
        for t in 6..=40 {
            fed.push(&[t]); // decode steps
        }
        let pieces = fed.pieces();
        assert_eq!(pieces[0], &[1, 2, 3, 4, 5]);
        assert!(pieces[1..].iter().all(|p| p.len() <= ROW_BY_ROW));
        assert_eq!(pieces.concat(), fed.tokens);
        assert_eq!(pieces.len(), 1 + 35usize.div_ceil(ROW_BY_ROW));
        // A long continuation is a batch of its own; so is a second prefill.
        let mut fed = Fed::default();
        fed.push(&[1, 2]);
        fed.push(&[3]);
        fed.push(&(10..30).collect::<Vec<_>>());
        fed.push(&[4]);
        let pieces = fed.pieces();
        assert_eq!(pieces.len(), 4);
        assert_eq!(pieces[2].len(), 20);
        assert_eq!(pieces.concat(), fed.tokens);
    }

    #[test]
    fn drafts_grow_while_they_hold_and_shrink_when_they_miss() {
        use super::next_draft_len;
        assert_eq!(next_draft_len(6, 6, 6, 6), 6);
        assert_eq!(next_draft_len(2, 8, 2, 2), 4);
        assert_eq!(next_draft_len(6, 6, 6, 0), 1);
        assert_eq!(next_draft_len(6, 6, 6, 3), 4);
        assert_eq!(next_draft_len(3, 6, 0, 0), 3, "no draft, nothing learnt");
        assert_eq!(next_draft_len(1, 0, 1, 1), 1);
    }

    #[test]
    fn truncation_trims_the_pieces_too() {
        let mut fed = Fed::default();
        fed.push(&[1, 2, 3]);
        fed.push(&[4, 5, 6, 7]);
        fed.push(&[8]);
        fed.truncate(5);
        assert_eq!(fed.tokens, vec![1, 2, 3, 4, 5]);
        assert_eq!(fed.segments, vec![3, 2]);
        fed.truncate(0);
        assert_eq!(fed, Fed::default());
        fed.push(&[]);
        assert!(fed.segments.is_empty());
    }

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
