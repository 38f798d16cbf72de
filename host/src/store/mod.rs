//! The database: SQLite (embedded, the default) or PostgreSQL, chosen by
//! `database.url`. Each backend has its own migrations (`migrations/sqlite`,
//! `migrations/postgres`, embedded in the binary) and its own SQL; modules that store
//! data match on [`Store`] rather than go through sqlx's `Any` driver, which lacks
//! the types we need and would hide the dialect differences anyway.
//!
//! On SQLite the writes on the hot path — the log's appends and positions, the
//! outbox's deliveries, claims and attempt results — go through rusqlite, one
//! [`SqliteWriter`] connection per writer taking turns at each file's write lock;
//! reads and the rare writes (endpoint changes, retention) go through sqlx's pool.
//! Why rusqlite there: statements stay prepared across batches, values are bound by
//! reference with no copy and no hand-over to sqlx's worker thread, and a writer can
//! choose per transaction whether its commit waits for the disk. Each statement's
//! SQL is written once, shared by the SQLite and PostgreSQL paths where the dialects
//! agree (`$1` is a parameter in both).

use std::str::FromStr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{PgPool, SqlitePool};

use crate::config::Config;

pub mod audit_file;
pub mod fault;

pub use fault::{Fault, disk_failed};

static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/sqlite");
static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/postgres");

/// Runs `$body` with `$pool` bound to the backend's pool: the body is written once
/// and compiled for each backend, so one query text serves both (sqlx writes `$1`
/// placeholders for SQLite too).
macro_rules! dispatch {
    ($store:expr, |$pool:ident| $body:expr) => {
        match $store {
            $crate::store::Store::Sqlite($pool) => $body,
            $crate::store::Store::Postgres($pool) => $body,
        }
    };
}
pub(crate) use dispatch;

/// Why the database could not be used.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the database {url}")]
    Connect { url: String, source: sqlx::Error },
    #[error("cannot create the data folder {path}")]
    DataDir {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("database migration failed")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("database error")]
    Db(#[from] sqlx::Error),
    #[error("cannot create the audit log's file {path}")]
    AuditFile {
        path: std::path::PathBuf,
        source: rusqlite::Error,
    },
}

/// A connection pool to one of the supported databases.
#[derive(Clone, Debug)]
pub enum Store {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

impl Store {
    /// Connects (creating the SQLite file or the PostgreSQL schema if needed). Does not
    /// migrate; see [`Store::migrate`].
    pub async fn connect(config: &Config) -> Result<Store, StoreError> {
        Store::connect_as(config, "evhost").await
    }

