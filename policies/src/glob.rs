//! `*`-only glob patterns for model names, accounts and header values.
//!
//! Only `*` is special so that operators never have to escape the `.`, `?`
//! or `[` that appear in real model names and account ids.

use serde::{Deserialize, Serialize};

/// Glob with `*` wildcards only (e.g. "smollm2*", "*", "acme-*-prod"); matching is case-sensitive.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Pattern(pub String);

impl Pattern {
    /// Whether `s` matches the whole pattern, `*` standing for any run of characters (including none).
    pub fn matches(&self, s: &str) -> bool {
        glob_match(&self.0, s)
    }

    /// Whether the pattern matches every string (it is non-empty and only `*`).
    pub fn matches_everything(&self) -> bool {
        !self.0.is_empty() && self.0.bytes().all(|b| b == b'*')
    }
}

impl From<&str> for Pattern {
    fn from(s: &str) -> Self {
        Pattern(s.to_owned())
    }
}

/// Greedy segment matching: anchored first and last segments, each middle
/// segment at its leftmost position. Leftmost is always safe for `*`-only
/// globs, so this is linear-ish with no backtracking.
fn glob_match(pattern: &str, s: &str) -> bool {
    let mut segments = pattern.split('*');
    let first = segments.next().unwrap_or("");
    let Some(rest) = s.strip_prefix(first) else {
        return false;
    };
    let middle: Vec<&str> = segments.collect();
    let Some((last, middle)) = middle.split_last() else {
        // No '*' at all: exact match.
        return rest.is_empty();
    };
    let Some(mut rest) = rest.strip_suffix(last) else {
        return false;
    };
    // Byte offsets stay on char boundaries: UTF-8 literals can only be found
    // at char boundaries of UTF-8 text.
    for seg in middle {
        match rest.find(seg) {
            Some(at) => rest = &rest[at + seg.len()..],
            None => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::glob_match;

    #[test]
    fn suffix_anchor_does_not_overlap_prefix() {
        // "ab*ba" must not accept "aba": prefix and suffix share the middle 'b'.
        assert!(!glob_match("ab*ba", "aba"));
        assert!(glob_match("ab*ba", "abba"));
    }
}
