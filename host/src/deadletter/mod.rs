//! Dead letters: rows a writer set aside because the database refuses them and
//! always will as they are (a constraint, a value it cannot store), so that one bad
//! row cannot hold up the rest of its batch, and every batch after it.
//!
//! A dead letter keeps the whole row (as JSON text, which any database stores) and
//! the database's error. It is listed (`GET /v1/dead-letters`, `evhost
//! dead-letters`), counted (`evhost_dead_letters_total{kind}`), and retried once the
//! cause is fixed: a retry writes the row again through its writer, and the dead
//! letter goes once that succeeds. Setting the same row aside again (a resend of
//! the same event) updates its dead letter rather than adding one.

pub mod retry;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use serde::{Deserialize, Serialize};

use crate::store::{Store, dispatch};

/// What a dead letter holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// An accepted event the log could not take (its publisher was told).
    Event,
    /// A log row that is not an event: a management action or a plugin decision.
    Record,
    /// An event's webhook deliveries, which the outbox could not write.
    Delivery,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Event => "event",
            Kind::Record => "record",
            Kind::Delivery => "delivery",
        }
    }

    pub fn parse(text: &str) -> Option<Kind> {
        [Kind::Event, Kind::Record, Kind::Delivery]
            .into_iter()
            .find(|k| k.as_str() == text)
    }
}

/// One dead letter.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct DeadLetter {
    pub id: i64,
    pub kind: Kind,
    /// What the row is: an event id, a log row's id (for deliveries, the event's
    /// id, with `:deliver` for a plugin's).
    pub key: String,
    /// The row as JSON text.
    pub body: String,
    /// The database's error, the last time the row was tried.
    pub error: String,
    /// How many times it was set aside (a resend, a failed retry).
    pub attempts: i64,
    /// First and last time it was set aside, microseconds since the Unix epoch.
    pub first_us: i64,
    pub last_us: i64,
    /// The writer that set it aside (a log chain, a webhook owner).
    pub writer: String,
}

type Row = (i64, String, String, String, String, i64, i64, i64, String);

fn from_row(r: Row) -> DeadLetter {
    DeadLetter {
        id: r.0,
        kind: Kind::parse(&r.1).unwrap_or(Kind::Record),
        key: r.2,
        body: r.3,
        error: r.4,
        attempts: r.5,
        first_us: r.6,
        last_us: r.7,
        writer: r.8,
    }
}

const COLUMNS: &str = "id, kind, item_key, body, error, attempts, first_us, last_us, writer";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: &'static str,
}

/// `evhost_dead_letters_total{kind}`.
pub struct DeadLetterMetrics {
    set_aside: Family<KindLabel, Counter>,
}

impl DeadLetterMetrics {
    pub(crate) fn register(registry: &mut Registry) -> DeadLetterMetrics {
        let set_aside = Family::<KindLabel, Counter>::default();
        registry.register(
            "evhost_dead_letters",
            "Rows set aside as dead letters because the database refuses them, by kind",
            set_aside.clone(),
        );
        DeadLetterMetrics { set_aside }
    }
}

/// The dead letters' table.
#[derive(Clone)]
pub struct DeadLetters {
    store: Store,
}

impl DeadLetters {
    pub fn new(store: Store) -> DeadLetters {
        DeadLetters { store }
    }

    /// Sets a row aside (or, if it is there already, records the new error), and
    /// counts it. Returns the dead letter's id. Committed before it returns (on
    /// SQLite with `synchronous = FULL`), since the row may exist nowhere else.
    pub async fn set_aside(
        &self,
        metrics: &DeadLetterMetrics,
        kind: Kind,
        key: &str,
        body: &str,
        error: &str,
        writer: &str,
    ) -> Result<i64, sqlx::Error> {
        let now = chrono::Utc::now().timestamp_micros();
        // Text any database stores: a key is bounded for the index, and an error
        // message may quote the value the database refused, NUL included.
        let key = crate::audit::record::resource_key(key);
        let error = error.replace('\0', "\u{FFFD}");
        let (id,): (i64,) = dispatch!(&self.store, |pool| {
            sqlx::query_as(
                "INSERT INTO dead_letters (kind, item_key, body, error, attempts, first_us, last_us, writer) \
                 VALUES ($1, $2, $3, $4, 1, $5, $5, $6) \
                 ON CONFLICT (kind, item_key) DO UPDATE SET error = excluded.error, \
                 attempts = dead_letters.attempts + 1, last_us = excluded.last_us, writer = excluded.writer \
                 RETURNING id",
            )
            .bind(kind.as_str())
            .bind(&key)
            .bind(body)
            .bind(&error)
            .bind(now)
            .bind(writer)
            .fetch_one(pool)
            .await?
        });
        metrics
            .set_aside
            .get_or_create(&KindLabel {
                kind: kind.as_str(),
            })
            .inc();
        tracing::error!(id, kind = kind.as_str(), key, %error, "the database refuses a row; set aside as a dead letter, the rest goes on");
        Ok(id)
    }

    /// [`DeadLetters::set_aside`], tried until it succeeds: the row may exist
    /// nowhere else, so its writer waits rather than drop it.
    pub async fn keep(
        &self,
        metrics: &DeadLetterMetrics,
        kind: Kind,
        key: &str,
        body: &str,
        error: &str,
        writer: &str,
    ) -> i64 {
        let mut backoff = std::time::Duration::from_millis(100);
        loop {
            match self
                .set_aside(metrics, kind, key, body, error, writer)
                .await
            {
                Ok(id) => return id,
                Err(e) => {
                    tracing::error!(error = %e, kind = kind.as_str(), "cannot keep a refused row as a dead letter; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(std::time::Duration::from_secs(5));
                }
            }
        }
    }

    /// Dead letters, newest first: of `kind` if given, with ids below `before`
    /// (the cursor of the previous page).
    pub async fn list(
        &self,
        kind: Option<Kind>,
        before: Option<i64>,
        limit: i64,
    ) -> Result<Vec<DeadLetter>, sqlx::Error> {
        let rows: Vec<Row> = dispatch!(&self.store, |pool| {
            sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "SELECT {COLUMNS} FROM dead_letters WHERE ($1 IS NULL OR kind = $1) \
                 AND ($2 IS NULL OR id < $2) ORDER BY id DESC LIMIT $3"
            )))
            .bind(kind.map(Kind::as_str))
            .bind(before)
            .bind(limit)
            .fetch_all(pool)
            .await?
        });
        Ok(rows.into_iter().map(from_row).collect())
    }

    pub async fn get(&self, id: i64) -> Result<Option<DeadLetter>, sqlx::Error> {
        let row: Option<Row> = dispatch!(&self.store, |pool| {
            sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "SELECT {COLUMNS} FROM dead_letters WHERE id = $1"
            )))
            .bind(id)
            .fetch_optional(pool)
            .await?
        });
        Ok(row.map(from_row))
    }

    /// Removes a dead letter; false if there was none.
    pub async fn remove(&self, id: i64) -> Result<bool, sqlx::Error> {
        let done = dispatch!(&self.store, |pool| {
            sqlx::query("DELETE FROM dead_letters WHERE id = $1")
                .bind(id)
                .execute(pool)
                .await?
                .rows_affected()
        });
        Ok(done > 0)
    }
}
