//! The node's secret for hashing credentials into access records ([`crate::metadata::Accessor`]).
//!
//! A record must say "these credentials" without holding them. A plain hash would let anyone who reads the
//! metadata database (a backup, a support bundle) test guessed passwords against it offline, quickly:
//! registry passwords are often short, and tokens are sometimes derived from guessable values. So the
//! credentials are hashed with HMAC-SHA256 under a random 256-bit key that lives in its own file
//! ([`KEY_FILE`], mode 0600, in the store root, which is 0700), never in the database: the database alone
//! is useless for guessing. Losing or replacing the key only makes every record unmatchable, so every
//! credential is verified again with the registry once: it fails safe.

use std::fmt;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use aws_lc_rs::hmac;

use crate::metadata::Accessor;
use crate::registry::auth::Credentials;

/// The key file's name in the store root.
pub const KEY_FILE: &str = "credentials.key";

const KEY_BYTES: usize = 32;

/// Why the key cannot be read or created.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// Reading, writing or syncing the key file failed.
    #[error("credential hashing key {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The system's random number generator failed.
    #[error("cannot generate a credential hashing key: the system random number generator failed")]
    Random,
}

/// The HMAC key. Its `Debug` shows nothing of it.
pub struct CredentialKey(hmac::Key);

impl fmt::Debug for CredentialKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CredentialKey(<redacted>)")
    }
}

impl CredentialKey {
    /// Reads the key from `root`/[`KEY_FILE`], creating it (random, 0600, durably) when absent. A file of
    /// the wrong size is replaced, with a warning: records hashed with it can no longer match.
    pub fn load_or_create(root: &Path) -> Result<CredentialKey, KeyError> {
        let path = root.join(KEY_FILE);
        let io = |source| KeyError::Io {
            path: path.clone(),
            source,
        };
        match std::fs::read(&path) {
            Ok(bytes) if bytes.len() == KEY_BYTES => return Ok(CredentialKey::from_bytes(&bytes)),
            Ok(bytes) => tracing::warn!(
                path = %path.display(),
                len = bytes.len(),
                "the credential hashing key is damaged: replacing it; every credential will be verified again"
            ),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(e)),
        }
        let mut bytes = [0u8; KEY_BYTES];
        aws_lc_rs::rand::fill(&mut bytes).map_err(|_| KeyError::Random)?;
        let tmp = root.join(format!("{KEY_FILE}.tmp"));
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io)?;
        file.write_all(&bytes).map_err(io)?;
        file.sync_all().map_err(io)?;
        std::fs::rename(&tmp, &path).map_err(io)?;
        std::fs::File::open(root).and_then(|d| d.sync_all()).map_err(io)?;
        tracing::info!(path = %path.display(), "created the key that hashes credentials in access records");
        Ok(CredentialKey::from_bytes(&bytes))
    }

    /// A key with these bytes (tests).
    pub fn from_bytes(bytes: &[u8]) -> CredentialKey {
        CredentialKey(hmac::Key::new(hmac::HMAC_SHA256, bytes))
    }

    /// Who a request is, for the access records: the keyed hash of its credentials, or the node when it
    /// has none.
    pub fn accessor(&self, creds: Option<&Credentials>) -> Accessor {
        let Some(creds) = creds else {
            return Accessor::Node;
        };
        // Each part is length-prefixed, so no two credentials hash the same material.
        let mut material = Vec::new();
        let mut part = |s: &str| {
            material.extend_from_slice(&(s.len() as u64).to_le_bytes());
            material.extend_from_slice(s.as_bytes());
        };
        match creds {
            Credentials::Basic { username, password } => {
                part("basic");
                part(username);
                part(password);
            }
            Credentials::IdentityToken(t) => {
                part("identity-token");
                part(t);
            }
            Credentials::RegistryToken(t) => {
                part("registry-token");
                part(t);
            }
        }
        Accessor::Keyed(hex::encode(hmac::sign(&self.0, &material).as_ref()))
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn basic(user: &str, password: &str) -> Credentials {
        Credentials::Basic {
            username: user.into(),
            password: password.into(),
        }
    }

    #[test]
    fn the_key_is_created_private_once_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let a = CredentialKey::load_or_create(dir.path()).unwrap();
        let path = dir.path().join(KEY_FILE);
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        let b = CredentialKey::load_or_create(dir.path()).unwrap();
        let c = basic("u", "p");
        assert_eq!(
            a.accessor(Some(&c)),
            b.accessor(Some(&c)),
            "the same key after a restart"
        );
        assert!(!dir.path().join(format!("{KEY_FILE}.tmp")).exists());
        assert_eq!(format!("{a:?}"), "CredentialKey(<redacted>)");

        std::fs::write(&path, b"short").unwrap();
        let d = CredentialKey::load_or_create(dir.path()).unwrap();
        assert_ne!(a.accessor(Some(&c)), d.accessor(Some(&c)), "a damaged key is replaced");
        assert_eq!(std::fs::read(&path).unwrap().len(), KEY_BYTES);
    }

    #[test]
    fn accessors_differ_by_credentials_and_key_and_never_hold_the_secret() {
        let k = CredentialKey::from_bytes(&[7; KEY_BYTES]);
        let other = CredentialKey::from_bytes(&[8; KEY_BYTES]);
        assert_eq!(k.accessor(None), Accessor::Node);
        let creds = [
            basic("alice", "s3cret"),
            basic("alice", "s3cret2"),
            basic("alices", "3cret"),
            Credentials::IdentityToken("s3cret".into()),
            Credentials::RegistryToken("s3cret".into()),
        ];
        let hashes: Vec<Accessor> = creds.iter().map(|c| k.accessor(Some(c))).collect();
        for (i, a) in hashes.iter().enumerate() {
            let Accessor::Keyed(h) = a else { panic!("{a:?}") };
            assert_eq!(h.len(), 64);
            assert!(!h.contains("s3cret") && !h.contains("alice"));
            assert!(hashes[i + 1..].iter().all(|b| b != a), "{i} collides");
            assert_ne!(other.accessor(Some(&creds[i])), *a, "another key, another hash");
        }
    }
}
