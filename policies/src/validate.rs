//! Checking a policy set before it is served.
//!
//! Validation reports every problem at once, each with its path in the
//! document, so an operator fixes a file in one pass and the gateway can map
//! each path to a line.

use std::collections::{BTreeMap, HashMap, HashSet};

use crate::filter::contains_ci;
use crate::model::{Match, Policy, PolicySet, Strategy};

/// One problem in a policy set, located by its path in the document (so the caller can map it to a file line).
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("{}: {message}", display_path(path))]
pub struct ValidationError {
    /// Where in the document, e.g. `[Key("policies"), Index(1), Key("fallback"), Index(0)]`.
    pub path: Vec<PathSegment>,
    /// What is wrong, in words.
    pub message: String,
}

/// One step of a document path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PathSegment {
    /// A mapping key.
    Key(String),
    /// A sequence index.
    Index(usize),
}

/// Renders a path like `policies[1].fallback[0]`; keys that are not plain identifiers are quoted, e.g. `weights["node.a"]`.
pub fn display_path(path: &[PathSegment]) -> String {
    if path.is_empty() {
        return "(document)".to_owned();
    }
    let mut out = String::new();
    for seg in path {
        match seg {
            PathSegment::Index(i) => out.push_str(&format!("[{i}]")),
            PathSegment::Key(k) if is_plain(k) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(k);
            }
            PathSegment::Key(k) => out.push_str(&format!("[{k:?}]")),
        }
    }
    out
}

