//! Delivering a node's answer to the client and billing exactly what was
//! delivered.
//!
//! The receipt is made durable before the end of the response is released: a
//! whole body is held until its receipt is written, and a stream's `[DONE]`
//! waits for it. A stream cut short (node failure, client gone) is billed for
//! the tokens that reached the client.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use bytes::{Bytes, BytesMut};
use futures_util::stream::BoxStream;
use futures_util::StreamExt;
use http::header::{CACHE_CONTROL, CONTENT_TYPE};
use http::{HeaderValue, StatusCode};
use tokio::sync::mpsc;
use tollgate_backends::{BackendError, Observation};
use tollgate_ledger::{split_by_blocks, Outcome, Receipt, ResponseHasher, StageShare, UsageSource};
use tollgate_policies::Price;

use crate::app::{now_ms, App};
use crate::metrics as m;
use crate::openai::sse::{self, Event, EventSplitter, Usage};
use crate::openai::ApiError;
use crate::state::Node;

/// Everything needed to bill one request.
pub struct Meter {
    /// Shared state (receipts, spend, limits).
    pub app: Arc<App>,
    /// The node that answered.
    pub node: Arc<Node>,
    /// The gateway's request id.
    pub request_id: String,
    /// The paying account.
    pub account: String,
    /// The model that served it (an alias resolved).
    pub model: String,
    /// The policy that routed it (its SLA judges the node).
    pub policy: String,
    /// Whether the client asked for the usage chunk.
    pub include_usage: bool,
    /// What the client gets of the log-probs the gateway asked the node for.
    pub logprobs: crate::openai::logprobs::Delivered,
    /// The gateway's prompt token estimate, used when the node reports none.
    pub estimated_prompt_tokens: u64,
    /// A pipeline's stages that ran the request: it is billed as one
    /// receipt per stage. Empty for every other node.
    pub stages: Vec<StageShare>,
    /// When the gateway received the request.
    pub received_at: Instant,
    /// When the successful node call was sent.
    pub sent_at: Instant,
    /// Set when this answer was drawn for an audit.
    pub audit: Option<AuditTicket>,
}

