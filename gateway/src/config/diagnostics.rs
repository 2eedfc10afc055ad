//! Config problems located by file and line.

use std::fmt;
use std::path::{Path, PathBuf};

/// One problem in one file, as `check-config` prints it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Diagnostic {
    /// The file at fault.
    pub file: PathBuf,
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// What is wrong.
    pub message: String,
}

impl Diagnostic {
    /// A problem with the file as a whole.
    pub fn file(file: &Path, message: String) -> Self {
        Self {
            file: file.to_path_buf(),
            line: None,
            message,
        }
    }

    /// A parse or type error, located by the YAML parser.
    pub fn yaml(file: &Path, e: &serde_yaml::Error) -> Self {
        let line = e.location().map(|l| l.line());
        // serde_yaml appends "at line X column Y"; the line is printed separately.
        let text = e.to_string();
        let message = match text.find(" at line ") {
            Some(i) => text[..i].to_string(),
            None => text,
        };
        Self {
            file: file.to_path_buf(),
            line,
            message,
        }
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{}: {}", self.file.display(), line, self.message),
            None => write!(f, "{}: {}", self.file.display(), self.message),
        }
    }
}

/// A step into a YAML document.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Located {
    /// A mapping key.
    Key(String),
    /// A sequence index.
    Index(usize),
}

/// `policies[1].fallback[0]` style text for a path.
pub fn display_path(path: &[Located]) -> String {
    let mut out = String::new();
    for seg in path {
        match seg {
            Located::Key(k) if out.is_empty() => out.push_str(k),
            Located::Key(k) => {
                out.push('.');
                out.push_str(k);
            }
            Located::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

/// The line of the deepest node along `path` that exists in `text`.
pub fn locate(text: &str, path: &[Located]) -> Option<usize> {
    use marked_yaml::Node;
    let root = marked_yaml::parse_yaml(0, text).ok()?;
    let mut node = &root;
    let mut line = node.span().start().map(|m| m.line());
    for seg in path {
        let next = match (node, seg) {
            (Node::Mapping(m), Located::Key(k)) => {
                // Prefer the key's own line: the value may start on the next one.
                if let Some((key, _)) = m.iter().find(|(key, _)| key.as_str() == k) {
                    line = key.span().start().map(|s| s.line()).or(line);
                }
                m.get_node(k)
            }
            (Node::Sequence(s), Located::Index(i)) => s.get_node(*i),
            _ => None,
        };
        match next {
            Some(n) => {
                node = n;
                if let Some(l) = n.span().start().map(|m| m.line()) {
                    if !matches!(seg, Located::Key(_))
                        || !matches!(n, Node::Mapping(_) | Node::Sequence(_))
                    {
                        line = Some(l);
                    }
                }
            }
            None => break,
        }
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = "listen: 127.0.0.1:8080\nnodes:\n  - id: a\n    url: http://x\n  - id: b\n    prices:\n      input_per_1m: \"-1\"\n";

    #[test]
    fn locates_keys_and_indexes() {
        let k = |s: &str| Located::Key(s.into());
        assert_eq!(locate(DOC, &[k("listen")]), Some(1));
        assert_eq!(locate(DOC, &[k("nodes"), Located::Index(1)]), Some(5));
        assert_eq!(
            locate(
                DOC,
                &[
                    k("nodes"),
                    Located::Index(1),
                    k("prices"),
                    k("input_per_1m")
                ]
            ),
            Some(7)
        );
        assert_eq!(
            locate(DOC, &[k("nodes"), Located::Index(0), k("url")]),
            Some(4)
        );
        // A missing tail falls back to the deepest node found.
        assert_eq!(
            locate(DOC, &[k("nodes"), Located::Index(0), k("nope")]),
            Some(3)
        );
    }

    #[test]
    fn path_display() {
        let p = [
            Located::Key("policies".into()),
            Located::Index(2),
            Located::Key("fallback".into()),
        ];
        assert_eq!(display_path(&p), "policies[2].fallback");
    }
}
