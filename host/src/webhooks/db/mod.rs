//! The webhook tables' SQL, for SQLite and PostgreSQL. Most statements are one text
//! for both backends (see [`dispatch`]). The outbox's frequent writes (new
//! deliveries, claims, results) go through [`Writes`]: on SQLite to a connection of
//! their own ([`super::sqlite`]); on PostgreSQL claims skip rows another daemon
//! holds (`FOR UPDATE SKIP LOCKED`) and batches go as one statement over arrays
//! (`UNNEST`).

use std::sync::Arc;

use sqlx::postgres::PgPoolOptions;
use sqlx::{PgPool, QueryBuilder};

pub use crate::store::WriteError;
use crate::store::{Durability, SqliteWriter, Store, dispatch};

mod endpoints;

pub use endpoints::{
    delete_endpoint, get_endpoint, insert_endpoint, list_endpoints, reseal_secrets, reseal_under,
    update_endpoint,
};

/// Delivery states, as stored.
pub const PENDING: &str = "pending";
pub const SUCCEEDED: &str = "succeeded";
pub const FAILED: &str = "failed";

/// An event's bodies, stored once for all its deliveries.
#[derive(Clone)]
pub struct NewMessage {
    pub id: String,
    pub event_type: String,
    pub body: String,
    pub cloudevent: Option<String>,
}

/// A delivery row to create. `owner` set means this daemon sends it from memory
/// at once, holding a lease until `next_attempt_us`.
pub struct NewDelivery {
    pub id: String,
    pub endpoint_id: String,
    pub message_id: String,
    pub event_type: String,
    pub next_attempt_us: i64,
    pub owner: Option<String>,
}

/// Where the outbox's frequent writes go (new deliveries, claims, results): on
/// SQLite a connection of the outbox's own (statements in [`super::sqlite`]); on
/// PostgreSQL the pool, and for claims and results a second pool whose commits do
/// not wait for the server's disk ([`Durability::Crash`]: `synchronous_commit =
/// off`).
#[derive(Clone)]
pub enum Writes {
    Sqlite(SqliteWriter),
    Postgres { durable: PgPool, relaxed: PgPool },
}

impl Writes {
    /// Opens the outbox's SQLite connection, or the PostgreSQL pools.
    pub fn open(store: &Store) -> Result<Writes, WriteError> {
        Ok(match store {
            Store::Sqlite(pool) => Writes::Sqlite(SqliteWriter::open(pool)?),
            Store::Postgres(pool) => {
                let options = (*pool.connect_options())
                    .clone()
                    .options([("synchronous_commit", "off")]);
                let relaxed = PgPoolOptions::new()
                    .max_connections(pool.options().get_max_connections())
                    .acquire_timeout(std::time::Duration::from_secs(10))
                    .connect_lazy_with(options);
                Writes::Postgres {
                    durable: pool.clone(),
                    relaxed,
                }
            }
        })
    }
}

