//! `/v1/dead-letters…`: rows the database refused for good, set aside by their
//! writers (read scope to list; admin scope to retry or discard, each recorded in
//! the audit log).

use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::error::ApiError;
use super::webhooks::Admin;
use super::{AppState, page_limit, rfc3339_us};
use crate::config::Scope;
use crate::deadletter::retry::{Retried, RetryError, retry as retry_letter};
use crate::deadletter::{DeadLetter, DeadLetters, Kind};
use crate::event::Actor;
use crate::ingest::IngestError;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct DeadLetterQuery {
    /// `event`, `record` or `delivery`.
    kind: Option<String>,
    /// Per page, 1 to 1000 (default 100).
    limit: Option<String>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
}

/// A dead letter as the API shows it.
#[derive(Serialize, ToSchema)]
pub struct DeadLetterView {
    id: i64,
    kind: Kind,
    /// The event id, or the log row's id.
    key: String,
    /// The row that was refused, as JSON.
    #[schema(value_type = Object)]
    row: serde_json::Value,
    /// The database's error, the last time it was tried.
    error: String,
    attempts: i64,
    first_set_aside: String,
    last_set_aside: String,
    writer: String,
}

impl DeadLetterView {
    fn of(d: DeadLetter) -> DeadLetterView {
        DeadLetterView {
            id: d.id,
            kind: d.kind,
            key: d.key,
            row: serde_json::from_str(&d.body).unwrap_or(serde_json::Value::String(d.body)),
            error: d.error,
            attempts: d.attempts,
            first_set_aside: rfc3339_us(d.first_us),
            last_set_aside: rfc3339_us(d.last_us),
            writer: d.writer,
        }
    }
}

/// A page of dead letters, newest first.
#[derive(Serialize, ToSchema)]
pub struct DeadLetterPage {
    dead_letters: Vec<DeadLetterView>,
    /// Pass as `cursor` for the next page; absent on the last.
    #[serde(skip_serializing_if = "Option::is_none")]
    next_cursor: Option<String>,
}

/// What a retry did.
#[derive(Serialize, ToSchema)]
pub struct RetryOutcome {
    /// `in_log` (written; an event is dispatched), `already_in_log` (a resend got
    /// there first), `stored` (deliveries written; they are sent as any other).
    outcome: &'static str,
}

fn dead_letters(state: &AppState) -> Result<DeadLetters, ApiError> {
    state
        .store
        .clone()
        .map(DeadLetters::new)
        .ok_or_else(|| ApiError::not_found("no database is open"))
}

fn db_error(error: sqlx::Error) -> ApiError {
    tracing::error!(%error, "the dead letters' table cannot be read");
    ApiError::unavailable(
        "database_unavailable",
        "the database cannot be read; retry shortly",
        5,
    )
}

/// Lists the dead letters, newest first.
#[utoipa::path(get, path = "/v1/dead-letters", tag = "dead-letters", params(DeadLetterQuery),
    responses((status = 200, body = DeadLetterPage), (status = 400, description = "Bad kind, limit or cursor")),
    security(("bearer" = ["read"])))]
pub async fn list(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    query: Result<Query<DeadLetterQuery>, QueryRejection>,
) -> Result<Json<DeadLetterPage>, ApiError> {
    state.auth.authorize(&headers, Scope::Read)?;
    let Query(query) = query.map_err(|e| ApiError::bad_query(e.body_text()))?;
    let kind = match query.kind.as_deref() {
        None => None,
        Some(k) => Some(Kind::parse(k).ok_or_else(|| {
            ApiError::bad_query(format!(
                "`kind` {k:?} is not one of: event, record, delivery"
            ))
        })?),
    };
    let limit = page_limit(query.limit.as_deref())?;
    let before = match query.cursor.as_deref() {
        None => None,
        Some(c) => Some(
            super::decimal_cursor(c)
                .ok_or_else(|| ApiError::bad_query(format!("`cursor` {c:?} is not a cursor")))?,
        ),
    };
    let rows = dead_letters(&state)?
        .list(kind, before, limit)
        .await
        .map_err(db_error)?;
    let next_cursor = (rows.len() as i64 == limit)
        .then(|| rows.last().map(|d| d.id.to_string()))
        .flatten();
    Ok(Json(DeadLetterPage {
        dead_letters: rows.into_iter().map(DeadLetterView::of).collect(),
        next_cursor,
    }))
}

