//! `POST /v1/events`, `POST /v1/events/batch` and `GET /v1/events/stream`.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{ConnectInfo, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::AppState;
use super::auth::Principal;
use super::error::ApiError;
use crate::config::Scope;
use crate::event::wire::{self, Draft};
use crate::event::{EventId, TypePattern};
use crate::ingest::Origin;

/// Header a trusted publisher uses to name the user it acts for.
pub const ON_BEHALF_OF: &str = "x-esp-on-behalf-of";

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct WaitQuery {
    /// Answer only once every subscriber has handled the event.
    #[serde(default)]
    wait: bool,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StreamQuery {
    /// Comma-separated type patterns (`message.*,user.login`); all events when absent.
    #[serde(default)]
    types: Option<String>,
}

/// `202` answer for one event.
#[derive(Serialize, ToSchema)]
pub struct AcceptedBody {
    #[schema(value_type = String)]
    id: EventId,
}

/// `200` answer for one event published with `?wait=true`.
#[derive(Serialize, ToSchema)]
pub struct HandledBody {
    #[schema(value_type = String)]
    id: EventId,
    /// Subscribers that failed on this event (empty when all succeeded).
    #[schema(value_type = Vec<Object>)]
    failures: Vec<crate::bus::SubscriberFailure>,
}

/// `202` answer for a batch: the ids in request order.
#[derive(Serialize, ToSchema)]
pub struct AcceptedBatchBody {
    #[schema(value_type = Vec<String>)]
    ids: Vec<EventId>,
    /// Events of the batch the database refused for good: each is kept as a dead
    /// letter (`GET /v1/dead-letters/{dead_letter}`) and processed once retried.
    /// Absent when there are none.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    dead_lettered: Vec<DeadLettered>,
}

/// An event kept as a dead letter instead of entering the log.
#[derive(Serialize, ToSchema)]
pub struct DeadLettered {
    #[schema(value_type = String)]
    id: EventId,
    dead_letter: i64,
}

/// One event in evhost's JSON shape (CloudEvents 1.0 is accepted too; see the description).
#[derive(ToSchema)]
#[allow(dead_code)] // Documents the request body; parsing lives in event::wire.
pub struct EventRequest {
    /// A catalog type (`GET /v1/event-types`) or a custom `a.b` type.
    #[schema(rename = "type")]
    kind: String,
    /// The payload; a catalog type's schema applies.
    #[schema(value_type = Object)]
    data: serde_json::Value,
    /// Your id for the event (1–128 of `A-Za-z0-9._:-`); a resend within the dedup window is not processed twice. A UUID v7 is made when absent.
    #[schema(pattern = "^[A-Za-z0-9._:-]{1,128}$")]
    id: Option<String>,
    /// Where the event comes from; `/publishers/<token name>` when absent.
    source: Option<String>,
    /// RFC 3339 time (the platform plan's `timestamp` is accepted too); now when absent.
    #[schema(format = DateTime)]
    time: Option<String>,
    /// The user a trusted publisher acts for.
    on_behalf_of: Option<String>,
}

/// How the request body is to be read.
enum Format {
    Plain,
    Structured,
    StructuredBatch,
    Binary,
}

fn format_of(headers: &HeaderMap, batch: bool) -> Result<Format, ApiError> {
    let unsupported = |message: String| {
        ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            message,
        )
    };
    let content_type = match headers.get(header::CONTENT_TYPE) {
        None => None,
        Some(v) => Some(
            v.to_str()
                .map_err(|_| unsupported("the Content-Type header is not readable".into()))?
                .to_ascii_lowercase(),
        ),
    };
    let essence = content_type
        .as_deref()
        .map(|ct| ct.split(';').next().unwrap_or("").trim().to_string());
    if wire::is_binary_mode(headers) {
        if batch {
            return Err(unsupported(
                "a binary-mode CloudEvent carries one event; send it to /v1/events".into(),
            ));
        }
        return match content_type.as_deref() {
            None => Ok(Format::Binary),
            Some(ct) if wire::is_json_media_type(ct) => Ok(Format::Binary),
            Some(ct) => Err(unsupported(format!(
                "binary-mode CloudEvent data of type {ct:?} is not supported; evhost events carry application/json data"
            ))),
        };
    }
    match (essence.as_deref(), batch) {
        (None | Some("application/json"), _) => Ok(Format::Plain),
        (Some("application/cloudevents+json"), false) => Ok(Format::Structured),
        (Some("application/cloudevents-batch+json"), true) => Ok(Format::StructuredBatch),
        (Some("application/cloudevents+json"), true) => Err(unsupported(
            "this endpoint takes a batch: use application/cloudevents-batch+json, or send single events to /v1/events".into(),
        )),
        (Some("application/cloudevents-batch+json"), false) => Err(unsupported(
            "a CloudEvents batch goes to /v1/events/batch".into(),
        )),
        (Some(other), _) => Err(unsupported(format!(
            "Content-Type {other:?} is not supported; use application/json, application/cloudevents+json{}",
            if batch { " or application/cloudevents-batch+json" } else { " or binary-mode ce-* headers" }
        ))),
    }
}