/// The stages a pipeline node's answer names ([`tollgate_backends::STAGES_HEADER`]),
/// each with the address paid for it: the node's `stage_providers`, else
/// its `provider`. Empty for other nodes.
pub fn stage_shares(node: &Node, headers: &http::HeaderMap) -> Vec<StageShare> {
    let Some(stages) = headers
        .get(tollgate_backends::STAGES_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(tollgate_backends::parse_stages)
    else {
        return Vec::new();
    };
    let config = &node.config;
    stages
        .into_iter()
        .map(|(stage, blocks)| StageShare {
            provider: config
                .stage_providers
                .get(&stage)
                .or(config.provider.as_ref())
                .cloned()
                .unwrap_or_default(),
            stage,
            blocks,
        })
        .collect()
}

/// What an audit of one answer needs beyond the answer itself.
pub struct AuditTicket {
    /// The body the node was sent.
    pub request: Bytes,
    /// The node's attestation of a whole answer.
    pub attestation: Option<serde_json::Value>,
}

impl Meter {
    fn receipt(
        &self,
        usage: Option<Usage>,
        counted_completion: u64,
        outcome: Outcome,
        hash: String,
    ) -> Receipt {
        let (prompt, completion, source) = match usage {
            Some(u) => (u.prompt_tokens, u.completion_tokens, UsageSource::Upstream),
            None => (
                self.estimated_prompt_tokens,
                counted_completion,
                UsageSource::Gateway,
            ),
        };
        let prices = self.node.config.prices;
        let (pin, pout) = (prices.input_per_1m.0, prices.output_per_1m.0);
        let snap = self.app.state.load();
        let payer = snap
            .accounts
            .get(&self.account)
            .and_then(|a| a.payer.clone())
            .unwrap_or_default();
        Receipt {
            request_id: self.request_id.clone(),
            account: self.account.clone(),
            payer,
            node: self.node.id().to_string(),
            provider: self.node.config.provider.clone().unwrap_or_default(),
            model: self.model.clone(),
            prompt_tokens: prompt,
            completion_tokens: completion,
            price_in_per_1m: pin,
            price_out_per_1m: pout,
            amount: Receipt::amount_for(prompt, completion, pin, pout),
            response_hash: hash,
            outcome,
            usage_source: source,
            finished_at_ms: now_ms(),
        }
    }

    /// Makes the receipt durable (as one receipt per stage for a pipeline,
    /// all or none), then counts it against spend and limits; the amount
    /// billed.
    async fn bill(&self, receipt: &Receipt) -> Result<u128, ApiError> {
        let parts = split_by_blocks(receipt, &self.stages);
        let amount: u128 = parts.iter().map(|p| p.amount).sum();
        self.app.ledger.record_all(parts).await.map_err(|e| {
            tracing::error!(request_id = %receipt.request_id, "receipt not recorded: {e}");
            ApiError::internal("The gateway could not record this request's receipt, so its answer is withheld and nothing is billed. Please retry.")
        })?;
        self.app.add_spend(&receipt.account, amount);
        let provider = self
            .node
            .config
            .provider
            .as_deref()
            .unwrap_or(&receipt.node);
        self.app
            .recent
            .record_use(&self.policy, &receipt.account, provider, amount);
        self.app.escrow.add_unsettled(&receipt.payer, amount);
        self.app
            .limiter
            .charge_tokens(
                &receipt.account,
                receipt.prompt_tokens + receipt.completion_tokens,
                now_ms(),
            )
            .await;
        let (model, node) = (self.model.clone(), receipt.node.clone());
        metrics::counter!(m::TOKENS, "kind" => "prompt", "model" => model.clone(), "node" => node.clone())
            .increment(receipt.prompt_tokens);
        metrics::counter!(m::TOKENS, "kind" => "completion", "model" => model, "node" => node)
            .increment(receipt.completion_tokens);
        metrics::gauge!(m::COST, "account" => receipt.account.clone())
            .increment(amount as f64 / 1e18);
        Ok(amount)
    }

    /// Hands a delivered answer to the auditor, if it was drawn, with the
    /// node's attestation and the exact `output` bytes it signs.
    fn audit(
        &self,
        claim: Option<tollgate_verify::Claim>,
        attestation: Option<serde_json::Value>,
        output: &[u8],
    ) {
        let (Some(ticket), Some(claim)) = (&self.audit, claim) else {
            return;
        };
        let signed = match (
            std::str::from_utf8(&ticket.request),
            std::str::from_utf8(output),
        ) {
            (Ok(request), Ok(output)) => Some(tollgate_verify::Signed {
                request: request.to_string(),
                output: output.to_string(),
            }),
            _ => None,
        };
        self.app.auditing.submit(crate::audits::Job {
            node: self.node.clone(),
            request_id: self.request_id.clone(),
            claim,
            attestation,
            signed,
        });
    }

    /// Records what the request measured of the node, for its SLA.
    fn observe(&self, ok: bool, ttft: Option<Duration>, tokens_per_s: Option<f64>) {
        crate::sla::observe(
            &self.app,
            &self.node,
            &self.policy,
            tollgate_policies::Outcome {
                ok,
                ttft_ms: ttft.map(|t| t.as_secs_f64() * 1000.0),
                tokens_per_s,
            },
        );
    }

    fn count_request(&self, status: &'static str) {
        metrics::counter!(m::REQUESTS, "status" => status, "model" => self.model.clone(), "node" => self.node.id().to_string())
            .increment(1);
        metrics::histogram!(m::REQUEST_SECONDS).record(self.received_at.elapsed().as_secs_f64());
    }
}

/// Delivers a whole (non-streamed) answer once its receipt is durable.
pub async fn whole(
    meter: Meter,
    status: StatusCode,
    body: Bytes,
    usage: Option<Usage>,
    output_chars: usize,
) -> Response {
    let upstream = meter.sent_at.elapsed();
    // The audit judges what the node sent; the client gets what it asked for.
    let delivered = crate::openai::logprobs::deliver_whole(&body, meter.logprobs);
    let mut hasher = ResponseHasher::default();
    hasher.update(&delivered);
    let counted = (output_chars as u64).div_ceil(4);
    let receipt = meter.receipt(usage, counted, Outcome::Completed, hasher.finish());
    let billed = match meter.bill(&receipt).await {
        Ok(amount) => amount,
        Err(e) => return e.into_response(),
    };
    if let Some(ticket) = &meter.audit {
        meter.audit(
            crate::audits::whole_claim(&ticket.request, &body),
            ticket.attestation.clone(),
            &body,
        );
    }
    let tokens_per_s = rate(receipt.completion_tokens, upstream);
    meter.node.health.record_success(Observation {
        latency: upstream,
        ttft: None,
        tokens_per_s,
    });
    // A whole answer's time holds its prompt and queueing as well: neither
    // its first token nor its decode speed can be told from it.
    meter.observe(true, None, None);
    meter.count_request("200");
    metrics::histogram!(m::UPSTREAM_SECONDS).record(upstream.as_secs_f64());
    metrics::histogram!(m::OVERHEAD_SECONDS).record(
        meter
            .received_at
            .elapsed()
            .saturating_sub(upstream)
            .as_secs_f64(),
    );
    let mut resp = (
        status,
        [(CONTENT_TYPE, HeaderValue::from_static("application/json"))],
        delivered,
    )
        .into_response();
    let headers = resp.headers_mut();
    if let Ok(v) = HeaderValue::try_from(meter.node.id()) {
        headers.insert("x-tollgate-node", v);
    }
    if let Ok(v) = HeaderValue::try_from(Price(billed).to_string()) {
        headers.insert("x-tollgate-cost", v);
    }
    resp
}

/// Starts relaying a stream whose first chunk has arrived.
pub fn stream(
    meter: Meter,
    first: Bytes,
    rest: BoxStream<'static, Result<Bytes, BackendError>>,
) -> Response {
    let (tx, rx) = mpsc::channel::<Bytes>(32);
    let node_id = HeaderValue::try_from(meter.node.id()).ok();
    tokio::spawn(pump(meter, first, rest, tx));
    let body = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|b| (Ok::<_, Infallible>(b), rx))
    });
    let mut resp = Response::new(Body::from_stream(body));
    let h = resp.headers_mut();
    h.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream; charset=utf-8"),
    );
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if let Some(v) = node_id {
        h.insert("x-tollgate-node", v);
    }
    resp
}