    /// [`Store::connect`], naming the connections `name` on PostgreSQL
    /// (`application_name`, which `pg_stat_activity` shows): a daemon names them
    /// after its node, so an operator can tell the nodes' connections apart.
    pub async fn connect_as(config: &Config, name: &str) -> Result<Store, StoreError> {
        let url = config.database_url();
        let shown = mask(&url);
        let connect_error = |source| StoreError::Connect {
            url: shown.clone(),
            source,
        };
        if url.starts_with("sqlite:") {
            std::fs::create_dir_all(&config.data_dir).map_err(|source| StoreError::DataDir {
                path: config.data_dir.clone(),
                source,
            })?;
            let options = SqliteConnectOptions::from_str(&url)
                .map_err(connect_error)?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                // Audit rows must survive a power cut, not only a crash.
                .synchronous(SqliteSynchronous::Full)
                .busy_timeout(Duration::from_secs(10));
            let audit = audit_file::path(options.get_filename());
            audit_file::create(&audit).map_err(|source| StoreError::AuditFile {
                path: audit.clone(),
                source,
            })?;
            let pool = SqlitePoolOptions::new()
                .after_connect(move |conn, _| {
                    let audit = audit.clone();
                    Box::pin(async move { audit_file::attach(conn, &audit).await })
                })
                .max_connections(config.database.max_connections.min(8))
                .connect_with(options)
                .await
                .map_err(connect_error)?;
            return Ok(Store::Sqlite(pool));
        }
        let mut options = PgConnectOptions::from_str(&url)
            .map_err(connect_error)?
            .application_name(name);
        if let Some(schema) = &config.database.schema {
            // The name was checked against [a-z0-9_] when the config was loaded.
            let setup = PgPoolOptions::new()
                .max_connections(1)
                .connect_with(options.clone())
                .await
                .map_err(connect_error)?;
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "CREATE SCHEMA IF NOT EXISTS \"{schema}\""
            )))
            .execute(&setup)
            .await
            .map_err(connect_error)?;
            setup.close().await;
            options = options.options([("search_path", schema.as_str())]);
        }
        let pool = PgPoolOptions::new()
            .max_connections(config.database.max_connections)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options)
            .await
            .map_err(connect_error)?;
        Ok(Store::Postgres(pool))
    }

    /// Applies the embedded migrations not yet applied.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        match self {
            Store::Sqlite(pool) => {
                SQLITE_MIGRATIONS.run(pool).await?;
                audit_file::migrate(&sqlite_audit_file(pool)).await?;
            }
            Store::Postgres(pool) => POSTGRES_MIGRATIONS.run(pool).await?,
        }
        Ok(())
    }

    /// `sqlite` or `postgres`.
    pub fn backend(&self) -> &'static str {
        match self {
            Store::Sqlite(_) => "sqlite",
            Store::Postgres(_) => "postgres",
        }
    }

    pub async fn close(&self) {
        match self {
            Store::Sqlite(pool) => pool.close().await,
            Store::Postgres(pool) => pool.close().await,
        }
    }
}

/// The file that holds the audit log of the SQLite database `pool` (see
/// [`audit_file`]).
pub fn sqlite_audit_file(pool: &SqlitePool) -> std::path::PathBuf {
    audit_file::path(pool.connect_options().get_filename())
}

/// How durable a busy writer's transaction must be when its commit returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// On disk: it survives a power cut. Audit rows and new deliveries.
    PowerCut,
    /// It survives the process crashing; a power cut (or, on PostgreSQL, the
    /// server crashing) in the next moments may undo it. Only for writes whose loss
    /// repeats work rather than loses it: a claim (the deliveries are claimed again)
    /// and an attempt's result (the delivery is sent again, with the same
    /// `webhook-id`). A later durable commit makes it durable too.
    ///
    /// On SQLite in WAL mode it is `synchronous = NORMAL`: the commit does not wait
    /// for an fsync, which costs about 0.4 ms on the machine in BENCHMARKS.md, and a
    /// lane claims and the recorder records hundreds of times a second.
    Crash,
}

/// A connection of its own on the pool's SQLite file, for a busy writer that drives
/// SQLite directly (rusqlite, the same bundled SQLite): prepared statements kept
/// across batches, values bound by reference, no hand-over to sqlx's worker thread.
/// The audit writer and the webhook outbox each have one.
#[derive(Clone)]
pub struct SqliteWriter {
    conn: Arc<Mutex<WriterConnection>>,
    /// The file's write turn; holding it also keeps the file's checkpoint thread
    /// running.
    file: Arc<SqliteFile>,
}

struct WriterConnection {
    conn: rusqlite::Connection,
    /// The `synchronous` setting the connection has now.
    durability: Durability,
}

impl SqliteWriter {
    /// A writer on the pool's own file.
    pub fn open(pool: &SqlitePool) -> Result<SqliteWriter, rusqlite::Error> {
        SqliteWriter::open_file(pool.connect_options().get_filename())
    }

