//! What operators write in YAML: the policy document and its parts.
//!
//! Every struct denies unknown fields, because a typo'd key that is silently
//! ignored is a filter that silently does not apply.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};

pub use crate::alias::Alias;
pub use crate::cap::{Cap, Measure};
pub use crate::glob::Pattern;
use crate::price::Prices;
pub use crate::sla::{Sla, SlaSlash};

/// Every routing policy, in the order they are tried; the first whose match fits wins.
#[derive(Clone, Debug, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicySet {
    /// The policies, first match wins.
    #[serde(default)]
    pub policies: Vec<Policy>,
    /// Model names apps send, mapped to served models; the first that applies wins.
    #[serde(default)]
    pub aliases: Vec<Alias>,
}

/// One named routing rule: which requests it takes and how it ranks nodes for them.
#[derive(Clone, Debug, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// Unique name, shown in every decision this policy makes.
    pub name: String,
    /// Which requests this policy takes; empty = all.
    #[serde(default, rename = "match")]
    pub matches: Match,
    /// Operator constraints a node must pass to be ranked.
    #[serde(default)]
    pub filters: Filters,
    /// How the surviving nodes are ordered.
    #[serde(default)]
    pub strategy: Strategy,
    /// Node id -> weight, for the weighted strategy.
    #[serde(default)]
    pub weights: BTreeMap<String, u32>,
    /// Service-level objective, for the auction strategy.
    #[serde(default)]
    pub slo: Slo,
    /// Node ids tried, in order, after the ranked routes.
    #[serde(default)]
    pub fallback: Vec<String>,
    /// Share of this policy's answers from untrusted nodes that are audited
    /// (0..=1); unset uses the gateway's `audit.share`.
    #[serde(default)]
    pub audit_share: Option<f64>,
    /// Cap on any one provider's share of an account's usage.
    #[serde(default)]
    pub cap: Option<Cap>,
    /// What every node this policy routes to promises.
    #[serde(default)]
    pub sla: Option<Sla>,
}

/// Which requests a policy applies to; every present part must fit.
#[derive(Clone, Debug, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Match {
    /// Pattern for the requested model; None = any.
    #[serde(default)]
    pub model: Option<Pattern>,
    /// Patterns for the calling account, any of which may fit; None = any. A single string is accepted.
    #[serde(default, deserialize_with = "one_or_many")]
    pub account: Option<Vec<Pattern>>,
    /// Header name (matched case-insensitively) -> pattern for its value; all must match.
    #[serde(default)]
    pub header: BTreeMap<String, Pattern>,
}

/// Operator constraints on which nodes may serve a request.
#[derive(Clone, Debug, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Filters {
    /// Allowed and denied regions.
    #[serde(default)]
    pub regions: RegionFilter,
    /// Caps on both the input and the output price.
    #[serde(default)]
    pub max_price: Option<Prices>,
    /// Lowest acceptable trust score, 0.0..=1.0.
    #[serde(default)]
    pub min_trust: Option<f64>,
    /// Allowed hardware classes; empty = any.
    #[serde(default)]
    pub hardware: Vec<String>,
    /// Lowest acceptable measured decode speed; unmeasured nodes pass so they can be measured.
    #[serde(default)]
    pub min_tokens_per_s: Option<f64>,
}

/// Region allow and deny lists (compared case-insensitively).
#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegionFilter {
    /// Regions allowed; empty = any.
    #[serde(default)]
    pub allow: Vec<String>,
    /// Regions never used.
    #[serde(default)]
    pub deny: Vec<String>,
}

/// How the nodes that pass the filters are ordered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// Lowest estimated cost first.
    #[default]
    Cheapest,
    /// Highest measured decode speed first.
    Fastest,
    /// Seeded random order in proportion to configured weights.
    Weighted,
    /// Lowest ask within the caller's bid, SLO-meeting nodes first.
    Auction,
}

impl fmt::Display for Strategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Strategy::Cheapest => "cheapest",
            Strategy::Fastest => "fastest",
            Strategy::Weighted => "weighted",
            Strategy::Auction => "auction",
        })
    }
}

/// Service-level objective for the auction strategy.
#[derive(Clone, Debug, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Slo {
    /// Highest acceptable time to first token, in milliseconds.
    #[serde(default)]
    pub max_ttft_ms: Option<f64>,
    /// Lowest acceptable decode speed, in tokens per second.
    #[serde(default)]
    pub min_tokens_per_s: Option<f64>,
}

impl Slo {
    /// Whether no objective is set.
    pub fn is_empty(&self) -> bool {
        self.max_ttft_ms.is_none() && self.min_tokens_per_s.is_none()
    }
}

/// Accepts `account: acme-*` as well as `account: [acme-*, beta-*]`.
pub(crate) fn one_or_many<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<Vec<Pattern>>, D::Error> {
    d.deserialize_option(OneOrMany)
}

struct OneOrMany;

impl<'de> Visitor<'de> for OneOrMany {
    type Value = Option<Vec<Pattern>>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a pattern string or a list of pattern strings")
    }

    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Some(vec![Pattern(v.to_owned())]))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut patterns = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(p) = seq.next_element::<Pattern>()? {
            patterns.push(p);
        }
        Ok(Some(patterns))
    }
}
