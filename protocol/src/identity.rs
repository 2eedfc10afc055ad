//! A node's secp256k1 identity, kept in a key file readable by its owner only.

use std::io::Write;
use std::path::Path;

use alloy_primitives::{Address, B256};
use alloy_signer::SignerSync;
use alloy_signer_local::PrivateKeySigner;

use crate::{hash, Attestation};

/// Why the identity could not be loaded or created.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// The key file could not be read or written.
    #[error("key file {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The key file does not hold a secp256k1 private key.
    #[error("key file {0} does not hold a valid private key")]
    BadKey(String),
}

/// A node's signing key.
pub struct Identity {
    signer: PrivateKeySigner,
}

impl Identity {
    /// A fresh random identity (tests, or a first start).
    pub fn random() -> Self {
        Self {
            signer: PrivateKeySigner::random(),
        }
    }

    /// Loads the key at `path`, creating it (mode 0600) on first start.
    pub fn load_or_create(path: &Path) -> Result<Self, IdentityError> {
        let shown = path.display().to_string();
        let io = |source| IdentityError::Io {
            path: shown.clone(),
            source,
        };
        match std::fs::read_to_string(path) {
            Ok(text) => {
                let signer: PrivateKeySigner = text
                    .trim()
                    .parse()
                    .map_err(|_| IdentityError::BadKey(shown.clone()))?;
                Ok(Self { signer })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let id = Self::random();
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir).map_err(io)?;
                }
                let mut opts = std::fs::OpenOptions::new();
                opts.write(true).create_new(true);
                #[cfg(unix)]
                std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
                let mut f = opts.open(path).map_err(io)?;
                let key = format!("0x{}\n", hex::encode(id.signer.to_bytes()));
                f.write_all(key.as_bytes())
                    .and_then(|()| f.sync_all())
                    .map_err(io)?;
                Ok(id)
            }
            Err(e) => Err(io(e)),
        }
    }

    /// The node's address (what the gateway pins and the registry stores).
    pub fn address(&self) -> Address {
        self.signer.address()
    }

    /// Signs an answer: the request bytes as received, the hash of the output, the token counts.
    pub fn attest(
        &self,
        request: &[u8],
        output_hash: &B256,
        prompt_tokens: u64,
        completion_tokens: u64,
    ) -> Attestation {
        let request_hash = hash(request);
        let digest =
            Attestation::digest(&request_hash, output_hash, prompt_tokens, completion_tokens);
        // Signing with an in-memory secp256k1 key cannot fail.
        let signature = self
            .signer
            .sign_message_sync(digest.as_slice())
            .expect("in-memory secp256k1 signing is infallible");
        Attestation {
            request_hash,
            output_hash: *output_hash,
            prompt_tokens,
            completion_tokens,
            signature,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_file_is_created_once_private_and_reloaded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys/node.key");
        let first = Identity::load_or_create(&path).unwrap();
        let again = Identity::load_or_create(&path).unwrap();
        assert_eq!(first.address(), again.address());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(
                std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
                0o600
            );
        }
        std::fs::write(&path, "not a key").unwrap();
        assert!(matches!(
            Identity::load_or_create(&path),
            Err(IdentityError::BadKey(_))
        ));
    }
}