    /// A writer on the SQLite file at `path` (in WAL mode already).
    pub fn open_file(path: &std::path::Path) -> Result<SqliteWriter, rusqlite::Error> {
        let conn = rusqlite::Connection::open(path)?;
        conn.busy_timeout(Duration::from_secs(10))?;
        // As the pool's connections: survive a power cut. The file is in WAL mode
        // already (the pool set it).
        conn.pragma_update(None, "synchronous", "FULL")?;
        // Plans that do not depend on bound values. Without it SQLite re-prepares
        // a statement whenever a value it planned with is bound again (the claim's
        // `LIMIT ?`): 19 % of a claim's time in a profile.
        conn.set_db_config(
            rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG,
            true,
        )?;
        let file = SqliteFile::of(path)?;
        if file.checkpointing {
            conn.pragma_update(None, "wal_autocheckpoint", INLINE_CHECKPOINT_PAGES)?;
        }
        Ok(SqliteWriter {
            conn: Arc::new(Mutex::new(WriterConnection {
                conn,
                durability: Durability::PowerCut,
            })),
            file,
        })
    }

    /// Runs `write` (one transaction) on a blocking thread, in turn with the
    /// process's other SQLite writers, committed as durably as `durability` says.
    pub async fn write<T: Send + 'static>(
        &self,
        durability: Durability,
        write: impl FnOnce(&mut rusqlite::Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, WriteError> {
        if durability == Durability::PowerCut
            && let Some(injected) = fault::injected_fsync_error()
        {
            return Err(injected);
        }
        let _turn = self.file.turn.lock().await;
        let writer = self.conn.clone();
        let done = tokio::task::spawn_blocking(move || run_write(&writer, durability, write))
            .await
            .map_err(|e| WriteError::Task(e.to_string()))?;
        Ok(done?)
    }
}

fn run_write<T>(
    writer: &Mutex<WriterConnection>,
    durability: Durability,
    write: impl FnOnce(&mut rusqlite::Connection) -> rusqlite::Result<T>,
) -> rusqlite::Result<T> {
    let mut writer = writer.lock().unwrap_or_else(PoisonError::into_inner);
    if writer.durability != durability {
        let setting = match durability {
            Durability::PowerCut => "FULL",
            Durability::Crash => "NORMAL",
        };
        writer.conn.pragma_update(None, "synchronous", setting)?;
        writer.durability = durability;
    }
    write(&mut writer.conn)
}

/// WAL size (pages) at which a writer's commit copies the WAL into the database file
/// itself, as SQLite does by default at 1,000. The background checkpointer
/// normally does it long before; this bounds the WAL if it falls behind.
const INLINE_CHECKPOINT_PAGES: i64 = 8_000;

/// WAL size (pages) at which the background checkpointer finishes the copy inside
/// the write turn, so that the WAL starts over: 16 MiB.
const RESTART_PAGES: i64 = 4_000;

/// What the busy writers on one SQLite file share: turns at its write lock, and its
/// checkpoint thread, which runs while one of these lives.
struct SqliteFile {
    /// Turns at the file's write lock for the daemon's busy writers on it, in the
    /// order they ask.
    ///
    /// SQLite lets one transaction write to a file at a time; the others poll with
    /// growing sleeps (the busy timeout), which is not fair: a writer that commits
    /// and begins again at once, as the pipelined audit writer does while it has a
    /// backlog, can keep the lock for seconds while another sleeps between polls.
    /// Queued here (tokio's mutex is FIFO) they take turns instead. One queue per
    /// file: the audit log has a file of its own ([`audit_file`]), so its writer and
    /// the webhook outbox do not wait for each other. On PostgreSQL there is none.
    turn: tokio::sync::Mutex<()>,
    /// Whether the checkpoint thread started (if not, commits checkpoint as SQLite
    /// does by default).
    checkpointing: bool,
}

/// The shared state of each SQLite file in this process.
static SQLITE_FILES: Mutex<Vec<(std::path::PathBuf, std::sync::Weak<SqliteFile>)>> =
    Mutex::new(Vec::new());

impl SqliteFile {
    /// The file's shared state, created (and its checkpoint thread started) by the
    /// first writer on it.
    fn of(path: &std::path::Path) -> Result<Arc<SqliteFile>, rusqlite::Error> {
        let mut files = SQLITE_FILES.lock().unwrap_or_else(PoisonError::into_inner);
        files.retain(|(_, alive)| alive.strong_count() > 0);
        if let Some(file) = files
            .iter()
            .find(|(file, _)| file == path)
            .and_then(|(_, alive)| alive.upgrade())
        {
            return Ok(file);
        }
        let conn = rusqlite::Connection::open(path)?;
        conn.busy_timeout(READERS_WAIT)?;
        let file = Arc::new_cyclic(|alive| SqliteFile {
            turn: tokio::sync::Mutex::new(()),
            checkpointing: checkpoint_thread(conn, alive.clone()),
        });
        files.push((path.to_path_buf(), Arc::downgrade(&file)));
        Ok(file)
    }
}

/// How long a RESTART waits for readers of older snapshots, holding the write turn
/// meanwhile; and how long it is not tried again after readers kept it from
/// finishing, so writers are not held turn after turn.
const READERS_WAIT: Duration = Duration::from_millis(50);
const RESTART_BACKOFF: Duration = Duration::from_secs(2);

/// Copies the WAL into the database file from a thread of its own, one per file
/// (the writers on a file share it), beside the writers rather than inside their
/// commits: SQLite's automatic checkpoint runs in the commit that crosses the
/// threshold, and that was about 15 % of the audit writer's insert time (fsync of
/// the database file included), all of it holding the file's write turn. A
/// `PASSIVE` checkpoint takes no write lock and waits for nobody. While nothing or
/// only a trickle is written (heartbeats) it looks less and less often (up to every
/// [`IDLE_MAX`]), so an idle daemon stays asleep. The thread ends once `file` is dropped (with the file's last writer).
/// False if it cannot start.
/// The longest pause of an idle checkpoint thread.
const IDLE_MAX: Duration = Duration::from_secs(4);

/// WAL frames written between two looks that still count as idle.
const TRICKLE_FRAMES: i64 = 16;

/// Frames written between two looks at the WAL's frame count: the growth, or all of
/// it when the WAL started over from the top in between.
fn written_since(before: i64, now: i64) -> i64 {
    if now >= before { now - before } else { now }
}

fn checkpoint_thread(conn: rusqlite::Connection, file: std::sync::Weak<SqliteFile>) -> bool {
    const BUSY: Duration = Duration::from_millis(10);
    const IDLE: Duration = Duration::from_millis(250);
    let mut idle = IDLE;
    let started = std::thread::Builder::new()
        .name("evhost-sqlite-checkpoint".into())
        .spawn(move || {
            let mut last = (0, 0);
            let mut next_restart = std::time::Instant::now();
            while file.strong_count() > 0 {
                // (frames in the WAL, frames copied so far): while they move, a
                // writer is busy, so look again soon.
                let now = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |row| {
                    Ok((row.get::<_, i64>(1)?, row.get::<_, i64>(2)?))
                });
                // Under a steady stream of commits the WAL is rarely all copied
                // when the next one begins, and only then does SQLite start it
                // over; so once it is long, finish the copy between two writers'
                // turns (RESTART: the next commit starts the WAL from the top).
                if let Ok((frames, _)) = now
                    && frames >= RESTART_PAGES
                    && std::time::Instant::now() >= next_restart
                    && let Some(file) = file.upgrade()
                {
                    let _turn = file.turn.blocking_lock();
                    // The first column is 1 when readers kept it from finishing.
                    let blocked = conn.query_row("PRAGMA wal_checkpoint(RESTART)", [], |row| {
                        row.get::<_, i64>(0)
                    });
                    if !matches!(blocked, Ok(0)) {
                        next_restart = std::time::Instant::now() + RESTART_BACKOFF;
                    }
                }
                let pause = match now {
                    // A writer is busy: more than a trickle (a heartbeat, one small
                    // commit) was written since the last look (the WAL may have
                    // started over from the top meanwhile).
                    Ok(now) if written_since(last.0, now.0) >= TRICKLE_FRAMES => {
                        last = now;
                        idle = IDLE;
                        BUSY
                    }
                    Ok(now) => {
                        last = now;
                        let pause = idle;
                        idle = (idle * 2).min(IDLE_MAX);
                        pause
                    }
                    Err(error) => {
                        tracing::debug!(%error, "background WAL checkpoint failed; retrying");
                        IDLE
                    }
                };
                std::thread::sleep(pause);
            }
        });
    match started {
        Ok(_) => true,
        Err(error) => {
            tracing::warn!(%error, "cannot start the WAL checkpoint thread; writers checkpoint as they commit");
            false
        }
    }
}