fn is_plain(k: &str) -> bool {
    !k.is_empty()
        && k.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

impl PolicySet {
    /// Every problem in the set, given the node ids that exist; empty means valid.
    pub fn validate(&self, known_nodes: &[&str]) -> Vec<ValidationError> {
        let known: HashSet<&str> = known_nodes.iter().copied().collect();
        let mut v = Validator::default();
        let mut first_use: HashMap<&str, usize> = HashMap::new();
        let mut catch_all: Option<(usize, &str)> = None;
        for (i, p) in self.policies.iter().enumerate() {
            let at = Scope::new(i);
            if p.name.trim().is_empty() {
                v.err(at.path(&["name"]), "policy name is empty");
            } else if let Some(first) = first_use.get(p.name.as_str()) {
                v.err(
                    at.path(&["name"]),
                    format!(
                        "duplicate policy name {:?} (first used by policies[{first}])",
                        p.name
                    ),
                );
            } else {
                first_use.insert(&p.name, i);
            }
            if let Some((j, name)) = catch_all {
                v.err(
                    at.base(),
                    format!("unreachable: policies[{j}] ({name:?}) matches every request and comes first"),
                );
            }
            check_match(&mut v, &at, &p.matches);
            check_filters(&mut v, &at, p);
            check_strategy_options(&mut v, &at, p, &known);
            check_fallback(&mut v, &at, &p.fallback, &known);
            check_cap(&mut v, &at, p);
            check_sla(&mut v, &at, p);
            if catch_all.is_none() && matches_everything(&p.matches) {
                catch_all = Some((i, &p.name));
            }
        }
        check_aliases(&mut v, self);
        v.errors
    }
}

#[derive(Default)]
struct Validator {
    errors: Vec<ValidationError>,
}

impl Validator {
    fn err(&mut self, path: Vec<PathSegment>, message: impl Into<String>) {
        self.errors.push(ValidationError {
            path,
            message: message.into(),
        });
    }
}

/// Builds paths under `policies[i]`.
struct Scope(usize);

impl Scope {
    fn new(i: usize) -> Self {
        Scope(i)
    }

    fn base(&self) -> Vec<PathSegment> {
        vec![
            PathSegment::Key("policies".into()),
            PathSegment::Index(self.0),
        ]
    }

    fn path(&self, keys: &[&str]) -> Vec<PathSegment> {
        let mut p = self.base();
        p.extend(keys.iter().map(|k| PathSegment::Key((*k).to_owned())));
        p
    }

    fn item(&self, keys: &[&str], last: PathSegment) -> Vec<PathSegment> {
        let mut p = self.path(keys);
        p.push(last);
        p
    }
}

fn key(k: &str) -> PathSegment {
    PathSegment::Key(k.to_owned())
}

const EMPTY_PATTERN: &str = "empty pattern matches only the empty string; use \"*\" for any";

fn check_match(v: &mut Validator, at: &Scope, m: &Match) {
    if m.model.as_ref().is_some_and(|p| p.0.is_empty()) {
        v.err(at.path(&["match", "model"]), EMPTY_PATTERN);
    }
    if let Some(accounts) = &m.account {
        if accounts.is_empty() {
            v.err(
                at.path(&["match", "account"]),
                "empty account list matches no request; omit it to match any account",
            );
        }
        for (k, p) in accounts.iter().enumerate() {
            if p.0.is_empty() {
                v.err(
                    at.item(&["match", "account"], PathSegment::Index(k)),
                    EMPTY_PATTERN,
                );
            }
        }
    }
    for (name, p) in &m.header {
        let path = at.item(&["match", "header"], key(name));
        if name.trim().is_empty() {
            v.err(path, "empty header name");
        } else if p.0.is_empty() {
            v.err(path, EMPTY_PATTERN);
        }
    }
}

fn check_filters(v: &mut Validator, at: &Scope, p: &Policy) {
    let f = &p.filters;
    for (j, region) in f.regions.deny.iter().enumerate() {
        if contains_ci(&f.regions.allow, region) {
            v.err(
                at.item(&["filters", "regions", "deny"], PathSegment::Index(j)),
                format!("region {region:?} is both allowed and denied"),
            );
        }
    }
    if let Some(s) = p.audit_share {
        if !(0.0..=1.0).contains(&s) {
            v.err(
                at.path(&["audit_share"]),
                format!("audit_share {s} is outside 0..=1"),
            );
        }
    }
    if let Some(t) = f.min_trust {
        if !(0.0..=1.0).contains(&t) {
            v.err(
                at.path(&["filters", "min_trust"]),
                format!("min_trust {t} is outside 0..=1"),
            );
        }
    }
    positive(
        v,
        at.path(&["filters", "min_tokens_per_s"]),
        f.min_tokens_per_s,
    );
    positive(v, at.path(&["slo", "max_ttft_ms"]), p.slo.max_ttft_ms);
    positive(
        v,
        at.path(&["slo", "min_tokens_per_s"]),
        p.slo.min_tokens_per_s,
    );
}

fn positive(v: &mut Validator, path: Vec<PathSegment>, x: Option<f64>) {
    if let Some(x) = x {
        if !(x.is_finite() && x > 0.0) {
            v.err(path, format!("{x} must be a finite number > 0"));
        }
    }
}

fn check_strategy_options(v: &mut Validator, at: &Scope, p: &Policy, known: &HashSet<&str>) {
    check_weights(v, at, p.strategy, &p.weights, known);
    if !p.slo.is_empty() && p.strategy != Strategy::Auction {
        v.err(
            at.path(&["slo"]),
            format!(
                "slo only applies to strategy auction, but this policy uses {}",
                p.strategy
            ),
        );
    }
}

fn check_weights(
    v: &mut Validator,
    at: &Scope,
    strategy: Strategy,
    weights: &BTreeMap<String, u32>,
    known: &HashSet<&str>,
) {
    for node in weights.keys() {
        if !known.contains(node.as_str()) {
            v.err(
                at.item(&["weights"], key(node)),
                format!("unknown node {node:?}"),
            );
        }
    }
    if strategy == Strategy::Weighted {
        if !weights.values().any(|w| *w > 0) {
            v.err(
                at.path(&["weights"]),
                "strategy weighted needs at least one node with weight > 0",
            );
        }
    } else if !weights.is_empty() {
        v.err(
            at.path(&["weights"]),
            format!("weights only apply to strategy weighted, but this policy uses {strategy}"),
        );
    }
}

fn check_fallback(v: &mut Validator, at: &Scope, fallback: &[String], known: &HashSet<&str>) {
    let mut first: HashMap<&str, usize> = HashMap::new();
    for (k, node) in fallback.iter().enumerate() {
        let path = at.item(&["fallback"], PathSegment::Index(k));
        if let Some(j) = first.get(node.as_str()) {
            v.err(
                path,
                format!("duplicate fallback {node:?} (also fallback[{j}])"),
            );
            continue;
        }
        first.insert(node, k);
        if !known.contains(node.as_str()) {
            v.err(path, format!("unknown node {node:?}"));
        }
    }
}

/// Whether a match takes every request, making the policies after it dead.
fn matches_everything(m: &Match) -> bool {
    let model = m.model.as_ref().is_none_or(|p| p.matches_everything());
    let account = m
        .account
        .as_ref()
        .is_none_or(|ps| ps.iter().any(|p| p.matches_everything()));
    model && account && m.header.is_empty()
}

fn check_cap(v: &mut Validator, at: &Scope, p: &Policy) {
    let Some(cap) = &p.cap else { return };
    if !(cap.max_share > 0.0 && cap.max_share <= 1.0) {
        v.err(
            at.path(&["cap", "max_share"]),
            format!("max_share {} is outside (0, 1]", cap.max_share),
        );
    }
    positive(v, at.path(&["cap", "window_s"]), Some(cap.window_s));
}

fn check_sla(v: &mut Validator, at: &Scope, p: &Policy) {
    let Some(sla) = &p.sla else { return };
    positive(v, at.path(&["sla", "max_ttft_ms"]), sla.max_ttft_ms);
    positive(
        v,
        at.path(&["sla", "min_tokens_per_s"]),
        sla.min_tokens_per_s,
    );
    positive(v, at.path(&["sla", "window_s"]), Some(sla.window_s));
    if !(0.0..=1.0).contains(&sla.min_kept_share) {
        v.err(
            at.path(&["sla", "min_kept_share"]),
            format!("min_kept_share {} is outside 0..=1", sla.min_kept_share),
        );
    }
    if let Some(slash) = &sla.slash {
        if !(0.0..=sla.min_kept_share).contains(&slash.below) {
            v.err(
                at.path(&["sla", "slash", "below"]),
                format!(
                    "below {} must be within 0..=min_kept_share ({}): a node is slashed only once it is in breach",
                    slash.below, sla.min_kept_share
                ),
            );
        }
        if slash.amount.0 == 0 {
            v.err(
                at.path(&["sla", "slash", "amount"]),
                "a slash of 0 takes nothing",
            );
        }
    }
}

fn check_aliases(v: &mut Validator, set: &PolicySet) {
    let at = |i: usize, k: &str| vec![key("aliases"), PathSegment::Index(i), key(k)];
    for (i, a) in set.aliases.iter().enumerate() {
        if a.name.trim().is_empty() {
            v.err(at(i, "name"), "alias name is empty");
        }
        if a.model.trim().is_empty() {
            v.err(at(i, "model"), "alias model is empty");
        } else if a.model == a.name {
            v.err(at(i, "model"), format!("alias {:?} names itself", a.name));
        } else if let Some(j) = set.aliases.iter().position(|b| b.name == a.model) {
            v.err(
                at(i, "model"),
                format!(
                    "{:?} is itself an alias (aliases[{j}]); name the served model, aliases do not chain",
                    a.model
                ),
            );
        }
        if let Some(accounts) = &a.account {
            if accounts.is_empty() {
                v.err(
                    at(i, "account"),
                    "empty account list applies to nobody; omit it to apply to every account",
                );
            }
        }
        let shadowed = set.aliases[..i]
            .iter()
            .position(|b| b.name == a.name && covers(b.account.as_deref(), a.account.as_deref()));
        if let Some(j) = shadowed {
            v.err(
                vec![key("aliases"), PathSegment::Index(i)],
                format!(
                    "unreachable: aliases[{j}] takes every request for {:?} this one would",
                    a.name
                ),
            );
        }
    }
}

/// Whether an alias applying to `earlier` accounts takes every account one
/// applying to `later` would: it applies to all, or lists every later pattern.
fn covers(
    earlier: Option<&[crate::glob::Pattern]>,
    later: Option<&[crate::glob::Pattern]>,
) -> bool {
    match (earlier, later) {
        (None, _) => true,
        (Some(e), _) if e.iter().any(|p| p.matches_everything()) => true,
        (Some(_), None) => false,
        (Some(e), Some(l)) => !l.is_empty() && l.iter().all(|p| e.contains(p)),
    }
}