/// Writes messages and deliveries in one transaction.
pub async fn enqueue(
    writes: &Writes,
    messages: Arc<Vec<NewMessage>>,
    deliveries: Arc<Vec<NewDelivery>>,
    now_us: i64,
) -> Result<(), WriteError> {
    let pool = match writes {
        Writes::Sqlite(writer) => {
            return writer
                .write(Durability::PowerCut, move |conn| {
                    super::sqlite::enqueue(conn, &messages, &deliveries, now_us)
                })
                .await;
        }
        Writes::Postgres { durable, .. } => durable,
    };
    if deliveries.len() <= ONE_STATEMENT_ROWS {
        return enqueue_in_one_statement(pool, &messages, &deliveries, now_us).await;
    }
    let mut tx = pool.begin().await?;
    for chunk in messages.chunks(500) {
        let mut q = QueryBuilder::new(
            "INSERT INTO webhook_messages (id, event_type, body, cloudevent, created_us) ",
        );
        q.push_values(chunk, |mut b, m| {
            b.push_bind(m.id.as_str())
                .push_bind(m.event_type.as_str())
                .push_bind(m.body.as_str())
                .push_bind(m.cloudevent.as_deref())
                .push_bind(now_us);
        });
        q.push(" ON CONFLICT (id) DO NOTHING");
        q.build().execute(&mut *tx).await?;
    }
    for chunk in deliveries.chunks(500) {
        let mut q = QueryBuilder::new(
            "INSERT INTO webhook_deliveries (id, endpoint_id, message_id, event_type, status, attempts, \
             next_attempt_us, owner, created_us, updated_us) ",
        );
        q.push_values(chunk, |mut b, d| {
            b.push_bind(d.id.as_str())
                .push_bind(d.endpoint_id.as_str())
                .push_bind(d.message_id.as_str())
                .push_bind(d.event_type.as_str())
                .push_bind(PENDING)
                .push_bind(0i64)
                .push_bind(d.next_attempt_us)
                .push_bind(d.owner.as_deref())
                .push_bind(now_us)
                .push_bind(now_us);
        });
        q.push(" ON CONFLICT (id) DO NOTHING");
        q.build().execute(&mut *tx).await?;
    }
    tx.commit().await?;
    Ok(())
}

/// Up to this many delivery rows, PostgreSQL gets a batch as one statement.
///
/// Small batches are what a steady flow makes (a few events each millisecond), and
/// there the round trips of `BEGIN`, two `INSERT`s and `COMMIT` are most of the
/// wait: one statement halved the p50 at 5,000 events/s (BENCHMARKS.md). For
/// bursts of 500-row batches the same statement was slower than the multi-row
/// `INSERT`s, so large batches keep those.
const ONE_STATEMENT_ROWS: usize = 64;

/// The messages in a data-modifying CTE (run to completion whatever the main query
/// reads), the deliveries in the main query, each column bound as one array:
/// atomic as one statement, one round trip, one text whatever the batch's size.
async fn enqueue_in_one_statement(
    pool: &PgPool,
    messages: &[NewMessage],
    deliveries: &[NewDelivery],
    now_us: i64,
) -> Result<(), WriteError> {
    sqlx::query(
        "WITH messages AS (INSERT INTO webhook_messages (id, event_type, body, cloudevent, created_us) \
           SELECT id, kind, body, ce, $11 FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[]) \
             AS m(id, kind, body, ce) \
           ON CONFLICT (id) DO NOTHING) \
         INSERT INTO webhook_deliveries (id, endpoint_id, message_id, event_type, status, attempts, \
           next_attempt_us, owner, created_us, updated_us) \
         SELECT id, endpoint, message, kind, 'pending', 0, due, owner, $11, $11 \
           FROM UNNEST($5::text[], $6::text[], $7::text[], $8::text[], $9::int8[], $10::text[]) \
             AS d(id, endpoint, message, kind, due, owner) \
         ON CONFLICT (id) DO NOTHING",
    )
    .bind(messages.iter().map(|m| m.id.as_str()).collect::<Vec<_>>())
    .bind(messages.iter().map(|m| m.event_type.as_str()).collect::<Vec<_>>())
    .bind(messages.iter().map(|m| m.body.as_str()).collect::<Vec<_>>())
    .bind(messages.iter().map(|m| m.cloudevent.as_deref()).collect::<Vec<_>>())
    .bind(deliveries.iter().map(|d| d.id.as_str()).collect::<Vec<_>>())
    .bind(deliveries.iter().map(|d| d.endpoint_id.as_str()).collect::<Vec<_>>())
    .bind(deliveries.iter().map(|d| d.message_id.as_str()).collect::<Vec<_>>())
    .bind(deliveries.iter().map(|d| d.event_type.as_str()).collect::<Vec<_>>())
    .bind(deliveries.iter().map(|d| d.next_attempt_us).collect::<Vec<_>>())
    .bind(deliveries.iter().map(|d| d.owner.as_deref()).collect::<Vec<_>>())
    .bind(now_us)
    .execute(pool)
    .await?;
    Ok(())
}

