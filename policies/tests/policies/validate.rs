//! Validation: each check, with the exact path it reports.

use tollgate_policies::{display_path, PathSegment, PolicySet, ValidationError};

use crate::common::set;

const KNOWN: &[&str] = &["a", "b", "node.eu:1"];

fn k(s: &str) -> PathSegment {
    PathSegment::Key(s.to_owned())
}

fn i(n: usize) -> PathSegment {
    PathSegment::Index(n)
}

/// The only error for `yaml`; fails if there is not exactly one.
fn only_error(yaml: &str) -> ValidationError {
    let errors = set(yaml).validate(KNOWN);
    assert_eq!(errors.len(), 1, "{errors:#?}");
    errors.into_iter().next().expect("one error")
}

fn p0(rest: &[PathSegment]) -> Vec<PathSegment> {
    let mut p = vec![k("policies"), i(0)];
    p.extend_from_slice(rest);
    p
}

#[test]
fn valid_set_has_no_errors() {
    let s = set("policies:\n- name: w\n  match: {model: 'smol*', account: [acme], header: {x-team: '*'}}\n  strategy: weighted\n  weights: {a: 1, b: 0}\n  fallback: [b]\n- name: rest\n  strategy: auction\n  slo: {max_ttft_ms: 500}\n");
    assert_eq!(s.validate(KNOWN), []);
    assert_eq!(PolicySet::default().validate(&[]), []);
}

#[test]
fn empty_policy_name() {
    let e = only_error("policies: [{name: ' '}]");
    assert_eq!(e.path, p0(&[k("name")]));
    assert_eq!(e.message, "policy name is empty");
}

#[test]
fn duplicate_policy_name() {
    let e = only_error(
        "policies: [{name: x, match: {model: a}}, {name: y, match: {model: b}}, {name: x}]",
    );
    assert_eq!(e.path, vec![k("policies"), i(2), k("name")]);
    assert_eq!(
        e.message,
        "duplicate policy name \"x\" (first used by policies[0])"
    );
}

#[test]
fn min_trust_must_be_within_zero_and_one() {
    for bad in ["1.5", "-0.1", ".nan"] {
        let e = only_error(&format!(
            "policies: [{{name: p, filters: {{min_trust: {bad}}}}}]"
        ));
        assert_eq!(e.path, p0(&[k("filters"), k("min_trust")]), "{bad}");
        assert!(e.message.contains("outside 0..=1"), "{}", e.message);
    }
    for ok in ["0", "1", "0.5"] {
        assert_eq!(
            set(&format!(
                "policies: [{{name: p, filters: {{min_trust: {ok}}}}}]"
            ))
            .validate(KNOWN),
            []
        );
    }
}

#[test]
fn speeds_and_slo_must_be_finite_and_positive() {
    for bad in ["0", "-1", ".inf", ".nan"] {
        let e = only_error(&format!(
            "policies: [{{name: p, filters: {{min_tokens_per_s: {bad}}}}}]"
        ));
        assert_eq!(e.path, p0(&[k("filters"), k("min_tokens_per_s")]));
        assert!(
            e.message.ends_with("must be a finite number > 0"),
            "{}",
            e.message
        );
        let e = only_error(&format!(
            "policies: [{{name: p, strategy: auction, slo: {{max_ttft_ms: {bad}}}}}]"
        ));
        assert_eq!(e.path, p0(&[k("slo"), k("max_ttft_ms")]));
        let e = only_error(&format!(
            "policies: [{{name: p, strategy: auction, slo: {{min_tokens_per_s: {bad}}}}}]"
        ));
        assert_eq!(e.path, p0(&[k("slo"), k("min_tokens_per_s")]));
    }
}

#[test]
fn slo_needs_auction() {
    let e = only_error("policies: [{name: p, strategy: fastest, slo: {max_ttft_ms: 100}}]");
    assert_eq!(e.path, p0(&[k("slo")]));
    assert_eq!(
        e.message,
        "slo only applies to strategy auction, but this policy uses fastest"
    );
}

#[test]
fn weights_must_name_known_nodes() {
    let e = only_error("policies: [{name: p, strategy: weighted, weights: {a: 1, ghost: 2}}]");
    assert_eq!(e.path, p0(&[k("weights"), k("ghost")]));
    assert_eq!(e.message, "unknown node \"ghost\"");
}

#[test]
fn weights_need_weighted_strategy() {
    let e = only_error("policies: [{name: p, weights: {a: 1}}]");
    assert_eq!(e.path, p0(&[k("weights")]));
    assert_eq!(
        e.message,
        "weights only apply to strategy weighted, but this policy uses cheapest"
    );
}

#[test]
fn weighted_needs_a_positive_weight() {
    for weights in ["{}", "{a: 0, b: 0}"] {
        let e = only_error(&format!(
            "policies: [{{name: p, strategy: weighted, weights: {weights}}}]"
        ));
        assert_eq!(e.path, p0(&[k("weights")]));
        assert_eq!(
            e.message,
            "strategy weighted needs at least one node with weight > 0"
        );
    }
}

