//! The endpoints' table: one row per webhook endpoint, its secrets (sealed, see
//! [`super::super::seal`]) and failure run.

use chrono::{DateTime, Utc};

use super::super::endpoint::{Endpoint, Format};
use super::super::seal::{SealError, Sealer};
use crate::store::{Store, dispatch};

const ENDPOINT_COLUMNS: &str = "id, name, url, events, domain, format, enabled, disabled_reason, secret, \
     previous_secret, previous_secret_until_us, failure_count, last_triggered_us, created_us, updated_us, \
     asymmetric_signing";

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
    bool,
);

fn time_of(us: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(us).unwrap_or_default()
}

/// A secret the sealer could not open, as the error a read returns.
fn unsealable(error: SealError) -> sqlx::Error {
    sqlx::Error::Decode(Box::new(error))
}

fn endpoint_of(sealer: &Sealer, mut r: EndpointRow) -> Result<Endpoint, sqlx::Error> {
    let now = Utc::now().timestamp_micros();
    r.8 = sealer
        .open_value(&r.0, "secret", &r.8)
        .map_err(unsealable)?;
    r.9 =
        r.9.map(|old| sealer.open_value(&r.0, "previous_secret", &old))
            .transpose()
            .map_err(unsealable)?;
    let mut endpoint = Endpoint {
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
        asymmetric: r.15,
        public_key: None,
    };
    endpoint.derive_public_key();
    Ok(endpoint)
}

/// An endpoint's two secret columns, sealed.
fn sealed(sealer: &Sealer, e: &Endpoint) -> (String, Option<String>) {
    (
        sealer.seal(&e.id, "secret", &e.secret),
        e.previous_secret
            .as_deref()
            .map(|old| sealer.seal(&e.id, "previous_secret", old)),
    )
}

pub async fn insert_endpoint(
    store: &Store,
    sealer: &Sealer,
    e: &Endpoint,
) -> Result<(), sqlx::Error> {
    let (secret, previous_secret) = sealed(sealer, e);
    let events = serde_json::to_string(&e.events).expect("strings serialize");
    dispatch!(store, |pool| {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO webhook_endpoints ({ENDPOINT_COLUMNS}) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)"
        )))
        .bind(&e.id)
        .bind(&e.name)
        .bind(&e.url)
        .bind(&events)
        .bind(&e.domain)
        .bind(e.format.as_str())
        .bind(e.enabled)
        .bind(&e.disabled_reason)
        .bind(&secret)
        .bind(&previous_secret)
        .bind(e.previous_secret_until_us)
        .bind(e.failure_count)
        .bind(e.last_triggered_at.map(|t| t.timestamp_micros()))
        .bind(e.created_at.timestamp_micros())
        .bind(e.updated_at.timestamp_micros())
        .bind(e.asymmetric)
        .execute(pool)
        .await?;
    });
    Ok(())
}

/// Writes every field an operator or the dispatcher may change.
pub async fn update_endpoint(
    store: &Store,
    sealer: &Sealer,
    e: &Endpoint,
) -> Result<bool, sqlx::Error> {
    let (secret, previous_secret) = sealed(sealer, e);
    let events = serde_json::to_string(&e.events).expect("strings serialize");
    let done = dispatch!(store, |pool| {
        sqlx::query(
            "UPDATE webhook_endpoints SET name = $2, url = $3, events = $4, domain = $5, format = $6, \
             enabled = $7, disabled_reason = $8, secret = $9, previous_secret = $10, \
             previous_secret_until_us = $11, failure_count = $12, updated_us = $13, \
             asymmetric_signing = $14 WHERE id = $1",
        )
        .bind(&e.id)
        .bind(&e.name)
        .bind(&e.url)
        .bind(&events)
        .bind(&e.domain)
        .bind(e.format.as_str())
        .bind(e.enabled)
        .bind(&e.disabled_reason)
        .bind(&secret)
        .bind(&previous_secret)
        .bind(e.previous_secret_until_us)
        .bind(e.failure_count)
        .bind(e.updated_at.timestamp_micros())
        .bind(e.asymmetric)
        .execute(pool)
        .await?
        .rows_affected()
    });
    Ok(done == 1)
}

