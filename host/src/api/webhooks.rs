//! `/v1/webhooks…` and `/v1/deliveries…`: endpoint management (admin scope) and
//! the delivery history.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{ConnectInfo, FromRequestParts, Path, Query, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::error::ApiError;
use super::{AppState, page_limit, rfc3339_us};
use crate::config::Scope;
use crate::event::Actor;
use crate::webhooks::egress::UrlError;
use crate::webhooks::{
    AttemptRow, DeliveryRow, Endpoint, EndpointPatch, NewEndpoint, WebhookError, Webhooks, db,
};

impl From<WebhookError> for ApiError {
    fn from(e: WebhookError) -> ApiError {
        match e {
            WebhookError::NoEndpoint(_) | WebhookError::NoDelivery(_) => {
                ApiError::not_found(e.to_string())
            }
            WebhookError::StillPending(_) => {
                ApiError::new(StatusCode::CONFLICT, "delivery_pending", e.to_string())
            }
            // 400 for what the OpenAPI document's schema refuses too, 422 for a
            // well-formed value that is refused for what it names.
            WebhookError::Invalid(f) => ApiError {
                field: Some(f.field.to_string()),
                ..if f.unknown {
                    ApiError::new(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        "unknown_event_type",
                        f.message,
                    )
                } else {
                    ApiError::bad_request("invalid_webhook", f.message)
                }
            },
            WebhookError::Url(u) => {
                let (status, code) = match u {
                    UrlError::Invalid(_) => (StatusCode::BAD_REQUEST, "invalid_url"),
                    UrlError::Refused(_) => (StatusCode::UNPROCESSABLE_ENTITY, "refused_address"),
                    UrlError::Policy(_) => (StatusCode::UNPROCESSABLE_ENTITY, "url_not_allowed"),
                    UrlError::Unresolvable { .. } => {
                        (StatusCode::UNPROCESSABLE_ENTITY, "unresolvable_url")
                    }
                };
                ApiError {
                    field: Some("url".into()),
                    ..ApiError::new(status, code, u.to_string())
                }
            }
            WebhookError::Db(error) => {
                tracing::error!(%error, "webhook database operation failed");
                ApiError::unavailable(
                    "database_unavailable",
                    "the database did not answer; try again shortly",
                    5,
                )
            }
            WebhookError::Stopping => ApiError::unavailable("stopping", e.to_string(), 5),
            WebhookError::Seal(error) => {
                tracing::error!(error = %crate::error_chain(&error), "a webhook secret could not be opened");
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "secret_key_missing",
                    error.to_string(),
                )
            }
        }
    }
}

fn webhooks(state: &AppState) -> Result<&Arc<Webhooks>, ApiError> {
    state.webhooks.as_ref().ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "webhooks_disabled",
            "webhooks are turned off (webhooks.enabled: false)",
        )
    })
}

/// A caller with the admin scope, as the actor its changes are recorded under.
/// Every route here takes one, so authorization runs before anything else.
pub struct Admin(pub(super) Actor);

impl FromRequestParts<Arc<AppState>> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Admin, ApiError> {
        let principal = state.auth.authorize(&parts.headers, Scope::Admin)?;
        let ip = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(addr)| addr.ip());
        Ok(Admin(Actor {
            token: principal.name,
            ip,
            on_behalf_of: None,
        }))
    }
}

fn body<T>(body: Result<Json<T>, JsonRejection>) -> Result<T, ApiError> {
    match body {
        Ok(Json(t)) => Ok(t),
        Err(JsonRejection::MissingJsonContentType(e)) => Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            e.body_text(),
        )),
        Err(e) => Err(ApiError::bad_request("invalid_body", e.body_text())),
    }
}

/// An endpoint with its secret: only in the answers to create and rotate-secret.
#[derive(Serialize, ToSchema)]
pub struct EndpointWithSecret {
    #[serde(flatten)]
    endpoint: Endpoint,
    /// `whsec_…`: shown now and never again. Sign-checking needs it.
    secret: String,
}

/// A list of endpoints (without secrets).
#[derive(Serialize, ToSchema)]
pub struct EndpointList {
    webhooks: Vec<Endpoint>,
}

