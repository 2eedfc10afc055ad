//! Properties over arbitrary policies, candidates and requests.

use std::collections::{BTreeMap, HashSet};

use proptest::prelude::*;
use serde::de::value::F64Deserializer;
use serde::de::IntoDeserializer;
use serde::Deserialize;
use tollgate_policies::{
    choose, Candidate, Filters, Pattern, Policy, PolicySet, Price, Prices, RegionFilter,
    RouteRequest, Slo, Strategy as RouteStrategy,
};

const IDS: [&str; 6] = ["n0", "n1", "n2", "n3", "n4", "n5"];
/// Fallback lists may name nodes that serve nothing for this request.
const FALLBACK_IDS: [&str; 7] = ["n0", "n1", "n2", "n3", "n4", "n5", "ghost"];
const REGIONS: [&str; 3] = ["eu-west", "us-east", "ap-south"];
const HARDWARE: [&str; 3] = ["cpu", "consumer-gpu", "datacenter-gpu"];

fn small_price() -> impl Strategy<Value = Price> {
    (0u128..5_000_000_000_000_000_000).prop_map(Price)
}

fn prices() -> impl Strategy<Value = Prices> {
    (small_price(), small_price()).prop_map(|(i, o)| Prices {
        input_per_1m: i,
        output_per_1m: o,
    })
}

fn measurement() -> impl Strategy<Value = Option<f64>> {
    prop_oneof![
        Just(None),
        Just(Some(f64::NAN)),
        (0.0f64..500.0).prop_map(Some),
        (0u8..5).prop_map(|x| Some(f64::from(x) * 10.0)),
    ]
}

fn candidate() -> impl Strategy<Value = Candidate> {
    (
        prop::sample::select(&IDS[..]),
        prop::sample::select(&REGIONS[..]),
        prop::sample::select(&HARDWARE[..]),
        prices(),
        prop_oneof![Just(0.5), 0.0f64..=1.0],
        measurement(),
        measurement(),
        prop::bool::weighted(0.8),
    )
        .prop_map(
            |(node, region, hw, prices, trust, tps, ttft, healthy)| Candidate {
                node: node.to_owned(),
                provider: None,
                region: region.to_owned(),
                hardware: hw.to_owned(),
                prices,
                trust,
                tokens_per_s: tps,
                ttft_ms: ttft,
                error_rate: 0.0,
                healthy,
            },
        )
}

fn filters() -> impl Strategy<Value = Filters> {
    (
        prop::collection::vec(prop::sample::select(&REGIONS[..]), 0..2),
        prop::option::of(prices()),
        prop::option::of(0.0f64..1.0),
        prop::collection::vec(prop::sample::select(&HARDWARE[..]), 0..3),
        prop::option::of(1.0f64..100.0),
    )
        .prop_map(|(allow, max_price, min_trust, hw, min_tps)| Filters {
            regions: RegionFilter {
                allow: allow.into_iter().map(str::to_owned).collect(),
                deny: vec![],
            },
            max_price,
            min_trust,
            hardware: hw.into_iter().map(str::to_owned).collect(),
            min_tokens_per_s: min_tps,
        })
}

fn policy() -> impl Strategy<Value = Policy> {
    (
        filters(),
        prop::sample::select(vec![
            RouteStrategy::Cheapest,
            RouteStrategy::Fastest,
            RouteStrategy::Weighted,
            RouteStrategy::Auction,
        ]),
        prop::collection::btree_map(prop::sample::select(&IDS[..]), 0u32..4, 0..5),
        prop::option::of(10.0f64..1000.0),
        prop::collection::vec(prop::sample::select(&FALLBACK_IDS[..]), 0..4),
    )
        .prop_map(|(filters, strategy, weights, ttft, fallback)| Policy {
            name: "p".into(),
            matches: Default::default(),
            filters,
            strategy,
            weights: weights
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v))
                .collect::<BTreeMap<_, _>>(),
            slo: Slo {
                max_ttft_ms: ttft,
                min_tokens_per_s: None,
            },
            fallback: fallback.into_iter().map(str::to_owned).collect(),
            audit_share: None,
            cap: None,
            sla: None,
        })
}

fn request_parts() -> impl Strategy<Value = (u64, u64, Option<Prices>, u64)> {
    (
        0u64..100_000,
        0u64..10_000,
        prop::option::of(prices()),
        any::<u64>(),
    )
}