pub async fn list_endpoints(store: &Store, sealer: &Sealer) -> Result<Vec<Endpoint>, sqlx::Error> {
    let rows: Vec<EndpointRow> = dispatch!(store, |pool| {
        sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints ORDER BY created_us, id"
        )))
        .fetch_all(pool)
        .await?
    });
    rows.into_iter().map(|r| endpoint_of(sealer, r)).collect()
}

pub async fn get_endpoint(
    store: &Store,
    sealer: &Sealer,
    id: &str,
) -> Result<Option<Endpoint>, sqlx::Error> {
    let row: Option<EndpointRow> = dispatch!(store, |pool| {
        sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE id = $1"
        )))
        .bind(id)
        .fetch_optional(pool)
        .await?
    });
    row.map(|r| endpoint_of(sealer, r)).transpose()
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

/// Seals, under the sealer's current key, every secret stored in clear (written
/// before secrets were sealed) or under another key; returns how many endpoints
/// changed. Each row is changed only if it still holds what was read.
pub async fn reseal_secrets(store: &Store, sealer: &Sealer) -> Result<usize, sqlx::Error> {
    let rows: Vec<(String, String, Option<String>)> = dispatch!(store, |pool| {
        sqlx::query_as("SELECT id, secret, previous_secret FROM webhook_endpoints")
            .fetch_all(pool)
            .await?
    });
    let mut changed = 0;
    for (id, secret, previous) in rows {
        let stale = !sealer.is_current(&secret)
            || previous.as_deref().is_some_and(|p| !sealer.is_current(p));
        if !stale {
            continue;
        }
        let open =
            |column: &str, value: &str| sealer.open_value(&id, column, value).map_err(unsealable);
        let new_secret = sealer.seal(&id, "secret", &open("secret", &secret)?);
        let new_previous = match &previous {
            Some(p) => Some(sealer.seal(&id, "previous_secret", &open("previous_secret", p)?)),
            None => None,
        };
        let done = dispatch!(store, |pool| {
            sqlx::query(
                "UPDATE webhook_endpoints SET secret = $2, previous_secret = $3 \
                 WHERE id = $1 AND secret = $4",
            )
            .bind(&id)
            .bind(&new_secret)
            .bind(&new_previous)
            .bind(&secret)
            .execute(pool)
            .await?
            .rows_affected()
        });
        changed += done as usize;
    }
    Ok(changed)
}

/// Re-seals every endpoint's secrets under `new_key`, in one transaction: either
/// every row moves to the new key or none does.
pub async fn reseal_under(
    store: &Store,
    sealer: &Sealer,
    new_key: &[u8; 32],
) -> Result<usize, sqlx::Error> {
    use super::super::seal::seal_with_key;
    let changed = dispatch!(store, |pool| {
        let mut tx = pool.begin().await?;
        let rows: Vec<(String, String, Option<String>)> =
            sqlx::query_as("SELECT id, secret, previous_secret FROM webhook_endpoints")
                .fetch_all(&mut *tx)
                .await?;
        for (id, secret, previous) in &rows {
            let open = |column: &str, value: &str| {
                sealer.open_value(id, column, value).map_err(unsealable)
            };
            let secret = seal_with_key(new_key, id, "secret", &open("secret", secret)?);
            let previous = match previous {
                Some(p) => Some(seal_with_key(
                    new_key,
                    id,
                    "previous_secret",
                    &open("previous_secret", p)?,
                )),
                None => None,
            };
            sqlx::query(
                "UPDATE webhook_endpoints SET secret = $2, previous_secret = $3 WHERE id = $1",
            )
            .bind(id)
            .bind(&secret)
            .bind(&previous)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        rows.len()
    });
    Ok(changed)
}