/// Adds a webhook endpoint.
#[utoipa::path(post, path = "/v1/webhooks", tag = "webhooks", request_body = NewEndpoint,
    responses((status = 201, description = "Created; the secret is shown only now", body = EndpointWithSecret),
              (status = 400, description = "Bad name, URL, event pattern or domain"),
              (status = 422, description = "Well formed but refused: `refused_address`, `unresolvable_url`, `url_not_allowed` (webhooks.https_only, allowed_ports) or `unknown_event_type`")),
    security(("bearer" = ["admin"])))]
pub async fn create(
    State(state): State<Arc<AppState>>,
    Admin(actor): Admin,
    new: Result<Json<NewEndpoint>, JsonRejection>,
) -> Result<Response, ApiError> {
    let webhooks = webhooks(&state)?;
    let new = body(new)?;
    let endpoint = webhooks.create(new, &actor).await?;
    let secret = endpoint.secret.clone();
    Ok((
        StatusCode::CREATED,
        Json(EndpointWithSecret { endpoint, secret }),
    )
        .into_response())
}

/// Lists the endpoints.
#[utoipa::path(get, path = "/v1/webhooks", tag = "webhooks",
    responses((status = 200, body = EndpointList)), security(("bearer" = ["admin"])))]
pub async fn list(
    State(state): State<Arc<AppState>>,
    _admin: Admin,
) -> Result<Json<EndpointList>, ApiError> {
    Ok(Json(EndpointList {
        webhooks: webhooks(&state)?.list().await?,
    }))
}

/// One endpoint.
#[utoipa::path(get, path = "/v1/webhooks/{id}", tag = "webhooks",
    responses((status = 200, body = Endpoint), (status = 404, description = "No such endpoint")),
    security(("bearer" = ["admin"])))]
pub async fn get(
    State(state): State<Arc<AppState>>,
    _admin: Admin,
    Path(id): Path<String>,
) -> Result<Json<Endpoint>, ApiError> {
    Ok(Json(webhooks(&state)?.get(&id).await?))
}

/// Changes an endpoint's fields.
#[utoipa::path(patch, path = "/v1/webhooks/{id}", tag = "webhooks", request_body = EndpointPatch,
    responses((status = 200, body = Endpoint), (status = 400, description = "Bad field"), (status = 404, description = "No such endpoint"),
              (status = 422, description = "Well formed but refused: `refused_address`, `unresolvable_url`, `url_not_allowed` or `unknown_event_type`")),
    security(("bearer" = ["admin"])))]
pub async fn update(
    State(state): State<Arc<AppState>>,
    Admin(actor): Admin,
    Path(id): Path<String>,
    patch: Result<Json<EndpointPatch>, JsonRejection>,
) -> Result<Json<Endpoint>, ApiError> {
    let webhooks = webhooks(&state)?;
    let patch = body(patch)?;
    Ok(Json(webhooks.update(&id, patch, &actor).await?))
}

/// Removes an endpoint with its delivery history.
#[utoipa::path(delete, path = "/v1/webhooks/{id}", tag = "webhooks",
    responses((status = 204, description = "Removed"), (status = 404, description = "No such endpoint")),
    security(("bearer" = ["admin"])))]
pub async fn delete(
    State(state): State<Arc<AppState>>,
    Admin(actor): Admin,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    webhooks(&state)?.delete(&id, &actor).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn set_enabled(
    state: &AppState,
    actor: &Actor,
    id: &str,
    enabled: bool,
) -> Result<Json<Endpoint>, ApiError> {
    let patch = EndpointPatch {
        enabled: Some(enabled),
        ..EndpointPatch::default()
    };
    Ok(Json(webhooks(state)?.update(id, patch, actor).await?))
}

/// Enables an endpoint (and clears its failure run).
#[utoipa::path(post, path = "/v1/webhooks/{id}/enable", tag = "webhooks",
    responses((status = 200, body = Endpoint), (status = 404, description = "No such endpoint")),
    security(("bearer" = ["admin"])))]
pub async fn enable(
    State(state): State<Arc<AppState>>,
    Admin(actor): Admin,
    Path(id): Path<String>,
) -> Result<Json<Endpoint>, ApiError> {
    set_enabled(&state, &actor, &id, true).await
}

/// Disables an endpoint; its pending deliveries wait until it is enabled again.
#[utoipa::path(post, path = "/v1/webhooks/{id}/disable", tag = "webhooks",
    responses((status = 200, body = Endpoint), (status = 404, description = "No such endpoint")),
    security(("bearer" = ["admin"])))]
