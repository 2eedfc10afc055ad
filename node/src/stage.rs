//! `tollgate-node stage`: one span of a model, served over the stage
//! protocol (`tollgate_protocol::stage`).
//!
//! Each incoming connection is one caller (the gateway, or the stage
//! before this one). A forward runs the span over the session's next rows;
//! a middle stage sends the hidden states on to the next stage of the frame's
//! route over a persistent connection of its own and passes the answer back;
//! the last stage picks the next token with the request's sampler. A
//! session's caches live as long as the connection that made it.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use candle_core::{Device, Tensor};
use tokio::net::{TcpListener, TcpStream};
use tollgate_engine::stage::{argmax_rows, KvCache, LlamaSpan, StageInput, StageOutput};
use tollgate_engine::{Sampler, SamplingParams};
use tollgate_protocol::stage::{
    read_frame, write_frame, Forward, Frame, Hidden, Payload, ROW_BY_ROW,
};

/// One session's state on this stage.
struct Session {
    cache: KvCache,
    /// The last stage's sampler, made on the session's first sampled pick.
    sampler: Option<Sampler>,
}

/// A span and the sessions running through it.
pub struct StageServer {
    span: Arc<LlamaSpan>,
    /// sha256 of the model file, told to callers who ask.
    model: String,
    sessions: Mutex<HashMap<u64, Session>>,
}

/// Serves `span` of the model file whose sha256 is `model` on `listener`
/// until the process ends.
pub async fn serve(listener: TcpListener, span: LlamaSpan, model: String) -> anyhow::Result<()> {
    let server = Arc::new(StageServer {
        span: Arc::new(span),
        model,
        sessions: Mutex::default(),
    });
    loop {
        let (stream, peer) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        tracing::debug!(%peer, "stage connection");
        tokio::spawn(server.clone().connection(stream));
    }
}

/// A failed frame, for the caller: which session, and why.
type Failure = (u64, String);