/// A delivery claimed for sending, with its message's bodies.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub id: String,
    pub event_type: String,
    /// Attempts made before this one.
    pub attempts: i64,
    /// The `esp` body; empty if the message is gone (it never is while a delivery
    /// refers to it).
    pub body: String,
    /// The CloudEvent body, if one was written.
    pub cloudevent: Option<String>,
}

/// Claims up to `limit` due deliveries of one endpoint for `owner` until `lease_us`.
/// On PostgreSQL rows another daemon is claiming are skipped, not waited for.
pub async fn claim(
    writes: &Writes,
    endpoint_id: &str,
    owner: &str,
    now_us: i64,
    lease_us: i64,
    limit: i64,
) -> Result<Vec<Claimed>, WriteError> {
    let pool = match writes {
        Writes::Sqlite(writer) => {
            let (endpoint_id, owner) = (endpoint_id.to_string(), owner.to_string());
            return writer
                .write(Durability::Crash, move |conn| {
                    super::sqlite::claim(conn, &endpoint_id, &owner, now_us, lease_us, limit)
                })
                .await;
        }
        Writes::Postgres { relaxed, .. } => relaxed,
    };
    // The bodies come in the same statement: one round trip per claim.
    let rows: Vec<(String, String, i64, String, Option<String>)> = sqlx::query_as(
        "WITH claimed AS (UPDATE webhook_deliveries SET owner = $1, next_attempt_us = $2 \
         WHERE id IN (SELECT id FROM webhook_deliveries WHERE endpoint_id = $3 \
         AND status = 'pending' AND next_attempt_us <= $4 ORDER BY next_attempt_us LIMIT $5 \
         FOR UPDATE SKIP LOCKED) RETURNING id, message_id, event_type, attempts) \
         SELECT c.id, c.event_type, c.attempts, COALESCE(m.body, ''), m.cloudevent \
         FROM claimed c LEFT JOIN webhook_messages m ON m.id = c.message_id",
    )
    .bind(owner)
    .bind(lease_us)
    .bind(endpoint_id)
    .bind(now_us)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(id, event_type, attempts, body, cloudevent)| Claimed {
            id,
            event_type,
            attempts,
            body,
            cloudevent,
        })
        .collect())
}

/// Gives back every lease `owner` holds: its deliveries are due at once.
pub async fn release_leases(store: &Store, owner: &str, now_us: i64) -> Result<u64, sqlx::Error> {
    Ok(dispatch!(store, |pool| {
        sqlx::query(
            "UPDATE webhook_deliveries SET owner = NULL, next_attempt_us = $2 \
             WHERE owner = $1 AND status = 'pending'",
        )
        .bind(owner)
        .bind(now_us)
        .execute(pool)
        .await?
        .rows_affected()
    }))
}

/// The result of one attempt, or of a claim given back unsent.
#[derive(Debug, Clone)]
pub struct AttemptRecord {
    pub delivery_id: String,
    /// This attempt's number (1 for the first); 0 when nothing was sent.
    pub attempt: i64,
    pub time_us: i64,
    pub status_code: Option<i64>,
    pub latency_us: i64,
    pub error: Option<String>,
    pub response: Option<String>,
    /// The delivery's state afterwards.
    pub status: &'static str,
    pub next_attempt_us: i64,
}

/// Changes to an endpoint's counters from one batch of results.
#[derive(Debug, Clone)]
pub struct EndpointTally {
    pub endpoint_id: String,
    /// A success in this batch: the run of failures restarts from `failures`.
    pub reset: bool,
    /// Failed deliveries (retries exhausted) after the batch's last success.
    pub failures: i64,
    pub last_success_us: Option<i64>,
}

