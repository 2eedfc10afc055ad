//! A response body that can pace its frames and abort the connection part-way.

use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use tokio::time::Sleep;

// An abort right after the last frame could drop bytes hyper has buffered but not
// yet written; a short pause lets it flush so the client sees them before the cut.
const FLUSH_BEFORE_ABORT: Duration = Duration::from_millis(20);

/// Frames sent one after another, each after its own delay, then an end or an abort.
pub struct Paced {
    steps: VecDeque<(Duration, Bytes)>,
    abort: bool,
    // Streams go out chunked even when they happen to be one buffer, as OpenAI's do.
    chunked: bool,
    sleep: Option<Pin<Box<Sleep>>>,
    slept: bool,
}

impl Paced {
    /// A body that is this one buffer.
    pub fn full(bytes: Bytes) -> Paced {
        Paced {
            chunked: false,
            ..Paced::new(vec![(Duration::ZERO, bytes)], false)
        }
    }

    /// Chunked frames with the delay to wait before each; `abort` cuts the connection
    /// at the end.
    pub fn new(steps: Vec<(Duration, Bytes)>, abort: bool) -> Paced {
        Paced {
            steps: steps.into(),
            abort,
            chunked: true,
            sleep: None,
            slept: false,
        }
    }

    /// The whole body, for tests.
    #[cfg(test)]
    pub async fn into_bytes(self) -> io::Result<Bytes> {
        Ok(http_body_util::BodyExt::collect(self).await?.to_bytes())
    }

    fn wait(&mut self, cx: &mut Context<'_>, delay: Duration) -> Poll<()> {
        if self.slept || delay.is_zero() {
            return Poll::Ready(());
        }
        let sleep = self
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(delay)));
        ready!(sleep.as_mut().poll(cx));
        self.sleep = None;
        self.slept = true;
        Poll::Ready(())
    }
}

impl Body for Paced {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = self.get_mut();
        let delay = match this.steps.front() {
            Some((delay, _)) => *delay,
            None if this.abort => FLUSH_BEFORE_ABORT,
            None => return Poll::Ready(None),
        };
        ready!(this.wait(cx, delay));
        this.slept = false;
        match this.steps.pop_front() {
            Some((_, bytes)) => Poll::Ready(Some(Ok(Frame::data(bytes)))),
            None => Poll::Ready(Some(Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "upstream fault: die-mid-stream",
            )))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.steps.is_empty() && !self.abort
    }

    fn size_hint(&self) -> SizeHint {
        if self.chunked {
            return SizeHint::default();
        }
        match (self.steps.len(), self.steps.front(), self.abort) {
            (0, _, false) => SizeHint::with_exact(0),
            (1, Some((delay, bytes)), false) if delay.is_zero() => {
                SizeHint::with_exact(bytes.len() as u64)
            }
            _ => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt as _;

    #[tokio::test]
    async fn paces_then_ends() {
        let start = std::time::Instant::now();
        let body = Paced::new(
            vec![
                (Duration::ZERO, Bytes::from_static(b"a")),
                (Duration::from_millis(100), Bytes::from_static(b"b")),
            ],
            false,
        );
        assert_eq!(body.into_bytes().await.expect("body"), "ab");
        assert!(start.elapsed() >= Duration::from_millis(100));
    }

    #[tokio::test]
    async fn aborts_after_frames() {
        let mut body = Paced::new(vec![(Duration::ZERO, Bytes::from_static(b"a"))], true);
        let first = body.frame().await.expect("frame").expect("data");
        assert_eq!(first.into_data().ok(), Some(Bytes::from_static(b"a")));
        assert!(body.frame().await.expect("frame").is_err());
    }

    #[test]
    fn full_body_has_exact_size() {
        assert_eq!(
            Paced::full(Bytes::from_static(b"abc")).size_hint().exact(),
            Some(3)
        );
        assert_eq!(Paced::new(Vec::new(), true).size_hint().exact(), None);
        let one = vec![(Duration::ZERO, Bytes::from_static(b"abc"))];
        assert_eq!(Paced::new(one, false).size_hint().exact(), None);
    }
}
