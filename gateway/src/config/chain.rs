//! The `chain:` section: where invoices are settled. Read at start only.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Settlement on an EVM chain.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ChainConfig {
    /// JSON-RPC endpoint, e.g. `http://127.0.0.1:8545`.
    pub rpc_url: String,
    /// The deployment file (contract addresses, chain id), relative to this file.
    pub deployment: PathBuf,
    /// Environment variable holding the settler's private key (hex).
    #[serde(default = "default_key_env")]
    pub settler_key_env: String,
    /// A file holding the settler's private key; used when the variable is unset.
    #[serde(default)]
    pub settler_key_file: Option<PathBuf>,
    /// An invoice is posted once this many receipts are pending...
    #[serde(default = "default_batch_max")]
    pub batch_max_receipts: usize,
    /// ...or once the oldest pending receipt is this old.
    #[serde(default = "default_batch_age")]
    pub batch_max_age_s: f64,
    /// Blocks (including its own) before an invoice counts as settled.
    #[serde(default = "default_confirmations")]
    pub confirmations: u64,
    /// Longest wait for one RPC answer.
    #[serde(default = "default_rpc_timeout")]
    pub rpc_timeout_s: f64,
    /// How often payers' escrow is re-read.
    #[serde(default = "default_escrow_refresh")]
    pub escrow_refresh_s: f64,
    /// Route to nodes registered in the `ProviderRegistry` as well.
    #[serde(default = "yes")]
    pub discover_nodes: bool,
    /// How often the registry is read.
    #[serde(default = "default_discovery")]
    pub discovery_interval_s: f64,
}

fn yes() -> bool {
    true
}
fn default_discovery() -> f64 {
    10.0
}

fn default_key_env() -> String {
    "TOLLGATE_SETTLER_KEY".into()
}
fn default_batch_max() -> usize {
    1000
}
fn default_batch_age() -> f64 {
    10.0
}
fn default_confirmations() -> u64 {
    1
}
fn default_rpc_timeout() -> f64 {
    10.0
}
fn default_escrow_refresh() -> f64 {
    2.0
}

/// Whether `text` is a 0x-prefixed 20-byte hex address.
pub fn is_address(text: &str) -> bool {
    text.len() == 42 && text.starts_with("0x") && text[2..].bytes().all(|b| b.is_ascii_hexdigit())
}

impl ChainConfig {
    /// Problems with the section itself, as (key, message).
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        if !(self.rpc_url.starts_with("http://") || self.rpc_url.starts_with("https://")) {
            out.push((
                "rpc_url",
                format!("'{}' is not an http(s) URL", self.rpc_url),
            ));
        }
        if self.batch_max_receipts == 0 || self.batch_max_receipts > 100_000 {
            out.push(("batch_max_receipts", "must be between 1 and 100000".into()));
        }
        for (key, v) in [
            ("batch_max_age_s", self.batch_max_age_s),
            ("rpc_timeout_s", self.rpc_timeout_s),
            ("escrow_refresh_s", self.escrow_refresh_s),
            ("discovery_interval_s", self.discovery_interval_s),
        ] {
            if !(v.is_finite() && v > 0.0) {
                out.push((
                    key,
                    format!("must be a positive number of seconds, got {v}"),
                ));
            }
        }
        if self.confirmations == 0 {
            out.push(("confirmations", "must be at least 1".into()));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::super::Config;

    fn problems(yaml: &str) -> Vec<String> {
        let config: Config = serde_yaml::from_str(yaml).expect("parses");
        config.validate().iter().map(ToString::to_string).collect()
    }

    const NODE: &str = "nodes:\n  - { id: n, kind: openai, url: 'http://x/v1'";
    const CHAIN: &str = "chain: { rpc_url: 'http://127.0.0.1:8545', deployment: chain.json }\n";

    #[test]
    fn settling_needs_a_payer_and_a_provider_address() {
        let yaml = format!("accounts: [{{ id: a }}]\n{NODE} }}\n{CHAIN}");
        let found = problems(&yaml);
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(found
            .iter()
            .any(|p| p.contains("payer") && p.contains("escrow pays")));
        assert!(found
            .iter()
            .any(|p| p.contains("provider") && p.contains("node's work")));
        // Without a chain, neither is needed.
        assert!(problems(&format!("accounts: [{{ id: a }}]\n{NODE} }}\n")).is_empty());
    }

    #[test]
    fn addresses_and_chain_settings_are_checked() {
        let yaml = format!(
            "accounts: [{{ id: a, payer: '0x12' }}]\n{NODE}, provider: '0x{}', signer: '0x{}' }}\n\
             chain: {{ rpc_url: 'ws://x', deployment: c.json, confirmations: 0, batch_max_age_s: -1 }}\n",
            "ab".repeat(20),
            "cd".repeat(20)
        );
        let found = problems(&yaml).join("\n");
        assert!(
            found.contains("'0x12' is not a 0x-prefixed 20-byte address"),
            "{found}"
        );
        assert!(
            found.contains("only tollgate nodes sign their answers"),
            "{found}"
        );
        assert!(found.contains("'ws://x' is not an http(s) URL"), "{found}");
        assert!(
            found.contains("confirmations") && found.contains("batch_max_age_s"),
            "{found}"
        );
        assert!(
            !found.contains("provider"),
            "a well-formed provider passes: {found}"
        );
    }
}
