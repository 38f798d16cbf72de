//! The audit log's SQL, for SQLite and PostgreSQL. The statements are the same text
//! for both (sqlx's `QueryBuilder` writes each backend's placeholders); [`dispatch`]
//! compiles each function body once per backend.

use std::collections::HashSet;
use std::sync::{Arc, LazyLock};

use sqlx::QueryBuilder;

use super::record::{Entry, Record, parse_hash};
use crate::event::TypePattern;
use crate::store::{Durability, SqliteWriter, Store, dispatch};

const COLUMNS: &str = "seq, chain, chain_seq, event_id, event_type, actor, actor_token, actor_ip, \
                       resource_type, resource_id, details, time_us, recorded_us, prev_hash, hash, source";

type Row = (
    i64,
    String,
    i64,
    String,
    String,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    String,
    i64,
    i64,
    String,
    String,
    Option<String>,
);

fn from_row(r: Row) -> Record {
    Record {
        seq: r.0,
        chain: r.1,
        chain_seq: r.2,
        entry: Entry {
            event_id: r.3,
            event_type: r.4,
            actor: r.5,
            actor_token: r.6,
            actor_ip: r.7,
            resource_type: r.8,
            resource_id: r.9,
            details: r.10,
            time_us: r.11,
            source: r.15,
        },
        recorded_us: r.12,
        prev_hash: r.13,
        hash: r.14,
    }
}

/// Where a chain continues: its last row, else its retention anchor, else genesis.
pub async fn chain_head(store: &Store, chain: &str) -> Result<Head, sqlx::Error> {
    let last: Option<(i64, String)> = dispatch!(store, |pool| {
        sqlx::query_as("SELECT chain_seq, hash FROM audit_log WHERE chain = $1 ORDER BY chain_seq DESC LIMIT 1")
            .bind(chain)
            .fetch_optional(pool)
            .await?
    });
    let found = match last {
        Some(row) => Some(row),
        None => anchor(store, chain).await?,
    };
    Ok(match found {
        Some((seq, hash)) => (seq, parse_hash(&hash).unwrap_or(super::record::GENESIS)),
        None => (0, super::record::GENESIS),
    })
}

/// The retention anchor of a chain: the position and hash of its last purged row.
pub async fn anchor(store: &Store, chain: &str) -> Result<Option<(i64, String)>, sqlx::Error> {
    Ok(dispatch!(store, |pool| {
        sqlx::query_as("SELECT chain_seq, hash FROM audit_anchor WHERE chain = $1")
            .bind(chain)
            .fetch_optional(pool)
            .await?
    }))
}

/// A chain position: the last row's `chain_seq` and hash.
pub type Head = (i64, [u8; 32]);

/// A batch of entries placed in a chain after a known head: each row's position and
/// hashes are computed, nothing is written yet. Placing is CPU work only, so the
/// writer places the next batch while the previous one is being inserted.
#[derive(Debug)]
pub struct Placed {
    /// The head the batch continues.
    pub after: Head,
    /// The head once the batch is written.
    pub head: Head,
    pub recorded_us: i64,
    rows: Vec<PlacedRow>,
}

#[derive(Debug)]
struct PlacedRow {
    entry: Entry,
    chain_seq: i64,
    prev_hash: String,
    hash: String,
}

impl Placed {
    /// Rows the batch writes (repeated event ids were left out).
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// The entries, to place them again after another head.
    pub fn entries(&self) -> Vec<Entry> {
        self.rows.iter().map(|row| row.entry.clone()).collect()
    }

    /// The rows as they will be stored in `chain` (for tests that verify them).
    #[cfg(test)]
    pub(super) fn records(&self, chain: &str) -> Vec<super::Record> {
        self.rows
            .iter()
            .map(|row| super::Record {
                seq: 0,
                chain: chain.to_string(),
                chain_seq: row.chain_seq,
                entry: row.entry.clone(),
                recorded_us: self.recorded_us,
                prev_hash: row.prev_hash.clone(),
                hash: row.hash.clone(),
            })
            .collect()
    }

    /// Each row's event id and place in the chain.
    pub fn seqs(&self) -> impl Iterator<Item = (&str, i64)> {
        self.rows
            .iter()
            .map(|row| (row.entry.event_id.as_str(), row.chain_seq))
    }
}

