//! Signed checkpoints of each chain's head.
//!
//! A hash chain alone does not stop someone with write access from rewriting the
//! whole chain (or cutting its tail off). So the daemon periodically signs its chain
//! head (position and hash) with an Ed25519 key kept outside the database and appends
//! it to a file an operator can ship elsewhere; `evhost audit verify --checkpoint FILE`
//! then checks that the database still holds exactly those heads.

use std::io::Write;
use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};

use super::db;
use super::verify::{Break, Report};
use crate::store::Store;

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("checkpoint key {path}: {message}")]
    Key { path: PathBuf, message: String },
    #[error("checkpoint file {path}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("checkpoint file {path}, line {line}: {message}")]
    Malformed {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("database error")]
    Db(#[from] sqlx::Error),
}

/// One line of the checkpoint file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Checkpoint {
    pub chain: String,
    /// The chain's length (position of its head row).
    pub chain_seq: i64,
    /// Hex hash of the head row.
    pub hash: String,
    /// When it was signed, RFC 3339.
    pub time: String,
    /// Hex Ed25519 public key.
    pub public_key: String,
    /// Base64 Ed25519 signature of [`Checkpoint::message`].
    pub signature: String,
}

impl Checkpoint {
    fn message(chain: &str, chain_seq: i64, hash: &str, time: &str) -> Vec<u8> {
        format!("evhost-audit-checkpoint-v1\n{chain}\n{chain_seq}\n{hash}\n{time}").into_bytes()
    }

    pub fn sign(key: &SigningKey, chain: &str, chain_seq: i64, hash: &str) -> Checkpoint {
        let time = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
        let signature = key.sign(&Self::message(chain, chain_seq, hash, &time));
        Checkpoint {
            chain: chain.into(),
            chain_seq,
            hash: hash.into(),
            time,
            public_key: hex::encode(key.verifying_key().as_bytes()),
            signature: BASE64.encode(signature.to_bytes()),
        }
    }

    /// Checks the signature against the key in the line (and, if given, against the
    /// key the operator expects).
    pub fn check_signature(&self, expected_key: Option<&VerifyingKey>) -> Result<(), String> {
        let key_bytes: [u8; 32] = hex::decode(&self.public_key)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or("the public key is not 32 hex bytes")?;
        let key =
            VerifyingKey::from_bytes(&key_bytes).map_err(|e| format!("bad public key: {e}"))?;
        if let Some(expected) = expected_key
            && expected != &key
        {
            return Err("signed by a different key than expected".into());
        }
        let signature_bytes: [u8; 64] = BASE64
            .decode(&self.signature)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or("the signature is not 64 base64 bytes")?;
        key.verify(
            &Self::message(&self.chain, self.chain_seq, &self.hash, &self.time),
            &Signature::from_bytes(&signature_bytes),
        )
        .map_err(|_| "the signature does not match".to_string())
    }
}

/// Loads the signing key, creating it (mode 0600) on first use.
pub fn load_or_create_key(path: &Path) -> Result<SigningKey, CheckpointError> {
    let key_error = |message: String| CheckpointError::Key {
        path: path.to_path_buf(),
        message,
    };
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let seed: [u8; 32] = hex::decode(text.trim())
                .ok()
                .and_then(|b| b.try_into().ok())
                .ok_or_else(|| key_error("does not hold 32 hex-encoded bytes".into()))?;
            Ok(SigningKey::from_bytes(&seed))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut seed = [0u8; 32];
            getrandom::fill(&mut seed).map_err(|e| key_error(format!("no randomness: {e}")))?;
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).map_err(|e| key_error(e.to_string()))?;
            }
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create_new(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
            let mut file = options.open(path).map_err(|e| key_error(e.to_string()))?;
            file.write_all(hex::encode(seed).as_bytes())
                .and_then(|()| file.sync_all())
                .map_err(|e| key_error(e.to_string()))?;
            tracing::info!(path = %path.display(), "created the audit checkpoint key; keep a copy of its public half elsewhere");
            Ok(SigningKey::from_bytes(&seed))
        }
        Err(e) => Err(key_error(e.to_string())),
    }
}

