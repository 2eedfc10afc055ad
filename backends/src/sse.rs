//! Cutting a byte stream into whole server-sent events.

use bytes::{Bytes, BytesMut};

/// Cuts a byte stream into whole SSE events.
#[derive(Default)]
pub struct EventSplitter {
    buf: BytesMut,
}

impl EventSplitter {
    /// Adds bytes as they arrive.
    pub fn push(&mut self, chunk: &[u8]) {
        self.buf.extend_from_slice(chunk);
    }

    /// The next complete event, blank-line terminator included.
    pub fn next_event(&mut self) -> Option<Bytes> {
        let end = find_event_end(&self.buf)?;
        Some(self.buf.split_to(end).freeze())
    }

    /// Bytes of an event not yet terminated.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }
}

fn find_event_end(buf: &[u8]) -> Option<usize> {
    let lf = memchr::memmem::find(buf, b"\n\n").map(|i| i + 2);
    let crlf = memchr::memmem::find(buf, b"\r\n\r\n").map(|i| i + 4);
    match (lf, crlf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_events_across_arbitrary_chunk_boundaries() {
        let stream = b"data: {\"a\":1}\n\ndata: {\"b\":2}\r\n\r\n: keep-alive\n\ndata: [DONE]\n\n";
        for cut in 1..stream.len() {
            let mut s = EventSplitter::default();
            let mut got = Vec::new();
            for part in [&stream[..cut], &stream[cut..]] {
                s.push(part);
                while let Some(e) = s.next_event() {
                    got.push(e);
                }
            }
            assert_eq!(got.len(), 4, "cut at {cut}");
            assert_eq!(got.concat(), stream.to_vec());
            assert_eq!(s.pending(), 0);
        }
    }
}
