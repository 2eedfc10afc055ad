//! API keys, stored hashed in a JSON file beside the other state.
//!
//! Only the sha256 of a key is kept; the key itself is shown once, when made.
//! The file is part of the live-reloaded state, so a revoked key stops
//! working without a restart.

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;

use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// What can go wrong with the key store.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// Reading or writing the file failed.
    #[error("key store {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The file is not a key store.
    #[error("key store {path} is damaged: {source}")]
    Format {
        /// The file.
        path: String,
        /// The cause.
        source: serde_json::Error,
    },
    /// No key has that id.
    #[error("no key with id '{0}'")]
    UnknownId(String),
    /// The key text is already stored.
    #[error("that key is already stored (id {0})")]
    Duplicate(String),
    /// A supplied key is too short to be safe.
    #[error("a key must be at least 16 characters")]
    TooShort,
}

/// One stored key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRecord {
    /// Stable id, used to revoke.
    pub id: String,
    /// The account it bills.
    pub account: String,
    /// A label for humans.
    pub name: String,
    /// The first characters of the key, to recognise it.
    pub prefix: String,
    /// sha256 of the key, hex.
    pub sha256: String,
    /// When it was made (unix ms).
    pub created_at_ms: u64,
    /// When it was revoked (unix ms), if it was.
    #[serde(default)]
    pub revoked_at_ms: Option<u64>,
}

/// Every key, as stored.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyStore {
    /// The keys, oldest first.
    pub keys: Vec<KeyRecord>,
}

/// Hex sha256 of a key as presented by a client.
pub fn hash_key(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

impl KeyStore {
    /// Reads the store; a missing file is an empty store.
    pub fn read(path: &Path) -> Result<Self, KeyError> {
        let shown = path.display().to_string();
        match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|source| KeyError::Format {
                path: shown,
                source,
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(source) => Err(KeyError::Io {
                path: shown,
                source,
            }),
        }
    }

    /// Writes the store atomically (temp file + rename), readable by the owner only.
    pub fn write(&self, path: &Path) -> Result<(), KeyError> {
        let io = |source| KeyError::Io {
            path: path.display().to_string(),
            source,
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let tmp = path.with_extension("json.tmp");
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
        let mut f = opts.open(&tmp).map_err(io)?;
        let json = serde_json::to_vec_pretty(self).map_err(|source| KeyError::Format {
            path: path.display().to_string(),
            source,
        })?;
        f.write_all(&json).and_then(|()| f.sync_all()).map_err(io)?;
        std::fs::rename(&tmp, path).map_err(io)
    }

    /// Adds a key for `account`, generating one unless `key` is given; returns (record, key).
    pub fn add(
        &mut self,
        account: &str,
        name: &str,
        key: Option<String>,
        now_ms: u64,
    ) -> Result<(KeyRecord, String), KeyError> {
        let key = match key {
            Some(k) if k.len() < 16 => return Err(KeyError::TooShort),
            Some(k) => k,
            None => {
                let mut bytes = [0u8; 24];
                rand::rng().fill_bytes(&mut bytes);
                format!("sk-tg-{}", hex::encode(bytes))
            }
        };
        let sha256 = hash_key(&key);
        if let Some(existing) = self.keys.iter().find(|k| k.sha256 == sha256) {
            return Err(KeyError::Duplicate(existing.id.clone()));
        }
        let mut id_bytes = [0u8; 6];
        rand::rng().fill_bytes(&mut id_bytes);
        let record = KeyRecord {
            id: format!("key_{}", hex::encode(id_bytes)),
            account: account.to_string(),
            name: name.to_string(),
            prefix: key.chars().take(10).collect(),
            sha256,
            created_at_ms: now_ms,
            revoked_at_ms: None,
        };
        self.keys.push(record.clone());
        Ok((record, key))
    }

    /// Marks a key revoked; revoking twice keeps the first time.
    pub fn revoke(&mut self, id: &str, now_ms: u64) -> Result<&KeyRecord, KeyError> {
        let record = self
            .keys
            .iter_mut()
            .find(|k| k.id == id)
            .ok_or_else(|| KeyError::UnknownId(id.to_string()))?;
        record.revoked_at_ms.get_or_insert(now_ms);
        Ok(record)
    }

    /// Live keys by hash, for lookups on the request path.
    pub fn index(&self) -> HashMap<String, KeyRecord> {
        self.keys
            .iter()
            .filter(|k| k.revoked_at_ms.is_none())
            .map(|k| (k.sha256.clone(), k.clone()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_lookup_revoke_round_trip_through_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.json");
        let mut store = KeyStore::read(&path).unwrap();
        let (rec, key) = store.add("acme", "ci", None, 1).unwrap();
        assert!(key.starts_with("sk-tg-") && key.len() == 54);
        assert!(
            !serde_json::to_string(&store).unwrap().contains(&key),
            "the key itself is never stored"
        );
        store.write(&path).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(
                std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
                0o600
            );
        }
        let mut back = KeyStore::read(&path).unwrap();
        assert_eq!(back.index()[&hash_key(&key)].account, "acme");
        back.revoke(&rec.id, 2).unwrap();
        back.revoke(&rec.id, 3).unwrap();
        assert_eq!(back.keys[0].revoked_at_ms, Some(2));
        assert!(back.index().is_empty());
        assert!(matches!(
            back.revoke("key_nope", 4),
            Err(KeyError::UnknownId(_))
        ));
    }

    #[test]
    fn chosen_keys_must_be_long_and_unique() {
        let mut store = KeyStore::default();
        assert!(matches!(
            store.add("a", "n", Some("short".into()), 0),
            Err(KeyError::TooShort)
        ));
        store
            .add("a", "n", Some("sk-demo-0123456789".into()), 0)
            .unwrap();
        assert!(matches!(
            store.add("b", "n", Some("sk-demo-0123456789".into()), 0),
            Err(KeyError::Duplicate(_))
        ));
    }

    #[test]
    fn damaged_file_is_an_error_not_an_empty_store() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.json");
        std::fs::write(&path, b"{not json").unwrap();
        assert!(matches!(
            KeyStore::read(&path),
            Err(KeyError::Format { .. })
        ));
    }
}
