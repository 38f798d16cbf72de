//! The API's error answer: `{"error": {"code": "...", "message": "...", "field"?: "..."}}`
//! with a stable `code` for programs and a `message` for people.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::ingest::IngestError;
use crate::metrics::RejectReason;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub field: Option<String>,
    pub retry_after: Option<u32>,
}

#[derive(Serialize)]
struct Body<'a> {
    error: Inner<'a>,
}

#[derive(Serialize)]
struct Inner<'a> {
    code: &'a str,
    message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<&'a str>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            field: None,
            retry_after: None,
        }
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// A bad query-string parameter.
    pub fn bad_query(message: impl Into<String>) -> ApiError {
        ApiError::bad_request("bad_query", message)
    }

    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// 429 with `Retry-After`: a limit on what may run at once is reached.
    pub fn too_many(code: &'static str, message: impl Into<String>, retry_after: u32) -> ApiError {
        ApiError {
            retry_after: Some(retry_after),
            ..ApiError::new(StatusCode::TOO_MANY_REQUESTS, code, message)
        }
    }

    pub fn unavailable(
        code: &'static str,
        message: impl Into<String>,
        retry_after: u32,
    ) -> ApiError {
        ApiError {
            retry_after: Some(retry_after),
            ..ApiError::new(StatusCode::SERVICE_UNAVAILABLE, code, message)
        }
    }

    /// The `reason` this refusal counts under in `evhost_events_rejected_total`, when
    /// the bus has not counted it already.
    pub fn reject_reason(&self) -> Option<RejectReason> {
        match self.code {
            "queue_full" | "not_processed" | "log_unavailable" => None,
            "stopping" => Some(RejectReason::Stopping),
            "unauthorized" => Some(RejectReason::Unauthorized),
            "forbidden" | "not_trusted" | "host_not_allowed" | "cross_origin" => {
                Some(RejectReason::Forbidden)
            }
            "unsupported_media_type" => Some(RejectReason::UnsupportedMediaType),
            "too_large" | "batch_too_large" => Some(RejectReason::TooLarge),
            "rate_limited" => Some(RejectReason::RateLimited),
            _ if self.status == StatusCode::BAD_REQUEST => Some(RejectReason::Invalid),
            _ => None,
        }
    }
}

impl From<IngestError> for ApiError {
    fn from(e: IngestError) -> ApiError {
        match e {
            IngestError::Invalid { ref field, .. } => ApiError {
                field: field.clone(),
                ..ApiError::bad_request("invalid_event", e.to_string())
            },
            IngestError::NotTrusted => {
                ApiError::new(StatusCode::FORBIDDEN, "not_trusted", e.to_string())
            }
            IngestError::Stopping => ApiError::unavailable("stopping", e.to_string(), 5),
            // Counted by the log already (under `queue_full`, the plan's name).
            IngestError::Lagging(_) => ApiError::unavailable(
                "queue_full",
                format!("{e}; the Retry-After header says when"),
                1,
            ),
            // Counted by the log already.
            IngestError::LogUnavailable => {
                ApiError::unavailable("log_unavailable", e.to_string(), 5)
            }
            // Counted by the log already.
            IngestError::DiskFull => ApiError::unavailable("disk_full", e.to_string(), 10),
            IngestError::SetAside { .. } => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "dead_lettered",
                e.to_string(),
            ),
            IngestError::NotProcessed(_) => {
                ApiError::unavailable("not_processed", e.to_string(), 5)
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = self.code;
        let body = Body {
            error: Inner {
                code,
                message: &self.message,
                field: self.field.as_deref(),
            },
        };
        let mut response = (self.status, axum::Json(body)).into_response();
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}
