//! The operator's configuration: `config.yaml` plus `policies/*.yaml`.
//!
//! Loading is all-or-nothing: a [`Loaded`] exists only when every file parsed
//! and every cross-reference checked out, so a reload can never serve a
//! half-valid state. Problems come back as [`Diagnostic`]s naming file and line.

mod chain;
mod diagnostics;
mod model;
mod validate;

pub use chain::ChainConfig;
pub use diagnostics::Diagnostic;
pub use model::{AccountConfig, Config, NodeConfig, NodeKind, SharedConfig};

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use tollgate_policies::{Alias, PathSegment, Policy, PolicySet};

use diagnostics::{locate, Located};

/// A configuration that parsed and validated, with where each part came from.
#[derive(Clone, Debug)]
pub struct Loaded {
    /// The config file itself.
    pub config: Config,
    /// Inline policies followed by those of `policies_dir`, in file-name order.
    pub policies: PolicySet,
    /// The config file's path.
    pub path: PathBuf,
    /// Every file the state was built from (what the reloader watches).
    pub files: Vec<PathBuf>,
}

impl Loaded {
    /// Resolves a path from the config against the config file's directory.
    pub fn resolve(&self, p: &Path) -> PathBuf {
        resolve(&self.path, p)
    }
}

fn resolve(config_path: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        config_path.parent().unwrap_or(Path::new(".")).join(p)
    }
}

/// One source file and the policies and aliases it contributed.
struct PolicySource {
    file: PathBuf,
    text: String,
    /// Where this file's entries sit in the combined lists: (offset, count)
    /// for `policies` and for `aliases`.
    policies: (usize, usize),
    aliases: (usize, usize),
}

impl PolicySource {
    /// This file's span of the combined list under `key`.
    fn span(&self, key: &str) -> (usize, usize) {
        if key == "aliases" {
            self.aliases
        } else {
            self.policies
        }
    }
}

/// Reads and validates the config file and every policy file it names.
pub fn load(path: &Path) -> Result<Loaded, Vec<Diagnostic>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| vec![Diagnostic::file(path, format!("cannot read: {e}"))])?;
    let config: Config =
        serde_yaml::from_str(&text).map_err(|e| vec![Diagnostic::yaml(path, &e)])?;

    let mut sources = vec![PolicySource {
        file: path.to_path_buf(),
        text: text.clone(),
        policies: (0, config.policies.len()),
        aliases: (0, config.aliases.len()),
    }];
    let mut policies: Vec<Policy> = config.policies.clone();
    let mut aliases: Vec<Alias> = config.aliases.clone();
    let mut files = vec![path.to_path_buf()];
    let mut errors = Vec::new();

    if let Some(dir) = &config.policies_dir {
        let dir = resolve(path, dir);
        match policy_files(&dir) {
            Ok(list) => {
                for file in list {
                    match read_policy_file(&file) {
                        Ok((text, set)) => {
                            sources.push(PolicySource {
                                file: file.clone(),
                                text,
                                policies: (policies.len(), set.policies.len()),
                                aliases: (aliases.len(), set.aliases.len()),
                            });
                            policies.extend(set.policies);
                            aliases.extend(set.aliases);
                        }
                        Err(d) => errors.push(d),
                    }
                    files.push(file);
                }
            }
            Err(e) => errors.push(Diagnostic::file(
                &dir,
                format!("cannot read policies directory: {e}"),
            )),
        }
    }

    let policies = PolicySet { policies, aliases };
    let node_ids: Vec<&str> = config.nodes.iter().map(|n| n.id.as_str()).collect();
    for err in policies.validate(&node_ids) {
        errors.push(place_policy_error(&sources, &err.path, &err.message));
    }
    for err in config.validate() {
        let line = locate(&text, &err.path);
        errors.push(Diagnostic {
            file: path.to_path_buf(),
            line,
            message: err.to_string(),
        });
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(Loaded {
        config,
        policies,
        path: path.to_path_buf(),
        files,
    })
}

fn policy_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")))
        .collect();
    files.sort();
    Ok(files)
}

fn read_policy_file(file: &Path) -> Result<(String, PolicySet), Diagnostic> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| Diagnostic::file(file, format!("cannot read: {e}")))?;
    if text.trim().is_empty() {
        return Ok((text, PolicySet::default()));
    }
    let set: PolicySet = serde_yaml::from_str(&text).map_err(|e| Diagnostic::yaml(file, &e))?;
    Ok((text, set))
}

/// Maps an error on the combined policy list back to the file and line it came from.
fn place_policy_error(sources: &[PolicySource], path: &[PathSegment], message: &str) -> Diagnostic {
    let (key, index) = match path {
        [PathSegment::Key(k), PathSegment::Index(i), ..] if k == "policies" || k == "aliases" => {
            (k.as_str(), Some(*i))
        }
        _ => ("policies", None),
    };
    let source = index
        .and_then(|i| {
            sources.iter().find(|s| {
                let (offset, count) = s.span(key);
                i >= offset && i < offset + count
            })
        })
        .unwrap_or(&sources[0]);
    let mut local: Vec<Located> = vec![Located::Key(key.to_string())];
    if let Some(i) = index {
        local.push(Located::Index(i - source.span(key).0));
    }
    local.extend(path.iter().skip(2).map(|seg| match seg {
        PathSegment::Key(k) => Located::Key(k.clone()),
        PathSegment::Index(i) => Located::Index(*i),
    }));
    let shown = diagnostics::display_path(&local);
    Diagnostic {
        file: source.file.clone(),
        line: locate(&source.text, &local),
        message: format!("{shown}: {message}"),
    }
}

/// Node ids that appear more than once.
pub(crate) fn duplicates<'a>(ids: impl Iterator<Item = &'a str>) -> Vec<&'a str> {
    let mut seen = HashSet::new();
    ids.filter(|id| !seen.insert(*id)).collect()
}