/// Appends one checkpoint line and syncs it to disk.
pub fn append(path: &Path, checkpoint: &Checkpoint) -> Result<(), CheckpointError> {
    let io = |source| CheckpointError::Io {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    // Several writers of one daemon sign into the same file; one line at a time.
    static APPENDING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one_at_a_time = APPENDING
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(io)?;
    let mut line = serde_json::to_string(checkpoint).expect("checkpoints serialize");
    line.push('\n');
    file.write_all(line.as_bytes())
        .and_then(|()| file.sync_data())
        .map_err(io)
}

/// Reads a checkpoint file and keeps the latest checkpoint of each chain.
pub fn read_latest(path: &Path) -> Result<Vec<Checkpoint>, CheckpointError> {
    let text = std::fs::read_to_string(path).map_err(|source| CheckpointError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let mut latest: std::collections::BTreeMap<String, Checkpoint> = Default::default();
    for (i, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let cp: Checkpoint =
            serde_json::from_str(line).map_err(|e| CheckpointError::Malformed {
                path: path.to_path_buf(),
                line: i + 1,
                message: e.to_string(),
            })?;
        match latest.get(&cp.chain) {
            Some(seen) if seen.chain_seq > cp.chain_seq => {}
            _ => {
                latest.insert(cp.chain.clone(), cp);
            }
        }
    }
    Ok(latest.into_values().collect())
}

/// Checks each chain's latest checkpoint against the database; amends `report` with
/// the first mismatch.
pub async fn verify_against(
    store: &Store,
    checkpoints: &[Checkpoint],
    expected_key: Option<&VerifyingKey>,
    report: &mut Report,
) -> Result<(), CheckpointError> {
    for cp in checkpoints {
        let fail = |reason: String| Break {
            chain: cp.chain.clone(),
            chain_seq: cp.chain_seq,
            seq: None,
            event_id: None,
            reason,
        };
        if let Err(why) = cp.check_signature(expected_key) {
            report.ok = false;
            report.broken = Some(fail(format!("checkpoint is not trustworthy: {why}")));
            return Ok(());
        }
        let found = match db::row_at(store, &cp.chain, cp.chain_seq).await? {
            Some(row) => Some(row.hash),
            None => match db::anchor(store, &cp.chain).await? {
                Some((seq, hash)) if seq == cp.chain_seq => Some(hash),
                // Retention purged past the checkpoint: what remains was verified from
                // the anchor, and the checkpoint has nothing left to pin.
                Some((seq, _)) if seq > cp.chain_seq => continue,
                _ => None,
            },
        };
        match found {
            Some(hash) if hash == cp.hash => {}
            Some(_) => {
                report.ok = false;
                report.broken = Some(fail(
                    "the row at the checkpoint has a different hash than was signed (the chain was rewritten)".into(),
                ));
                return Ok(());
            }
            None => {
                report.ok = false;
                report.broken = Some(fail(
                    "the row at the checkpoint is gone (the chain was cut short)".into(),
                ));
                return Ok(());
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_verify_and_tampering_shows() {
        let dir = tempfile::tempdir().unwrap();
        let key = load_or_create_key(&dir.path().join("k")).unwrap();
        let again = load_or_create_key(&dir.path().join("k")).unwrap();
        assert_eq!(key.to_bytes(), again.to_bytes());
        let cp = Checkpoint::sign(&key, "c1", 10, "ab");
        cp.check_signature(Some(&key.verifying_key())).unwrap();
        let mut forged = cp.clone();
        forged.chain_seq = 9;
        assert!(forged.check_signature(None).is_err());
        let other = SigningKey::from_bytes(&[7; 32]);
        assert!(cp.check_signature(Some(&other.verifying_key())).is_err());

        let file = dir.path().join("cp.jsonl");
        append(&file, &cp).unwrap();
        append(&file, &Checkpoint::sign(&key, "c1", 12, "cd")).unwrap();
        append(&file, &Checkpoint::sign(&key, "c2", 3, "ef")).unwrap();
        let latest = read_latest(&file).unwrap();
        assert_eq!(latest.len(), 2);
        assert_eq!(latest[0].chain_seq, 12);
    }
}
