//! The stage protocol: how a pipeline's nodes hand hidden states along.
//!
//! A caller holds one persistent TCP connection to the first stage of a
//! chain and sends [`Frame::Forward`] with token ids and the route of the
//! stages after it. Each stage runs its span, forwards the hidden states to
//! the next stage over its own persistent connection, and passes the answer
//! back; the last stage samples and answers [`Frame::Picks`]. One generated
//! token therefore costs one traversal of the chain and no round trip to
//! the caller between stages. No JSON on this path: length-prefixed binary
//! frames ([`frame`]) with hidden states packed by a [`Codec`].

mod codec;
mod frame;

pub use codec::{Codec, Hidden};
pub use frame::{Forward, Frame, FrameError, Payload, Sampling, MAX_FRAME};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// Why a stage exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum StageError {
    /// The connection failed.
    #[error("stage connection: {0}")]
    Io(#[from] std::io::Error),
    /// The peer sent something that is not a frame.
    #[error("stage frame: {0}")]
    Frame(#[from] FrameError),
    /// A stage answered with an error.
    #[error("stage: {0}")]
    Remote(String),
    /// The peer closed the connection or answered out of turn.
    #[error("stage protocol: {0}")]
    Protocol(String),
}

/// Reads one frame; None when the peer closed cleanly between frames.
pub async fn read_frame<R: AsyncRead + Unpin>(r: &mut R) -> Result<Option<Frame>, StageError> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let len = u32::from_le_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(FrameError::TooLarge(len).into());
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).await?;
    Ok(Some(Frame::decode(&body)?))
}

/// Writes one frame.
pub async fn write_frame<W: AsyncWrite + Unpin>(w: &mut W, f: &Frame) -> Result<(), StageError> {
    w.write_all(&f.encode()).await?;
    w.flush().await?;
    Ok(())
}

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

/// One session on a chain of stages, from the caller's side.
pub struct ChainClient {
    first: TcpStream,
    route: Vec<String>,
    codec: Codec,
    session: u64,
    len: u32,
}

impl ChainClient {
    /// Connects to the first of `stages` (`host:port`, in chain order) for
    /// a new session; hidden states travel in `codec`.
    pub async fn open(stages: &[String], codec: Codec, session: u64) -> Result<Self, StageError> {
        let (first, route) = stages
            .split_first()
            .ok_or_else(|| StageError::Protocol("a chain needs at least one stage".into()))?;
        let first = TcpStream::connect(first).await?;
        first.set_nodelay(true)?;
        Ok(Self {
            first,
            route: route.to_vec(),
            codec,
            session,
            len: 0,
        })
    }

    /// Positions the chain holds for this session.
    pub fn len(&self) -> u32 {
        self.len
    }

    /// Whether the session holds no positions.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Runs `tokens` as the session's next positions through the chain.
    pub async fn forward(
        &mut self,
        tokens: Vec<u32>,
        sampling: Sampling,
    ) -> Result<Picks, StageError> {
        let n = tokens.len() as u32;
        let frame = Frame::Forward(Forward {
            session: self.session,
            start: self.len,
            route: self.route.clone(),
            codec: self.codec,
            sampling,
            payload: Payload::Tokens(tokens),
        });
        match self.exchange(&frame).await? {
            Frame::Picks {
                argmax,
                next,
                logprob,
                ..
            } => {
                self.len += n;
                Ok(Picks {
                    argmax,
                    next,
                    logprob,
                })
            }
            other => Err(StageError::Protocol(format!(
                "expected picks, got {other:?}"
            ))),
        }
    }

    /// Forgets positions from `len` on, on every stage.
    pub async fn truncate(&mut self, len: u32) -> Result<(), StageError> {
        let frame = Frame::Truncate {
            session: self.session,
            len,
            route: self.route.clone(),
        };
        match self.exchange(&frame).await? {
            Frame::Ack { .. } => {
                self.len = self.len.min(len);
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
            let token = self.forward(next, sampling).await?.next;
            out.push(token);
            if stop.contains(&token) {
                break;
            }
            next = vec![token];
        }
        Ok(out)
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