/// Records a batch of results in one transaction: attempt rows, delivery states, and
/// endpoint counters. Returns each tallied endpoint's failure count afterwards.
pub async fn record(
    writes: &Writes,
    records: Arc<Vec<AttemptRecord>>,
    tallies: Arc<Vec<EndpointTally>>,
    now_us: i64,
) -> Result<Vec<(String, i64)>, WriteError> {
    let pool = match writes {
        Writes::Sqlite(writer) => {
            return writer
                .write(Durability::Crash, move |conn| {
                    super::sqlite::record(conn, &records, &tallies, now_us)
                })
                .await;
        }
        Writes::Postgres { relaxed, .. } => relaxed,
    };
    let (sent, unsent): (Vec<&AttemptRecord>, Vec<&AttemptRecord>) =
        records.iter().partition(|r| r.attempt > 0);
    // Endpoints go in id order, so that two daemons' recorders tend to lock their
    // rows in the same order (the join's plan decides, not the array); a deadlock
    // PostgreSQL breaks fails this batch, and the recorder writes it again.
    let mut tallies: Vec<&EndpointTally> = tallies.iter().collect();
    tallies.sort_by(|a, b| a.endpoint_id.cmp(&b.endpoint_id));
    // One statement, so one round trip and an implicit transaction: each CTE runs
    // to completion whatever the main query reads. Before, a batch took a round
    // trip per endpoint tallied besides BEGIN, three statements and COMMIT.
    let counts: Vec<(String, i64)> = sqlx::query_as(
        "WITH attempts AS (INSERT INTO webhook_attempts \
           (delivery_id, attempt, time_us, status_code, latency_us, error, response) \
           SELECT * FROM UNNEST($1::text[], $2::int8[], $3::int8[], $4::int8[], $5::int8[], $6::text[], $7::text[]) \
           ON CONFLICT DO NOTHING), \
         sent AS (UPDATE webhook_deliveries AS d SET status = u.status, attempts = u.attempt, \
           next_attempt_us = u.next, owner = NULL, last_status = u.code, last_error = u.error, updated_us = $8 \
           FROM UNNEST($1::text[], $9::text[], $2::int8[], $10::int8[], $4::int8[], $6::text[]) \
             AS u(id, status, attempt, next, code, error) \
           WHERE d.id = u.id), \
         unsent AS (UPDATE webhook_deliveries AS d SET next_attempt_us = u.next, owner = NULL \
           FROM UNNEST($11::text[], $12::int8[]) AS u(id, next) WHERE d.id = u.id) \
         UPDATE webhook_endpoints AS e SET \
           failure_count = CASE WHEN t.reset THEN t.failures ELSE e.failure_count + t.failures END, \
           last_triggered_us = COALESCE(t.last, e.last_triggered_us) \
         FROM UNNEST($13::text[], $14::bool[], $15::int8[], $16::int8[]) AS t(id, reset, failures, last) \
         WHERE e.id = t.id RETURNING e.id, e.failure_count",
    )
    .bind(sent.iter().map(|r| r.delivery_id.as_str()).collect::<Vec<_>>())
    .bind(sent.iter().map(|r| r.attempt).collect::<Vec<_>>())
    .bind(sent.iter().map(|r| r.time_us).collect::<Vec<_>>())
    .bind(sent.iter().map(|r| r.status_code).collect::<Vec<_>>())
    .bind(sent.iter().map(|r| r.latency_us).collect::<Vec<_>>())
    .bind(sent.iter().map(|r| r.error.as_deref()).collect::<Vec<_>>())
    .bind(sent.iter().map(|r| r.response.as_deref()).collect::<Vec<_>>())
    .bind(now_us)
    .bind(sent.iter().map(|r| r.status).collect::<Vec<_>>())
    .bind(sent.iter().map(|r| r.next_attempt_us).collect::<Vec<_>>())
    .bind(unsent.iter().map(|r| r.delivery_id.as_str()).collect::<Vec<_>>())
    .bind(unsent.iter().map(|r| r.next_attempt_us).collect::<Vec<_>>())
    .bind(tallies.iter().map(|t| t.endpoint_id.as_str()).collect::<Vec<_>>())
    .bind(tallies.iter().map(|t| t.reset).collect::<Vec<_>>())
    .bind(tallies.iter().map(|t| t.failures).collect::<Vec<_>>())
    .bind(tallies.iter().map(|t| t.last_success_us).collect::<Vec<_>>())
    .fetch_all(pool)
    .await?;
    Ok(counts)
}