/// Places `entries` after `after`, leaving out event ids in `skip` and ids repeated
/// within the batch.
pub fn place(
    chain: &str,
    after: Head,
    entries: Vec<Entry>,
    recorded_us: i64,
    skip: &HashSet<String>,
) -> Placed {
    let keep: Vec<bool> = {
        let mut seen: HashSet<&str> = HashSet::with_capacity(entries.len());
        entries
            .iter()
            .map(|e| !skip.contains(&e.event_id) && seen.insert(&e.event_id))
            .collect()
    };
    let (mut seq, mut prev) = after;
    let mut prev_hex = hex32(&prev);
    let mut rows = Vec::with_capacity(entries.len());
    for (entry, keep) in entries.into_iter().zip(keep) {
        if !keep {
            continue;
        }
        seq += 1;
        prev = super::record::row_hash(chain, seq, &entry, recorded_us, &prev_hex);
        let hash = hex32(&prev);
        rows.push(PlacedRow {
            entry,
            chain_seq: seq,
            prev_hash: std::mem::replace(&mut prev_hex, hash.clone()),
            hash,
        });
    }
    Placed {
        after,
        head: (seq, prev),
        recorded_us,
        rows,
    }
}

/// Lower-case hex of a hash (`hex::encode` goes char by char; this is a table copy).
pub fn hex32(hash: &[u8; 32]) -> String {
    let mut out = [0u8; 64];
    hex::encode_to_slice(hash, &mut out).expect("64 bytes hold 32 in hex");
    String::from_utf8(out.to_vec()).expect("hex is ASCII")
}

pub use crate::store::WriteError;

/// `OR ROLLBACK`: a duplicate key undoes the whole batch's transaction (the writer
/// then places the batch again without the rows already in), not just the statement.
/// With the default (`ABORT`), SQLite copies every page a statement changes into a
/// statement journal, a temporary file, to be able to undo that one statement: a
/// quarter of the statements' time in the batched bench on a disk (`perf`), for an
/// undo the writer never needs.
const INSERT_INTO: &str = "INSERT OR ROLLBACK INTO audit_log (chain, chain_seq, event_id, event_type, actor, \
     actor_token, actor_ip, resource_type, resource_id, details, time_us, recorded_us, prev_hash, hash, source) VALUES ";

/// Values per row of [`INSERT_INTO`].
const VALUES_PER_ROW: usize = 15;

/// Rows per SQLite insert statement: 50 rows of 14 or 15 values measured about 15 % faster
/// than one row per statement (rusqlite, this schema), and the statement stays small
/// enough to keep prepared.
const SQLITE_ROWS_PER_STATEMENT: usize = 50;

/// `INSERT … VALUES (?1, …, ?15), (?16, …)` for `rows` rows.
fn insert_sql(rows: usize) -> String {
    let mut sql = String::from(INSERT_INTO);
    for r in 0..rows {
        sql.push_str(if r == 0 { "(" } else { ", (" });
        for c in 0..VALUES_PER_ROW {
            if c > 0 {
                sql.push_str(", ");
            }
            sql.push_str(&format!("?{}", r * VALUES_PER_ROW + c + 1));
        }
        sql.push(')');
    }
    sql
}

/// Where the writer inserts its batches.
///
/// On SQLite that is a connection of its own (rusqlite, on the same file and the same
/// bundled SQLite as the pool) with cached 50-row statements binding borrowed values,
/// run on a blocking thread. Through sqlx the batch went as one 14,000-value statement
/// whose values are copied twice and handed to sqlx's worker thread: about 17 µs per
/// row in the writer's insert, against about 11 µs this way. On PostgreSQL it is the
/// pool.
#[derive(Clone)]
pub enum Inserter {
    Sqlite(SqliteWriter),
    Postgres(sqlx::PgPool),
}

impl Inserter {
    /// Opens the writer's SQLite connection, or shares the PostgreSQL pool.
    pub fn open(store: &Store) -> Result<Inserter, WriteError> {
        Ok(match store {
            Store::Sqlite(pool) => Inserter::Sqlite(SqliteWriter::open_file(
                &crate::store::sqlite_audit_file(pool),
            )?),
            Store::Postgres(pool) => Inserter::Postgres(pool.clone()),
        })
    }

    /// Inserts a placed batch in one transaction, committed durably (SQLite
    /// `synchronous = FULL`, an fsync of the WAL; PostgreSQL as its server syncs):
    /// on SQLite one statement per 50 rows, on PostgreSQL one statement binding one
    /// array per column (`UNNEST`), since binding thousands of separate values over
    /// the wire costs more than the insert.
    pub async fn insert(&self, chain: &str, placed: Arc<Placed>) -> Result<(), WriteError> {
        if placed.rows.is_empty() {
            return Ok(());
        }
        match self {
            Inserter::Sqlite(writer) => {
                let chain = chain.to_string();
                writer
                    .write(Durability::PowerCut, move |conn| {
                        insert_sqlite(conn, &chain, &placed)
                    })
                    .await?;
            }
            Inserter::Postgres(pool) => insert_postgres(pool, chain, &placed).await?,
        }
        Ok(())
    }
}

