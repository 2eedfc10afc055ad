//! `*`-only glob patterns.

use tollgate_policies::Pattern;

fn m(p: &str, s: &str) -> bool {
    Pattern::from(p).matches(s)
}

#[test]
fn literal_patterns_match_exactly() {
    assert!(m("smollm2-135m", "smollm2-135m"));
    assert!(!m("smollm2-135m", "smollm2-135m-instruct"));
    assert!(!m("smollm2-135m", "xsmollm2-135m"));
}

#[test]
fn star_alone_matches_anything_including_empty() {
    assert!(m("*", ""));
    assert!(m("*", "anything at all"));
    assert!(m("**", "x"));
}

#[test]
fn prefix_suffix_and_infix_stars() {
    assert!(m("smollm2*", "smollm2"));
    assert!(m("smollm2*", "smollm2-1.7b"));
    assert!(!m("smollm2*", "xsmollm2"));
    assert!(m("*-prod", "acme-prod"));
    assert!(!m("*-prod", "acme-prod-2"));
    assert!(m("acme-*-prod", "acme-eu-prod"));
    assert!(m("acme-*-prod", "acme--prod"));
    assert!(!m("acme-*-prod", "acme-prod"));
    assert!(m("a*b*c", "a-b-c"));
    assert!(m("a*b*c", "abbbc"));
    assert!(!m("a*b*c", "acb"));
}

#[test]
fn prefix_and_suffix_cannot_share_characters() {
    assert!(!m("a*a", "a"));
    assert!(m("a*a", "aa"));
    assert!(!m("ab*ba", "aba"));
}

#[test]
fn other_glob_characters_are_literal() {
    assert!(m("llama-3.1?", "llama-3.1?"));
    assert!(!m("llama-3.1?", "llama-3.1x"));
    assert!(!m("model[1]", "model1"));
}

#[test]
fn matching_is_case_sensitive() {
    assert!(!m("SmolLM*", "smollm2"));
}

#[test]
fn non_ascii_text_matches() {
    assert!(m("модель-*", "модель-большая"));
    assert!(m("*é", "café"));
    assert!(!m("*é", "cafe"));
}

#[test]
fn empty_pattern_matches_only_empty() {
    assert!(m("", ""));
    assert!(!m("", "a"));
}

#[test]
fn matches_everything_only_for_star_runs() {
    assert!(Pattern::from("*").matches_everything());
    assert!(Pattern::from("***").matches_everything());
    assert!(!Pattern::from("").matches_everything());
    assert!(!Pattern::from("a*").matches_everything());
}

#[test]
fn serde_is_a_plain_string() {
    let p: Pattern = serde_yaml::from_str("acme-*").expect("yaml");
    assert_eq!(p, Pattern("acme-*".to_owned()));
    assert_eq!(serde_json::to_string(&p).expect("json"), "\"acme-*\"");
}
