//! What a client needs beyond the resources themselves: who its token is and what it
//! may do (`GET /v1/me`, so a console shows only the actions the token can take), and
//! the recent rates (`GET /v1/stats/rates`, the overview's charts).

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use serde::Serialize;
use utoipa::ToSchema;

use super::AppState;
use super::error::ApiError;
use crate::config::Scope;
use crate::metrics::history::{INTERVAL, RatePoint, SPAN};

/// The token a request bears.
#[derive(Serialize, ToSchema)]
pub struct Me {
    /// The token's name; null when the API is open (no token configured).
    token: Option<String>,
    /// `publish`, `read`, `admin`: what the token may do.
    scopes: Vec<String>,
    /// True when no token is configured: anyone on this machine may do anything.
    open: bool,
}

/// Who the bearer token is, and its scopes. Any valid token may ask.
#[utoipa::path(get, path = "/v1/me", tag = "operations",
    responses((status = 200, description = "The token's name and scopes", body = Me)),
    security(("bearer" = [])))]
pub async fn me(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
) -> Result<Json<Me>, ApiError> {
    let (name, scopes) = state.auth.identify(&headers)?;
    Ok(Json(Me {
        token: name.map(|n| n.to_string()),
        scopes: scopes.iter().map(|s| s.as_str().to_string()).collect(),
        open: state.auth.is_open(),
    }))
}

/// Rates over the last 15 minutes.
#[derive(Serialize, ToSchema)]
pub struct Rates {
    /// Seconds between two points (the last point ends now and may be shorter).
    interval_seconds: u64,
    /// Seconds the history covers at most (it starts with the daemon).
    span_seconds: u64,
    /// Oldest first.
    points: Vec<RatePoint>,
}

/// Events accepted and refused, webhook attempts delivered and failed, per second,
/// over the last 15 minutes of this node.
#[utoipa::path(get, path = "/v1/stats/rates", tag = "operations",
    responses((status = 200, description = "Per-second rates, oldest first", body = Rates)),
    security(("bearer" = ["read"])))]
pub async fn rates(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
) -> Result<Json<Rates>, ApiError> {
    state.auth.authorize(&headers, Scope::Read)?;
    let now = chrono::Utc::now().timestamp_micros();
    Ok(Json(Rates {
        interval_seconds: INTERVAL.as_secs(),
        span_seconds: SPAN.as_secs(),
        points: state.metrics.history.rates(now, state.metrics.totals()),
    }))
}
