//! `choose`: picking the policy for a request and turning candidates into a decision.

use std::collections::HashSet;

pub use crate::decision::{Decision, RejectReason, Rejection, Route};
pub use crate::facts::{Candidate, RouteRequest};
use crate::filter;
use crate::history::{History, NoHistory};
use crate::model::{Match, Policy, PolicySet};
use crate::price::format_atto;
use crate::strategy::{self, Entry};

/// Name reported when no policy matched.
pub const DEFAULT_POLICY: &str = "default";

impl PolicySet {
    /// The first policy whose match fits the request, if any.
    pub fn find(&self, req: &RouteRequest<'_>) -> Option<&Policy> {
        self.policies.iter().find(|p| p.matches.fits(req))
    }
}

impl Match {
    /// Whether the request fits: model, any account pattern, and every header.
    pub fn fits(&self, req: &RouteRequest<'_>) -> bool {
        let model = self.model.as_ref().is_none_or(|p| p.matches(req.model));
        let account = self
            .account
            .as_ref()
            .is_none_or(|ps| ps.iter().any(|p| p.matches(req.account)));
        // A repeated header fits if any of its values does.
        let headers = self.header.iter().all(|(name, pattern)| {
            req.headers
                .iter()
                .any(|(n, v)| n.eq_ignore_ascii_case(name) && pattern.matches(v))
        });
        model && account && headers
    }
}

impl Policy {
    /// The policy used when none matches: cheapest, no filters, no fallback.
    pub fn implicit_default() -> Policy {
        Policy {
            name: DEFAULT_POLICY.to_owned(),
            ..Policy::default()
        }
    }
}

/// Ranks the candidates for one request under the first matching policy.
///
/// Candidates repeating an earlier node id are ignored. Unhealthy nodes are
/// never routed to. Fallback nodes skip the operator filters but not the
/// caller's bid (auction), which is the caller's limit, not the operator's.
pub fn choose(set: &PolicySet, req: &RouteRequest<'_>, candidates: &[Candidate]) -> Decision {
    choose_with_history(set, req, candidates, &NoHistory)
}

/// [`choose`], with what the gateway has seen lately for the policy's
/// concentration cap and SLA: nodes over the one or breaking the other are
/// ranked after the rest (see [`crate::holdback`]).
pub fn choose_with_history(
    set: &PolicySet,
    req: &RouteRequest<'_>,
    candidates: &[Candidate],
    history: &dyn History,
) -> Decision {
    let default_policy;
    let policy = match set.find(req) {
        Some(p) => p,
        None => {
            default_policy = Policy::implicit_default();
            &default_policy
        }
    };
    let bid = req.bid();
    let mut seen = HashSet::new();
    let mut rejected = Vec::new();
    let mut admitted = Vec::new();
    for c in candidates {
        if !seen.insert(c.node.as_str()) {
            continue;
        }
        let cost = req.estimate(&c.prices);
        let verdict = if c.healthy {
            filter::check(&policy.filters, c)
                .and_then(|notes| strategy::admit(policy, bid, &c.node, cost).map(|()| notes))
        } else {
            Err(RejectReason::Unhealthy)
        };
        match verdict {
            Ok(notes) => admitted.push(Entry {
                cand: c,
                cost,
                notes,
            }),
            Err(reason) => rejected.push(Rejection {
                node: c.node.clone(),
                reason,
            }),
        }
    }
    let ranked = strategy::rank(policy, req, admitted);
    let mut routes = crate::holdback::apply(policy, req, candidates, history, ranked);
    append_fallbacks(policy, req, candidates, &mut routes, &mut rejected);
    Decision {
        policy: policy.name.clone(),
        strategy: policy.strategy,
        routes,
        rejected,
    }
}

/// Appends the policy's fallback nodes that serve the model, are healthy and are not routed yet.
fn append_fallbacks(
    policy: &Policy,
    req: &RouteRequest<'_>,
    candidates: &[Candidate],
    routes: &mut Vec<Route>,
    rejected: &mut Vec<Rejection>,
) {
    for (i, id) in policy.fallback.iter().enumerate() {
        if routes.iter().any(|r| &r.node == id) {
            continue;
        }
        // Not serving this model: nothing to fall back to.
        let Some(c) = candidates.iter().find(|c| &c.node == id) else {
            continue;
        };
        let mut reasons = vec![format!(
            "fallback #{} of policy {:?}, after the ranked routes",
            i + 1,
            policy.name
        )];
        let estimated_cost = req.estimate(&c.prices);
        if let Some(at) = rejected.iter().position(|r| &r.node == id) {
            if !rejected[at].reason.is_policy_filter() {
                continue;
            }
            // The filters stopped at their first failure, so the bid may not
            // have been checked yet; it binds fallbacks too, and it is now
            // the reason that keeps this node out.
            if let Some(over) = strategy::over_bid(policy, req.bid(), estimated_cost) {
                rejected[at].reason = over;
                continue;
            }
            let was = rejected.remove(at);
            reasons.push(format!(
                "filtered out by the policy ({}) but kept as a fallback",
                was.reason
            ));
        }
        reasons.push(format!("est. cost {}", format_atto(estimated_cost)));
        routes.push(Route {
            node: id.clone(),
            reasons,
            fallback: true,
            estimated_cost,
        });
    }
}
