//! The compiled-plugin cache: native code that wasmtime compiled, kept between
//! starts so a restart does not recompile every plugin.
//!
//! Loading native code runs whatever it says, so an entry must prove that this
//! daemon wrote it: each file ends with an HMAC-SHA256 tag over its name and its
//! code, keyed by a secret kept beside the daemon's data (`<data_dir>/plugin-cache.key`,
//! made on first use, mode 0600). An entry whose tag does not match, whether it was
//! tampered with, truncated or written with another key, is removed and the plugin
//! compiled afresh. The cache folder may live elsewhere (`plugins.cache_dir`); the
//! key never does.

use std::io;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

const TAG: usize = 32;

/// Compiled plugins kept in the cache: the most recently used ones; older entries
/// (earlier versions, other engine builds) are removed when a new one is written.
pub const CACHE_ENTRIES: usize = 32;

/// The cache folder and the key that signs its entries.
pub struct Cache {
    dir: PathBuf,
    key: crate::keyfile::Key,
}

/// What the cache holds for a name.
pub enum Lookup {
    Missing,
    /// Code this daemon wrote.
    Found(Vec<u8>),
    /// An entry whose tag does not match; it has been removed.
    Refused,
}

impl Cache {
    /// The cache in `dir`, signed with the key in `key_path` (made when missing or
    /// unreadable: the only cost of a new key is one recompilation of each plugin).
    pub fn open(dir: PathBuf, key_path: &Path) -> io::Result<Cache> {
        let key = match crate::keyfile::read_or_create(key_path) {
            Ok(key) => key,
            Err(_) => {
                let key = crate::keyfile::random();
                crate::keyfile::write(key_path, &key)?;
                key
            }
        };
        Ok(Cache { dir, key })
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.cwasm"))
    }

    fn tag(&self, name: &str, code: &[u8]) -> HmacSha256 {
        let mut mac = HmacSha256::new_from_slice(&self.key).expect("HMAC takes keys of any length");
        mac.update(b"evhost plugin cache v1\0");
        mac.update(name.as_bytes());
        mac.update(b"\0");
        mac.update(code);
        mac
    }

    /// The code stored under `name`, if its tag proves this daemon wrote it.
    pub fn load(&self, name: &str) -> Lookup {
        let path = self.path(name);
        let Ok(mut bytes) = std::fs::read(&path) else {
            return Lookup::Missing;
        };
        let verified = bytes.len() > TAG && {
            let (code, tag) = bytes.split_at(bytes.len() - TAG);
            self.tag(name, code).verify_slice(tag).is_ok()
        };
        if !verified {
            let _ = std::fs::remove_file(&path);
            return Lookup::Refused;
        }
        bytes.truncate(bytes.len() - TAG);
        touch(&path);
        Lookup::Found(bytes)
    }

    /// Writes `code` under `name` with its tag, atomically; a failure only costs a
    /// recompilation at the next start, so it is logged, not returned.
    pub fn store(&self, name: &str, code: &[u8]) {
        let path = self.path(name);
        let write = || -> io::Result<()> {
            std::fs::create_dir_all(&self.dir)?;
            let mut tmp = tempfile::NamedTempFile::new_in(&self.dir)?;
            io::Write::write_all(&mut tmp, code)?;
            io::Write::write_all(&mut tmp, &self.tag(name, code).finalize().into_bytes())?;
            tmp.persist(&path)?;
            Ok(())
        };
        if let Err(error) = write() {
            tracing::warn!(path = %path.display(), %error, "could not cache a compiled plugin");
        }
        match prune_cache(&self.dir, CACHE_ENTRIES) {
            Ok(0) => {}
            Ok(n) => tracing::debug!(removed = n, "pruned the compiled-plugin cache"),
            Err(error) => {
                tracing::warn!(dir = %self.dir.display(), %error, "could not prune the compiled-plugin cache")
            }
        }
    }
}

/// Removes all but the `keep` most recently used `.cwasm` files of `dir`; returns
/// how many went.
pub fn prune_cache(dir: &Path, keep: usize) -> io::Result<usize> {
    let mut entries: Vec<(SystemTime, PathBuf)> = std::fs::read_dir(dir)?
        .filter_map(|entry| entry.ok())
        .map(|entry| entry.path())
        .filter(|path| path.extension().is_some_and(|e| e == "cwasm"))
        .filter_map(|path| Some((std::fs::metadata(&path).ok()?.modified().ok()?, path)))
        .collect();
    entries.sort_by_key(|entry| std::cmp::Reverse(entry.0));
    let mut removed = 0;
    for (_, path) in entries.into_iter().skip(keep) {
        if std::fs::remove_file(&path).is_ok() {
            removed += 1;
        }
    }
    Ok(removed)
}

/// Marks a cache entry as just used, so pruning keeps it.
fn touch(path: &Path) {
    if let Ok(file) = std::fs::File::options().append(true).open(path) {
        let _ = file.set_modified(SystemTime::now());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_entries_this_key_signed_are_loaded() {
        let dir = tempfile::tempdir().unwrap();
        let key_path = dir.path().join("plugin-cache.key");
        let cache = Cache::open(dir.path().join("cache"), &key_path).unwrap();
        assert_eq!(
            std::fs::metadata(&key_path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert!(matches!(cache.load("a"), Lookup::Missing));
        cache.store("a", b"native code");
        assert!(matches!(cache.load("a"), Lookup::Found(code) if code == b"native code"));
        // The same key after a restart.
        let again = Cache::open(dir.path().join("cache"), &key_path).unwrap();
        assert!(matches!(again.load("a"), Lookup::Found(_)));
        // One flipped byte: refused and removed.
        let path = dir.path().join("cache/a.cwasm");
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[3] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        assert!(matches!(again.load("a"), Lookup::Refused));
        assert!(!path.exists());
        // An entry moved under another name is refused too.
        again.store("a", b"native code");
        std::fs::copy(&path, dir.path().join("cache/b.cwasm")).unwrap();
        assert!(matches!(again.load("b"), Lookup::Refused));
        // Another key (another daemon's folder) does not prove anything.
        let other = Cache::open(dir.path().join("cache"), &dir.path().join("other.key")).unwrap();
        assert!(matches!(other.load("a"), Lookup::Refused));
        // Too short to hold a tag.
        std::fs::write(dir.path().join("cache/c.cwasm"), b"x").unwrap();
        assert!(matches!(again.load("c"), Lookup::Refused));
    }

    use std::os::unix::fs::PermissionsExt;
}
