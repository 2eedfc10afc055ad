//! The YAML operators write: a full realistic file, defaults, and typo rejection.

use std::collections::BTreeMap;

use tollgate_policies::{
    Alias, Cap, Filters, Match, Measure, Pattern, Policy, PolicySet, Price, Prices, RegionFilter,
    Sla, SlaSlash, Slo, Strategy,
};

const FILE: &str = r#"
# Routing for the Tollgate demo cluster.
policies:
  - name: eu-enterprise
    match:
      model: "llama-3*"
      account: ["acme-*-prod", globex]
      header:
        X-Tollgate-Tier: gold
    filters:
      regions:
        allow: [eu-west, eu-central]
        deny: [eu-south]
      max_price:
        input_per_1m: 0.5
        output_per_1m: "1.25"
      min_trust: 0.8
      hardware: [datacenter-gpu]
      min_tokens_per_s: 20
    strategy: fastest
    fallback: [node-eu-backup]
    cap: {max_share: 0.5, of: spend, window_s: 600}
    sla:
      max_ttft_ms: 1500
      min_tokens_per_s: 10
      min_kept_share: 0.9
      window_s: 120
      min_requests: 20
      slash: {below: 0.5, amount: "2.5"}

  - name: canary
    match:
      model: smollm2*
      account: beta-tester
    strategy: weighted
    weights:
      node-a: 9
      node-b: 1

  - name: spot
    match:
      header: {x-tollgate-bid: "*"}
    strategy: auction
    slo:
      max_ttft_ms: 800
      min_tokens_per_s: 15.5

  - name: everything-else

aliases:
  - name: gpt-4o-mini
    model: llama-3-8b
    account: acme-*-prod
  - {name: gpt-4o-mini, model: smollm2-135m}
"#;

fn p(s: &str) -> Pattern {
    Pattern(s.to_owned())
}

fn price(s: &str) -> Price {
    Price::parse(s).expect("price")
}

fn expected() -> PolicySet {
    PolicySet {
        policies: vec![
            Policy {
                name: "eu-enterprise".into(),
                matches: Match {
                    model: Some(p("llama-3*")),
                    account: Some(vec![p("acme-*-prod"), p("globex")]),
                    header: BTreeMap::from([("X-Tollgate-Tier".into(), p("gold"))]),
                },
                filters: Filters {
                    regions: RegionFilter {
                        allow: vec!["eu-west".into(), "eu-central".into()],
                        deny: vec!["eu-south".into()],
                    },
                    max_price: Some(Prices {
                        input_per_1m: price("0.5"),
                        output_per_1m: price("1.25"),
                    }),
                    min_trust: Some(0.8),
                    hardware: vec!["datacenter-gpu".into()],
                    min_tokens_per_s: Some(20.0),
                },
                strategy: Strategy::Fastest,
                fallback: vec!["node-eu-backup".into()],
                cap: Some(Cap {
                    max_share: 0.5,
                    of: Measure::Spend,
                    window_s: 600.0,
                }),
                sla: Some(Sla {
                    max_ttft_ms: Some(1500.0),
                    min_tokens_per_s: Some(10.0),
                    min_kept_share: 0.9,
                    window_s: 120.0,
                    min_requests: 20,
                    slash: Some(SlaSlash {
                        below: 0.5,
                        amount: price("2.5"),
                    }),
                }),
                ..Policy::default()
            },
            Policy {
                name: "canary".into(),
                matches: Match {
                    model: Some(p("smollm2*")),
                    account: Some(vec![p("beta-tester")]),
                    header: BTreeMap::new(),
                },
                strategy: Strategy::Weighted,
                weights: BTreeMap::from([("node-a".into(), 9), ("node-b".into(), 1)]),
                ..Policy::default()
            },
            Policy {
                name: "spot".into(),
                matches: Match {
                    header: BTreeMap::from([("x-tollgate-bid".into(), p("*"))]),
                    ..Match::default()
                },
                strategy: Strategy::Auction,
                slo: Slo {
                    max_ttft_ms: Some(800.0),
                    min_tokens_per_s: Some(15.5),
                },
                ..Policy::default()
            },
            Policy {
                name: "everything-else".into(),
                ..Policy::default()
            },
        ],
        aliases: vec![
            Alias {
                name: "gpt-4o-mini".into(),
                model: "llama-3-8b".into(),
                account: Some(vec![p("acme-*-prod")]),
            },
            Alias {
                name: "gpt-4o-mini".into(),
                model: "smollm2-135m".into(),
                account: None,
            },
        ],
    }
}

