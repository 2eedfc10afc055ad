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

mod client;
mod codec;
mod frame;

pub use client::{describe, ChainClient, Picks, Speculation, StageInfo};
pub use codec::{Codec, Hidden};
pub use frame::{Forward, Frame, FrameError, Payload, Sampling, MAX_FRAME};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// A forward of at most this many rows that continues a session is run one
/// row at a time, exactly as that many single-row forwards would be: so a
/// verified speculative draft, or a replay joined into fewer frames, gives
/// the same numbers as plain decoding.
pub const ROW_BY_ROW: usize = 16;

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
    /// A stage of the route did not answer the stage before it.
    #[error("stage {stage} is unreachable: {message}")]
    Unreachable {
        /// Its address, as the route names it.
        stage: String,
        /// What went wrong.
        message: String,
    },
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
