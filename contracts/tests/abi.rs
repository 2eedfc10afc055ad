//! The Rust bindings against the compiled contracts: every function selector
//! and event signature the gateway uses exists in Foundry's artifacts, so the
//! hand-declared interfaces cannot drift from the Solidity.

use std::collections::HashSet;
use std::path::PathBuf;

use alloy::sol_types::{SolCall, SolEvent};
use tollgate_contracts::bindings::{FeeToken, ProviderRegistry, Settlement};

fn artifact(name: &str) -> serde_json::Value {
    let path = crate_dir().join(format!("out/{name}.sol/{name}.json"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; run `make contracts` (scripts/forge build) first",
            path.display()
        )
    });
    serde_json::from_str(&text).expect("artifact is JSON")
}

/// (signature, selector hex) of every function in the artifact.
fn functions(name: &str) -> HashSet<(String, String)> {
    artifact(name)["methodIdentifiers"]
        .as_object()
        .expect("methodIdentifiers")
        .iter()
        .map(|(sig, sel)| (sig.clone(), sel.as_str().unwrap_or_default().to_string()))
        .collect()
}

/// Canonical signatures of every event in the artifact.
fn events(name: &str) -> HashSet<String> {
    artifact(name)["abi"]
        .as_array()
        .expect("abi")
        .iter()
        .filter(|item| item["type"] == "event")
        .map(|e| {
            let types: Vec<&str> = e["inputs"]
                .as_array()
                .expect("inputs")
                .iter()
                .map(|i| i["type"].as_str().unwrap_or_default())
                .collect();
            format!(
                "{}({})",
                e["name"].as_str().unwrap_or_default(),
                types.join(",")
            )
        })
        .collect()
}

fn call<C: SolCall>() -> (String, String) {
    (C::SIGNATURE.to_string(), hex::encode(C::SELECTOR))
}

#[test]
fn settlement_functions_and_events_match_the_artifact() {
    let have = functions("Settlement");
    for want in [
        call::<Settlement::depositCall>(),
        call::<Settlement::depositForCall>(),
        call::<Settlement::escrowOfCall>(),
        call::<Settlement::earningsOfCall>(),
        call::<Settlement::postInvoiceCall>(),
        call::<Settlement::invoicesCall>(),
        call::<Settlement::batchIdOfCall>(),
        call::<Settlement::verifyReceiptCall>(),
        call::<Settlement::receiptLeafCall>(),
        call::<Settlement::receiptAmountCall>(),
    ] {
        assert!(have.contains(&want), "Settlement lacks {want:?}");
    }
    let events = events("Settlement");
    for sig in [
        Settlement::InvoicePosted::SIGNATURE,
        Settlement::InvoiceLine::SIGNATURE,
        Settlement::PayerShortfall::SIGNATURE,
    ] {
        assert!(events.contains(sig), "Settlement lacks event {sig}");
    }
}

#[test]
fn registry_and_token_functions_match_the_artifacts() {
    let registry = functions("ProviderRegistry");
    for want in [
        call::<ProviderRegistry::registerCall>(),
        call::<ProviderRegistry::nodeOfCall>(),
        call::<ProviderRegistry::slashCall>(),
        call::<ProviderRegistry::grantRoleCall>(),
    ] {
        assert!(registry.contains(&want), "ProviderRegistry lacks {want:?}");
    }
    let events = events("ProviderRegistry");
    for sig in [
        ProviderRegistry::NodeRegistered::SIGNATURE,
        ProviderRegistry::Slashed::SIGNATURE,
    ] {
        assert!(events.contains(sig), "ProviderRegistry lacks event {sig}");
    }
    let token = functions("FeeToken");
    for want in [
        call::<FeeToken::mintCall>(),
        call::<FeeToken::approveCall>(),
        call::<FeeToken::balanceOfCall>(),
        call::<FeeToken::transferCall>(),
    ] {
        assert!(token.contains(&want), "FeeToken lacks {want:?}");
    }
}

/// This crate's directory: the one cargo runs the test from (a binary cached
/// from another checkout keeps its build path in `env!`), else the build's.
fn crate_dir() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
}
