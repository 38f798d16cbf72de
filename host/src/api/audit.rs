//! `GET /v1/audit` (query) and `GET /v1/audit/verify`.

use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::error::ApiError;
use super::{AppState, page_limit, rfc3339_us};
use crate::audit::{self, Filter, Record};
use crate::config::Scope;
use crate::event::TypePattern;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    /// Comma-separated type patterns (`message.*,user.login`).
    types: Option<String>,
    /// The actor: token name, on-behalf-of user, or `evhost`.
    actor: Option<String>,
    resource_type: Option<String>,
    resource_id: Option<String>,
    /// Event time from (inclusive), RFC 3339.
    since: Option<String>,
    /// Event time until (exclusive), RFC 3339.
    until: Option<String>,
    /// Only the row of this event.
    event_id: Option<String>,
    /// `newest` first (the default) or `oldest` first.
    order: Option<String>,
    /// Rows per page, 1 to 1000 (default 100).
    limit: Option<String>,
    /// `next_cursor` of the previous page (of the same order).
    cursor: Option<String>,
}

/// One audit row as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditRow {
    seq: i64,
    chain: String,
    chain_seq: i64,
    event_id: String,
    event_type: String,
    actor: Option<String>,
    actor_token: Option<String>,
    actor_ip: Option<String>,
    resource_type: Option<String>,
    resource_id: Option<String>,
    /// The event's source, on rows that are accepted events (the rows the log
    /// dispatches); absent on management actions and plugin decisions.
    #[serde(skip_serializing_if = "Option::is_none")]
    source: Option<String>,
    /// The event's payload (any JSON value, as published), or an action's particulars.
    details: serde_json::Value,
    time: String,
    recorded_at: String,
    prev_hash: String,
    hash: String,
}

impl From<Record> for AuditRow {
    fn from(r: Record) -> AuditRow {
        let e = r.entry;
        AuditRow {
            seq: r.seq,
            chain: r.chain,
            chain_seq: r.chain_seq,
            details: serde_json::from_str(&e.details)
                .unwrap_or(serde_json::Value::String(e.details)),
            event_id: e.event_id,
            event_type: e.event_type,
            actor: e.actor,
            actor_token: e.actor_token,
            actor_ip: e.actor_ip,
            resource_type: e.resource_type,
            resource_id: e.resource_id,
            source: e.source,
            time: rfc3339_us(e.time_us),
            recorded_at: rfc3339_us(r.recorded_us),
            prev_hash: r.prev_hash,
            hash: r.hash,
        }
    }
}

/// A page of audit rows.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditPage {
    rows: Vec<AuditRow>,
    /// Pass as `cursor` for the next page (older, or newer with `order=oldest`); null
    /// on the last page.
    next_cursor: Option<String>,
}

fn bad(message: String) -> ApiError {
    ApiError::bad_query(message)
}

fn parse_time(name: &str, value: &Option<String>) -> Result<Option<i64>, ApiError> {
    value
        .as_deref()
        .map(|v| {
            DateTime::parse_from_rfc3339(v)
                .map(|t| t.with_timezone(&Utc).timestamp_micros())
                .map_err(|e| {
                    bad(format!(
                        "`{name}` {v:?} is not an RFC 3339 time such as 2026-11-27T10:00:00Z: {e}"
                    ))
                })
        })
        .transpose()
}

/// A page cursor: the last row's sequence number, in decimal.
fn encode_cursor(seq: i64) -> String {
    seq.to_string()
}

fn decode_cursor(cursor: &str) -> Result<i64, ApiError> {
    super::decimal_cursor(cursor).ok_or_else(|| {
        bad("`cursor` is not a cursor this API gave out; start again without it".into())
    })
}

impl AuditQuery {
    fn filter(&self) -> Result<Filter, ApiError> {
        let limit = page_limit(self.limit.as_deref())?;
        let since_us = parse_time("since", &self.since)?;
        // A window that holds no time (`until` not after `since`) matches no row: an
        // empty page, as any filter that matches nothing.
        let until_us = parse_time("until", &self.until)?;
        let oldest_first = match self.order.as_deref() {
            None | Some("newest") => false,
            Some("oldest") => true,
            Some(other) => {
                return Err(bad(format!(
                    "`order` is `newest` or `oldest`, not {other:?}"
                )));
            }
        };
        let cursor = self.cursor.as_deref().map(decode_cursor).transpose()?;
        Ok(Filter {
            types: TypePattern::parse_list(self.types.as_deref().unwrap_or(""))
                .map_err(|e| bad(e.to_string()))?,
            actor: self.actor.clone(),
            resource_type: self.resource_type.clone(),
            resource_id: self
                .resource_id
                .as_deref()
                .map(crate::audit::record::resource_key),
            since_us,
            until_us,
            event_id: self.event_id.clone(),
            before_seq: cursor.filter(|_| !oldest_first),
            after_seq: cursor.filter(|_| oldest_first),
            oldest_first,
            limit,
        })
    }
}

fn audit_store(state: &AppState) -> Result<&crate::store::Store, ApiError> {
    match (&state.audit, &state.store) {
        (Some(_), Some(store)) => Ok(store),
        _ => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "audit_disabled",
            "the audit log is turned off (audit.enabled: false)",
        )),
    }
}

fn db_error(e: sqlx::Error) -> ApiError {
    tracing::error!(error = %e, "audit query failed");
    ApiError::unavailable(
        "database_unavailable",
        "the database did not answer; try again shortly",
        5,
    )
}

/// Audit rows, newest first (or oldest first), filtered and paginated.
#[utoipa::path(get, path = "/v1/audit", tag = "audit", params(AuditQuery),
    responses((status = 200, description = "A page of rows", body = AuditPage),
              (status = 400, description = "Bad filter, time, limit or cursor")),
    security(("bearer" = ["read"])))]
pub async fn query(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    query: Result<Query<AuditQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    state.auth.authorize(&headers, Scope::Read)?;
    let Query(query) = query.map_err(|e| bad(e.body_text()))?;
    let filter = query.filter()?;
    let store = audit_store(&state)?;
    let records = audit::query(store, &filter).await.map_err(db_error)?;
    let next_cursor = (records.len() as i64 == filter.limit)
        .then(|| records.last().map(|r| encode_cursor(r.seq)))
        .flatten();
    let rows = records.into_iter().map(AuditRow::from).collect();
    Ok(Json(AuditPage { rows, next_cursor }).into_response())
}

/// Walks every chain and reports the first break, if any.
#[utoipa::path(get, path = "/v1/audit/verify", tag = "audit",
    responses((status = 200, description = "`{\"ok\": true, \"rows\": N}` or the first break"),
        (status = 429, description = "`too_many_verifies`: `server.max_verifies` runs are going on already")),
    security(("bearer" = ["read"])))]
pub async fn verify(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    state.auth.authorize(&headers, Scope::Read)?;
    // A run reads the whole log: a few at once, so reads cannot starve the writers.
    let _run = state.verifies.clone().try_acquire_owned().map_err(|_| {
        ApiError::too_many(
            "too_many_verifies",
            "as many audit verifications as server.max_verifies allows are running; retry when one ends",
            5,
        )
    })?;
    let store = audit_store(&state)?;
    let report = audit::verify(store).await.map_err(db_error)?;
    Ok(Json(report).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_garbage_is_refused() {
        assert_eq!(decode_cursor(&encode_cursor(42)).unwrap(), 42);
        assert!(decode_cursor("nope").is_err());
        assert!(decode_cursor("+5").is_err());
        assert!(decode_cursor("-5").is_err());
    }
}