impl StageServer {
    fn sessions(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Session>> {
        self.sessions.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn connection(self: Arc<Self>, stream: TcpStream) {
        let (mut r, mut w) = stream.into_split();
        // This caller's links to the stages after this one, by address.
        let mut hops: HashMap<String, TcpStream> = HashMap::new();
        let mut opened = HashSet::new();
        while let Ok(Some(frame)) = read_frame(&mut r).await {
            let reply = match self.handle(frame, &mut hops, &mut opened).await {
                Ok(f) => f,
                Err((session, message)) => Frame::Error { session, message },
            };
            if write_frame(&mut w, &reply).await.is_err() {
                break;
            }
        }
        // The caller is gone: so are its sessions (and, as `hops` drop,
        // the next stages see their connections close and do the same).
        let mut sessions = self.sessions();
        opened.iter().for_each(|s| {
            sessions.remove(s);
        });
    }

    async fn handle(
        &self,
        frame: Frame,
        hops: &mut HashMap<String, TcpStream>,
        opened: &mut HashSet<u64>,
    ) -> Result<Frame, Failure> {
        match frame {
            Frame::Forward(f) => {
                opened.insert(f.session);
                self.forward(f, hops).await
            }
            Frame::Truncate {
                session,
                len,
                route,
            } => {
                {
                    let mut sessions = self.sessions();
                    if len == 0 {
                        sessions.remove(&session);
                    } else if let Some(s) = sessions.get_mut(&session) {
                        s.cache
                            .truncate(len as usize)
                            .map_err(|e| (session, e.to_string()))?;
                    }
                }
                match route.split_first() {
                    None => Ok(Frame::Ack { session }),
                    Some((next, rest)) => {
                        let on = Frame::Truncate {
                            session,
                            len,
                            route: rest.to_vec(),
                        };
                        Ok(relay(hops, next, &on, session).await)
                    }
                }
            }
            Frame::Describe => {
                let span = self.span.span();
                let config = self.span.config();
                Ok(Frame::Span {
                    first: span.start as u32,
                    end: span.end as u32,
                    layers: config.layers as u32,
                    context: config.context as u32,
                    model: self.model.clone(),
                    attention: self.span.precision().to_string(),
                })
            }
            other => Err((0, format!("a stage does not take {other:?}"))),
        }
    }

    async fn forward(
        &self,
        f: Forward,
        hops: &mut HashMap<String, TcpStream>,
    ) -> Result<Frame, Failure> {
        let id = f.session;
        let fail = |e: String| (id, e);
        let input = match &f.payload {
            Payload::Tokens(t) => StageInput::Tokens(t.clone()),
            Payload::Hidden(h) => {
                let values = h.decode().map_err(|e| fail(e.to_string()))?;
                let t = Tensor::from_vec(values, (h.rows as usize, h.cols as usize), &Device::Cpu)
                    .map_err(|e| fail(e.to_string()))?;
                StageInput::Hidden(t)
            }
        };
        let mut session = self.sessions().remove(&id).unwrap_or_else(|| Session {
            cache: self.span.new_cache(),
            sampler: None,
        });
        let start = f.start as usize;
        // A caller may rewind (a replay, rejected draft tokens); it may not skip.
        if start > session.cache.len() {
            let have = session.cache.len();
            self.sessions().insert(id, session);
            return Err(fail(format!(
                "session {id} holds {have} positions; a forward from {start} would skip some"
            )));
        }
        if let Err(e) = session.cache.truncate(start) {
            return Err(fail(e.to_string()));
        }
        let span = self.span.clone();
        let ran = tokio::task::spawn_blocking(move || {
            let out = run_span(&span, input, &mut session.cache);
            (session, out)
        })
        .await;
        let (mut session, out) = ran.map_err(|e| fail(e.to_string()))?;
        let out = out.map_err(|e| fail(e.to_string()));
        let reply = match out {
            Err(e) => Err(e),
            Ok(StageOutput::Logits(logits)) => pick(&logits, &f, &mut session).map_err(fail),
            Ok(StageOutput::Hidden(h)) => {
                self.sessions().insert(id, session);
                return self.pass_on(h, f, hops).await;
            }
        };
        self.sessions().insert(id, session);
        reply
    }

    /// Sends hidden states on to the next stage; its answer is this one's.
    async fn pass_on(
        &self,
        h: Tensor,
        f: Forward,
        hops: &mut HashMap<String, TcpStream>,
    ) -> Result<Frame, Failure> {
        let id = f.session;
        let (rows, cols) = h.dims2().map_err(|e| (id, e.to_string()))?;
        let values = h
            .flatten_all()
            .and_then(|t| t.to_vec1::<f32>())
            .map_err(|e| (id, e.to_string()))?;
        let Some((next, rest)) = f.route.split_first() else {
            return Err((id, "the route ends before the model does".into()));
        };
        let on = Frame::Forward(Forward {
            route: rest.to_vec(),
            payload: Payload::Hidden(Hidden::encode(&values, rows as u32, cols as u32, f.codec)),
            ..f.clone()
        });
        Ok(relay(hops, next, &on, id).await)
    }
}

/// Runs the span over the input. A few rows that continue a session (a
/// decode step, or a speculative draft being verified) run one row at a
/// time: floating-point sums then come out bit for bit as in plain
/// decoding, so verified drafts equal what greedy decoding picks. A prompt
/// runs as one batch.
fn run_span(
    span: &LlamaSpan,
    input: StageInput,
    cache: &mut KvCache,
) -> Result<StageOutput, tollgate_engine::stage::StageError> {
    let rows = match &input {
        StageInput::Tokens(t) => t.len(),
        StageInput::Hidden(h) => h.dim(0)?,
    };
    if cache.is_empty() || rows <= 1 || rows > ROW_BY_ROW {
        return span.forward(input, cache);
    }
    let mut outs = Vec::with_capacity(rows);
    for i in 0..rows {
        let row = match &input {
            StageInput::Tokens(t) => StageInput::Tokens(vec![t[i]]),
            StageInput::Hidden(h) => StageInput::Hidden(h.narrow(0, i, 1)?),
        };
        outs.push(span.forward(row, cache)?);
    }
    let (hidden, logits): (Vec<_>, Vec<_>) = outs
        .into_iter()
        .partition(|o| matches!(o, StageOutput::Hidden(_)));
    let cat = |v: Vec<StageOutput>| -> Result<Tensor, candle_core::Error> {
        let ts: Vec<Tensor> = v
            .into_iter()
            .map(|o| match o {
                StageOutput::Hidden(t) | StageOutput::Logits(t) => t,
            })
            .collect();
        Tensor::cat(&ts, 0)
    };
    Ok(if logits.is_empty() {
        StageOutput::Hidden(cat(hidden)?)
    } else {
        StageOutput::Logits(cat(logits)?)
    })
}

/// Sends `frame` to the stage at `addr` over this caller's link to it
/// (opened on first use) and returns its answer.
async fn relay(
    hops: &mut HashMap<String, TcpStream>,
    addr: &str,
    frame: &Frame,
    session: u64,
) -> Frame {
    let unreachable = |message: String| Frame::Unreachable {
        session,
        stage: addr.to_string(),
        message,
    };
    if !hops.contains_key(addr) {
        match TcpStream::connect(addr).await {
            Ok(s) => {
                let _ = s.set_nodelay(true);
                hops.insert(addr.to_string(), s);
            }
            Err(e) => return unreachable(e.to_string()),
        }
    }
    let Some(link) = hops.get_mut(addr) else {
        return unreachable("no link".into());
    };
    let answer = async {
        write_frame(link, frame).await?;
        read_frame(link).await
    }
    .await;
    match answer {
        Ok(Some(reply)) => reply,
        Ok(None) => {
            hops.remove(addr);
            unreachable("it closed the connection".into())
        }
        Err(e) => {
            hops.remove(addr);
            unreachable(e.to_string())
        }
    }
}

/// The last stage's answer: every row's argmax and the next token, drawn
/// by the session's sampler exactly as the whole-model path draws it.
fn pick(logits: &Tensor, f: &Forward, session: &mut Session) -> Result<Frame, String> {
    let argmax = argmax_rows(logits).map_err(|e| e.to_string())?;
    let rows = logits.dim(0).map_err(|e| e.to_string())?;
    let last: Vec<f32> = logits
        .get(rows - 1)
        .and_then(|r| r.to_vec1())
        .map_err(|e| e.to_string())?;
    let s = f.sampling;
    let next = if s.temperature <= 0.0 {
        argmax[rows - 1]
    } else {
        let sampler = session.sampler.get_or_insert_with(|| {
            Sampler::new(
                SamplingParams {
                    temperature: s.temperature,
                    top_p: s.top_p,
                    seed: Some(s.seed),
                    ..SamplingParams::default()
                },
                0,
            )
        });
        sampler.skip_to(u64::from(s.step));
        sampler.sample(&last)
    };
    let max = last.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let log_sum = last.iter().map(|v| (v - max).exp()).sum::<f32>().ln() + max;
    Ok(Frame::Picks {
        session: f.session,
        argmax,
        next,
        logprob: last
            .get(next as usize)
            .map_or(f32::NEG_INFINITY, |v| v - log_sum),
    })
}
