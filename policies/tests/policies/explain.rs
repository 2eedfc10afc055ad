//! The explain view: a Decision serialized to JSON answers "why did it go there?".

use serde_json::{json, Value};
use tollgate_policies::{choose, Candidate};

use crate::common::{cand, priced, req, set};

#[test]
fn decision_json_names_policy_strategy_routes_and_reasons() {
    let s = set("policies:\n- name: capped\n  filters: {max_price: {input_per_1m: 0.5, output_per_1m: 0.5}}\n");
    let sick = Candidate {
        healthy: false,
        ..cand("sick")
    };
    let d = choose(
        &s,
        &req(),
        &[cand("ok"), priced("dear", "0.1", "0.75"), sick],
    );
    let v: Value = serde_json::to_value(&d).expect("json");
    assert_eq!(
        v,
        json!({
            "policy": "capped",
            "strategy": "cheapest",
            "routes": [{
                "node": "ok",
                "reasons": [
                    "cheapest: est. cost 0.0000612 for 100 in / 256 out tokens",
                    "prices 0.1 in / 0.2 out per 1M within cap 0.5 / 0.5"
                ],
                "fallback": false,
                "estimated_cost": 61_200_000_000_000u64
            }],
            "rejected": [
                {
                    "node": "dear",
                    "reason": {"kind": "price_above_cap", "which": "output", "price": "0.75", "cap": "0.5"},
                    "message": "output price 0.75 per 1M tokens is above the policy's cap of 0.5"
                },
                {
                    "node": "sick",
                    "reason": {"kind": "unhealthy"},
                    "message": "node is unhealthy (circuit open or failing health checks)"
                }
            ]
        })
    );
}

#[test]
fn every_reject_kind_serializes_with_its_numbers() {
    let s = set("policies:\n- name: t\n  strategy: auction\n  filters: {min_trust: 0.5, min_tokens_per_s: 10}\n");
    let r = tollgate_policies::RouteRequest {
        max_price: Some(crate::common::prices("0", "0")),
        ..req()
    };
    let low = Candidate {
        trust: 0.25,
        ..cand("low")
    };
    let slow = Candidate {
        tokens_per_s: Some(2.5),
        ..cand("slow")
    };
    let d = choose(&s, &r, &[low, slow, cand("ask")]);
    let v = serde_json::to_value(&d.rejected).expect("json");
    assert_eq!(
        v[0]["reason"],
        json!({"kind": "trust_below_min", "trust": 0.25, "min": 0.5})
    );
    assert_eq!(
        v[1]["reason"],
        json!({"kind": "too_slow", "tokens_per_s": 2.5, "min": 10.0})
    );
    assert_eq!(
        v[2]["reason"],
        json!({"kind": "ask_above_bid", "ask": 61_200_000_000_000u64, "bid": 0})
    );
    assert!(d.routes.is_empty());
}

#[test]
fn every_route_has_a_reason() {
    let s = set("policies:\n- name: f\n  strategy: fastest\n  filters: {min_trust: 0.95}\n  fallback: [b]\n");
    let d = choose(
        &s,
        &req(),
        &[
            Candidate {
                trust: 1.0,
                ..cand("a")
            },
            cand("b"),
        ],
    );
    assert_eq!(d.routes.len(), 2);
    assert!(d.routes.iter().all(|r| !r.reasons.is_empty()));
}