pub async fn disable(
    State(state): State<Arc<AppState>>,
    Admin(actor): Admin,
    Path(id): Path<String>,
) -> Result<Json<Endpoint>, ApiError> {
    set_enabled(&state, &actor, &id, false).await
}

/// Replaces the signing secret. The old one keeps signing beside the new one for
/// `webhooks.secret_overlap`, so receivers can switch without losing deliveries.
#[utoipa::path(post, path = "/v1/webhooks/{id}/rotate-secret", tag = "webhooks",
    responses((status = 200, description = "The new secret, shown only now", body = EndpointWithSecret), (status = 404, description = "No such endpoint")),
    security(("bearer" = ["admin"])))]
pub async fn rotate_secret(
    State(state): State<Arc<AppState>>,
    Admin(actor): Admin,
    Path(id): Path<String>,
) -> Result<Json<EndpointWithSecret>, ApiError> {
    let endpoint = webhooks(&state)?.rotate_secret(&id, &actor).await?;
    let secret = endpoint.secret.clone();
    Ok(Json(EndpointWithSecret { endpoint, secret }))
}

/// Sends a signed `webhook.test` ping now and answers with its attempt.
#[utoipa::path(post, path = "/v1/webhooks/{id}/test", tag = "webhooks",
    responses((status = 200, body = DeliveryView), (status = 404, description = "No such endpoint")),
    security(("bearer" = ["admin"])))]
pub async fn test(
    State(state): State<Arc<AppState>>,
    _admin: Admin,
    Path(id): Path<String>,
) -> Result<Json<DeliveryView>, ApiError> {
    let (row, attempts) = webhooks(&state)?.test(&id).await?;
    Ok(Json(DeliveryView::of(row, Some(attempts))))
}

/// One recorded attempt.
#[derive(Serialize, ToSchema)]
pub struct AttemptView {
    attempt: i64,
    at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    status_code: Option<i64>,
    latency_ms: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    /// The first 1 KiB of the response body.
    #[serde(skip_serializing_if = "Option::is_none")]
    response: Option<String>,
}

/// A delivery: one event to one endpoint.
#[derive(Serialize, ToSchema)]
pub struct DeliveryView {
    /// Also the `webhook-id` and `X-ESP-Delivery` header of every attempt.
    id: String,
    webhook_id: String,
    event_id: String,
    event_type: String,
    /// `pending`, `succeeded` or `failed`.
    status: String,
    attempts: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    next_attempt_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_status_code: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_error: Option<String>,
    created_at: String,
    updated_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    attempt_log: Option<Vec<AttemptView>>,
}

impl DeliveryView {
    fn of(r: DeliveryRow, attempts: Option<Vec<AttemptRow>>) -> DeliveryView {
        DeliveryView {
            next_attempt_at: (r.status == db::PENDING).then(|| rfc3339_us(r.next_attempt_us)),
            id: r.id,
            webhook_id: r.endpoint_id,
            event_id: r.message_id,
            event_type: r.event_type,
            status: r.status,
            attempts: r.attempts,
            last_status_code: r.last_status,
            last_error: r.last_error,
            created_at: rfc3339_us(r.created_us),
            updated_at: rfc3339_us(r.updated_us),
            attempt_log: attempts.map(|a| {
                a.into_iter()
                    .map(|a| AttemptView {
                        attempt: a.attempt,
                        at: rfc3339_us(a.time_us),
                        status_code: a.status_code,
                        latency_ms: a.latency_us as f64 / 1000.0,
                        error: a.error,
                        response: a.response,
                    })
                    .collect()
            }),
        }
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct DeliveriesQuery {
    /// `pending`, `succeeded` or `failed`.
    status: Option<String>,
    /// 1 to 1000 (default 100).
    limit: Option<String>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
}

/// A page of deliveries, newest first.
#[derive(Serialize, ToSchema)]
pub struct DeliveryPage {
    deliveries: Vec<DeliveryView>,
    next_cursor: Option<String>,
}

/// An endpoint's deliveries, newest first.
#[utoipa::path(get, path = "/v1/webhooks/{id}/deliveries", tag = "webhooks", params(DeliveriesQuery),
    responses((status = 200, body = DeliveryPage), (status = 400, description = "Bad status, limit or cursor"), (status = 404, description = "No such endpoint")),
    security(("bearer" = ["admin"])))]