fn make_req(parts: &(u64, u64, Option<Prices>, u64)) -> RouteRequest<'static> {
    RouteRequest {
        model: "m",
        account: "acct",
        headers: &[],
        prompt_tokens: parts.0,
        max_output_tokens: parts.1,
        max_price: parts.2,
        seed: parts.3,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn each_distinct_candidate_is_routed_or_rejected_exactly_once(
        policy in policy(),
        candidates in prop::collection::vec(candidate(), 0..10),
        parts in request_parts(),
    ) {
        let set = PolicySet { policies: vec![policy], ..Default::default() };
        let d = choose(&set, &make_req(&parts), &candidates);
        let routed: Vec<&str> = d.nodes().collect();
        let unique: HashSet<&str> = routed.iter().copied().collect();
        prop_assert_eq!(unique.len(), routed.len(), "a node routed twice: {:?}", routed);
        let mut seen: Vec<&str> = routed.clone();
        seen.extend(d.rejected.iter().map(|r| r.node.as_str()));
        seen.sort_unstable();
        let mut distinct: Vec<&str> = candidates.iter().map(|c| c.node.as_str()).collect::<HashSet<_>>().into_iter().collect();
        distinct.sort_unstable();
        prop_assert_eq!(seen, distinct);
    }

    #[test]
    fn routes_are_healthy_explained_and_fallbacks_come_last(
        policy in policy(),
        candidates in prop::collection::vec(candidate(), 0..10),
        parts in request_parts(),
    ) {
        let set = PolicySet { policies: vec![policy.clone()], ..Default::default() };
        let req = make_req(&parts);
        let d = choose(&set, &req, &candidates);
        let first_of = |id: &str| candidates.iter().find(|c| c.node == id);
        let first_fallback = d.routes.iter().position(|r| r.fallback).unwrap_or(d.routes.len());
        prop_assert!(d.routes[first_fallback..].iter().all(|r| r.fallback));
        for r in &d.routes {
            let c = first_of(&r.node);
            prop_assert!(c.is_some_and(|c| c.healthy), "{} routed but unhealthy or unknown", r.node);
            prop_assert!(!r.reasons.is_empty());
            prop_assert_eq!(r.estimated_cost, c.map(|c| req.estimate(&c.prices)).unwrap_or(0));
            if r.fallback {
                prop_assert!(policy.fallback.contains(&r.node));
            } else if policy.strategy == RouteStrategy::Weighted {
                prop_assert!(policy.weights.get(&r.node).is_some_and(|w| *w > 0));
            }
        }
        // The caller's bid is never overridden, not even by a fallback.
        if let (RouteStrategy::Auction, Some(bid)) = (policy.strategy, req.bid()) {
            prop_assert!(d.routes.iter().all(|r| r.estimated_cost <= bid));
        }
    }

    #[test]
    fn choose_is_deterministic_and_ignores_candidate_order(
        policy in policy(),
        candidates in prop::collection::vec(candidate(), 0..8),
        parts in request_parts(),
    ) {
        // Unique ids, so reordering cannot change which duplicate is kept.
        let mut seen = HashSet::new();
        let candidates: Vec<Candidate> = candidates.into_iter().filter(|c| seen.insert(c.node.clone())).collect();
        let set = PolicySet { policies: vec![policy], ..Default::default() };
        let req = make_req(&parts);
        let d = choose(&set, &req, &candidates);
        let mut reversed = candidates.clone();
        reversed.reverse();
        let r = choose(&set, &req, &reversed);
        prop_assert_eq!(&d.routes, &r.routes);
        prop_assert_eq!(d, choose(&set, &req, &candidates));
    }

    #[test]
    fn cheapest_ranked_routes_ascend_in_cost(
        candidates in prop::collection::vec(candidate(), 0..10),
        parts in request_parts(),
    ) {
        let d = choose(&PolicySet::default(), &make_req(&parts), &candidates);
        let costs: Vec<u128> = d.routes.iter().map(|r| r.estimated_cost).collect();
        prop_assert!(costs.windows(2).all(|w| w[0] <= w[1]), "{:?}", costs);
    }

    #[test]
    fn price_display_parse_round_trips(atto in any::<u128>()) {
        let p = Price(atto);
        prop_assert_eq!(Price::parse(&p.to_string()), Ok(p));
        let json = serde_json::to_string(&p).expect("json");
        prop_assert_eq!(serde_json::from_str::<Price>(&json).expect("back"), p);
    }

    #[test]
    fn price_parse_display_round_trips_canonical_text(int in 0u64..1_000_000, frac in "[0-9]{0,17}[1-9]") {
        let text = format!("{int}.{frac}");
        prop_assert_eq!(Price::parse(&text).expect("valid").to_string(), text);
    }

    #[test]
    fn float_prices_deserialize_like_their_shortest_text(x in 0.0f64..1e6) {
        // Straight from an f64: serde_json's own float parsing may be 1 ulp off.
        let d: F64Deserializer<serde::de::value::Error> = x.into_deserializer();
        let from_float = Price::deserialize(d).ok();
        prop_assert_eq!(from_float, Price::parse(&format!("{x}")).ok());
    }

    #[test]
    fn cost_is_monotone_and_additive_within_rounding(atto in any::<u128>(), a in any::<u64>(), b in any::<u64>()) {
        let p = Price(atto);
        let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
        prop_assert!(p.cost(lo) <= p.cost(hi));
        if let Some(sum) = a.checked_add(b) {
            let (ca, cb, cs) = (p.cost(a), p.cost(b), p.cost(sum));
            if cs < u128::MAX {
                // Floor of a sum is at least the sum of floors, and at most one more.
                let floors = ca.checked_add(cb).expect("no saturation below cs");
                prop_assert!(floors <= cs && cs <= floors + 1);
            }
        }
    }

    #[test]
    fn cost_of_a_million_tokens_is_the_price(atto in 0u128..u128::MAX / 1_000_000) {
        prop_assert_eq!(Price(atto).cost(1_000_000), atto);
    }

    #[test]
    fn star_patterns_match_their_source(s in "[a-c.é-]{0,12}", cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..4)) {
        // Replacing any set of substrings with '*' keeps the original a match.
        let chars: Vec<char> = s.chars().collect();
        let mut keep = vec![true; chars.len()];
        for c in &cuts {
            if !chars.is_empty() {
                keep[c.index(chars.len())] = false;
            }
        }
        let pattern: String = chars.iter().zip(&keep).map(|(ch, k)| if *k { *ch } else { '*' }).collect();
        prop_assert!(Pattern(pattern.clone()).matches(&s), "{} !~ {}", pattern, s);
        prop_assert!(Pattern("*".into()).matches(&s));
        prop_assert!(Pattern(s.clone()).matches(&s));
    }
}
