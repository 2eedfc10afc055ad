//! The stage protocol's frames and their binary layout (pure).
//!
//! A frame is `u32 length (little-endian) | u8 tag | body`, all integers
//! and floats little-endian, strings as `u16 length | UTF-8`. Hidden states
//! travel as a [`Hidden`] block whose codec trades bytes for precision.

use super::codec::{Codec, Hidden};

/// Largest frame accepted: bounds what a peer can make a stage allocate.
pub const MAX_FRAME: usize = 64 << 20;

/// Why bytes are not a frame.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    /// The frame ends before its fields do.
    #[error("truncated frame")]
    Truncated,
    /// A tag this version does not know.
    #[error("unknown frame tag {0}")]
    UnknownTag(u8),
    /// An unknown hidden-state codec.
    #[error("unknown codec {0}")]
    UnknownCodec(u8),
    /// Over [`MAX_FRAME`].
    #[error("frame of {0} bytes is over the limit")]
    TooLarge(usize),
    /// A string that is not UTF-8.
    #[error("a string is not UTF-8")]
    Utf8,
    /// An exactly-sent value said to be in a column the row does not have.
    #[error("an outlier in column {column} of a row of {cols}")]
    Outlier {
        /// The column named.
        column: usize,
        /// Columns in the row.
        cols: usize,
    },
    /// Hidden states whose byte count does not match their shape.
    #[error("hidden states of {rows}x{cols} in {codec:?} need {want} bytes, got {got}")]
    Shape {
        /// Rows (positions).
        rows: u32,
        /// Columns (hidden size).
        cols: u32,
        /// The codec.
        codec: Codec,
        /// Bytes the shape needs.
        want: usize,
        /// Bytes present.
        got: usize,
    },
}

/// How the last stage picks the next token.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sampling {
    /// 0 is greedy.
    pub temperature: f32,
    /// Nucleus mass.
    pub top_p: f32,
    /// Keys the Gumbel noise (with the step), as in the whole-model path.
    pub seed: u64,
    /// Which generated token this pick is (0 for the first): the step of
    /// the draw, so a stage that takes over mid-way draws the same.
    pub step: u32,
}

impl Sampling {
    /// Argmax.
    pub const GREEDY: Self = Self {
        temperature: 0.0,
        top_p: 1.0,
        seed: 0,
        step: 0,
    };
}

/// What a forward pass carries into a stage.
#[derive(Clone, Debug, PartialEq)]
pub enum Payload {
    /// Token ids, for the first stage.
    Tokens(Vec<u32>),
    /// Hidden states from the stage before.
    Hidden(Hidden),
}

/// Run the next positions of a session through the rest of the chain.
#[derive(Clone, Debug, PartialEq)]
pub struct Forward {
    /// The session (one sequence), chosen by the caller.
    pub session: u64,
    /// Position of the first row (the session's cached length).
    pub start: u32,
    /// The stages after this one, in order (`host:port`).
    pub route: Vec<String>,
    /// How hidden states leave this stage.
    pub codec: Codec,
    /// How the last stage picks.
    pub sampling: Sampling,
    /// The rows.
    pub payload: Payload,
}

