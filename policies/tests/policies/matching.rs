//! Which policy a request gets.

use tollgate_policies::{choose, PolicySet, RouteRequest, Strategy, DEFAULT_POLICY};

use crate::common::{cand, req, set};

fn headers(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn picked(s: &PolicySet, r: &RouteRequest<'_>) -> String {
    choose(s, r, &[cand("n1")]).policy
}

#[test]
fn model_glob_selects_policy() {
    let s = set("policies:\n- {name: smol, match: {model: 'smollm2*'}}\n- {name: rest}\n");
    assert_eq!(picked(&s, &req()), "smol");
    let other = RouteRequest {
        model: "llama-3-8b",
        ..req()
    };
    assert_eq!(picked(&s, &other), "rest");
}

#[test]
fn account_patterns_match_any_of() {
    let s = set("policies:\n- {name: vip, match: {account: ['beta-*', acme]}}\n");
    assert_eq!(picked(&s, &req()), "vip");
    assert_eq!(
        picked(
            &s,
            &RouteRequest {
                account: "beta-7",
                ..req()
            }
        ),
        "vip"
    );
    assert_eq!(
        picked(
            &s,
            &RouteRequest {
                account: "gamma",
                ..req()
            }
        ),
        DEFAULT_POLICY
    );
}

#[test]
fn single_account_string_matches() {
    let s = set("policies:\n- {name: one, match: {account: 'ac*'}}\n");
    assert_eq!(picked(&s, &req()), "one");
    assert_eq!(
        picked(
            &s,
            &RouteRequest {
                account: "zeta",
                ..req()
            }
        ),
        DEFAULT_POLICY
    );
}

#[test]
fn headers_match_case_insensitively_by_name_and_by_glob_on_value() {
    let s = set("policies:\n- name: eu\n  match:\n    header: {X-Tollgate-Tier: 'gold*'}\n");
    let h = headers(&[("x-tollgate-tier", "gold-plus")]);
    assert_eq!(
        picked(
            &s,
            &RouteRequest {
                headers: &h,
                ..req()
            }
        ),
        "eu"
    );
    let h = headers(&[("x-tollgate-tier", "silver")]);
    assert_eq!(
        picked(
            &s,
            &RouteRequest {
                headers: &h,
                ..req()
            }
        ),
        DEFAULT_POLICY
    );
    // Values are case-sensitive.
    let h = headers(&[("x-tollgate-tier", "Gold")]);
    assert_eq!(
        picked(
            &s,
            &RouteRequest {
                headers: &h,
                ..req()
            }
        ),
        DEFAULT_POLICY
    );
}

#[test]
fn missing_header_does_not_match_even_with_star() {
    let s = set("policies:\n- name: tagged\n  match: {header: {x-team: '*'}}\n");
    assert_eq!(picked(&s, &req()), DEFAULT_POLICY);
    let h = headers(&[("x-team", "")]);
    assert_eq!(
        picked(
            &s,
            &RouteRequest {
                headers: &h,
                ..req()
            }
        ),
        "tagged"
    );
}

#[test]
fn every_header_must_match() {
    let s = set("policies:\n- name: both\n  match: {header: {x-a: '1', x-b: '2'}}\n");
    let h = headers(&[("x-a", "1")]);
    assert_eq!(
        picked(
            &s,
            &RouteRequest {
                headers: &h,
                ..req()
            }
        ),
        DEFAULT_POLICY
    );
    let h = headers(&[("x-b", "2"), ("x-a", "1")]);
    assert_eq!(
        picked(
            &s,
            &RouteRequest {
                headers: &h,
                ..req()
            }
        ),
        "both"
    );
}

#[test]
fn repeated_header_matches_if_any_value_does() {
    let s = set("policies:\n- name: rep\n  match: {header: {x-tag: beta}}\n");
    let h = headers(&[("x-tag", "alpha"), ("x-tag", "beta")]);
    assert_eq!(
        picked(
            &s,
            &RouteRequest {
                headers: &h,
                ..req()
            }
        ),
        "rep"
    );
}

#[test]
fn all_parts_of_a_match_must_fit() {
    let s = set("policies:\n- name: p\n  match: {model: 'smollm2*', account: beta}\n");
    assert_eq!(picked(&s, &req()), DEFAULT_POLICY);
    assert_eq!(
        picked(
            &s,
            &RouteRequest {
                account: "beta",
                ..req()
            }
        ),
        "p"
    );
}

#[test]
fn first_matching_policy_wins() {
    let s = set(
        "policies:\n- {name: a, match: {model: 'llama*'}}\n- {name: b, match: {model: 'smol*'}}\n- {name: c, match: {model: '*'}}\n",
    );
    assert_eq!(picked(&s, &req()), "b");
    assert_eq!(s.find(&req()).map(|p| p.name.as_str()), Some("b"));
}

#[test]
fn no_match_uses_default_cheapest_without_filters() {
    let s = set("policies:\n- {name: a, match: {model: 'llama*'}, strategy: fastest, filters: {min_trust: 0.99}}\n");
    let d = choose(&s, &req(), &[cand("n1")]);
    assert_eq!(d.policy, "default");
    assert_eq!(d.strategy, Strategy::Cheapest);
    assert_eq!(d.routes.len(), 1, "default policy must not filter: {d:?}");
    assert!(d.rejected.is_empty());
}

#[test]
fn empty_policy_set_uses_default() {
    let d = choose(&PolicySet::default(), &req(), &[cand("n1")]);
    assert_eq!(d.policy, DEFAULT_POLICY);
    assert_eq!(d.routes[0].node, "n1");
}

#[test]
fn duplicate_candidate_ids_are_routed_once() {
    let d = choose(&PolicySet::default(), &req(), &[cand("n1"), cand("n1")]);
    assert_eq!(d.routes.len(), 1);
    assert!(d.rejected.is_empty());
}
