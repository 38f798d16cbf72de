//! The HTTP API (axum): event ingest, live tail, the catalog, health, metrics and the
//! OpenAPI document. Every route but `/healthz`, `/readyz` and `/metrics` needs a
//! bearer token with the right scope; every error is JSON (see [`error`]).

mod audit;
pub mod auth;
mod deadletters;
pub mod error;
mod events;
mod guard;
mod nodes;
mod openapi;
mod overview;
mod plugins;
mod rate;
pub mod stream;
mod webhooks;

use std::sync::Arc;

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, DefaultBodyLimit, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::audit::Condition;
use crate::config::Scope;
use crate::ingest::Ingest;
use crate::metrics::Metrics;
use auth::Auth;
use error::ApiError;
use stream::Tail;

/// The largest page a list route returns.
pub const MAX_PAGE: i64 = 1000;

/// A page size from `?limit=`: 100 when absent, else 1 to [`MAX_PAGE`].
fn page_limit(value: Option<&str>) -> Result<i64, ApiError> {
    match value {
        None => Ok(100),
        Some(l) => match l.parse::<i64>() {
            Ok(n) if (1..=MAX_PAGE).contains(&n) => Ok(n),
            _ => Err(ApiError::bad_query(format!(
                "`limit` {l:?} is out of range; allowed: 1 to {MAX_PAGE}"
            ))),
        },
    }
}

/// A page cursor that is a row's number: 1 to 18 ASCII digits (what the OpenAPI
/// document allows; no sign, no spaces).
fn decimal_cursor(text: &str) -> Option<i64> {
    let digits = (1..=18).contains(&text.len()) && text.bytes().all(|b| b.is_ascii_digit());
    digits.then(|| text.parse().ok()).flatten()
}

/// A stored time (microseconds since the epoch) as the API shows times.
pub(crate) fn rfc3339_us(us: i64) -> String {
    chrono::DateTime::from_timestamp_micros(us)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true))
        .unwrap_or_default()
}

/// Request size limits.
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_body_bytes: usize,
    pub max_batch_events: usize,
    /// `server.body_timeout`: a body must arrive within it.
    pub body_timeout: std::time::Duration,
}

/// What the handlers share.
pub struct AppState {
    pub ingest: Arc<Ingest>,
    pub auth: Auth,
    pub metrics: Arc<Metrics>,
    pub tail: Tail,
    pub limits: Limits,
    /// Fires when the daemon starts shutting down (ends live tails).
    pub shutdown: CancellationToken,
    /// The audit log, unless `audit.enabled` is off.
    pub audit: Option<Arc<crate::audit::Audit>>,
    pub store: Option<crate::store::Store>,
    /// Webhooks, unless `webhooks.enabled` is off.
    pub webhooks: Option<Arc<crate::webhooks::Webhooks>>,
    /// Plugins, unless `plugins.enabled` is off.
    pub plugins: Option<crate::plugins::loader::Plugins>,
    /// This node's place among the daemons sharing the database.
    pub cluster: Option<Arc<crate::cluster::Cluster>>,
    /// `metrics.token`: when set, `/metrics` needs it.
    pub metrics_token: Option<String>,
    /// Places for live tails (`server.max_tails`).
    pub tails: Arc<tokio::sync::Semaphore>,
    /// Places for audit verifications (`server.max_verifies`).
    pub verifies: Arc<tokio::sync::Semaphore>,
}

pub fn router(state: Arc<AppState>) -> Router {
    let body_limit = state.limits.max_body_bytes;
    Router::new()
        .route("/v1/events", post(events::publish_one))
        .route("/v1/events/batch", post(events::publish_batch))
        .route("/v1/events/stream", get(events::stream))
        .route("/v1/event-types", get(event_types))
        .route("/v1/audit", get(audit::query))
        .route("/v1/audit/verify", get(audit::verify))
        .route("/v1/webhooks", post(webhooks::create).get(webhooks::list))
        .route(
            "/v1/webhooks/{id}",
            get(webhooks::get)
                .patch(webhooks::update)
                .delete(webhooks::delete),
        )
        .route("/v1/webhooks/{id}/enable", post(webhooks::enable))
        .route("/v1/webhooks/{id}/disable", post(webhooks::disable))
        .route(
            "/v1/webhooks/{id}/rotate-secret",
            post(webhooks::rotate_secret),
        )
        .route("/v1/webhooks/{id}/test", post(webhooks::test))
        .route("/v1/webhooks/{id}/deliveries", get(webhooks::deliveries))
        .route("/v1/webhooks/{id}/replay", post(webhooks::replay))
        .route("/v1/deliveries/{id}", get(webhooks::delivery))
        .route("/v1/deliveries/{id}/retry", post(webhooks::retry))
        .route("/v1/dead-letters", get(deadletters::list))
        .route(
            "/v1/dead-letters/{id}",
            get(deadletters::get).delete(deadletters::discard),
        )
        .route("/v1/dead-letters/{id}/retry", post(deadletters::retry))
        .route("/v1/nodes", get(nodes::list))
        .route("/v1/me", get(overview::me))
        .route("/v1/stats/rates", get(overview::rates))
        .route("/v1/plugins", get(plugins::list))
        .route("/v1/plugins/{name}", get(plugins::get))
        .route("/v1/plugins/{name}/reload", post(plugins::reload))
        .route("/v1/plugins/{name}/shadow", get(plugins::shadow))
        .route("/v1/plugins/{name}/promote", post(plugins::promote))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(openapi::document))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            guard::read_body,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            guard::admit,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            audit_refusals,
        ))
        .with_state(state)
}

