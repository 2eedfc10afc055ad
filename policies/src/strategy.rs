//! Ordering the candidates that passed the filters, one function per strategy.
//!
//! Every comparison ends in the node id so that a decision never depends on
//! the order the gateway happened to list its candidates in.

use std::cmp::Ordering;

use crate::decision::{RejectReason, Route};
use crate::facts::{Candidate, RouteRequest};
use crate::model::{Policy, Slo, Strategy};
use crate::price::format_atto;
use crate::weighted;

/// A candidate that passed the filters, with what routing worked out about it.
pub(crate) struct Entry<'c> {
    pub cand: &'c Candidate,
    /// Estimated cost for this request, atto-units.
    pub cost: u128,
    /// Notes from the filters it passed.
    pub notes: Vec<String>,
}

/// Strategy-specific exclusions that apply after the operator filters.
pub(crate) fn admit(
    policy: &Policy,
    bid: Option<u128>,
    node: &str,
    cost: u128,
) -> Result<(), RejectReason> {
    if policy.strategy == Strategy::Weighted && weight(policy, node) == 0 {
        return Err(RejectReason::ZeroWeight);
    }
    over_bid(policy, bid, cost).map_or(Ok(()), Err)
}

/// Auction only: the rejection for an ask above the caller's bid, which even a fallback must respect.
pub(crate) fn over_bid(policy: &Policy, bid: Option<u128>, cost: u128) -> Option<RejectReason> {
    match (policy.strategy, bid) {
        (Strategy::Auction, Some(bid)) if cost > bid => {
            Some(RejectReason::AskAboveBid { ask: cost, bid })
        }
        _ => None,
    }
}

/// The node's configured weight; absent means 0.
pub(crate) fn weight(policy: &Policy, node: &str) -> u32 {
    policy.weights.get(node).copied().unwrap_or(0)
}

/// Orders admitted entries under the policy's strategy.
pub(crate) fn rank(policy: &Policy, req: &RouteRequest<'_>, entries: Vec<Entry<'_>>) -> Vec<Route> {
    match policy.strategy {
        Strategy::Cheapest => cheapest(req, entries),
        Strategy::Fastest => fastest(entries),
        Strategy::Weighted => weighted::draw(policy, req.seed, entries),
        Strategy::Auction => auction(&policy.slo, req, entries),
    }
}

fn cheapest(req: &RouteRequest<'_>, mut entries: Vec<Entry<'_>>) -> Vec<Route> {
    entries.sort_by(by_cost);
    let tokens = token_note(req);
    routes(entries, |e, prev| {
        let mut reasons = vec![format!(
            "cheapest: est. cost {} for {tokens}",
            format_atto(e.cost)
        )];
        reasons.extend(prev.and_then(|p| cost_tie(p, e, "cost")));
        reasons
    })
}

fn fastest(mut entries: Vec<Entry<'_>>) -> Vec<Route> {
    entries.sort_by(|a, b| {
        desc_measured_first(
            a.cand.measured_tokens_per_s(),
            b.cand.measured_tokens_per_s(),
        )
        .then_with(|| asc_measured_first(a.cand.measured_ttft_ms(), b.cand.measured_ttft_ms()))
        .then_with(|| a.cand.node.cmp(&b.cand.node))
    });
    routes(entries, |e, prev| {
        let ttft = match e.cand.measured_ttft_ms() {
            Some(t) => format!("ttft {t} ms"),
            None => "ttft not measured yet".to_owned(),
        };
        let tps = e.cand.measured_tokens_per_s();
        let mut reasons = vec![match tps {
            Some(tps) => format!("fastest: {tps} tokens/s measured, {ttft}"),
            None => {
                format!("fastest: speed not measured yet, ranked after measured nodes ({ttft})")
            }
        }];
        if let Some(p) = prev.filter(|p| p.cand.measured_tokens_per_s() == tps) {
            let same = if tps.is_some() {
                "same tokens/s as"
            } else {
                "unmeasured, like"
            };
            let by = if p.cand.measured_ttft_ms() == e.cand.measured_ttft_ms() {
                "by node id"
            } else {
                "on slower or unmeasured ttft"
            };
            reasons.push(format!("{same} {}: ranked after it {by}", p.cand.node));
        }
        reasons
    })
}