/// A delivery as the API shows it.
#[derive(Debug, Clone)]
pub struct DeliveryRow {
    pub id: String,
    pub endpoint_id: String,
    pub message_id: String,
    pub event_type: String,
    pub status: String,
    pub attempts: i64,
    pub next_attempt_us: i64,
    pub last_status: Option<i64>,
    pub last_error: Option<String>,
    pub created_us: i64,
    pub updated_us: i64,
}

const DELIVERY_COLUMNS: &str = "id, endpoint_id, message_id, event_type, status, attempts, \
     next_attempt_us, last_status, last_error, created_us, updated_us";

type DeliveryTuple = (
    String,
    String,
    String,
    String,
    String,
    i64,
    i64,
    Option<i64>,
    Option<String>,
    i64,
    i64,
);

fn delivery_of(r: DeliveryTuple) -> DeliveryRow {
    DeliveryRow {
        id: r.0,
        endpoint_id: r.1,
        message_id: r.2,
        event_type: r.3,
        status: r.4,
        attempts: r.5,
        next_attempt_us: r.6,
        last_status: r.7,
        last_error: r.8,
        created_us: r.9,
        updated_us: r.10,
    }
}

/// An endpoint's deliveries, newest first, optionally in one state, before the
/// delivery id `before` (ids are time-ordered).
pub async fn list_deliveries(
    store: &Store,
    endpoint_id: &str,
    status: Option<&str>,
    before: Option<&str>,
    limit: i64,
) -> Result<Vec<DeliveryRow>, sqlx::Error> {
    let rows: Vec<DeliveryTuple> = dispatch!(store, |pool| {
        let mut q = QueryBuilder::new(format!(
            "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries WHERE endpoint_id = "
        ));
        q.push_bind(endpoint_id);
        if let Some(status) = status {
            q.push(" AND status = ").push_bind(status);
        }
        if let Some(before) = before {
            q.push(" AND id < ").push_bind(before);
        }
        q.push(" ORDER BY id DESC LIMIT ").push_bind(limit);
        q.build_query_as().fetch_all(pool).await?
    });
    Ok(rows.into_iter().map(delivery_of).collect())
}

pub async fn get_delivery(store: &Store, id: &str) -> Result<Option<DeliveryRow>, sqlx::Error> {
    let row: Option<DeliveryTuple> = dispatch!(store, |pool| {
        sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries WHERE id = $1"
        )))
        .bind(id)
        .fetch_optional(pool)
        .await?
    });
    Ok(row.map(delivery_of))
}

/// One recorded attempt.
#[derive(Debug, Clone)]
pub struct AttemptRow {
    pub attempt: i64,
    pub time_us: i64,
    pub status_code: Option<i64>,
    pub latency_us: i64,
    pub error: Option<String>,
    pub response: Option<String>,
}

pub async fn attempts(store: &Store, delivery_id: &str) -> Result<Vec<AttemptRow>, sqlx::Error> {
    type Row = (i64, i64, Option<i64>, i64, Option<String>, Option<String>);
    let rows: Vec<Row> = dispatch!(store, |pool| {
        sqlx::query_as(
            "SELECT attempt, time_us, status_code, latency_us, error, response FROM webhook_attempts \
             WHERE delivery_id = $1 ORDER BY attempt",
        )
        .bind(delivery_id)
        .fetch_all(pool)
        .await?
    });
    Ok(rows
        .into_iter()
        .map(|r| AttemptRow {
            attempt: r.0,
            time_us: r.1,
            status_code: r.2,
            latency_us: r.3,
            error: r.4,
            response: r.5,
        })
        .collect())
}

