//! Webhook secrets at rest: sealed with a key kept outside the database, so a
//! backup or a copy of the database cannot forge signatures.
//!
//! The key is 32 random bytes in `webhooks.secret_key_file` (default
//! `<data_dir>/webhook-secrets.key`, base64, made on first start with mode 0600).
//! A secret is stored as `evhost:v1:<key id>:<base64(nonce ‖ ciphertext)>`,
//! XChaCha20-Poly1305 with a random nonce; the endpoint id and the column are the
//! associated data, so a sealed value copied to another row or column does not open.
//!
//! Rotation (`evhost webhooks rotate-key`) writes the new key beside the old one
//! (`<file>.next`), re-seals every row in one transaction, then moves the new key in
//! and keeps the old one as `<file>.previous`. A daemon meeting a key id it does not
//! know reads those files again, so rotating under running daemons works, and each
//! start re-seals any row not under the current key.

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::RwLock;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use sha2::{Digest, Sha256};

use crate::keyfile;

const PREFIX: &str = "evhost:v1:";
const NONCE: usize = 24;

#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error("webhook secret key file {path}")]
    KeyFile {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "a webhook secret is sealed with key {key_id}, which is not in {path} (nor its .next or .previous): give every daemon sharing the database the same webhooks.secret_key_file"
    )]
    UnknownKey { key_id: String, path: PathBuf },
    #[error("a sealed webhook secret does not open with key {key_id} (changed in the database?)")]
    Corrupt { key_id: String },
}

/// One key and its id (the first 8 bytes of its SHA-256, hex).
#[derive(Clone)]
struct Key {
    id: String,
    cipher: XChaCha20Poly1305,
}

impl Key {
    fn new(bytes: &[u8; 32]) -> Key {
        Key {
            id: hex::encode(&Sha256::digest(bytes)[..8]),
            cipher: XChaCha20Poly1305::new(bytes.into()),
        }
    }
}

/// Seals and opens webhook secrets.
pub struct Sealer {
    path: PathBuf,
    /// The key new values are sealed with.
    current: RwLock<Key>,
    /// Every key found beside it (current, `.next`, `.previous`), by id.
    ring: RwLock<HashMap<String, Key>>,
}

impl Sealer {
    /// Opens the key file, making it (mode 0600) when it does not exist.
    pub fn open(path: &Path) -> Result<Sealer, SealError> {
        let key_file = |source| SealError::KeyFile {
            path: path.to_path_buf(),
            source,
        };
        keyfile::read_or_create(path).map_err(key_file)?;
        let (current, ring) = read_ring(path).map_err(key_file)?;
        Ok(Sealer {
            path: path.to_path_buf(),
            current: RwLock::new(current),
            ring: RwLock::new(ring),
        })
    }

    pub fn key_id(&self) -> String {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .id
            .clone()
    }

    /// `secret` sealed for column `column` of endpoint `endpoint`.
    pub fn seal(&self, endpoint: &str, column: &str, secret: &str) -> String {
        let key = self
            .current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        seal_with(&key, endpoint, column, secret)
    }

    /// Whether `stored` is sealed under the current key (else the next start, or a
    /// rotation, re-seals it).
    pub fn is_current(&self, stored: &str) -> bool {
        key_id_of(stored).is_some_and(|id| id == self.key_id())
    }

    /// The secret in `stored`. A value that is not sealed (written before secrets
    /// were sealed) is returned as it is; [`Sealer::reseal`] seals it at start.
    pub fn open_value(
        &self,
        endpoint: &str,
        column: &str,
        stored: &str,
    ) -> Result<String, SealError> {
        let Some(id) = key_id_of(stored) else {
            return Ok(stored.to_string());
        };
        let key = match self.key(id) {
            Some(key) => key,
            None => {
                // Rotated by another process: read the key files again.
                if let Ok((current, ring)) = read_ring(&self.path) {
                    *self.current.write().unwrap_or_else(|e| e.into_inner()) = current;
                    *self.ring.write().unwrap_or_else(|e| e.into_inner()) = ring;
                }
                self.key(id).ok_or_else(|| SealError::UnknownKey {
                    key_id: id.to_string(),
                    path: self.path.clone(),
                })?
            }
        };
        open_with(&key, endpoint, column, stored)
    }

    fn key(&self, id: &str) -> Option<Key> {
        self.ring
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .cloned()
    }
}

fn key_id_of(stored: &str) -> Option<&str> {
    stored.strip_prefix(PREFIX)?.split(':').next()
}

fn aad(endpoint: &str, column: &str) -> Vec<u8> {
    format!("webhook_endpoints/{endpoint}/{column}").into_bytes()
}

fn seal_with(key: &Key, endpoint: &str, column: &str, secret: &str) -> String {
    let mut nonce = [0u8; NONCE];
    getrandom::fill(&mut nonce).expect("the system's random source works");
    let sealed = key
        .cipher
        .encrypt(
            XNonce::from_slice(&nonce),
            Payload {
                msg: secret.as_bytes(),
                aad: &aad(endpoint, column),
            },
        )
        .expect("sealing a short secret does not fail");
    let mut blob = nonce.to_vec();
    blob.extend_from_slice(&sealed);
    format!("{PREFIX}{}:{}", key.id, STANDARD.encode(blob))
}