/// A frame of the stage protocol.
#[derive(Clone, Debug, PartialEq)]
pub enum Frame {
    /// Run rows through the chain (answered by `Picks` or `Error`).
    Forward(Forward),
    /// The last stage's answer: the argmax of every row and the pick for
    /// the row after the last (sampled as asked), with its log-prob.
    Picks {
        /// The session.
        session: u64,
        /// Argmax of each row (what speculative verification compares).
        argmax: Vec<u32>,
        /// The next token.
        next: u32,
        /// Its log-prob under the model.
        logprob: f32,
    },
    /// Forget a session's positions from `len` on, down the route (0 ends it).
    Truncate {
        /// The session.
        session: u64,
        /// Positions kept.
        len: u32,
        /// The stages after this one.
        route: Vec<String>,
    },
    /// A truncation done along the whole route.
    Ack {
        /// The session.
        session: u64,
    },
    /// Asks a stage which span of which model it serves (answered by `Span`).
    Describe,
    /// What a stage serves.
    Span {
        /// Its first block.
        first: u32,
        /// One past its last block.
        end: u32,
        /// Blocks in the whole model.
        layers: u32,
        /// Most positions one session may hold.
        context: u32,
        /// sha256 (hex) of the model file, so a chain never mixes models.
        model: String,
        /// The number format of its attention (`f32`, `f16`, `bf16`), so a
        /// chain never mixes numerics.
        attention: String,
    },
    /// A stage could not reach the next stage of the route: which one, so
    /// the caller can put a spare in its place. Passed back unchanged.
    Unreachable {
        /// The session.
        session: u64,
        /// The stage that did not answer, as the route names it.
        stage: String,
        /// What went wrong.
        message: String,
    },
    /// A stage could not do what was asked.
    Error {
        /// The session.
        session: u64,
        /// Why.
        message: String,
    },
}

const FORWARD: u8 = 1;
const PICKS: u8 = 2;
const TRUNCATE: u8 = 3;
const ACK: u8 = 4;
const ERROR: u8 = 5;
const DESCRIBE: u8 = 6;
const SPAN: u8 = 7;
const UNREACHABLE: u8 = 8;
const TOKENS: u8 = 0;
const HIDDEN: u8 = 1;

impl Frame {
    /// The frame with its length prefix.
    pub fn encode(&self) -> Vec<u8> {
        let mut b = vec![0u8; 4];
        match self {
            Frame::Forward(f) => {
                b.push(FORWARD);
                b.extend(f.session.to_le_bytes());
                b.extend(f.start.to_le_bytes());
                put_route(&mut b, &f.route);
                b.push(f.codec as u8);
                b.extend(f.sampling.temperature.to_le_bytes());
                b.extend(f.sampling.top_p.to_le_bytes());
                b.extend(f.sampling.seed.to_le_bytes());
                b.extend(f.sampling.step.to_le_bytes());
                match &f.payload {
                    Payload::Tokens(t) => {
                        b.push(TOKENS);
                        b.extend((t.len() as u32).to_le_bytes());
                        t.iter().for_each(|x| b.extend(x.to_le_bytes()));
                    }
                    Payload::Hidden(h) => {
                        b.push(HIDDEN);
                        b.push(h.codec as u8);
                        b.extend(h.rows.to_le_bytes());
                        b.extend(h.cols.to_le_bytes());
                        b.extend((h.bytes.len() as u32).to_le_bytes());
                        b.extend(&h.bytes);
                    }
                }
            }
            Frame::Picks {
                session,
                argmax,
                next,
                logprob,
            } => {
                b.push(PICKS);
                b.extend(session.to_le_bytes());
                b.extend((argmax.len() as u32).to_le_bytes());
                argmax.iter().for_each(|x| b.extend(x.to_le_bytes()));
                b.extend(next.to_le_bytes());
                b.extend(logprob.to_le_bytes());
            }
            Frame::Truncate {
                session,
                len,
                route,
            } => {
                b.push(TRUNCATE);
                b.extend(session.to_le_bytes());
                b.extend(len.to_le_bytes());
                put_route(&mut b, route);
            }
            Frame::Ack { session } => {
                b.push(ACK);
                b.extend(session.to_le_bytes());
            }
            Frame::Unreachable {
                session,
                stage,
                message,
            } => {
                b.push(UNREACHABLE);
                b.extend(session.to_le_bytes());
                put_str(&mut b, stage);
                put_str(&mut b, message);
            }
            Frame::Describe => b.push(DESCRIBE),
            Frame::Span {
                first,
                end,
                layers,
                context,
                model,
                attention,
            } => {
                b.push(SPAN);
                for v in [first, end, layers, context] {
                    b.extend(v.to_le_bytes());
                }
                put_str(&mut b, model);
                put_str(&mut b, attention);
            }
            Frame::Error { session, message } => {
                b.push(ERROR);
                b.extend(session.to_le_bytes());
                put_str(&mut b, message);
            }
        }
        let len = (b.len() - 4) as u32;
        b[..4].copy_from_slice(&len.to_le_bytes());
        b
    }

