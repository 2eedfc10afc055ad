//! Holding routes back: after the strategy ranks, nodes whose provider is over
//! the policy's concentration cap, or that break the policy's SLA, move behind
//! every node that is not, keeping their order among themselves.
//!
//! Held-back nodes stay routes, so a request is never failed to honour a cap or
//! punish a slow node: they serve when nobody else can.

use crate::decision::Route;
use crate::facts::{Candidate, RouteRequest};
use crate::history::History;
use crate::model::Policy;

/// Moves held-back routes after the others and says why on each.
pub(crate) fn apply(
    policy: &Policy,
    req: &RouteRequest<'_>,
    candidates: &[Candidate],
    history: &dyn History,
    routes: Vec<Route>,
) -> Vec<Route> {
    if policy.cap.is_none() && policy.sla.is_none() {
        return routes;
    }
    let shares = policy.cap.as_ref().map(|cap| {
        (
            cap,
            history.shares(req.account, &policy.name, cap.of, cap.window_s),
        )
    });
    let (mut kept, mut held): (Vec<Route>, Vec<Route>) = (Vec::new(), Vec::new());
    for mut route in routes {
        let provider = candidates
            .iter()
            .find(|c| c.node == route.node)
            .map_or(route.node.as_str(), Candidate::provider_key)
            .to_owned();
        let mut why = Vec::new();
        if let Some((cap, shares)) = &shares {
            if let Some(share) = cap.over(shares, &provider, cap.amount(route.estimated_cost)) {
                why.push(format!(
                    "provider {provider} would hold {:.1}% of this account's {} over {}s, over the cap of {:.1}%",
                    share * 100.0,
                    measure_name(cap.of),
                    cap.window_s,
                    cap.max_share * 100.0
                ));
            }
        }
        if let Some(sla) = &policy.sla {
            let standing = sla.judge(&history.outcomes(&policy.name, &route.node, sla.window_s));
            if standing.in_breach {
                why.push(format!(
                    "breaks the SLA: {} of {} requests kept every promise over {}s ({} failed, {} late first token, {} slow decode)",
                    standing.kept,
                    standing.requests,
                    sla.window_s,
                    standing.failed,
                    standing.slow_first_token,
                    standing.slow_decode
                ));
            }
        }
        if why.is_empty() {
            kept.push(route);
        } else {
            why.push("ranked after the nodes that are not held back".to_owned());
            route.reasons.extend(why);
            held.push(route);
        }
    }
    kept.extend(held);
    kept
}

fn measure_name(m: crate::cap::Measure) -> &'static str {
    match m {
        crate::cap::Measure::Requests => "requests",
        crate::cap::Measure::Spend => "spend",
    }
}