#[test]
fn realistic_file_parses_to_the_expected_model_and_validates() {
    let set: PolicySet = serde_yaml::from_str(FILE).expect("parse");
    assert_eq!(set, expected());
    assert_eq!(set.validate(&["node-eu-backup", "node-a", "node-b"]), []);
}

#[test]
fn serialize_round_trips() {
    let yaml = serde_yaml::to_string(&expected()).expect("serialize");
    let back: PolicySet = serde_yaml::from_str(&yaml).expect("reparse");
    assert_eq!(back, expected());
    let json = serde_json::to_string(&expected()).expect("json");
    let back: PolicySet = serde_json::from_str(&json).expect("json reparse");
    assert_eq!(back, expected());
}

#[test]
fn omitted_sections_take_defaults() {
    let set: PolicySet = serde_yaml::from_str("policies: [{name: bare}]").expect("parse");
    assert_eq!(
        set.policies[0],
        Policy {
            name: "bare".into(),
            ..Policy::default()
        }
    );
    assert_eq!(set.policies[0].strategy, Strategy::Cheapest);
    let empty: PolicySet = serde_yaml::from_str("{}").expect("empty doc");
    assert!(empty.policies.is_empty());
}

#[test]
fn account_accepts_string_list_or_null() {
    let m: Match = serde_yaml::from_str("account: acme").expect("string");
    assert_eq!(m.account, Some(vec![p("acme")]));
    let m: Match = serde_yaml::from_str("account: [a, 'b*']").expect("list");
    assert_eq!(m.account, Some(vec![p("a"), p("b*")]));
    let m: Match = serde_yaml::from_str("account: null").expect("null");
    assert_eq!(m.account, None);
    let m: Match = serde_yaml::from_str("model: x").expect("absent");
    assert_eq!(m.account, None);
    let e = serde_yaml::from_str::<Match>("account: {a: b}").expect_err("map");
    assert!(
        e.to_string()
            .contains("a pattern string or a list of pattern strings"),
        "{e}"
    );
}

#[test]
fn strategies_use_snake_case_names() {
    for (name, s) in [
        ("cheapest", Strategy::Cheapest),
        ("fastest", Strategy::Fastest),
        ("weighted", Strategy::Weighted),
        ("auction", Strategy::Auction),
    ] {
        assert_eq!(serde_yaml::from_str::<Strategy>(name).expect("strategy"), s);
        assert_eq!(s.to_string(), name);
    }
    assert!(serde_yaml::from_str::<Strategy>("Cheapest").is_err());
    assert!(
        serde_yaml::from_str::<PolicySet>("policies: [{name: p, strategy: cheapset}]").is_err()
    );
}

/// Each typo must be refused, and the error must name the typo.
#[test]
fn unknown_keys_are_rejected_at_every_level() {
    let cases = [
        ("policy: []", "policy"),
        ("policies: [{name: p, fallbak: [a]}]", "fallbak"),
        ("policies: [{name: p, match: {modle: x}}]", "modle"),
        ("policies: [{name: p, matches: {model: x}}]", "matches"),
        ("policies: [{name: p, filters: {min_trsut: 0.5}}]", "min_trsut"),
        ("policies: [{name: p, filters: {regions: {alow: [eu]}}}]", "alow"),
        ("policies: [{name: p, filters: {max_price: {input_per_1m: 1, output_per_1m: 1, currency: x}}}]", "currency"),
        ("policies: [{name: p, strategy: auction, slo: {max_ttft: 5}}]", "max_ttft"),
    ];
    for (yaml, typo) in cases {
        let e = serde_yaml::from_str::<PolicySet>(yaml).expect_err(yaml);
        assert!(e.to_string().contains(typo), "{yaml}: {e}");
    }
}

#[test]
fn max_price_needs_both_caps() {
    let e = serde_yaml::from_str::<PolicySet>(
        "policies: [{name: p, filters: {max_price: {input_per_1m: 1}}}]",
    )
    .expect_err("missing output");
    assert!(e.to_string().contains("output_per_1m"), "{e}");
}

#[test]
fn policy_needs_a_name() {
    assert!(serde_yaml::from_str::<PolicySet>("policies: [{strategy: fastest}]").is_err());
}

#[test]
fn errors_carry_a_location() {
    let e = serde_yaml::from_str::<PolicySet>(FILE.replace("min_trust", "min_trsut").as_str())
        .expect_err("typo");
    let line = e.location().map(|l| l.line());
    assert_eq!(line, Some(17), "{e}");
}