    /// A frame from its body (the bytes after the length prefix).
    pub fn decode(body: &[u8]) -> Result<Self, FrameError> {
        let mut r = Reader(body);
        let frame = match r.u8()? {
            FORWARD => {
                let session = r.u64()?;
                let start = r.u32()?;
                let route = r.route()?;
                let codec = Codec::from_tag(r.u8()?)?;
                let sampling = Sampling {
                    temperature: r.f32()?,
                    top_p: r.f32()?,
                    seed: r.u64()?,
                    step: r.u32()?,
                };
                let payload = match r.u8()? {
                    TOKENS => {
                        let n = r.len(4)?;
                        Payload::Tokens((0..n).map(|_| r.u32()).collect::<Result<_, _>>()?)
                    }
                    HIDDEN => {
                        let codec = Codec::from_tag(r.u8()?)?;
                        let rows = r.u32()?;
                        let cols = r.u32()?;
                        let n = r.len(1)?;
                        let hidden = Hidden {
                            codec,
                            rows,
                            cols,
                            bytes: r.take(n)?.to_vec(),
                        };
                        hidden.check()?;
                        Payload::Hidden(hidden)
                    }
                    t => return Err(FrameError::UnknownTag(t)),
                };
                Frame::Forward(Forward {
                    session,
                    start,
                    route,
                    codec,
                    sampling,
                    payload,
                })
            }
            PICKS => {
                let session = r.u64()?;
                let n = r.len(4)?;
                let argmax = (0..n).map(|_| r.u32()).collect::<Result<_, _>>()?;
                Frame::Picks {
                    session,
                    argmax,
                    next: r.u32()?,
                    logprob: r.f32()?,
                }
            }
            TRUNCATE => Frame::Truncate {
                session: r.u64()?,
                len: r.u32()?,
                route: r.route()?,
            },
            ACK => Frame::Ack { session: r.u64()? },
            ERROR => Frame::Error {
                session: r.u64()?,
                message: r.string()?,
            },
            UNREACHABLE => Frame::Unreachable {
                session: r.u64()?,
                stage: r.string()?,
                message: r.string()?,
            },
            DESCRIBE => Frame::Describe,
            SPAN => Frame::Span {
                first: r.u32()?,
                end: r.u32()?,
                layers: r.u32()?,
                context: r.u32()?,
                model: r.string()?,
                attention: r.string()?,
            },
            t => return Err(FrameError::UnknownTag(t)),
        };
        Ok(frame)
    }
}

fn put_str(b: &mut Vec<u8>, s: &str) {
    let s = &s.as_bytes()[..s.len().min(u16::MAX as usize)];
    b.extend((s.len() as u16).to_le_bytes());
    b.extend(s);
}