fn insert_sqlite(
    conn: &mut rusqlite::Connection,
    chain: &str,
    placed: &Placed,
) -> Result<(), rusqlite::Error> {
    // IMMEDIATE: take the write lock (waiting up to the busy timeout) before the
    // first insert rather than upgrading midway.
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    {
        static FULL: LazyLock<String> = LazyLock::new(|| insert_sql(SQLITE_ROWS_PER_STATEMENT));
        let mut values: Vec<&dyn rusqlite::ToSql> =
            Vec::with_capacity(SQLITE_ROWS_PER_STATEMENT * VALUES_PER_ROW);
        for chunk in placed.rows.chunks(SQLITE_ROWS_PER_STATEMENT) {
            values.clear();
            for row in chunk {
                let e = &row.entry;
                values.extend([
                    &chain as &dyn rusqlite::ToSql,
                    &row.chain_seq,
                    &e.event_id,
                    &e.event_type,
                    &e.actor,
                    &e.actor_token,
                    &e.actor_ip,
                    &e.resource_type,
                    &e.resource_id,
                    &e.details,
                    &e.time_us,
                    &placed.recorded_us,
                    &row.prev_hash,
                    &row.hash,
                    &e.source,
                ]);
            }
            // The last, shorter chunk has its own statement (also kept prepared: a
            // daemon's batches tend to end the same way under steady load).
            let sql = if chunk.len() == SQLITE_ROWS_PER_STATEMENT {
                std::borrow::Cow::Borrowed(FULL.as_str())
            } else {
                std::borrow::Cow::Owned(insert_sql(chunk.len()))
            };
            tx.prepare_cached(&sql)?.execute(values.as_slice())?;
        }
    }
    tx.commit()
}

async fn insert_postgres(
    pool: &sqlx::PgPool,
    chain: &str,
    placed: &Placed,
) -> Result<(), sqlx::Error> {
    let rows = &placed.rows;
    let column =
        |f: for<'a> fn(&'a PlacedRow) -> Option<&'a str>| rows.iter().map(f).collect::<Vec<_>>();
    sqlx::query(
        "INSERT INTO audit_log (chain, chain_seq, event_id, event_type, actor, actor_token, actor_ip, \
         resource_type, resource_id, details, time_us, recorded_us, prev_hash, hash, source) \
         SELECT $1, u.chain_seq, u.event_id, u.event_type, u.actor, u.actor_token, u.actor_ip, u.resource_type, \
         u.resource_id, u.details, u.time_us, u.recorded_us, u.prev_hash, u.hash, u.source FROM UNNEST($2::int8[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], \
         $8::text[], $9::text[], $10::text[], $11::int8[], $12::int8[], $13::text[], $14::text[], $15::text[]) \
         WITH ORDINALITY AS u(chain_seq, event_id, event_type, actor, actor_token, actor_ip, resource_type, \
         resource_id, details, time_us, recorded_us, prev_hash, hash, source, n) ORDER BY u.n",
    )
    .bind(chain)
    .bind(rows.iter().map(|r| r.chain_seq).collect::<Vec<_>>())
    .bind(column(|r| Some(r.entry.event_id.as_str())))
    .bind(column(|r| Some(r.entry.event_type.as_str())))
    .bind(column(|r| r.entry.actor.as_deref()))
    .bind(column(|r| r.entry.actor_token.as_deref()))
    .bind(column(|r| r.entry.actor_ip.as_deref()))
    .bind(column(|r| r.entry.resource_type.as_deref()))
    .bind(column(|r| r.entry.resource_id.as_deref()))
    .bind(column(|r| Some(r.entry.details.as_str())))
    .bind(rows.iter().map(|r| r.entry.time_us).collect::<Vec<_>>())
    .bind(vec![placed.recorded_us; rows.len()])
    .bind(column(|r| Some(r.prev_hash.as_str())))
    .bind(column(|r| Some(r.hash.as_str())))
    .bind(column(|r| r.entry.source.as_deref()))
    .execute(pool)
    .await?;
    Ok(())
}