/// Makes a finished delivery due again now (one more attempt). Returns its endpoint,
/// or `None` when it is still pending or does not exist.
pub async fn retry(store: &Store, id: &str, now_us: i64) -> Result<Option<String>, sqlx::Error> {
    let row: Option<(String,)> = dispatch!(store, |pool| {
        sqlx::query_as(
            "UPDATE webhook_deliveries SET status = 'pending', next_attempt_us = $2, owner = NULL, \
             updated_us = $2 WHERE id = $1 AND status <> 'pending' RETURNING endpoint_id",
        )
        .bind(id)
        .bind(now_us)
        .fetch_optional(pool)
        .await?
    });
    Ok(row.map(|(e,)| e))
}

/// Makes an endpoint's failed deliveries created since `since_us` due again now.
pub async fn replay(
    store: &Store,
    endpoint_id: &str,
    since_us: i64,
    now_us: i64,
) -> Result<u64, sqlx::Error> {
    Ok(dispatch!(store, |pool| {
        sqlx::query(
            "UPDATE webhook_deliveries SET status = 'pending', next_attempt_us = $3, owner = NULL, \
             updated_us = $3 WHERE endpoint_id = $1 AND status = 'failed' AND created_us >= $2",
        )
        .bind(endpoint_id)
        .bind(since_us)
        .bind(now_us)
        .execute(pool)
        .await?
        .rows_affected()
    }))
}

/// Removes up to `limit` finished deliveries created before `before_us`, with their
/// attempts and the messages no delivery refers to any more. Returns how many
/// deliveries went. Delivery ids are UUID v7, so "created before" is a key range.
pub async fn purge(store: &Store, before_us: i64, limit: i64) -> Result<u64, sqlx::Error> {
    let secs = before_us.div_euclid(1_000_000) as u64;
    let nanos = (before_us.rem_euclid(1_000_000) * 1000) as u32;
    // The smallest id of that millisecond: every id made earlier sorts below it.
    let first = uuid::Uuid::new_v7(uuid::Timestamp::from_unix(uuid::NoContext, secs, nanos));
    let mut bound = *first.as_bytes();
    bound[6] &= 0xf0;
    bound[7] = 0;
    bound[8] &= 0xc0;
    bound[9..].fill(0);
    let bound = uuid::Uuid::from_bytes(bound).to_string();
    Ok(dispatch!(store, |pool| {
        let mut tx = pool.begin().await?;
        let rows: Vec<(String, String)> = sqlx::query_as(
            "SELECT id, message_id FROM webhook_deliveries \
             WHERE id < $1 AND status <> 'pending' ORDER BY id LIMIT $2",
        )
        .bind(&bound)
        .bind(limit)
        .fetch_all(&mut *tx)
        .await?;
        for chunk in rows.chunks(500) {
            for table_and_key in [
                "DELETE FROM webhook_attempts WHERE delivery_id IN (",
                "DELETE FROM webhook_deliveries WHERE id IN (",
            ] {
                let mut q = QueryBuilder::new(table_and_key);
                let mut ids = q.separated(", ");
                for (id, _) in chunk {
                    ids.push_bind(id.as_str());
                }
                q.push(")");
                q.build().execute(&mut *tx).await?;
            }
            let mut q = QueryBuilder::new("DELETE FROM webhook_messages WHERE id IN (");
            let mut ids = q.separated(", ");
            for (_, message) in chunk {
                ids.push_bind(message.as_str());
            }
            q.push(
                ") AND NOT EXISTS (SELECT 1 FROM webhook_deliveries d WHERE d.message_id = webhook_messages.id)",
            );
            q.build().execute(&mut *tx).await?;
        }
        tx.commit().await?;
        rows.len() as u64
    }))
}

/// Outbox figures for the metrics: pending deliveries, and the earliest due time of
/// an unclaimed one.
pub async fn outbox_stats(store: &Store) -> Result<(i64, Option<i64>), sqlx::Error> {
    Ok(dispatch!(store, |pool| {
        sqlx::query_as(
            "SELECT COUNT(*), MIN(CASE WHEN owner IS NULL THEN next_attempt_us END) \
             FROM webhook_deliveries WHERE status = 'pending'",
        )
        .fetch_one(pool)
        .await?
    }))
}
