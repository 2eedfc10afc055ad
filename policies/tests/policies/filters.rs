//! Each operator filter, passing and rejecting, and the health gate.

use tollgate_policies::{choose, Candidate, Decision, Price, RejectReason};

use crate::common::{cand, priced, reasons, rejection, req, set};

fn run(filters_yaml: &str, candidates: &[Candidate]) -> Decision {
    let s = set(&format!(
        "policies:\n- name: p\n  filters: {filters_yaml}\n"
    ));
    choose(&s, &req(), candidates)
}

fn in_region(node: &str, region: &str) -> Candidate {
    Candidate {
        region: region.to_owned(),
        ..cand(node)
    }
}

#[test]
fn unhealthy_is_always_rejected() {
    let sick = Candidate {
        healthy: false,
        ..cand("sick")
    };
    let d = run("{}", &[sick, cand("ok")]);
    assert_eq!(rejection(&d, "sick"), Some(&RejectReason::Unhealthy));
    assert_eq!(d.routes.len(), 1);
    assert_eq!(d.routes[0].node, "ok");
}

#[test]
fn region_allow_list() {
    let d = run(
        "{regions: {allow: [eu-west, eu-central]}}",
        &[in_region("eu", "eu-west"), in_region("us", "us-east")],
    );
    assert_eq!(
        rejection(&d, "us"),
        Some(&RejectReason::RegionNotAllowed {
            region: "us-east".into()
        })
    );
    assert!(reasons(&d, "eu").contains("region \"eu-west\" passes the region filter"));
}

#[test]
fn empty_allow_list_allows_any_region() {
    let d = run("{regions: {allow: []}}", &[in_region("x", "mars-1")]);
    assert_eq!(d.routes.len(), 1);
}

#[test]
fn region_deny_list_wins_over_allow() {
    let d = run(
        "{regions: {deny: [us-east]}}",
        &[in_region("eu", "eu-west"), in_region("us", "us-east")],
    );
    assert_eq!(
        rejection(&d, "us"),
        Some(&RejectReason::RegionDenied {
            region: "us-east".into()
        })
    );
    assert_eq!(d.routes[0].node, "eu");
    // Deny is reported even when the region also misses the allow list.
    let d = run(
        "{regions: {allow: [eu-west], deny: [us-east]}}",
        &[in_region("us", "us-east")],
    );
    assert!(matches!(
        rejection(&d, "us"),
        Some(RejectReason::RegionDenied { .. })
    ));
}

#[test]
fn regions_compare_case_insensitively() {
    let d = run(
        "{regions: {allow: [EU-West]}}",
        &[in_region("eu", "eu-west")],
    );
    assert_eq!(d.routes.len(), 1);
    let d = run(
        "{regions: {deny: [US-EAST]}}",
        &[in_region("us", "us-east")],
    );
    assert!(d.routes.is_empty());
}

#[test]
fn price_caps_check_input_then_output() {
    let caps = "{max_price: {input_per_1m: 0.5, output_per_1m: 1}}";
    let d = run(
        caps,
        &[
            priced("ok", "0.5", "1"),
            priced("dear_in", "0.6", "0.1"),
            priced("dear_out", "0.1", "1.000001"),
            priced("dear_both", "9", "9"),
        ],
    );
    assert_eq!(d.routes.len(), 1);
    assert_eq!(d.routes[0].node, "ok");
    assert_eq!(
        rejection(&d, "dear_in"),
        Some(&RejectReason::PriceAboveCap {
            which: "input".into(),
            price: Price::parse("0.6").expect("p"),
            cap: Price::parse("0.5").expect("p"),
        })
    );
    assert_eq!(
        rejection(&d, "dear_out"),
        Some(&RejectReason::PriceAboveCap {
            which: "output".into(),
            price: Price::parse("1.000001").expect("p"),
            cap: Price::parse("1").expect("p"),
        })
    );
    assert!(matches!(
        rejection(&d, "dear_both"),
        Some(RejectReason::PriceAboveCap { which, .. }) if which == "input"
    ));
    assert!(reasons(&d, "ok").contains("prices 0.5 in / 1 out per 1M within cap 0.5 / 1"));
}

#[test]
fn min_trust() {
    let low = Candidate {
        trust: 0.49,
        ..cand("low")
    };
    let edge = Candidate {
        trust: 0.5,
        ..cand("edge")
    };
    let nan = Candidate {
        trust: f64::NAN,
        ..cand("nan")
    };
    let d = run("{min_trust: 0.5}", &[low, edge, nan]);
    assert_eq!(
        rejection(&d, "low"),
        Some(&RejectReason::TrustBelowMin {
            trust: 0.49,
            min: 0.5
        })
    );
    assert!(matches!(
        rejection(&d, "nan"),
        Some(RejectReason::TrustBelowMin { .. })
    ));
    assert!(reasons(&d, "edge").contains("trust 0.5 >= min 0.5"));
}

#[test]
fn hardware_classes() {
    let cpu = Candidate {
        hardware: "cpu".into(),
        ..cand("cpu")
    };
    let d = run(
        "{hardware: [Datacenter-GPU, consumer-gpu]}",
        &[cpu, cand("dc")],
    );
    assert_eq!(
        rejection(&d, "cpu"),
        Some(&RejectReason::HardwareNotAllowed {
            hardware: "cpu".into()
        })
    );
    assert!(reasons(&d, "dc").contains("hardware \"datacenter-gpu\" allowed"));
}