/// The body as UTF-8 text, within the size limit and not empty.
fn body_text(body: Result<Bytes, BytesRejection>) -> Result<String, ApiError> {
    // The body was read whole, within the size limit, by `guard::read_body`.
    let bytes = body.map_err(|rejection| {
        ApiError::bad_request(
            "bad_body",
            format!("the body could not be read: {rejection}"),
        )
    })?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad_request(
            "empty_body",
            "the body is empty; send a JSON event",
        ));
    }
    String::from_utf8(bytes.to_vec()).map_err(|e| {
        ApiError::bad_request(
            "invalid_utf8",
            format!(
                "the body is not valid UTF-8 (byte {})",
                e.utf8_error().valid_up_to()
            ),
        )
    })
}

fn origin(principal: Principal, peer: SocketAddr, headers: &HeaderMap) -> Result<Origin, ApiError> {
    let on_behalf_of = match headers.get(ON_BEHALF_OF) {
        None => None,
        Some(v) => Some(
            v.to_str()
                .map_err(|_| {
                    ApiError::bad_request(
                        "bad_header",
                        format!("header {ON_BEHALF_OF} is not visible ASCII"),
                    )
                })?
                .to_string(),
        ),
    };
    Ok(Origin {
        token: principal.name,
        trusted: principal.trusted,
        ip: Some(peer.ip()),
        on_behalf_of,
    })
}

fn wire_error(e: wire::WireError) -> ApiError {
    if e.message.starts_with("body is not valid JSON") {
        ApiError::bad_request("invalid_json", e.message)
    } else {
        ApiError::bad_request("invalid_event", e.message)
    }
}

impl AppState {
    /// Counts a refused request's events under their reason, then hands the error on.
    pub(super) fn refuse(&self, error: ApiError, events: u64) -> ApiError {
        if let Some(reason) = error.reject_reason() {
            self.metrics.rejected(reason, events);
        }
        error
    }
}

/// Publishes one event.
#[utoipa::path(post, path = "/v1/events", tag = "events",
    description = "Publishes one event: evhost's JSON (`application/json`), a structured CloudEvent (`application/cloudevents+json`) or a binary-mode CloudEvent (`ce-*` headers, the body is the data).",
    params(WaitQuery),
    request_body(content = EventRequest, content_type = "application/json"),
    responses(
        (status = 202, description = "Committed to the event log (or a resend of an id the log already has, marked by the header evhost-duplicate: true)", body = AcceptedBody),
        (status = 422, description = "`dead_lettered`: the database refused the event for good; it is kept as a dead letter (named in the message) and processed once retried"),
        (status = 200, description = "Processed (`?wait=true`): plugins ran, every subscriber handled it, its webhook deliveries are committed", body = HandledBody),
        (status = 400, description = "Bad JSON, bad UTF-8, or a payload that does not fit its type"),
        (status = 401, description = "No or bad token"), (status = 403, description = "Token lacks the publish scope"),
        (status = 413, description = "Body too large"), (status = 415, description = "Unsupported Content-Type"),
        (status = 503, description = "Dispatch is `events.max_lag` behind, or shutting down; see Retry-After")),
    security(("bearer" = ["publish"])))]
pub async fn publish_one(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    query: Result<Query<WaitQuery>, QueryRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let result = async {
        let principal = state.auth.authorize(&headers, Scope::Publish)?;
        let Query(query) = query.map_err(|e| ApiError::bad_request("bad_query", e.body_text()))?;
        let format = format_of(&headers, false)?;
        let text = body_text(body)?;
        let draft: Draft = match format {
            Format::Plain => wire::parse_plain(&text),
            Format::Structured => wire::parse_structured(&text),
            Format::Binary => wire::parse_binary(&headers, &text),
            Format::StructuredBatch => unreachable!("refused by format_of"),
        }
        .map_err(wire_error)?;
        let origin = origin(principal, peer, &headers)?;
        if query.wait {
            let (accepted, failures) = state.ingest.accept_wait(draft, &origin).await?;
            return Ok(duplicate_marked(
                (
                    StatusCode::OK,
                    Json(HandledBody {
                        id: accepted.id,
                        failures,
                    }),
                )
                    .into_response(),
                accepted.duplicate,
            ));
        }
        let accepted = state.ingest.accept(draft, &origin).await?;
        Ok(duplicate_marked(
            (StatusCode::ACCEPTED, Json(AcceptedBody { id: accepted.id })).into_response(),
            accepted.duplicate,
        ))
    }
    .await;
    result.map_err(|e| state.refuse(e, 1))
}