/// Writes a placed batch in one transaction, leaving out event ids already
/// recorded (by any writer). Returns what was written; on failure, the error and
/// the placement last tried (the batch as placed, or without the ids already
/// recorded): whether that one went in before the error is not always known.
///
/// Resends are rare, so the batch is first inserted as it is; only if the database
/// reports a duplicate event id is the batch filtered against the table and placed
/// again.
pub async fn append(
    store: &Store,
    inserter: &Inserter,
    chain: &str,
    placed: Arc<Placed>,
) -> Result<Arc<Placed>, (WriteError, Arc<Placed>)> {
    match inserter.insert(chain, placed.clone()).await {
        Ok(()) => Ok(placed),
        Err(e) if e.is_duplicate() => {
            let recorded = match recorded_ids(store, &placed).await {
                Ok(recorded) => recorded,
                Err(e) => return Err((e.into(), placed)),
            };
            let filtered = Arc::new(place(
                chain,
                placed.after,
                placed.entries(),
                placed.recorded_us,
                &recorded,
            ));
            match inserter.insert(chain, filtered.clone()).await {
                Ok(()) => Ok(filtered),
                Err(e) => Err((e, filtered)),
            }
        }
        Err(e) => Err((e, placed)),
    }
}

/// The event ids of a batch the table already holds (after a duplicate). Read
/// outside the insert's transaction: the unique index still guards against a
/// concurrent writer, whose insert would then fail and be retried.
async fn recorded_ids(store: &Store, placed: &Placed) -> Result<HashSet<String>, sqlx::Error> {
    let mut recorded = HashSet::new();
    for ids in placed.rows.chunks(500) {
        let found: Vec<(String,)> = dispatch!(store, |pool| {
            let mut q = QueryBuilder::new("SELECT event_id FROM audit_log WHERE event_id IN (");
            let mut list = q.separated(", ");
            for row in ids {
                list.push_bind(row.entry.event_id.as_str());
            }
            q.push(")");
            q.build_query_as().fetch_all(pool).await?
        });
        recorded.extend(found.into_iter().map(|(id,)| id));
    }
    Ok(recorded)
}

/// Filters for [`query`]; every field narrows the result.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub types: Vec<TypePattern>,
    pub actor: Option<String>,
    pub resource_type: Option<String>,
    pub resource_id: Option<String>,
    /// Event time from (inclusive), microseconds.
    pub since_us: Option<i64>,
    /// Event time until (exclusive), microseconds.
    pub until_us: Option<i64>,
    /// Only the row of this event (event ids are unique in the log).
    pub event_id: Option<String>,
    /// Only rows with `seq` below this (the cursor of the previous newest-first page).
    pub before_seq: Option<i64>,
    /// Only rows with `seq` above this (the cursor of the previous oldest-first page).
    pub after_seq: Option<i64>,
    /// Oldest first (in `seq` order) instead of newest first.
    pub oldest_first: bool,
    pub limit: i64,
}

/// Rows matching `filter`, newest first (or oldest first).
pub async fn query(store: &Store, filter: &Filter) -> Result<Vec<Record>, sqlx::Error> {
    dispatch!(store, |pool| {
        let mut q = QueryBuilder::new(format!("SELECT {COLUMNS} FROM audit_log WHERE 1 = 1"));
        let patterns: Vec<_> = filter
            .types
            .iter()
            .filter(|p| !matches!(p, TypePattern::All))
            .collect();
        if !patterns.is_empty() && patterns.len() == filter.types.len() {
            q.push(" AND (");
            for (i, pattern) in patterns.iter().enumerate() {
                if i > 0 {
                    q.push(" OR ");
                }
                match pattern {
                    TypePattern::Exact(t) => {
                        q.push("event_type = ").push_bind(t.clone());
                    }
                    // `message.` ≤ type < `message/`: '/' follows '.', and a range
                    // uses the index where LIKE would trip over '_' in names.
                    TypePattern::Prefix(p) => {
                        let upper = format!("{}/", &p[..p.len() - 1]);
                        q.push("(event_type >= ")
                            .push_bind(p.clone())
                            .push(" AND event_type < ")
                            .push_bind(upper)
                            .push(")");
                    }
                    TypePattern::All => unreachable!("filtered above"),
                }
            }
            q.push(")");
        }
        if let Some(actor) = &filter.actor {
            q.push(" AND actor = ").push_bind(actor.clone());
        }
        if let Some(t) = &filter.resource_type {
            q.push(" AND resource_type = ").push_bind(t.clone());
        }
        if let Some(id) = &filter.resource_id {
            q.push(" AND resource_id = ").push_bind(id.clone());
        }
        if let Some(since) = filter.since_us {
            q.push(" AND time_us >= ").push_bind(since);
        }
        if let Some(until) = filter.until_us {
            q.push(" AND time_us < ").push_bind(until);
        }
        if let Some(id) = &filter.event_id {
            q.push(" AND event_id = ").push_bind(id.clone());
        }
        if let Some(before) = filter.before_seq {
            q.push(" AND seq < ").push_bind(before);
        }
        if let Some(after) = filter.after_seq {
            q.push(" AND seq > ").push_bind(after);
        }
        q.push(if filter.oldest_first {
            " ORDER BY seq ASC LIMIT "
        } else {
            " ORDER BY seq DESC LIMIT "
        })
        .push_bind(filter.limit);
        let rows: Vec<Row> = q.build_query_as().fetch_all(pool).await?;
        Ok(rows.into_iter().map(from_row).collect())
    })
}