fn put_route(b: &mut Vec<u8>, route: &[String]) {
    b.push(route.len().min(255) as u8);
    route.iter().take(255).for_each(|s| put_str(b, s));
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], FrameError> {
        if self.0.len() < n {
            return Err(FrameError::Truncated);
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }
    fn u8(&mut self) -> Result<u8, FrameError> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<u32, FrameError> {
        Ok(u32::from_le_bytes(
            self.take(4)?
                .try_into()
                .map_err(|_| FrameError::Truncated)?,
        ))
    }
    fn u64(&mut self) -> Result<u64, FrameError> {
        Ok(u64::from_le_bytes(
            self.take(8)?
                .try_into()
                .map_err(|_| FrameError::Truncated)?,
        ))
    }
    fn f32(&mut self) -> Result<f32, FrameError> {
        Ok(f32::from_bits(self.u32()?))
    }
    /// A count of items of `size` bytes, checked against what is left.
    fn len(&mut self, size: usize) -> Result<usize, FrameError> {
        let n = self.u32()? as usize;
        if n.saturating_mul(size) > self.0.len() {
            return Err(FrameError::Truncated);
        }
        Ok(n)
    }
    fn string(&mut self) -> Result<String, FrameError> {
        let n = u16::from_le_bytes(
            self.take(2)?
                .try_into()
                .map_err(|_| FrameError::Truncated)?,
        );
        String::from_utf8(self.take(n as usize)?.to_vec()).map_err(|_| FrameError::Utf8)
    }
    fn route(&mut self) -> Result<Vec<String>, FrameError> {
        let n = self.u8()?;
        (0..n).map(|_| self.string()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames() -> Vec<Frame> {
        let values: Vec<f32> = (0..12).map(|i| i as f32 * 0.25 - 1.0).collect();
        vec![
            Frame::Forward(Forward {
                session: 7,
                start: 0,
                route: vec!["127.0.0.1:9201".into(), "10.0.0.2:9202".into()],
                codec: Codec::Int8Row,
                sampling: Sampling {
                    temperature: 0.7,
                    top_p: 0.9,
                    seed: 42,
                    step: 3,
                },
                payload: Payload::Tokens(vec![1, 2, 49151]),
            }),
            Frame::Forward(Forward {
                session: u64::MAX,
                start: 31,
                route: vec![],
                codec: Codec::F16,
                sampling: Sampling::GREEDY,
                payload: Payload::Hidden(Hidden::encode(&values, 3, 4, Codec::F16)),
            }),
            Frame::Unreachable {
                session: 9,
                stage: "10.0.0.2:9202".into(),
                message: "connection refused".into(),
            },
            Frame::Describe,
            Frame::Span {
                first: 10,
                end: 20,
                layers: 30,
                context: 8192,
                model: "ab".repeat(32),
                attention: "f16".into(),
            },
            Frame::Picks {
                session: 7,
                argmax: vec![5, 6],
                next: 6,
                logprob: -0.25,
            },
            Frame::Truncate {
                session: 7,
                len: 3,
                route: vec!["a:1".into()],
            },
            Frame::Ack { session: 7 },
            Frame::Error {
                session: 7,
                message: "no such session ✗".into(),
            },
        ]
    }

    #[test]
    fn every_frame_round_trips_with_its_length() {
        for f in frames() {
            let bytes = f.encode();
            let len = u32::from_le_bytes(bytes[..4].try_into().unwrap()) as usize;
            assert_eq!(len, bytes.len() - 4);
            assert_eq!(Frame::decode(&bytes[4..]).unwrap(), f);
        }
    }

    #[test]
    fn every_truncation_is_an_error_not_a_panic() {
        for f in frames() {
            let bytes = f.encode();
            for cut in 0..bytes.len() - 4 {
                assert!(
                    Frame::decode(&bytes[4..4 + cut]).is_err(),
                    "{f:?} cut at {cut}"
                );
            }
        }
    }

    #[test]
    fn unknown_tags_and_bad_shapes_are_refused() {
        assert_eq!(Frame::decode(&[99]), Err(FrameError::UnknownTag(99)));
        let mut bad = Frame::Forward(Forward {
            session: 1,
            start: 0,
            route: vec![],
            codec: Codec::F32,
            sampling: Sampling::GREEDY,
            payload: Payload::Hidden(Hidden::encode(&[1.0, 2.0], 1, 2, Codec::F32)),
        })
        .encode();
        // Claim 2 rows for one row's bytes: length, tag, session, start,
        // route count, codec, sampling (20 bytes), payload tag, hidden codec.
        let rows_at = 4 + 1 + 8 + 4 + 1 + 1 + 20 + 1 + 1;
        bad[rows_at..rows_at + 4].copy_from_slice(&2u32.to_le_bytes());
        assert!(matches!(
            Frame::decode(&bad[4..]),
            Err(FrameError::Shape { .. })
        ));
        // A huge count cannot make the decoder allocate.
        let mut huge = Frame::Picks {
            session: 1,
            argmax: vec![],
            next: 0,
            logprob: 0.0,
        }
        .encode();
        huge[13..17].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(Frame::decode(&huge[4..]), Err(FrameError::Truncated));
    }
}