/// A resend gets the same answer; this header tells it apart for those who care.
fn duplicate_marked(mut response: Response, duplicate: bool) -> Response {
    if duplicate {
        response
            .headers_mut()
            .insert("evhost-duplicate", HeaderValue::from_static("true"));
    }
    response
}

/// Publishes a batch, all or nothing.
#[utoipa::path(post, path = "/v1/events/batch", tag = "events",
    description = "Publishes a JSON array of events (evhost's shape, or CloudEvents with `application/cloudevents-batch+json`). Every event is validated first; if any fails, none is accepted.",
    request_body(content = Vec<EventRequest>, content_type = "application/json"),
    responses(
        (status = 202, description = "All committed to the event log in one append (resends of ids the log has are left out)", body = AcceptedBatchBody),
        (status = 400, description = "An event is invalid (named by its index); none accepted"),
        (status = 413, description = "Body or batch too large"),
        (status = 503, description = "Dispatch is `events.max_lag` behind (nothing was written), or shutting down; see Retry-After")),
    security(("bearer" = ["publish"])))]
pub async fn publish_batch(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let mut events = 1u64;
    let result = async {
        let principal = state.auth.authorize(&headers, Scope::Publish)?;
        let format = format_of(&headers, true)?;
        let text = body_text(body)?;
        let drafts = match format {
            Format::Plain => wire::parse_plain_batch(&text),
            Format::StructuredBatch => wire::parse_structured_batch(&text),
            Format::Structured | Format::Binary => unreachable!("refused by format_of"),
        }
        .map_err(wire_error)?;
        events = drafts.len().max(1) as u64;
        if drafts.is_empty() {
            return Err(ApiError::bad_request(
                "empty_batch",
                "the batch is empty; send at least one event",
            ));
        }
        if drafts.len() > state.limits.max_batch_events {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "batch_too_large",
                format!(
                    "the batch has {} events; at most {} are allowed (server.max_batch_events)",
                    drafts.len(),
                    state.limits.max_batch_events
                ),
            ));
        }
        // The request took one unit of the token's rate on arrival; the batch's other
        // events take theirs now, before anything is written.
        if let Some(limiter) = &principal.limiter {
            limiter.take_batch(drafts.len(), &state.metrics.server)?;
        }
        let origin = origin(principal, peer, &headers)?;
        let (ids, set_aside) = state.ingest.accept_batch(drafts, &origin).await?;
        let dead_lettered = set_aside
            .into_iter()
            .map(|(id, dead_letter)| DeadLettered { id, dead_letter })
            .collect();
        Ok((
            StatusCode::ACCEPTED,
            Json(AcceptedBatchBody { ids, dead_lettered }),
        )
            .into_response())
    }
    .await;
    result.map_err(|e| state.refuse(e, events))
}

/// Live tail of dispatched events as Server-Sent Events.
#[utoipa::path(get, path = "/v1/events/stream", tag = "events",
    description = "Each SSE message has the event id as `id`, its type as `event`, and the envelope JSON as `data`. A client that falls behind gets a `lagged` message with the number of events it missed.",
    params(StreamQuery),
    responses((status = 200, description = "text/event-stream of events"), (status = 400, description = "Bad type pattern"), (status = 429, description = "`server.max_tails` tails are open; see Retry-After")),
    security(("bearer" = ["read"])))]
pub async fn stream(
    State(state): State<Arc<AppState>>,
    query: Result<Query<StreamQuery>, QueryRejection>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    state.auth.authorize(&headers, Scope::Read)?;
    let Query(query) = query.map_err(|e| ApiError::bad_request("bad_query", e.body_text()))?;
    let patterns = TypePattern::parse_list(query.types.as_deref().unwrap_or(""))
        .map_err(|e| ApiError::bad_request("bad_pattern", e.to_string()))?;
    let held = state.tails.clone().try_acquire_owned().map_err(|_| {
        ApiError::too_many(
            "too_many_tails",
            "as many live tails are open as server.max_tails allows; retry when one closes",
            5,
        )
    })?;
    Ok(state
        .tail
        .sse(patterns, state.shutdown.clone(), held)
        .into_response())
}