/// Why a busy writer's batch was not written (its writer retries).
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error(transparent)]
    Pool(#[from] sqlx::Error),
    #[error(transparent)]
    Sqlite(#[from] rusqlite::Error),
    #[error("a database write task failed: {0}")]
    Task(String),
}

impl WriteError {
    /// A key (an event id, a chain position) the table already holds.
    pub fn is_duplicate(&self) -> bool {
        match self {
            WriteError::Pool(sqlx::Error::Database(e)) => e.is_unique_violation(),
            WriteError::Sqlite(e) => e.sqlite_error().is_some_and(|e| {
                e.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
                    || e.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY
            }),
            WriteError::Pool(_) | WriteError::Task(_) => false,
        }
    }
}

/// Hides a password in a database URL for messages.
fn mask(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:****{}", &url[..scheme + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (frames in the WAL, frames copied), as a passive checkpoint reports them.
    fn wal_frames(conn: &rusqlite::Connection) -> (i64, i64) {
        conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |row| {
            Ok((row.get(1)?, row.get(2)?))
        })
        .unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_checkpoint_thread_copies_the_wal_so_commits_need_not() {
        let dir = tempfile::tempdir().unwrap();
        let options = SqliteConnectOptions::new()
            .filename(dir.path().join("t.db"))
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal);
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options)
            .await
            .unwrap();
        let writer = SqliteWriter::open(&pool).unwrap();
        let second = SqliteWriter::open(&pool).unwrap();
        let thread_of = |w: &SqliteWriter| {
            assert!(w.file.checkpointing, "the thread started");
            Arc::as_ptr(&w.file)
        };
        assert_eq!(
            thread_of(&writer),
            thread_of(&second),
            "writers on one file share its checkpoint thread"
        );
        drop(second);
        let inline: i64 = writer
            .write(Durability::PowerCut, |conn| {
                conn.execute_batch("CREATE TABLE t (b BLOB NOT NULL)")?;
                conn.query_row("PRAGMA wal_autocheckpoint", [], |row| row.get(0))
            })
            .await
            .unwrap();
        assert_eq!(
            inline, INLINE_CHECKPOINT_PAGES,
            "the checkpoint thread runs, so commits leave the copying to it"
        );
        // About 6,000 pages in commits of 64: below the inline threshold, so only
        // the thread can copy them and let the WAL start over.
        for _ in 0..96 {
            writer
                .write(Durability::Crash, |conn| {
                    let mut insert = conn.prepare_cached("INSERT INTO t (b) VALUES (?1)")?;
                    for _ in 0..64 {
                        insert.execute([vec![7u8; 4000]])?;
                    }
                    Ok(())
                })
                .await
                .unwrap();
        }
        let probe = rusqlite::Connection::open(dir.path().join("t.db")).unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            // A small commit: after a RESTART it writes from the top of the WAL.
            writer
                .write(Durability::Crash, |conn| {
                    conn.execute("INSERT INTO t (b) VALUES (x'00')", [])?;
                    Ok(())
                })
                .await
                .unwrap();
            let (frames, _) = wal_frames(&probe);
            if frames < RESTART_PAGES {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the WAL still holds {frames} frames"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let rows: i64 = probe
            .query_row("SELECT COUNT(*) FROM t", [], |row| row.get(0))
            .unwrap();
        assert!(rows > 96 * 64, "{rows} rows");
    }
}