pub async fn deliveries(
    State(state): State<Arc<AppState>>,
    _admin: Admin,
    Path(id): Path<String>,
    query: Result<Query<DeliveriesQuery>, QueryRejection>,
) -> Result<Json<DeliveryPage>, ApiError> {
    let webhooks = webhooks(&state)?;
    let Query(q) = query.map_err(|e| ApiError::bad_query(e.body_text()))?;
    let status = match q.status.as_deref() {
        None => None,
        Some(s @ (db::PENDING | db::SUCCEEDED | db::FAILED)) => Some(s),
        Some(other) => {
            return Err(ApiError::bad_query(format!(
                "`status` {other:?} is not one of pending, succeeded, failed"
            )));
        }
    };
    let limit = page_limit(q.limit.as_deref())?;
    if let Some(c) = &q.cursor
        && uuid::Uuid::parse_str(c).is_err()
    {
        return Err(ApiError::bad_query(
            "`cursor` is not a cursor this API gave out; start again without it",
        ));
    }
    let rows = webhooks
        .deliveries(&id, status, q.cursor.as_deref(), limit)
        .await?;
    let next_cursor = (rows.len() as i64 == limit)
        .then(|| rows.last().map(|r| r.id.clone()))
        .flatten();
    Ok(Json(DeliveryPage {
        deliveries: rows
            .into_iter()
            .map(|r| DeliveryView::of(r, None))
            .collect(),
        next_cursor,
    }))
}

/// One delivery with every attempt.
#[utoipa::path(get, path = "/v1/deliveries/{id}", tag = "webhooks",
    responses((status = 200, body = DeliveryView), (status = 404, description = "No such delivery")),
    security(("bearer" = ["admin"])))]
pub async fn delivery(
    State(state): State<Arc<AppState>>,
    _admin: Admin,
    Path(id): Path<String>,
) -> Result<Json<DeliveryView>, ApiError> {
    let (row, attempts) = webhooks(&state)?.delivery(&id).await?;
    Ok(Json(DeliveryView::of(row, Some(attempts))))
}

/// Sends a finished (failed or succeeded) delivery once more, now.
#[utoipa::path(post, path = "/v1/deliveries/{id}/retry", tag = "webhooks",
    responses((status = 202, body = DeliveryView), (status = 404, description = "No such delivery"), (status = 409, description = "Still pending")),
    security(("bearer" = ["admin"])))]
pub async fn retry(
    State(state): State<Arc<AppState>>,
    _admin: Admin,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let row = webhooks(&state)?.retry(&id).await?;
    Ok((StatusCode::ACCEPTED, Json(DeliveryView::of(row, None))).into_response())
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ReplayQuery {
    /// Failed deliveries created at or after this RFC 3339 time are sent again.
    since: Option<String>,
}

/// How many deliveries a replay made due.
#[derive(Serialize, ToSchema)]
pub struct Replayed {
    replayed: u64,
}

/// Sends an endpoint's failed deliveries again, from `since`.
#[utoipa::path(post, path = "/v1/webhooks/{id}/replay", tag = "webhooks", params(ReplayQuery),
    responses((status = 202, body = Replayed), (status = 400, description = "Missing or bad `since`"), (status = 404, description = "No such endpoint")),
    security(("bearer" = ["admin"])))]
pub async fn replay(
    State(state): State<Arc<AppState>>,
    _admin: Admin,
    Path(id): Path<String>,
    query: Result<Query<ReplayQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let webhooks = webhooks(&state)?;
    let Query(q) = query.map_err(|e| ApiError::bad_query(e.body_text()))?;
    let since = q.since.as_deref().ok_or_else(|| {
        ApiError::bad_query("`since` is required: an RFC 3339 time such as 2026-11-27T10:00:00Z")
    })?;
    let since = DateTime::parse_from_rfc3339(since)
        .map_err(|e| {
            ApiError::bad_query(format!(
                "`since` {since:?} is not an RFC 3339 time such as 2026-11-27T10:00:00Z: {e}"
            ))
        })?
        .with_timezone(&Utc);
    let replayed = webhooks.replay(&id, since).await?;
    Ok((StatusCode::ACCEPTED, Json(Replayed { replayed })).into_response())
}
