//! What a failed write means for the writer that tried it.
//!
//! A writer retries what can succeed later (a dropped connection, a busy or full
//! disk, a serialization failure), sets aside the one row that never can (a value
//! the database refuses), and stops the process when the disk itself failed: after
//! a failed fsync the kernel may have dropped the dirty pages, so a later "successful"
//! fsync proves nothing, and only a restart that reads what is really on disk is safe.

use super::WriteError;

/// How a writer treats a failed write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Try the same write again later: nothing is wrong with the rows.
    Retry,
    /// The disk (or the database server's) is full: retried, and reported as such.
    DiskFull,
    /// The database refuses these rows and always will (a constraint, a value it
    /// cannot store): retrying the same rows cannot succeed.
    Permanent,
    /// The disk failed under SQLite (a failed fsync or write, a corrupt file): fatal.
    Disk,
}

impl WriteError {
    /// How a writer treats this error.
    pub fn fault(&self) -> Fault {
        if self.is_duplicate() {
            // A key a concurrent writer took: placed again after a fresh read.
            return Fault::Retry;
        }
        match self {
            WriteError::Sqlite(e) => e
                .sqlite_error()
                .map_or(Fault::Retry, |e| sqlite_fault(e.extended_code)),
            WriteError::Pool(e) => sqlx_fault(e),
            WriteError::Task(_) => Fault::Retry,
        }
    }
}

/// [`WriteError::fault`] for an error from sqlx's pools.
pub fn sqlx_fault(error: &sqlx::Error) -> Fault {
    let sqlx::Error::Database(e) = error else {
        return Fault::Retry;
    };
    if e.is_unique_violation() {
        return Fault::Retry;
    }
    let Some(code) = e.code() else {
        return Fault::Retry;
    };
    if e.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some() {
        return code.parse().map_or(Fault::Retry, sqlite_fault);
    }
    postgres_fault(&code)
}

/// By SQLSTATE: data exceptions (22), integrity violations (23) and program limits
/// such as an index row too large (54) are about the rows; a full disk is 53100;
/// everything else (connections, serialization, a server shutting down, the admin)
/// may pass.
fn postgres_fault(sqlstate: &str) -> Fault {
    match sqlstate {
        "53100" => Fault::DiskFull,
        s if s.starts_with("22") || s.starts_with("23") || s.starts_with("54") => Fault::Permanent,
        _ => Fault::Retry,
    }
}

/// By SQLite's (extended) result code.
fn sqlite_fault(extended: i32) -> Fault {
    use rusqlite::ffi;
    match extended & 0xff {
        ffi::SQLITE_FULL => Fault::DiskFull,
        ffi::SQLITE_IOERR => match extended {
            ffi::SQLITE_IOERR_FSYNC
            | ffi::SQLITE_IOERR_DIR_FSYNC
            | ffi::SQLITE_IOERR_WRITE
            | ffi::SQLITE_IOERR_TRUNCATE => Fault::Disk,
            _ => Fault::Retry,
        },
        ffi::SQLITE_CORRUPT | ffi::SQLITE_NOTADB => Fault::Disk,
        ffi::SQLITE_CONSTRAINT | ffi::SQLITE_TOOBIG | ffi::SQLITE_MISMATCH | ffi::SQLITE_RANGE => {
            Fault::Permanent
        }
        _ => Fault::Retry,
    }
}

/// Ends the process after the disk failed under a writer. What is on disk is what
/// the next start recovers (and dispatches); nothing more is acknowledged, and no
/// checkpoint is signed over rows that may not be there. Exit code 74 (`EX_IOERR`).
pub fn disk_failed(error: &WriteError) -> ! {
    tracing::error!(
        error = %crate::error_chain(error),
        "the disk failed under a write (a failed fsync or write); stopping now, without \
         retrying: after a failed fsync a later one proves nothing, and the next start \
         recovers from what is on disk"
    );
    std::process::exit(74)
}

/// A failed fsync on demand, for the tests of what follows one: with
/// `EVHOST_TEST_FSYNC_ERROR_AFTER=N` in the environment, every durable SQLite write
/// after the first `N` fails as a failed fsync would (before it writes anything).
/// No device mapper or fault-injecting file system is needed to see the daemon's
/// answer to one.
pub(super) fn injected_fsync_error() -> Option<WriteError> {
    use std::sync::LazyLock;
    use std::sync::atomic::{AtomicU64, Ordering};
    static AFTER: LazyLock<Option<u64>> = LazyLock::new(|| {
        std::env::var("EVHOST_TEST_FSYNC_ERROR_AFTER")
            .ok()?
            .parse()
            .ok()
    });
    static WRITES: AtomicU64 = AtomicU64::new(0);
    let after = (*AFTER)?;
    if WRITES.fetch_add(1, Ordering::Relaxed) < after {
        return None;
    }
    Some(WriteError::Sqlite(rusqlite::Error::SqliteFailure(
        rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_IOERR_FSYNC),
        Some("fsync failed (injected by EVHOST_TEST_FSYNC_ERROR_AFTER)".into()),
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rusqlite::ffi;

    #[test]
    fn sqlite_codes_sort_into_faults() {
        assert_eq!(sqlite_fault(ffi::SQLITE_FULL), Fault::DiskFull);
        assert_eq!(sqlite_fault(ffi::SQLITE_IOERR_FSYNC), Fault::Disk);
        assert_eq!(
            sqlite_fault(ffi::SQLITE_CONSTRAINT_TRIGGER),
            Fault::Permanent
        );
        assert_eq!(sqlite_fault(ffi::SQLITE_CONSTRAINT_CHECK), Fault::Permanent);
        assert_eq!(sqlite_fault(ffi::SQLITE_BUSY), Fault::Retry);
        assert_eq!(sqlite_fault(ffi::SQLITE_IOERR_READ), Fault::Retry);
    }

    #[test]
    fn sqlstates_sort_into_faults() {
        assert_eq!(postgres_fault("22021"), Fault::Permanent, "a NUL in text");
        assert_eq!(
            postgres_fault("54000"),
            Fault::Permanent,
            "index row too large"
        );
        assert_eq!(postgres_fault("23514"), Fault::Permanent, "check violation");
        assert_eq!(postgres_fault("53100"), Fault::DiskFull);
        assert_eq!(postgres_fault("57P01"), Fault::Retry, "admin shutdown");
        assert_eq!(postgres_fault("40001"), Fault::Retry, "serialization");
        assert_eq!(postgres_fault("08006"), Fault::Retry, "connection failure");
    }

    #[test]
    fn a_duplicate_key_is_retried_not_set_aside() {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        conn.execute_batch("CREATE TABLE t (k TEXT PRIMARY KEY); INSERT INTO t VALUES ('a')")
            .unwrap();
        let dup = conn.execute("INSERT INTO t VALUES ('a')", []).unwrap_err();
        assert_eq!(WriteError::Sqlite(dup).fault(), Fault::Retry);
        conn.execute_batch(
            "CREATE TRIGGER no_b BEFORE INSERT ON t WHEN NEW.k = 'b' BEGIN SELECT RAISE(ABORT, 'no b'); END",
        )
        .unwrap();
        let refused = conn.execute("INSERT INTO t VALUES ('b')", []).unwrap_err();
        assert_eq!(WriteError::Sqlite(refused).fault(), Fault::Permanent);
    }
}
