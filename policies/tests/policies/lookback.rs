//! Aliases, concentration caps and SLAs: the policies that look at names apps
//! send and at what the gateway has seen lately.

use std::collections::HashMap;

use tollgate_policies::{
    choose, choose_with_history, display_path, Candidate, History, Measure, Outcome,
};

use crate::common::{cand, nodes, priced, req, set};

/// Fixed usage and outcomes, standing in for the gateway's windows.
#[derive(Default)]
struct Seen {
    /// (provider, amount) uses of account acme, newest last.
    uses: Vec<(&'static str, u128)>,
    outcomes: HashMap<&'static str, Vec<Outcome>>,
}

impl History for Seen {
    fn shares(&self, account: &str, _: &str, _: Measure, _: f64) -> tollgate_policies::cap::Shares {
        let mut s = tollgate_policies::cap::Shares::default();
        if account == "acme" {
            for (p, a) in &self.uses {
                s.add(p, *a);
            }
        }
        s
    }

    fn outcomes(&self, _: &str, node: &str, _: f64) -> Vec<Outcome> {
        self.outcomes.get(node).cloned().unwrap_or_default()
    }
}

fn of(provider: &str, c: Candidate) -> Candidate {
    Candidate {
        provider: Some(provider.to_owned()),
        ..c
    }
}

const LATE: Outcome = Outcome {
    ok: true,
    ttft_ms: Some(5000.0),
    tokens_per_s: Some(40.0),
};
const GOOD: Outcome = Outcome {
    ok: true,
    ttft_ms: Some(100.0),
    tokens_per_s: Some(40.0),
};

const ALIASES: &str = r#"
aliases:
  - {name: gpt-4o-mini, model: llama-3-8b, account: [vip-*]}
  - {name: gpt-4o-mini, model: smollm2-135m}
  - {name: gpt-5.4, model: smollm2-135m, account: acme}
"#;

#[test]
fn an_alias_resolves_per_account_and_the_first_that_applies_wins() {
    let s = set(ALIASES);
    assert_eq!(s.validate(&[]), []);
    assert_eq!(s.resolve("gpt-4o-mini", "vip-1"), "llama-3-8b");
    assert_eq!(s.resolve("gpt-4o-mini", "acme"), "smollm2-135m");
    assert_eq!(s.resolve("gpt-5.4", "acme"), "smollm2-135m");
    // Not an alias for this account, so the name is passed on as it is.
    assert_eq!(s.resolve("gpt-5.4", "globex"), "gpt-5.4");
    assert_eq!(s.resolve("smollm2-135m", "acme"), "smollm2-135m");
    let names = |acct| -> Vec<(String, String)> {
        s.aliases_for(acct)
            .iter()
            .map(|a| (a.name.clone(), a.model.clone()))
            .collect()
    };
    assert_eq!(
        names("acme"),
        [
            ("gpt-4o-mini".into(), "smollm2-135m".into()),
            ("gpt-5.4".into(), "smollm2-135m".into())
        ]
    );
    assert_eq!(
        names("vip-2"),
        [("gpt-4o-mini".into(), "llama-3-8b".into())]
    );
}

#[test]
fn bad_aliases_are_each_reported_at_their_path() {
    let s = set(r#"
aliases:
  - {name: "", model: x}
  - {name: a, model: a}
  - {name: b, model: c}
  - {name: c, model: served}
  - {name: c, model: other}
  - {name: d, model: served, account: []}
  - {name: e, model: served, account: [acme, beta]}
  - {name: e, model: other, account: [beta, acme]}
  - {name: e, model: other, account: [acme]}
  - {name: e, model: other, account: [gamma, acme]}
"#);
    let errors: Vec<String> = s
        .validate(&[])
        .iter()
        .map(|e| format!("{}: {}", display_path(&e.path), e.message))
        .collect();
    assert_eq!(
        errors,
        [
            "aliases[0].name: alias name is empty",
            "aliases[1].model: alias \"a\" names itself",
            "aliases[2].model: \"c\" is itself an alias (aliases[3]); name the served model, aliases do not chain",
            "aliases[4]: unreachable: aliases[3] takes every request for \"c\" this one would",
            "aliases[5].account: empty account list applies to nobody; omit it to apply to every account",
            "aliases[7]: unreachable: aliases[6] takes every request for \"e\" this one would",
            "aliases[8]: unreachable: aliases[6] takes every request for \"e\" this one would",
        ]
    );
}

#[test]
fn bad_caps_and_slas_are_refused() {
    let s = set(r#"
policies:
  - name: p
    cap: {max_share: 0, window_s: -1}
    sla: {max_ttft_ms: 0, min_kept_share: 1.5, window_s: 60, slash: {below: 0.9, amount: "0"}}
"#);
    let paths: Vec<String> = s
        .validate(&[])
        .iter()
        .map(|e| display_path(&e.path))
        .collect();
    assert_eq!(
        paths,
        [
            "policies[0].cap.max_share",
            "policies[0].cap.window_s",
            "policies[0].sla.max_ttft_ms",
            "policies[0].sla.min_kept_share",
            "policies[0].sla.slash.amount",
        ]
    );
    let slash_above_breach =
        set("policies: [{name: p, sla: {min_kept_share: 0.8, slash: {below: 0.9, amount: '1'}}}]");
    let [e] = &slash_above_breach.validate(&[])[..] else {
        panic!("one error expected")
    };
    assert_eq!(display_path(&e.path), "policies[0].sla.slash.below");
}

const CAPPED: &str =
    "policies: [{name: capped, cap: {max_share: 0.5, of: requests, window_s: 60}}]";

#[test]
fn a_provider_over_its_cap_is_ranked_after_those_under_it() {
    let s = set(CAPPED);
    let cands = [
        of("0xcheap", priced("cheap", "0.1", "0.1")),
        of("0xdear", priced("dear", "0.5", "0.5")),
    ];
    // Nothing seen yet: both would hold 100%, so the strategy's order stands.
    let d = choose_with_history(&s, &req(), &cands, &Seen::default());
    assert_eq!(nodes(&d), ["cheap", "dear"]);
    // cheap served 1 of 1: it would hold 2 of 2, dear 1 of 2.
    let seen = Seen {
        uses: vec![("0xcheap", 1)],
        ..Seen::default()
    };
    let d = choose_with_history(&s, &req(), &cands, &seen);
    assert_eq!(nodes(&d), ["dear", "cheap"]);
    let held = &d.routes[1].reasons;
    assert!(
        held.iter().any(|r| r.contains("provider 0xcheap would hold 100.0% of this account's requests over 60s, over the cap of 50.0%")),
        "{held:?}"
    );
    // Even shares: cheap may take the next one.
    let seen = Seen {
        uses: vec![("0xcheap", 1), ("0xdear", 1)],
        ..Seen::default()
    };
    assert_eq!(
        nodes(&choose_with_history(&s, &req(), &cands, &seen)),
        ["cheap", "dear"]
    );
    // Without history (or without a cap) the cap changes nothing.
    assert_eq!(nodes(&choose(&s, &req(), &cands)), ["cheap", "dear"]);
}

#[test]
fn a_cap_counts_a_providers_nodes_together_and_other_accounts_not_at_all() {
    let s = set(CAPPED);
    let cands = [
        of("0xp", priced("p1", "0.1", "0.1")),
        of("0xp", priced("p2", "0.2", "0.2")),
        of("0xq", priced("q", "0.5", "0.5")),
    ];
    let seen = Seen {
        uses: vec![("0xp", 1), ("0xp", 1), ("0xq", 1)],
        ..Seen::default()
    };
    // p holds 2 of 3: both its nodes go after q.
    assert_eq!(
        nodes(&choose_with_history(&s, &req(), &cands, &seen)),
        ["q", "p1", "p2"]
    );
    // Another account has no usage here, so nothing is held back.
    let other = tollgate_policies::RouteRequest {
        account: "globex",
        ..req()
    };
    assert_eq!(
        nodes(&choose_with_history(&s, &other, &cands, &seen)),
        ["p1", "p2", "q"]
    );
}

#[test]
fn a_spend_cap_weighs_the_request_at_each_nodes_price() {
    let s = set("policies: [{name: spend, cap: {max_share: 0.6, of: spend}}]");
    let cands = [
        of("0xcheap", priced("cheap", "0.1", "0.1")),
        of("0xdear", priced("dear", "1", "1")),
    ];
    // cheap has billed 10x what dear has: its share stays over 60% after this request.
    let cost = req().estimate(&cands[0].prices);
    let seen = Seen {
        uses: vec![("0xcheap", 10 * cost), ("0xdear", cost)],
        ..Seen::default()
    };
    assert_eq!(
        nodes(&choose_with_history(&s, &req(), &cands, &seen)),
        ["dear", "cheap"]
    );
}

const SLA: &str = "policies: [{name: sla, sla: {max_ttft_ms: 1000, min_kept_share: 0.9, min_requests: 3, window_s: 60}}]";

#[test]
fn a_node_breaking_its_sla_is_ranked_after_nodes_that_keep_it() {
    let s = set(SLA);
    let cands = [priced("slow", "0.1", "0.1"), priced("ok", "0.5", "0.5")];
    let seen = Seen {
        outcomes: HashMap::from([("slow", vec![LATE, LATE, GOOD]), ("ok", vec![GOOD; 3])]),
        ..Seen::default()
    };
    let d = choose_with_history(&s, &req(), &cands, &seen);
    assert_eq!(nodes(&d), ["ok", "slow"]);
    assert!(d.routes[1].reasons.iter().any(|r| r.contains(
        "breaks the SLA: 1 of 3 requests kept every promise over 60s (0 failed, 2 late first token, 0 slow decode)"
    )));
    // Too few requests to judge: no verdict, cheapest first.
    let seen = Seen {
        outcomes: HashMap::from([("slow", vec![LATE, LATE])]),
        ..Seen::default()
    };
    assert_eq!(
        nodes(&choose_with_history(&s, &req(), &cands, &seen)),
        ["slow", "ok"]
    );
}

#[test]
fn held_back_nodes_keep_their_order_and_fallbacks_stay_last() {
    let s = set(r#"
policies:
  - name: sla
    sla: {max_ttft_ms: 1000, min_requests: 1}
    filters: {regions: {deny: [eu-west]}}
    fallback: [backup]
"#);
    let cands = [
        Candidate {
            region: "us-east".into(),
            ..priced("a", "0.1", "0.1")
        },
        Candidate {
            region: "us-east".into(),
            ..priced("b", "0.2", "0.2")
        },
        Candidate {
            region: "us-east".into(),
            ..priced("c", "0.3", "0.3")
        },
        cand("backup"),
    ];
    let seen = Seen {
        outcomes: HashMap::from([("a", vec![LATE]), ("b", vec![LATE])]),
        ..Seen::default()
    };
    let d = choose_with_history(&s, &req(), &cands, &seen);
    assert_eq!(nodes(&d), ["c", "a", "b", "backup"]);
    assert!(d.routes[3].fallback);
}
