//! 32-byte secrets kept in files beside the daemon's data (the plugin cache's MAC
//! key, the webhook secrets' key): base64 text, mode 0600, written atomically.

use std::io;
use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

pub type Key = [u8; 32];

/// A new random key.
pub fn random() -> Key {
    let mut key = [0u8; 32];
    getrandom::fill(&mut key).expect("the system's random source works");
    key
}

/// The key in `path`.
pub fn read(path: &Path) -> io::Result<Key> {
    let text = std::fs::read_to_string(path)?;
    let bytes = STANDARD
        .decode(text.trim())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("not base64: {e}")))?;
    bytes.try_into().map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            "not a 32-byte key (base64 of 32 bytes)",
        )
    })
}

/// The key in `path`, or a new one written there when there is none. Daemons
/// starting together on one shared file: the first key written wins, and the
/// others read it.
pub fn read_or_create(path: &Path) -> io::Result<Key> {
    if !path.exists() {
        match synced(path, &random())?.persist_noclobber(path) {
            Ok(_) => {}
            Err(e) if e.error.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e.error),
        }
    }
    read(path)
}

/// Writes `key` to `path`, replacing what is there atomically.
pub fn write(path: &Path, key: &Key) -> io::Result<()> {
    synced(path, key)?.persist(path)?;
    Ok(())
}

/// A temporary file beside `path` holding `key` (mode 0600, as NamedTempFile
/// creates it), synced.
fn synced(path: &Path, key: &Key) -> io::Result<tempfile::NamedTempFile> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    io::Write::write_all(&mut tmp, format!("{}\n", STANDARD.encode(key)).as_bytes())?;
    tmp.as_file().sync_all()?;
    Ok(tmp)
}
