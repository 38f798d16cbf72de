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
/// - with no token configured (the open mode, loopback only), a request a web page
///   could have sent is refused ([`open_mode`]);
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
    if !request.uri().path().starts_with("/v1/") {
        return next.run(request).await;
    }
    // A refused publish counts as one refused event, as the handlers count a
    // request whose body they have not parsed.
    let publish = is_publish(&request);
    let refuse = |refused: ApiError| {
        if publish {
            state.refuse(refused, 1).into_response()
        } else {
            refused.into_response()
        }
    };
    if state.auth.is_open() {
        return match open_mode(&request) {
            Ok(()) => next.run(request).await,
            Err(refused) => refuse(refused),
        };
    }
    if !is_write(&request) {
        // The handler checks the token; only its rate is taken here.
        if let Some(limiter) = state.auth.limiter(request.headers())
            && let Err(refused) = limiter.take(1, &state.metrics.server)
        {
            return refuse(refused);
        }
        return next.run(request).await;
    }
    let scope = if publish {
        Scope::Publish
    } else {
        Scope::Admin
    };
    match state.auth.authorize(request.headers(), scope) {
        Ok(principal) => match principal.limiter.map(|l| l.take(1, &state.metrics.server)) {
            Some(Err(refused)) => refuse(refused),
            _ => next.run(request).await,
        },
        Err(refused) => refuse(refused),
    }
}

/// The open mode's guard against web pages. An open API on loopback is still
/// reachable from any browser on the machine: a page can send "simple" cross-site
/// requests to 127.0.0.1 without a CORS preflight, and a DNS-rebound name can even
/// read the answers. So, with no token configured:
/// - the `Host` must be a loopback name or address (`localhost`, `127.x.x.x`,
///   `[::1]`), which a rebound name is not;
/// - an `Origin` (which browsers send with every cross-site write) must be loopback;
/// - a write with a body must say what it is in a `Content-Type` a page cannot send
///   without a preflight (not `text/plain`, form or multipart), or be a binary-mode
///   CloudEvent, whose `ce-*` headers a page cannot send without a preflight either.
fn open_mode(request: &Request) -> Result<(), ApiError> {
    let headers = request.headers();
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    if !host.is_some_and(loopback_authority) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "host_not_allowed",
            format!(
                "with no API token configured, only loopback Host headers are served (localhost, 127.0.0.1, [::1]); got {:?}",
                host.unwrap_or("")
            ),
        ));
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let authority = origin
            .to_str()
            .ok()
            .and_then(|o| o.split_once("://"))
            .map(|(_, authority)| authority);
        if !authority.is_some_and(loopback_authority) {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "cross_origin",
                "with no API token configured, requests from web pages are refused (Origin is not loopback); configure a token to allow them",
            ));
        }
    }
    let has_body = headers.contains_key(header::TRANSFER_ENCODING)
        || headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim() != "0");
    if is_write(request) && has_body {
        let essence = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| {
                v.split(';')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_ascii_lowercase()
            });
        let simple = match essence.as_deref() {
            None | Some("") => true,
            Some(t) => matches!(
                t,
                "text/plain" | "application/x-www-form-urlencoded" | "multipart/form-data"
            ),
        };
        if simple && !headers.contains_key("ce-specversion") {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "with no API token configured, a request body needs a Content-Type such as application/json (text/plain and forms are refused, since any web page can send them)",
            ));
        }
    }
    Ok(())
}

/// `localhost`, `*.localhost`, `127.x.x.x` or `[::1]`, with or without a port.
fn loopback_authority(authority: &str) -> bool {
    let host = match authority.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(""),
        None => authority.rsplit_once(':').map_or(authority, |(h, _)| h),
    };
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    host == "localhost"
        || host.ends_with(".localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.to_canonical().is_loopback())
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

#[cfg(test)]
mod tests {
    use super::*;

    fn request(method: &str, headers: &[(&str, &str)]) -> Request {
        let mut r = Request::builder().method(method).uri("/v1/events");
        for (k, v) in headers {
            r = r.header(*k, *v);
        }
        r.body(Body::empty()).unwrap()
    }

    #[test]
    fn loopback_names_and_addresses_only() {
        for ok in [
            "localhost",
            "localhost:8080",
            "127.0.0.1",
            "127.9.9.9:80",
            "[::1]",
            "[::1]:8080",
            "app.localhost:1",
            "LOCALHOST.",
        ] {
            assert!(loopback_authority(ok), "{ok}");
        }
        for bad in [
            "",
            "evil.example",
            "evil.example:8080",
            "127.0.0.1.evil.example",
            "10.0.0.1",
            "[::2]:80",
            "localhost.evil.example",
        ] {
            assert!(!loopback_authority(bad), "{bad}");
        }
    }

    #[test]
    fn open_mode_refuses_what_a_web_page_could_send() {
        let json = ("content-type", "application/json");
        let length = ("content-length", "10");
        let host = ("host", "127.0.0.1:8080");
        assert!(open_mode(&request("POST", &[host, json, length])).is_ok());
        assert!(open_mode(&request("GET", &[host])).is_ok());
        // A bodiless write needs no type.
        assert!(open_mode(&request("POST", &[host, ("content-length", "0")])).is_ok());
        let code =
            |headers: &[(&str, &str)]| open_mode(&request("POST", headers)).unwrap_err().code;
        assert_eq!(
            code(&[("host", "rebound.example:8080"), json, length]),
            "host_not_allowed"
        );
        assert_eq!(code(&[json, length]), "host_not_allowed");
        assert_eq!(
            code(&[host, json, length, ("origin", "https://evil.example")]),
            "cross_origin"
        );
        assert!(
            open_mode(&request(
                "POST",
                &[host, json, length, ("origin", "http://localhost:3000")]
            ))
            .is_ok()
        );
        assert_eq!(code(&[host, length]), "unsupported_media_type");
        assert!(open_mode(&request("POST", &[host, length, ("ce-specversion", "1.0")])).is_ok());
        assert_eq!(
            code(&[host, length, ("content-type", "text/plain;charset=utf-8")]),
            "unsupported_media_type"
        );
        assert_eq!(
            code(&[
                host,
                ("transfer-encoding", "chunked"),
                ("content-type", "application/x-www-form-urlencoded")
            ]),
            "unsupported_media_type"
        );
    }
}