/// One dead letter.
#[utoipa::path(get, path = "/v1/dead-letters/{id}", tag = "dead-letters",
    params(("id" = i64, Path, description = "The dead letter's id")),
    responses((status = 200, body = DeadLetterView), (status = 404, description = "No such dead letter")),
    security(("bearer" = ["read"])))]
pub async fn get(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<DeadLetterView>, ApiError> {
    state.auth.authorize(&headers, Scope::Read)?;
    let id = letter_id(&id)?;
    match dead_letters(&state)?.get(id).await.map_err(db_error)? {
        Some(d) => Ok(Json(DeadLetterView::of(d))),
        None => Err(ApiError::not_found(format!("no dead letter has id {id}"))),
    }
}

/// Writes a dead letter's row again, once its cause is fixed. In the log, the dead
/// letter goes (an event is then dispatched as any other); refused again, it
/// stays with the new error (409).
#[utoipa::path(post, path = "/v1/dead-letters/{id}/retry", tag = "dead-letters",
    params(("id" = i64, Path, description = "The dead letter's id")),
    responses((status = 200, body = RetryOutcome), (status = 404, description = "No such dead letter"),
        (status = 409, description = "Refused again; the body is the dead letter as it is now"),
        (status = 503, description = "The log cannot take it now; see Retry-After")),
    security(("bearer" = ["admin"])))]
pub async fn retry(
    State(state): State<Arc<AppState>>,
    Admin(actor): Admin,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = letter_id(&id)?;
    let store = dead_letters(&state)?;
    let result = retry_letter(&store, state.ingest.log(), state.webhooks.as_deref(), id).await;
    let outcome = match &result {
        Ok(Retried::InLog) => "in_log",
        Ok(Retried::Stored) => "stored",
        Ok(Retried::AlreadyInLog) => "already_in_log",
        Ok(Retried::StillRefused(_)) => "refused_again",
        Err(_) => "failed",
    };
    if !matches!(result, Err(RetryError::NotFound(_))) {
        record(&state, &actor, "dead_letter.retry", id, outcome).await;
    }
    match result {
        Ok(Retried::StillRefused(now)) => Ok((
            StatusCode::CONFLICT,
            Json(serde_json::json!({
                "error": {"code": "refused_again", "message": format!("the database refused the row again: {}", now.error)},
                "dead_letter": DeadLetterView::of(now),
            })),
        )
            .into_response()),
        Ok(_) => Ok(Json(RetryOutcome { outcome }).into_response()),
        Err(RetryError::NotFound(id)) => Err(ApiError::not_found(format!("no dead letter has id {id}"))),
        Err(e @ RetryError::Cannot(..)) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "cannot_retry",
            e.to_string(),
        )),
        Err(e @ RetryError::Unreadable(..)) => Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "unreadable",
            e.to_string(),
        )),
        Err(RetryError::Log(e)) => Err(IngestError::from(e).into()),
        Err(RetryError::Db(e)) => Err(db_error(e)),
    }
}

/// Discards a dead letter: its row is given up for good.
#[utoipa::path(delete, path = "/v1/dead-letters/{id}", tag = "dead-letters",
    params(("id" = i64, Path, description = "The dead letter's id")),
    responses((status = 204, description = "Discarded"), (status = 404, description = "No such dead letter")),
    security(("bearer" = ["admin"])))]
pub async fn discard(
    State(state): State<Arc<AppState>>,
    Admin(actor): Admin,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let id = letter_id(&id)?;
    if !dead_letters(&state)?.remove(id).await.map_err(db_error)? {
        return Err(ApiError::not_found(format!("no dead letter has id {id}")));
    }
    record(&state, &actor, "dead_letter.discard", id, "discarded").await;
    Ok(StatusCode::NO_CONTENT)
}

/// Records an operator's retry or discard in the audit log.
async fn record(state: &AppState, actor: &Actor, kind: &str, id: i64, outcome: &str) {
    let Some(audit) = &state.audit else {
        return;
    };
    let details = serde_json::json!({ "outcome": outcome });
    audit
        .record_action(crate::audit::Entry::of_action(
            kind,
            actor,
            "dead_letter",
            &id.to_string(),
            details,
        ))
        .await;
}

/// A dead letter's id from the path: a 64-bit integer, else 400 `bad_path` with the
/// usual error body.
fn letter_id(text: &str) -> Result<i64, ApiError> {
    text.parse().map_err(|_| {
        ApiError::bad_request(
            "bad_path",
            format!("dead letter id {text:?} is not a 64-bit integer"),
        )
    })
}