/// Records refused authentications (401, 403) in the audit log, rate-limited per
/// client address inside [`crate::audit::Audit::record_refusal`].
async fn audit_refusals(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Response {
    let Some(audit) = state.audit.clone() else {
        return next.run(request).await;
    };
    let ip = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| addr.ip());
    let method = request.method().to_string();
    let path = request.uri().path().to_string();
    let response = next.run(request).await;
    let status = response.status();
    if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
        let code = if status == StatusCode::UNAUTHORIZED {
            "unauthorized"
        } else {
            "forbidden"
        };
        audit.record_refusal(ip, &method, &path, status.as_u16(), code);
    }
    response
}

/// Lists every catalog type with its JSON Schema.
#[utoipa::path(get, path = "/v1/event-types", tag = "events",
    responses((status = 200, description = "The catalog: every known event type with its JSON Schema")),
    security(("bearer" = [])))]
async fn event_types(
    State(state): State<Arc<AppState>>,
    headers: axum::http::HeaderMap,
) -> Result<Response, ApiError> {
    state.auth.authorize(&headers, Scope::Read)?;
    let catalog = state.ingest.catalog();
    Ok(Json(json!({ "event_types": catalog.types() })).into_response())
}

/// Liveness: the process answers.
#[utoipa::path(get, path = "/healthz", tag = "operations", responses((status = 200, description = "Alive")))]
async fn healthz() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

/// Readiness: takes events (not shutting down, log writes succeeding); shows how
/// far dispatch is behind the log and the log's backlog.
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses((status = 200, description = "Ready to take events"), (status = 503, description = "Shutting down, or the event log cannot write")))]
async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    let log = state.ingest.log();
    let audit = log.audit();
    let (lag, lag_bytes) = log.tracker().lag();
    let (max_lag, max_lag_bytes) = log.tracker().limits();
    let failed = state.metrics.tasks.failure();
    let status = match (&failed, state.ingest.is_stopping(), audit.condition()) {
        (Some(_), _, _) => "task_failed",
        (None, true, _) => "stopping",
        (None, false, Condition::Failing) => "audit_unavailable",
        (None, false, Condition::DiskFull) => "disk_full",
        (None, false, Condition::Writing) => "ready",
    };
    let body = json!({
        "status": status,
        "failed_task": failed,
        "queue_depth": lag,
        "queue_capacity": max_lag,
        "lag": { "events": lag, "bytes": lag_bytes, "max_events": max_lag, "max_bytes": max_lag_bytes },
        "audit": {
            "healthy": audit.is_healthy(),
            "backlog": audit.backlog(),
            "backlog_capacity": audit.capacity(),
            "last_write_ms": audit.last_write_ms(),
        },
    });
    let code = if status == "ready" {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(body)).into_response()
}

/// Prometheus metrics (OpenMetrics text).
#[utoipa::path(get, path = "/metrics", tag = "operations", responses((status = 200, description = "Metrics in the OpenMetrics text format"), (status = 401, description = "`metrics.token` is set and the request does not bear it")))]
async fn metrics(State(state): State<Arc<AppState>>, headers: axum::http::HeaderMap) -> Response {
    if let Some(token) = &state.metrics_token
        && !auth::presents(&headers, token)
    {
        return ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "/metrics needs the metrics token (metrics.token): send `Authorization: Bearer <token>`",
        )
        .into_response();
    }
    let log = state.ingest.log();
    let (lag, _) = log.tracker().lag();
    let (max_lag, _) = log.tracker().limits();
    state.metrics.set_queue(lag as usize, max_lag as usize);
    state
        .metrics
        .audit
        .backlog
        .set(log.audit().backlog() as i64);
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.encode(),
    )
        .into_response()
}

async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::not_found(format!(
        "no route for {}; see GET /openapi.json",
        uri.path()
    ))
}

async fn method_not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!(
            "{method} is not allowed on {}; see GET /openapi.json",
            uri.path()
        ),
    )
}