/// Every chain with rows or an anchor.
pub async fn chains(store: &Store) -> Result<Vec<String>, sqlx::Error> {
    let rows: Vec<(String,)> = dispatch!(store, |pool| {
        sqlx::query_as(
            "SELECT DISTINCT chain FROM audit_log UNION SELECT chain FROM audit_anchor ORDER BY 1",
        )
        .fetch_all(pool)
        .await?
    });
    Ok(rows.into_iter().map(|(c,)| c).collect())
}

/// Up to `limit` rows of `chain` after `after_chain_seq`, in chain order.
pub async fn chain_page(
    store: &Store,
    chain: &str,
    after_chain_seq: i64,
    limit: i64,
) -> Result<Vec<Record>, sqlx::Error> {
    let sql = format!(
        "SELECT {COLUMNS} FROM audit_log WHERE chain = $1 AND chain_seq > $2 ORDER BY chain_seq LIMIT $3"
    );
    let rows: Vec<Row> = dispatch!(store, |pool| {
        sqlx::query_as(sqlx::AssertSqlSafe(sql.clone()))
            .bind(chain)
            .bind(after_chain_seq)
            .bind(limit)
            .fetch_all(pool)
            .await?
    });
    Ok(rows.into_iter().map(from_row).collect())
}

/// The row at `chain_seq` of `chain`, if it is there.
pub async fn row_at(
    store: &Store,
    chain: &str,
    chain_seq: i64,
) -> Result<Option<Record>, sqlx::Error> {
    Ok(chain_page(store, chain, chain_seq - 1, 1)
        .await?
        .into_iter()
        .find(|r| r.chain_seq == chain_seq))
}

/// Deletes up to `batch` of the oldest rows of `chain` written before `cutoff_us`
/// and at most at `upto`, moving the chain's anchor to the last one deleted, in one transaction. Returns
/// how many rows went.
pub async fn purge_some(
    store: &Store,
    chain: &str,
    cutoff_us: i64,
    batch: i64,
    now_us: i64,
    upto: i64,
) -> Result<u64, sqlx::Error> {
    dispatch!(store, |pool| {
        let mut tx = pool.begin().await?;
        // Rows are purged as a prefix of the chain, so what stays still verifies.
        let last: Option<(i64, String)> = sqlx::query_as(
            "SELECT chain_seq, hash FROM audit_log WHERE chain = $1 AND recorded_us < $2 \
             AND chain_seq <= (SELECT MIN(chain_seq) FROM audit_log WHERE chain = $1) + $3 - 1 \
             AND chain_seq <= $4 ORDER BY chain_seq DESC LIMIT 1",
        )
        .bind(chain)
        .bind(cutoff_us)
        .bind(batch)
        .bind(upto)
        .fetch_optional(&mut *tx)
        .await?;
        let Some((upto, hash)) = last else {
            return Ok(0);
        };
        // A row written before the cutoff may follow one written after it only if the
        // clock went back; purge strictly the prefix up to the last such row.
        let deleted = sqlx::query("DELETE FROM audit_log WHERE chain = $1 AND chain_seq <= $2")
            .bind(chain)
            .bind(upto)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        sqlx::query(
            "INSERT INTO audit_anchor (chain, chain_seq, hash, purged_us) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (chain) DO UPDATE SET chain_seq = excluded.chain_seq, hash = excluded.hash, purged_us = excluded.purged_us",
        )
        .bind(chain)
        .bind(upto)
        .bind(hash)
        .bind(now_us)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(deleted)
    })
}

/// Number of rows in the log.
pub async fn count(store: &Store) -> Result<i64, sqlx::Error> {
    let (n,): (i64,) = dispatch!(store, |pool| {
        sqlx::query_as("SELECT COUNT(*) FROM audit_log")
            .fetch_one(pool)
            .await?
    });
    Ok(n)
}