#[test]
fn min_tokens_per_s_rejects_measured_slow_nodes_only() {
    let slow = Candidate {
        tokens_per_s: Some(9.5),
        ..cand("slow")
    };
    let new = Candidate {
        tokens_per_s: None,
        ..cand("new")
    };
    let broken = Candidate {
        tokens_per_s: Some(f64::NAN),
        ..cand("broken")
    };
    let d = run("{min_tokens_per_s: 10}", &[slow, new, broken, cand("fast")]);
    assert_eq!(
        rejection(&d, "slow"),
        Some(&RejectReason::TooSlow {
            tokens_per_s: 9.5,
            min: 10.0
        })
    );
    assert!(reasons(&d, "fast").contains("50 tokens/s >= min 10"));
    let why = reasons(&d, "new");
    assert!(
        why.contains("not measured yet") && why.contains("so it can be measured"),
        "{why}"
    );
    // A NaN measurement is no measurement.
    assert!(reasons(&d, "broken").contains("not measured yet"));
}

#[test]
fn first_failing_filter_is_reported() {
    // Fails region, price, trust, hardware and speed: region is checked first.
    let bad = Candidate {
        region: "us-east".into(),
        prices: crate::common::prices("9", "9"),
        trust: 0.1,
        hardware: "cpu".into(),
        tokens_per_s: Some(1.0),
        ..cand("bad")
    };
    let all = "{regions: {allow: [eu-west]}, max_price: {input_per_1m: 1, output_per_1m: 1}, min_trust: 0.5, hardware: [datacenter-gpu], min_tokens_per_s: 10}";
    let d = run(all, std::slice::from_ref(&bad));
    assert!(matches!(
        rejection(&d, "bad"),
        Some(RejectReason::RegionNotAllowed { .. })
    ));
    let d = run(
        all,
        &[Candidate {
            region: "eu-west".into(),
            ..bad.clone()
        }],
    );
    assert!(matches!(
        rejection(&d, "bad"),
        Some(RejectReason::PriceAboveCap { .. })
    ));
    let d = run(
        all,
        &[Candidate {
            region: "eu-west".into(),
            prices: crate::common::prices("1", "1"),
            ..bad.clone()
        }],
    );
    assert!(matches!(
        rejection(&d, "bad"),
        Some(RejectReason::TrustBelowMin { .. })
    ));
    let d = run(
        all,
        &[Candidate {
            region: "eu-west".into(),
            prices: crate::common::prices("1", "1"),
            trust: 1.0,
            ..bad.clone()
        }],
    );
    assert!(matches!(
        rejection(&d, "bad"),
        Some(RejectReason::HardwareNotAllowed { .. })
    ));
    let d = run(
        all,
        &[Candidate {
            region: "eu-west".into(),
            prices: crate::common::prices("1", "1"),
            trust: 1.0,
            hardware: "datacenter-gpu".into(),
            ..bad
        }],
    );
    assert!(matches!(
        rejection(&d, "bad"),
        Some(RejectReason::TooSlow { .. })
    ));
}

#[test]
fn unhealthy_beats_every_filter() {
    let d = run(
        "{min_trust: 0.99}",
        &[Candidate {
            healthy: false,
            trust: 0.0,
            ..cand("x")
        }],
    );
    assert_eq!(rejection(&d, "x"), Some(&RejectReason::Unhealthy));
}

#[test]
fn reject_reasons_read_as_sentences() {
    let cases = [
        (
            RejectReason::Unhealthy,
            "node is unhealthy (circuit open or failing health checks)",
        ),
        (
            RejectReason::RegionNotAllowed {
                region: "us".into(),
            },
            "region \"us\" is not in the policy's allowed regions",
        ),
        (
            RejectReason::RegionDenied {
                region: "us".into(),
            },
            "region \"us\" is in the policy's denied regions",
        ),
        (
            RejectReason::PriceAboveCap {
                which: "output".into(),
                price: Price(2_000_000_000_000_000_000),
                cap: Price(500_000_000_000_000_000),
            },
            "output price 2 per 1M tokens is above the policy's cap of 0.5",
        ),
        (
            RejectReason::TrustBelowMin {
                trust: 0.25,
                min: 0.5,
            },
            "trust 0.25 is below the policy's minimum of 0.5",
        ),
        (
            RejectReason::HardwareNotAllowed {
                hardware: "cpu".into(),
            },
            "hardware class \"cpu\" is not in the policy's allowed hardware",
        ),
        (
            RejectReason::TooSlow {
                tokens_per_s: 3.5,
                min: 10.0,
            },
            "measured 3.5 tokens/s is below the policy's minimum of 10",
        ),
        (
            RejectReason::AskAboveBid {
                ask: 30_000_000_000_000,
                bid: 20_000_000_000_000,
            },
            "asks 0.00003 for this request, above the caller's bid of 0.00002",
        ),
        (
            RejectReason::ZeroWeight,
            "node has no weight in this weighted policy",
        ),
    ];
    for (reason, text) in cases {
        assert_eq!(reason.to_string(), text);
    }
}
