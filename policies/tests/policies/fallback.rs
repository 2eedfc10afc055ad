//! Fallback routes: appended after the ranking, bypassing operator filters only.

use tollgate_policies::{choose, Candidate, RejectReason, RouteRequest};

use crate::common::{cand, nodes, priced, prices, reasons, rejection, req, set};

#[test]
fn fallbacks_follow_ranked_routes_in_list_order() {
    let s = set(
        "policies:\n- name: p\n  filters: {regions: {allow: [eu-west]}}\n  fallback: [us2, us1]\n",
    );
    let us = |n: &str| Candidate {
        region: "us-east".into(),
        ..cand(n)
    };
    let d = choose(&s, &req(), &[us("us1"), cand("eu"), us("us2")]);
    assert_eq!(nodes(&d), ["eu", "us2", "us1"]);
    assert_eq!(
        d.routes.iter().map(|r| r.fallback).collect::<Vec<_>>(),
        [false, true, true]
    );
    assert!(
        d.rejected.is_empty(),
        "fallback nodes leave the rejected list: {:?}",
        d.rejected
    );
    let why = reasons(&d, "us2");
    assert!(why.starts_with("fallback #1 of policy \"p\""), "{why}");
    assert!(why.contains("filtered out by the policy (region \"us-east\" is not in the policy's allowed regions) but kept as a fallback"), "{why}");
    assert!(why.contains("est. cost 0.0000612"), "{why}");
    assert!(reasons(&d, "us1").starts_with("fallback #2"));
    assert_eq!(d.routes[1].estimated_cost, 61_200_000_000_000);
}

#[test]
fn ranked_nodes_are_not_repeated_as_fallbacks() {
    let s = set("policies:\n- name: p\n  fallback: [a, ghost, c]\n");
    let d = choose(&s, &req(), &[cand("a")]);
    assert_eq!(nodes(&d), ["a"]);
    assert!(
        !d.routes[0].fallback,
        "already ranked, not repeated as a fallback"
    );
}

#[test]
fn fallback_ids_that_are_not_candidates_are_skipped() {
    let s = set("policies:\n- name: p\n  filters: {min_trust: 0.99}\n  fallback: [ghost, a]\n");
    let d = choose(&s, &req(), &[cand("a")]);
    assert_eq!(nodes(&d), ["a"]);
    assert!(d.routes[0].fallback);
    assert!(reasons(&d, "a").starts_with("fallback #2"));
}

#[test]
fn unhealthy_fallbacks_stay_rejected() {
    let s = set("policies:\n- name: p\n  fallback: [sick]\n");
    let sick = Candidate {
        healthy: false,
        ..cand("sick")
    };
    let d = choose(&s, &req(), &[sick, cand("ok")]);
    assert_eq!(nodes(&d), ["ok"]);
    assert_eq!(rejection(&d, "sick"), Some(&RejectReason::Unhealthy));
}

#[test]
fn repeated_fallback_entries_route_once() {
    let s = set("policies:\n- name: p\n  filters: {min_trust: 0.99}\n  fallback: [a, a]\n");
    let d = choose(&s, &req(), &[cand("a")]);
    assert_eq!(nodes(&d), ["a"]);
}

#[test]
fn zero_weight_nodes_can_come_back_as_fallback() {
    let s =
        set("policies:\n- name: w\n  strategy: weighted\n  weights: {a: 1}\n  fallback: [spare]\n");
    let d = choose(&s, &req(), &[cand("a"), cand("spare")]);
    assert_eq!(nodes(&d), ["a", "spare"]);
    assert!(reasons(&d, "spare").contains("node has no weight in this weighted policy"));
}

#[test]
fn fallback_never_overrides_the_callers_bid() {
    let s = set("policies:\n- name: a\n  strategy: auction\n  fallback: [dear]\n");
    let r = RouteRequest {
        max_price: Some(prices("0.1", "0.2")),
        ..req()
    };
    let d = choose(&s, &r, &[priced("dear", "5", "5"), cand("ok")]);
    assert_eq!(nodes(&d), ["ok"]);
    assert!(matches!(
        rejection(&d, "dear"),
        Some(RejectReason::AskAboveBid { .. })
    ));
}

#[test]
fn fallback_ordering_is_not_the_strategy_ordering() {
    // Fallbacks keep list order even when a later one is cheaper.
    let s = set("policies:\n- name: p\n  filters: {min_trust: 0.99}\n  fallback: [dear, cheap]\n");
    let d = choose(
        &s,
        &req(),
        &[priced("cheap", "0", "0"), priced("dear", "9", "9")],
    );
    assert_eq!(nodes(&d), ["dear", "cheap"]);
}

#[test]
fn filtered_fallback_above_the_bid_is_rejected_for_the_bid() {
    // The region filter fails first, but the bid is what keeps it out of the fallback.
    let s = set("policies:\n- name: a\n  strategy: auction\n  filters: {regions: {allow: [eu-west]}}\n  fallback: [far]\n");
    let r = RouteRequest {
        max_price: Some(prices("0.1", "0.2")),
        ..req()
    };
    let far = Candidate {
        region: "us-east".into(),
        ..priced("far", "5", "5")
    };
    let d = choose(&s, &r, &[far, cand("ok")]);
    assert_eq!(nodes(&d), ["ok"]);
    assert_eq!(
        rejection(&d, "far"),
        Some(&RejectReason::AskAboveBid {
            ask: 1_780_000_000_000_000,
            bid: 61_200_000_000_000
        })
    );
}