/// What the relay has delivered so far.
#[derive(Default)]
struct Delivered {
    hasher: ResponseHasher,
    usage: Option<Usage>,
    output_chunks: u64,
    first_output: Option<Instant>,
    /// When the last output arrived: decode speed is timed to it, not to
    /// billing or a slow client.
    last_output: Option<Instant>,
}

async fn pump(
    meter: Meter,
    first: Bytes,
    mut rest: BoxStream<'static, Result<Bytes, BackendError>>,
    tx: mpsc::Sender<Bytes>,
) {
    metrics::gauge!(m::OPEN_STREAMS).increment(1.0);
    metrics::histogram!(m::OVERHEAD_SECONDS).record(
        meter
            .sent_at
            .saturating_duration_since(meter.received_at)
            .as_secs_f64(),
    );
    let mut split = EventSplitter::default();
    split.push(&first);
    let mut d = Delivered::default();
    // Only a drawn answer pays for parsing its chunks.
    let mut claim = meter
        .audit
        .as_ref()
        .map(|_| tollgate_verify::ClaimBuilder::default());
    // The node's bytes as it signed them: every event before its attestation.
    let mut signed = meter.audit.as_ref().map(|_| BytesMut::new());
    let mut attestation = None;

    let outcome = 'relay: loop {
        // Everything complete in the buffer leaves in one write, not one per event.
        let mut out = BytesMut::new();
        let mut end = None;
        while let Some(event) = split.next_event() {
            let kind = sse::classify(&event);
            if let (Some(bytes), None) = (&mut signed, &attestation) {
                if kind != Event::Attestation {
                    bytes.extend_from_slice(&event);
                }
            }
            match kind {
                Event::Attestation => {
                    if signed.is_some() {
                        attestation = event
                            .strip_prefix(tollgate_protocol::ATTESTATION_COMMENT)
                            .and_then(|json| serde_json::from_slice(json.trim_ascii_end()).ok());
                    }
                }
                Event::Done => {
                    end = Some(Event::Done);
                    break;
                }
                Event::UsageOnly(u) => {
                    d.usage = Some(u);
                    if meter.include_usage {
                        out.extend_from_slice(&event);
                    }
                }
                Event::Chunk { usage, has_output } => {
                    if let Some(claim) = &mut claim {
                        if let Some(json) = sse::data_json(&event) {
                            claim.push(&json);
                        }
                    }
                    if has_output {
                        d.output_chunks += 1;
                        d.last_output = Some(Instant::now());
                        if d.first_output.is_none() {
                            d.first_output = Some(Instant::now());
                            metrics::histogram!(m::TTFT_SECONDS)
                                .record(meter.received_at.elapsed().as_secs_f64());
                        }
                    }
                    if usage.is_some() {
                        d.usage = usage;
                    }
                    let stripped = crate::openai::logprobs::deliver_event(&event, meter.logprobs);
                    let event = stripped.as_deref().unwrap_or(&event);
                    if meter.include_usage {
                        out.extend_from_slice(event);
                    } else {
                        sse::push_without_null_usage(&mut out, event);
                    }
                }
                Event::Error => {
                    out.extend_from_slice(&event);
                    end = Some(Event::Error);
                    break;
                }
                Event::Other => out.extend_from_slice(&event),
            }
        }
        d.hasher.update(&out);
        if end == Some(Event::Done) {
            // The receipt is durable before the client sees [DONE].
            let receipt = meter.receipt(
                d.usage,
                d.output_chunks,
                Outcome::Completed,
                d.hasher.clone().finish(),
            );
            match meter.bill(&receipt).await {
                Ok(_) => {
                    out.extend_from_slice(b"data: [DONE]\n\n");
                    if let (Some(ticket), Some(claim)) = (&meter.audit, claim.take()) {
                        let request = serde_json::from_slice(&ticket.request).ok();
                        meter.audit(
                            request.map(|r| claim.finish(r)),
                            attestation.take(),
                            signed.as_deref().unwrap_or_default(),
                        );
                    }
                }
                Err(e) => out.extend_from_slice(&sse::error_event(&e)),
            }
            // The client may be gone already; it is billed for what it received.
            let _ = tx.send(out.freeze()).await;
            finish_ok(&meter, &d, receipt.completion_tokens);
            metrics::gauge!(m::OPEN_STREAMS).decrement(1.0);
            return;
        }
        if !out.is_empty() && tx.send(out.freeze()).await.is_err() {
            break 'relay Outcome::Cancelled;
        }
        if end == Some(Event::Error) {
            break 'relay Outcome::Interrupted;
        }
        tokio::select! {
            _ = tx.closed() => break 'relay Outcome::Cancelled,
            next = rest.next() => match next {
                Some(Ok(bytes)) => split.push(&bytes),
                Some(Err(e)) => {
                    tracing::warn!(node = meter.node.id(), "stream broke after the first byte: {e}");
                    break 'relay Outcome::Interrupted;
                }
                None => {
                    tracing::warn!(node = meter.node.id(), "stream ended without [DONE]");
                    break 'relay Outcome::Interrupted;
                }
            }
        }
    };

    // The stream did not complete: tell the client (if it is still there), and
    // bill what it received. Usage reported before the break still stands.
    let usage = d.usage.filter(|_| outcome == Outcome::Completed);
    let receipt = meter.receipt(usage, d.output_chunks, outcome, d.hasher.clone().finish());
    if outcome == Outcome::Interrupted {
        meter.node.health.record_failure(Instant::now());
        meter.observe(false, None, None);
        metrics::counter!(m::NODE_FAILURES, "node" => meter.node.id().to_string(), "reason" => "mid_stream").increment(1);
        let err = ApiError {
            code: Some("upstream_interrupted"),
            ..ApiError::internal("The node serving this request failed mid-stream; the response is incomplete. You are billed only for the tokens delivered.")
        };
        let _ = tx.send(sse::error_event(&err)).await;
    }
    let _ = meter.bill(&receipt).await;
    meter.count_request(if outcome == Outcome::Interrupted {
        "interrupted"
    } else {
        "cancelled"
    });
    metrics::gauge!(m::OPEN_STREAMS).decrement(1.0);
}

fn finish_ok(meter: &Meter, d: &Delivered, completion_tokens: u64) {
    let latency = meter.sent_at.elapsed();
    let ttft = d
        .first_output
        .map(|t| t.saturating_duration_since(meter.sent_at));
    let decode = match (d.first_output, d.last_output) {
        (Some(first), Some(last)) => last.saturating_duration_since(first),
        _ => Duration::ZERO,
    };
    let tokens_per_s = rate(completion_tokens, decode);
    meter.node.health.record_success(Observation {
        latency,
        ttft,
        tokens_per_s,
    });
    meter.observe(true, ttft, tokens_per_s);
    meter.count_request("200");
    metrics::histogram!(m::UPSTREAM_SECONDS).record(latency.as_secs_f64());
}

fn rate(tokens: u64, over: Duration) -> Option<f64> {
    let s = over.as_secs_f64();
    (tokens > 0 && s > 0.0).then(|| tokens as f64 / s)
}
