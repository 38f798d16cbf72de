//! The endpoints' table: one row per webhook endpoint, its secrets and failure run.

use chrono::{DateTime, Utc};

use super::super::endpoint::{Endpoint, Format};
use crate::store::{Store, dispatch};

const ENDPOINT_COLUMNS: &str = "id, name, url, events, domain, format, enabled, disabled_reason, secret, \
     previous_secret, previous_secret_until_us, failure_count, last_triggered_us, created_us, updated_us";

type EndpointRow = (
    String,
    String,
    String,
    String,
    Option<String>,
    String,
    bool,
    Option<String>,
    String,
    Option<String>,
    Option<i64>,
    i64,
    Option<i64>,
    i64,
    i64,
);

fn time_of(us: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(us).unwrap_or_default()
}

fn endpoint_of(r: EndpointRow) -> Endpoint {
    let now = Utc::now().timestamp_micros();
    Endpoint {
        id: r.0,
        name: r.1,
        url: r.2,
        events: serde_json::from_str(&r.3).unwrap_or_default(),
        domain: r.4,
        format: Format::parse(&r.5).unwrap_or_default(),
        enabled: r.6,
        disabled_reason: r.7,
        secret: r.8,
        rotating: r.9.is_some() && r.10.is_some_and(|until| until > now),
        previous_secret: r.9,
        previous_secret_until_us: r.10,
        failure_count: r.11,
        last_triggered_at: r.12.map(time_of),
        created_at: time_of(r.13),
        updated_at: time_of(r.14),
    }
}

pub async fn insert_endpoint(store: &Store, e: &Endpoint) -> Result<(), sqlx::Error> {
    let events = serde_json::to_string(&e.events).expect("strings serialize");
    dispatch!(store, |pool| {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO webhook_endpoints ({ENDPOINT_COLUMNS}) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)"
        )))
        .bind(&e.id)
        .bind(&e.name)
        .bind(&e.url)
        .bind(&events)
        .bind(&e.domain)
        .bind(e.format.as_str())
        .bind(e.enabled)
        .bind(&e.disabled_reason)
        .bind(&e.secret)
        .bind(&e.previous_secret)
        .bind(e.previous_secret_until_us)
        .bind(e.failure_count)
        .bind(e.last_triggered_at.map(|t| t.timestamp_micros()))
        .bind(e.created_at.timestamp_micros())
        .bind(e.updated_at.timestamp_micros())
        .execute(pool)
        .await?;
    });
    Ok(())
}

/// Writes every field an operator or the dispatcher may change.
pub async fn update_endpoint(store: &Store, e: &Endpoint) -> Result<bool, sqlx::Error> {
    let events = serde_json::to_string(&e.events).expect("strings serialize");
    let done = dispatch!(store, |pool| {
        sqlx::query(
            "UPDATE webhook_endpoints SET name = $2, url = $3, events = $4, domain = $5, format = $6, \
             enabled = $7, disabled_reason = $8, secret = $9, previous_secret = $10, \
             previous_secret_until_us = $11, failure_count = $12, updated_us = $13 WHERE id = $1",
        )
        .bind(&e.id)
        .bind(&e.name)
        .bind(&e.url)
        .bind(&events)
        .bind(&e.domain)
        .bind(e.format.as_str())
        .bind(e.enabled)
        .bind(&e.disabled_reason)
        .bind(&e.secret)
        .bind(&e.previous_secret)
        .bind(e.previous_secret_until_us)
        .bind(e.failure_count)
        .bind(e.updated_at.timestamp_micros())
        .execute(pool)
        .await?
        .rows_affected()
    });
    Ok(done == 1)
}

pub async fn list_endpoints(store: &Store) -> Result<Vec<Endpoint>, sqlx::Error> {
    let rows: Vec<EndpointRow> = dispatch!(store, |pool| {
        sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints ORDER BY created_us, id"
        )))
        .fetch_all(pool)
        .await?
    });
    Ok(rows.into_iter().map(endpoint_of).collect())
}

pub async fn get_endpoint(store: &Store, id: &str) -> Result<Option<Endpoint>, sqlx::Error> {
    let row: Option<EndpointRow> = dispatch!(store, |pool| {
        sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE id = $1"
        )))
        .bind(id)
        .fetch_optional(pool)
        .await?
    });
    Ok(row.map(endpoint_of))
}

/// Removes an endpoint with its deliveries and their attempts.
pub async fn delete_endpoint(store: &Store, id: &str) -> Result<bool, sqlx::Error> {
    let done = dispatch!(store, |pool| {
        let mut tx = pool.begin().await?;
        sqlx::query(
            "DELETE FROM webhook_attempts WHERE delivery_id IN \
             (SELECT id FROM webhook_deliveries WHERE endpoint_id = $1)",
        )
        .bind(id)
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM webhook_deliveries WHERE endpoint_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        let n = sqlx::query("DELETE FROM webhook_endpoints WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        tx.commit().await?;
        n
    });
    Ok(done == 1)
}
