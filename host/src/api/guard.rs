//! The checks a request passes before its handler runs: its token's rate, its token
//! (before its body is read) and its body (read whole, within `server.body_timeout`).

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http_body_util::{BodyExt, LengthLimitError, Limited};

use super::AppState;
use super::error::ApiError;
use crate::config::Scope;

/// Admits a request to its handler, or answers for it at once:
/// - a known token over its rate limit gets 429 `rate_limited` (any route);
/// - a request that carries a body (`POST`, `PATCH`, `PUT` under `/v1/`) without a
///   valid token, or without the route's scope, gets 401 or 403, and its body (up to
///   `server.max_body_bytes`) is never read. Publishing needs `publish`; every other
///   write needs `admin`. The handlers check the scope again, as for any request.
pub(super) async fn admit(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Response {
    if state.auth.is_open() || !request.uri().path().starts_with("/v1/") {
        return next.run(request).await;
    }
    if let Some(limiter) = state.auth.limiter(request.headers())
        && let Err(refused) = limiter.take(1, &state.metrics.server)
    {
        return if is_publish(&request) {
            state.refuse(refused, 1).into_response()
        } else {
            refused.into_response()
        };
    }
    if !is_write(&request) {
        return next.run(request).await;
    }
    let scope = if is_publish(&request) {
        Scope::Publish
    } else {
        Scope::Admin
    };
    match state.auth.authorize(request.headers(), scope) {
        Ok(_) => next.run(request).await,
        // A refused publish counts as one refused event, as the handlers count a
        // request whose body they have not parsed.
        Err(refused) if scope == Scope::Publish => state.refuse(refused, 1).into_response(),
        Err(refused) => refused.into_response(),
    }
}

/// Whether a request carries a body the API reads: writes under `/v1/`.
fn is_write(request: &Request) -> bool {
    matches!(
        *request.method(),
        Method::POST | Method::PATCH | Method::PUT
    ) && request.uri().path().starts_with("/v1/")
}

fn is_publish(request: &Request) -> bool {
    matches!(request.uri().path(), "/v1/events" | "/v1/events/batch")
}

/// Reads a write's body whole before its handler runs, within `server.body_timeout`
/// from the end of its head, and no larger than `server.max_body_bytes`. A body too
/// slow is answered 408 `body_timeout` and its connection closed, so a client that
/// trickles a body cannot hold a connection and a request's memory for long. A
/// declared length over the limit is refused 413 before a byte is read.
pub(super) async fn read_body(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Response {
    if !is_write(&request) {
        return next.run(request).await;
    }
    let limit = state.limits.max_body_bytes;
    let refuse = |error: ApiError, publish: bool| -> Response {
        if publish {
            state.refuse(error, 1).into_response()
        } else {
            error.into_response()
        }
    };
    let publish = is_publish(&request);
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!("the body is larger than {limit} bytes (server.max_body_bytes)"),
        )
    };
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return refuse(too_large(), publish);
    }
    let (parts, body) = request.into_parts();
    let read = tokio::time::timeout(
        state.limits.body_timeout,
        Limited::new(body, limit).collect(),
    )
    .await;
    match read {
        Ok(Ok(collected)) => {
            let request = Request::from_parts(parts, Body::from(collected.to_bytes()));
            next.run(request).await
        }
        Ok(Err(e)) if e.downcast_ref::<LengthLimitError>().is_some() => {
            refuse(too_large(), publish)
        }
        Ok(Err(e)) => refuse(
            ApiError::bad_request("bad_body", format!("the body could not be read: {e}")),
            publish,
        ),
        Err(_) => {
            state.metrics.server.body_timeout();
            let mut response = ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "body_timeout",
                format!(
                    "the body did not arrive within {:?} (server.body_timeout)",
                    state.limits.body_timeout
                ),
            )
            .into_response();
            response.headers_mut().insert(
                header::CONNECTION,
                header::HeaderValue::from_static("close"),
            );
            response
        }
    }
}
