//! Builders shared by the tests: a typical healthy candidate, a typical request.

use tollgate_policies::{
    Candidate, Decision, PolicySet, Price, Prices, RejectReason, RouteRequest,
};

/// Prices from decimal strings.
pub fn prices(input: &str, output: &str) -> Prices {
    Prices {
        input_per_1m: Price::parse(input).expect("test price"),
        output_per_1m: Price::parse(output).expect("test price"),
    }
}

/// A healthy, measured datacenter node in eu-west.
pub fn cand(node: &str) -> Candidate {
    Candidate {
        node: node.to_owned(),
        provider: None,
        region: "eu-west".to_owned(),
        hardware: "datacenter-gpu".to_owned(),
        prices: prices("0.1", "0.2"),
        trust: 0.9,
        tokens_per_s: Some(50.0),
        ttft_ms: Some(200.0),
        error_rate: 0.0,
        healthy: true,
    }
}

/// A candidate with the given prices.
pub fn priced(node: &str, input: &str, output: &str) -> Candidate {
    Candidate {
        prices: prices(input, output),
        ..cand(node)
    }
}

/// A request for smollm2-135m from account acme: 100 prompt tokens, up to 256 out.
pub fn req() -> RouteRequest<'static> {
    RouteRequest {
        model: "smollm2-135m",
        account: "acme",
        headers: &[],
        prompt_tokens: 100,
        max_output_tokens: 256,
        max_price: None,
        seed: 1,
    }
}

/// A policy set from YAML; panics on a bad test fixture.
pub fn set(yaml: &str) -> PolicySet {
    serde_yaml::from_str(yaml).expect("test policy yaml")
}

/// The route node ids in order.
pub fn nodes(d: &Decision) -> Vec<&str> {
    d.nodes().collect()
}

/// The rejection reason for `node`, if it was rejected.
pub fn rejection<'d>(d: &'d Decision, node: &str) -> Option<&'d RejectReason> {
    d.rejected
        .iter()
        .find(|r| r.node == node)
        .map(|r| &r.reason)
}

/// All reasons of the route to `node`, joined, for substring assertions.
pub fn reasons(d: &Decision, node: &str) -> String {
    d.routes
        .iter()
        .find(|r| r.node == node)
        .map(|r| r.reasons.join(" | "))
        .unwrap_or_else(|| panic!("{node} not routed: {d:#?}"))
}