fn open_with(key: &Key, endpoint: &str, column: &str, stored: &str) -> Result<String, SealError> {
    let corrupt = || SealError::Corrupt {
        key_id: key.id.clone(),
    };
    let blob = stored
        .strip_prefix(PREFIX)
        .and_then(|rest| rest.split_once(':'))
        .and_then(|(_, b64)| STANDARD.decode(b64).ok())
        .filter(|blob| blob.len() > NONCE)
        .ok_or_else(corrupt)?;
    let (nonce, sealed) = blob.split_at(NONCE);
    let plain = key
        .cipher
        .decrypt(
            XNonce::from_slice(nonce),
            Payload {
                msg: sealed,
                aad: &aad(endpoint, column),
            },
        )
        .map_err(|_| corrupt())?;
    String::from_utf8(plain).map_err(|_| corrupt())
}

/// `path.<suffix>`.
pub fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".");
    name.push(suffix);
    PathBuf::from(name)
}

/// The key in `path` and the ring of it, `.next` and `.previous`.
fn read_ring(path: &Path) -> io::Result<(Key, HashMap<String, Key>)> {
    let current = Key::new(&keyfile::read(path)?);
    let mut ring = HashMap::from([(current.id.clone(), current.clone())]);
    for suffix in ["next", "previous"] {
        if let Ok(bytes) = keyfile::read(&sibling(path, suffix)) {
            let key = Key::new(&bytes);
            ring.insert(key.id.clone(), key);
        }
    }
    Ok((current, ring))
}

/// What a key rotation did.
pub struct Rotation {
    pub old_key: String,
    pub new_key: String,
    pub endpoints: usize,
}

/// Rotates the key in `path`: a new key is written to `<path>.next`, every
/// endpoint's secrets are re-sealed under it in one transaction, the old key is
/// kept as `<path>.previous` and the new one takes its place. If it stops half-way,
/// the database holds either key's seals and both files are read at the next start.
pub async fn rotate(
    store: &crate::store::Store,
    path: &Path,
) -> Result<Rotation, super::WebhookError> {
    let key_file = |source| SealError::KeyFile {
        path: path.to_path_buf(),
        source,
    };
    let sealer = Sealer::open(path)?;
    let old = keyfile::read(path).map_err(key_file)?;
    let new = keyfile::random();
    let next = sibling(path, "next");
    keyfile::write(&next, &new).map_err(key_file)?;
    let endpoints = super::db::reseal_under(store, &sealer, &new).await?;
    keyfile::write(&sibling(path, "previous"), &old).map_err(key_file)?;
    std::fs::rename(&next, path).map_err(key_file)?;
    Ok(Rotation {
        old_key: sealer.key_id(),
        new_key: Key::new(&new).id,
        endpoints,
    })
}

/// Seals `secret` with a fresh key object made from `bytes` (used by rotation).
pub fn seal_with_key(bytes: &[u8; 32], endpoint: &str, column: &str, secret: &str) -> String {
    seal_with(&Key::new(bytes), endpoint, column, secret)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn secrets_round_trip_only_in_their_row_and_column_and_with_their_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("webhook-secrets.key");
        let sealer = Sealer::open(&path).unwrap();
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let sealed = sealer.seal("ep_1", "secret", "whsec_abc");
        assert!(sealed.starts_with("evhost:v1:") && !sealed.contains("whsec_abc"));
        assert!(sealer.is_current(&sealed));
        assert_ne!(
            sealed,
            sealer.seal("ep_1", "secret", "whsec_abc"),
            "a fresh nonce each time"
        );
        assert_eq!(
            sealer.open_value("ep_1", "secret", &sealed).unwrap(),
            "whsec_abc"
        );
        // Another row or column: refused.
        assert!(matches!(
            sealer.open_value("ep_2", "secret", &sealed),
            Err(SealError::Corrupt { .. })
        ));
        assert!(
            sealer
                .open_value("ep_1", "previous_secret", &sealed)
                .is_err()
        );
        // A plain value (from before sealing) reads as it is.
        assert_eq!(
            sealer.open_value("ep_1", "secret", "whsec_old").unwrap(),
            "whsec_old"
        );
        assert!(!sealer.is_current("whsec_old"));
        // The same file opens it after a restart; another key does not know it.
        assert_eq!(
            Sealer::open(&path)
                .unwrap()
                .open_value("ep_1", "secret", &sealed)
                .unwrap(),
            "whsec_abc"
        );
        let other = Sealer::open(&dir.path().join("other.key")).unwrap();
        assert!(matches!(
            other.open_value("ep_1", "secret", &sealed),
            Err(SealError::UnknownKey { .. })
        ));
        // A key rotated in by another process is found by reading the files again.
        let next = keyfile::random();
        let under_next = seal_with_key(&next, "ep_1", "secret", "whsec_new");
        keyfile::write(&sibling(&path, "next"), &next).unwrap();
        assert_eq!(
            sealer.open_value("ep_1", "secret", &under_next).unwrap(),
            "whsec_new"
        );
    }
}