#[test]
fn fallback_must_be_known_and_unique() {
    let errors = set("policies: [{name: p, fallback: [a, ghost, a]}]").validate(KNOWN);
    assert_eq!(
        errors,
        [
            ValidationError {
                path: p0(&[k("fallback"), i(1)]),
                message: "unknown node \"ghost\"".into()
            },
            ValidationError {
                path: p0(&[k("fallback"), i(2)]),
                message: "duplicate fallback \"a\" (also fallback[0])".into()
            },
        ]
    );
}

#[test]
fn region_cannot_be_allowed_and_denied() {
    let e =
        only_error("policies: [{name: p, filters: {regions: {allow: [eu, US], deny: [ap, us]}}}]");
    assert_eq!(e.path, p0(&[k("filters"), k("regions"), k("deny"), i(1)]));
    assert_eq!(e.message, "region \"us\" is both allowed and denied");
}

#[test]
fn empty_patterns_are_errors() {
    let e = only_error("policies: [{name: p, match: {model: ''}}]");
    assert_eq!(e.path, p0(&[k("match"), k("model")]));
    assert!(e.message.starts_with("empty pattern"), "{}", e.message);
    let e = only_error("policies: [{name: p, match: {account: [acme, '']}}]");
    assert_eq!(e.path, p0(&[k("match"), k("account"), i(1)]));
    let e = only_error("policies: [{name: p, match: {header: {x-team: ''}}}]");
    assert_eq!(e.path, p0(&[k("match"), k("header"), k("x-team")]));
    let e = only_error("policies: [{name: p, match: {header: {'': x}}}]");
    assert_eq!(e.path, p0(&[k("match"), k("header"), k("")]));
    assert_eq!(e.message, "empty header name");
}

#[test]
fn empty_account_list_is_an_error() {
    let e = only_error("policies: [{name: p, match: {account: []}}]");
    assert_eq!(e.path, p0(&[k("match"), k("account")]));
    assert!(e.message.contains("matches no request"), "{}", e.message);
}

#[test]
fn policies_after_a_catch_all_are_unreachable() {
    let errors = set("policies: [{name: m, match: {model: x}}, {name: all, match: {model: '*', account: ['*']}}, {name: late}, {name: later}]").validate(KNOWN);
    let paths: Vec<_> = errors.iter().map(|e| e.path.clone()).collect();
    assert_eq!(
        paths,
        [vec![k("policies"), i(2)], vec![k("policies"), i(3)]]
    );
    assert_eq!(
        errors[0].message,
        "unreachable: policies[1] (\"all\") matches every request and comes first"
    );
    // A catch-all last is the normal way to end a file.
    assert_eq!(
        set("policies: [{name: m, match: {model: x}}, {name: all}]").validate(KNOWN),
        []
    );
    // A header condition makes it not a catch-all.
    assert_eq!(
        set("policies: [{name: h, match: {header: {x: '*'}}}, {name: all}]").validate(KNOWN),
        []
    );
}

#[test]
fn every_problem_is_reported_in_document_order() {
    let s = set("policies:\n- name: ''\n  match: {model: x}\n  filters: {min_trust: 2}\n  fallback: [ghost]\n- name: q\n  weights: {a: 1}\n");
    let shown: Vec<String> = s.validate(KNOWN).iter().map(ToString::to_string).collect();
    assert_eq!(
        shown,
        [
            "policies[0].name: policy name is empty",
            "policies[0].filters.min_trust: min_trust 2 is outside 0..=1",
            "policies[0].fallback[0]: unknown node \"ghost\"",
            "policies[1].weights: weights only apply to strategy weighted, but this policy uses cheapest",
        ]
    );
}

#[test]
fn display_path_quotes_keys_that_are_not_identifiers() {
    assert_eq!(
        display_path(&[k("policies"), i(0), k("weights"), k("node.eu:1")]),
        "policies[0].weights[\"node.eu:1\"]"
    );
    assert_eq!(display_path(&[k("policies"), i(3)]), "policies[3]");
    assert_eq!(display_path(&[]), "(document)");
    assert_eq!(display_path(&[k("")]), "[\"\"]");
}

#[test]
fn audit_share_is_a_share() {
    let e = only_error("policies: [{name: p, audit_share: 1.5}]");
    assert_eq!(e.path, p0(&[k("audit_share")]));
    assert!(e.message.contains("outside 0..=1"), "{}", e.message);
    assert_eq!(
        set("policies: [{name: p, audit_share: 0.2}]").validate(KNOWN),
        []
    );
    assert_eq!(
        set("policies: [{name: p, audit_share: 0.2}]").policies[0].audit_share,
        Some(0.2)
    );
}