fn auction(slo: &Slo, req: &RouteRequest<'_>, entries: Vec<Entry<'_>>) -> Vec<Route> {
    let (mut meet, mut miss): (Vec<_>, Vec<_>) = entries
        .into_iter()
        .map(|e| {
            let verdict = slo_verdict(slo, e.cand);
            (e, verdict)
        })
        .partition(|(_, v)| v.meets);
    meet.sort_by(|a, b| by_cost(&a.0, &b.0));
    miss.sort_by(|a, b| by_cost(&a.0, &b.0));
    let tokens = token_note(req);
    let bid = match req.bid() {
        Some(bid) => format!("within the caller's bid of {}", format_atto(bid)),
        None => "(caller set no max price)".to_owned(),
    };
    let mut out = Vec::with_capacity(meet.len() + miss.len());
    for group in [meet, miss] {
        let mut prev: Option<Entry<'_>> = None;
        for (e, verdict) in group {
            let mut reasons = vec![format!(
                "auction: ask {} for {tokens} {bid}",
                format_atto(e.cost)
            )];
            if !slo.is_empty() {
                let detail = verdict.notes.join("; ");
                reasons.push(if verdict.meets {
                    format!("meets SLO: {detail}")
                } else {
                    format!("misses SLO ({detail}): ranked after nodes that meet it")
                });
            }
            reasons.extend(prev.as_ref().and_then(|p| cost_tie(p, &e, "ask")));
            out.push(route(&e, reasons));
            prev = Some(e);
        }
    }
    out
}

/// Whether a node meets the SLO, and the numbers that say so.
struct SloVerdict {
    meets: bool,
    notes: Vec<String>,
}

// Unmeasured nodes count as meeting the SLO: otherwise they would never be
// tried first, so never measured.
fn slo_verdict(slo: &Slo, c: &Candidate) -> SloVerdict {
    let mut meets = true;
    let mut notes = Vec::new();
    if let Some(max) = slo.max_ttft_ms {
        notes.push(match c.measured_ttft_ms() {
            Some(t) if t > max => {
                meets = false;
                format!("ttft {t} ms > max {max}")
            }
            Some(t) => format!("ttft {t} ms <= max {max}"),
            None => "ttft not measured yet, assumed to meet it".to_owned(),
        });
    }
    if let Some(min) = slo.min_tokens_per_s {
        notes.push(match c.measured_tokens_per_s() {
            Some(t) if t < min => {
                meets = false;
                format!("{t} tokens/s < min {min}")
            }
            Some(t) => format!("{t} tokens/s >= min {min}"),
            None => "tokens/s not measured yet, assumed to meet it".to_owned(),
        });
    }
    SloVerdict { meets, notes }
}

/// Ascending cost, then higher trust, then node id.
fn by_cost(a: &Entry<'_>, b: &Entry<'_>) -> Ordering {
    a.cost
        .cmp(&b.cost)
        .then_with(|| b.cand.trust.total_cmp(&a.cand.trust))
        .then_with(|| a.cand.node.cmp(&b.cand.node))
}

/// Explains a cost tie with the route ranked just before, if there is one.
fn cost_tie(prev: &Entry<'_>, e: &Entry<'_>, what: &str) -> Option<String> {
    if prev.cost != e.cost {
        return None;
    }
    Some(
        if prev.cand.trust.total_cmp(&e.cand.trust) == Ordering::Equal {
            format!(
                "same {what} and trust as {}: ranked after it by node id",
                prev.cand.node
            )
        } else {
            format!(
                "same {what} as {}: ranked after it on lower trust ({} < {})",
                prev.cand.node, e.cand.trust, prev.cand.trust
            )
        },
    )
}

/// Higher measurements first; unmeasured after all measured ones.
fn desc_measured_first(a: Option<f64>, b: Option<f64>) -> Ordering {
    match (a, b) {
        (Some(x), Some(y)) => y.total_cmp(&x),
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (None, None) => Ordering::Equal,
    }
}

/// Lower measurements first; unmeasured after all measured ones.
fn asc_measured_first(a: Option<f64>, b: Option<f64>) -> Ordering {
    match (a, b) {
        (Some(x), Some(y)) => x.total_cmp(&y),
        _ => desc_measured_first(a, b),
    }
}

fn token_note(req: &RouteRequest<'_>) -> String {
    format!(
        "{} in / {} out tokens",
        req.prompt_tokens, req.max_output_tokens
    )
}

/// Builds routes from sorted entries; `reasons` sees each entry and the one before it.
fn routes(
    entries: Vec<Entry<'_>>,
    reasons: impl Fn(&Entry<'_>, Option<&Entry<'_>>) -> Vec<String>,
) -> Vec<Route> {
    let mut out = Vec::with_capacity(entries.len());
    let mut prev: Option<Entry<'_>> = None;
    for e in entries {
        out.push(route(&e, reasons(&e, prev.as_ref())));
        prev = Some(e);
    }
    out
}

/// A ranked (non-fallback) route: strategy reasons first, then the filter notes.
pub(crate) fn route(e: &Entry<'_>, mut reasons: Vec<String>) -> Route {
    reasons.extend(e.notes.iter().cloned());
    Route {
        node: e.cand.node.clone(),
        reasons,
        fallback: false,
        estimated_cost: e.cost,
    }
}
