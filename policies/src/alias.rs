//! Model aliases: the names apps already send, mapped to models nodes serve.
//!
//! An app that swaps only its base URL keeps sending `gpt-4o-mini`; an alias
//! routes that name to a served model, for every account or only some.

use serde::{Deserialize, Serialize};

use crate::glob::Pattern;
use crate::model::{one_or_many, PolicySet};

/// One alias: requests for `name` are served by `model`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Alias {
    /// The model name apps send, matched exactly (e.g. "gpt-4o-mini").
    pub name: String,
    /// The served model it stands for.
    pub model: String,
    /// Accounts it applies to (patterns, any may fit); None = every account. A single string is accepted.
    #[serde(default, deserialize_with = "one_or_many")]
    pub account: Option<Vec<Pattern>>,
}

impl Alias {
    /// Whether the alias applies to `account`.
    pub fn applies_to(&self, account: &str) -> bool {
        self.account
            .as_ref()
            .is_none_or(|ps| ps.iter().any(|p| p.matches(account)))
    }
}

impl PolicySet {
    /// The alias `requested` names for `account`, if any: the first listed wins,
    /// so an account-specific alias listed before a general one overrides it.
    pub fn alias(&self, requested: &str, account: &str) -> Option<&Alias> {
        self.aliases
            .iter()
            .find(|a| a.name == requested && a.applies_to(account))
    }

    /// The model that serves a request for `requested` from `account`:
    /// the alias's model, or the requested name itself.
    pub fn resolve<'a>(&'a self, requested: &'a str, account: &str) -> &'a str {
        self.alias(requested, account)
            .map_or(requested, |a| a.model.as_str())
    }

    /// Every alias name `account` may use with the model it resolves to, in
    /// listed order, each name once (the one that wins).
    pub fn aliases_for(&self, account: &str) -> Vec<&Alias> {
        let mut out: Vec<&Alias> = Vec::new();
        for a in self.aliases.iter().filter(|a| a.applies_to(account)) {
            if !out.iter().any(|seen| seen.name == a.name) {
                out.push(a);
            }
        }
        out
    }
}
