//! Ingest: turns what a publisher sent into events committed to the log.
//!
//! Checks the type and payload against the catalog, gives the event its id, time,
//! source and actor, and appends the result to the log; the answer comes once it is
//! committed. A resend of an id the log already has is answered with that id and
//! processed no further. Nothing is appended unless everything in the request
//! passed.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use chrono::Utc;

use crate::bus::SubscriberFailure;
use crate::event::wire::Draft;
use crate::event::{Actor, Catalog, Event, EventId, ValidationError, new_event_id};
use crate::eventlog::{LagFull, Log, LogError};

/// Deepest nesting of arrays and objects accepted in `data`.
pub const MAX_DATA_DEPTH: usize = 64;
/// Characters, as the OpenAPI document's `maxLength` counts them.
const MAX_SOURCE_LEN: usize = 256;
const MAX_USER_LEN: usize = 256;

/// 1 to `max` characters, none of them a control character.
fn printable(text: &str, max: usize) -> bool {
    !text.is_empty() && text.chars().count() <= max && !text.chars().any(char::is_control)
}

/// Who is publishing, as the API authenticated them.
#[derive(Debug, Clone, Default)]
pub struct Origin {
    pub token: Option<Arc<str>>,
    /// May name an on-behalf-of user.
    pub trusted: bool,
    pub ip: Option<IpAddr>,
    /// The on-behalf-of user named in a request header, for every event of the request.
    pub on_behalf_of: Option<String>,
}

/// Why a request's events were not accepted.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("{}{message}", index.map(|i| format!("event [{i}]: ")).unwrap_or_default())]
    Invalid {
        /// Position in a batch.
        index: Option<usize>,
        message: String,
        field: Option<String>,
    },
    #[error("this token may not publish on behalf of a user (it is not marked trusted)")]
    NotTrusted,
    #[error(transparent)]
    Lagging(#[from] LagFull),
    #[error("evhost is shutting down and takes no new events")]
    Stopping,
    #[error("the event log cannot write to its database; nothing was written; retry shortly")]
    LogUnavailable,
    #[error("the event log's disk is full; nothing was written; retry once space is freed")]
    DiskFull,
    /// `?wait=true`: the event is committed, but the daemon stopped before it was
    /// processed (the next start processes it).
    #[error(
        "event {0} is kept, but evhost stopped before it was processed; the next start processes it"
    )]
    NotProcessed(EventId),
    /// The database refused the event for good (a constraint, a value it cannot
    /// store): it was kept as a dead letter, and is processed once retried.
    #[error(
        "the database refused event {id}; it is kept as dead letter {dead_letter} and is processed once an operator retries it (GET /v1/dead-letters/{dead_letter} shows why)"
    )]
    SetAside { id: EventId, dead_letter: i64 },
}

impl From<LogError> for IngestError {
    fn from(error: LogError) -> IngestError {
        match error {
            LogError::Lag(full) => IngestError::Lagging(full),
            LogError::Stopped => IngestError::Stopping,
            LogError::Unavailable => IngestError::LogUnavailable,
            LogError::DiskFull => IngestError::DiskFull,
        }
    }
}

/// The answer for one event: its id, and whether it was a resend.
#[derive(Debug, Clone)]
pub struct Accepted {
    pub id: EventId,
    pub duplicate: bool,
}

pub struct Ingest {
    catalog: Arc<Catalog>,
    log: Log,
    stopping: AtomicBool,
}

impl Ingest {
    pub fn new(catalog: Arc<Catalog>, log: Log) -> Ingest {
        Ingest {
            catalog,
            log,
            stopping: AtomicBool::new(false),
        }
    }

    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    pub fn log(&self) -> &Log {
        &self.log
    }

    /// From now on every request is refused with [`IngestError::Stopping`].
    pub fn stop(&self) {
        self.stopping.store(true, Ordering::SeqCst);
    }

    pub fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    /// Accepts one event: answers once it is committed.
    pub async fn accept(&self, draft: Draft, origin: &Origin) -> Result<Accepted, IngestError> {
        self.accept_inner(draft, origin, false)
            .await
            .map(|(accepted, _)| accepted)
    }

    /// Accepts one event and waits until it is processed: every subscriber has
    /// handled it, its plugins ran, its delivery rows are committed.
    pub async fn accept_wait(
        &self,
        draft: Draft,
        origin: &Origin,
    ) -> Result<(Accepted, Vec<SubscriberFailure>), IngestError> {
        self.accept_inner(draft, origin, true).await
    }

    async fn accept_inner(
        &self,
        draft: Draft,
        origin: &Origin,
        wait: bool,
    ) -> Result<(Accepted, Vec<SubscriberFailure>), IngestError> {
        if self.is_stopping() {
            return Err(IngestError::Stopping);
        }
        let event = self.build(draft, origin, None)?;
        let id = event.id.clone();
        let answer = self
            .log
            .publish(vec![event], wait)
            .await?
            .pop()
            .expect("one answer per event");
        if let Some(dead_letter) = answer.dead_letter {
            return Err(IngestError::SetAside { id, dead_letter });
        }
        let failures = match answer.processed {
            Some(processed) => processed
                .wait()
                .await
                .map_err(|_| IngestError::NotProcessed(id.clone()))?,
            None => Vec::new(),
        };
        let accepted = Accepted {
            id,
            duplicate: answer.duplicate,
        };
        Ok((accepted, failures))
    }

    /// Accepts a batch whole or not at all, in one append; returns the ids in
    /// request order, and those the database refused (each kept as a dead
    /// letter) with their dead letters' ids.
    pub async fn accept_batch(
        &self,
        drafts: Vec<Draft>,
        origin: &Origin,
    ) -> Result<(Vec<EventId>, Vec<(EventId, i64)>), IngestError> {
        if self.is_stopping() {
            return Err(IngestError::Stopping);
        }
        let events = drafts
            .into_iter()
            .enumerate()
            .map(|(i, draft)| self.build(draft, origin, Some(i)))
            .collect::<Result<Vec<_>, _>>()?;
        let ids: Vec<EventId> = events.iter().map(|e| e.id.clone()).collect();
        let answers = self.log.publish(events, false).await?;
        let set_aside = ids
            .iter()
            .zip(&answers)
            .filter_map(|(id, a)| Some((id.clone(), a.dead_letter?)))
            .collect();
        Ok((ids, set_aside))
    }

    /// Validates a draft and builds the envelope.
    fn build(
        &self,
        draft: Draft,
        origin: &Origin,
        index: Option<usize>,
    ) -> Result<Event, IngestError> {
        let invalid = |message: String, field: Option<String>| IngestError::Invalid {
            index,
            message,
            field,
        };
        let id = match draft.id.as_deref() {
            Some(id) => crate::event::check_event_id(id)
                .map_err(|e| invalid(e.to_string(), Some("id".into())))?,
            None => new_event_id(),
        };
        let fixed = self
            .catalog
            .validate_or_fix(&draft.kind, &draft.data)
            .map_err(|e: ValidationError| {
                let field = e.field().map(|f| format!("data.{f}"));
                invalid(e.to_string(), field)
            })?;
        let mut draft = draft;
        if let Some(data) = fixed {
            draft.data = data;
        }
        if let Some(problem) = data_problem(draft.data.get()) {
            return Err(invalid(problem, Some("data".into())));
        }
        let source: Arc<str> = match draft.source {
            Some(s) if !printable(&s, MAX_SOURCE_LEN) => {
                return Err(invalid(
                    format!("`source` must be 1 to {MAX_SOURCE_LEN} printable characters"),
                    Some("source".into()),
                ));
            }
            Some(s) => s.into(),
            None => match &origin.token {
                Some(name) => format!("/publishers/{name}").into(),
                None => "/publishers/anonymous".into(),
            },
        };
        let on_behalf_of = draft.on_behalf_of.or_else(|| origin.on_behalf_of.clone());
        if let Some(user) = &on_behalf_of {
            if !origin.trusted {
                return Err(IngestError::NotTrusted);
            }
            if !printable(user, MAX_USER_LEN) {
                return Err(invalid(
                    format!("`on_behalf_of` must be 1 to {MAX_USER_LEN} printable characters"),
                    Some("on_behalf_of".into()),
                ));
            }
        }
        Ok(Event {
            id,
            kind: draft.kind.into(),
            time: draft.time.unwrap_or_else(Utc::now),
            source,
            actor: Actor {
                token: origin.token.clone(),
                ip: origin.ip,
                on_behalf_of,
            },
            data: Arc::from(draft.data),
            hops: 0,
        })
    }
}

/// Why a payload (well-formed JSON) is refused whatever its type: nested deeper than
/// [`MAX_DATA_DEPTH`], or a number no 64-bit float holds.
pub fn data_problem(data: &str) -> Option<String> {
    let scanned = scan(data);
    if scanned.depth > MAX_DATA_DEPTH {
        return Some(format!(
            "`data` is nested deeper than {MAX_DATA_DEPTH} levels"
        ));
    }
    scanned.number_out_of_range.then(|| {
        "`data` holds a number beyond the range of a 64-bit float (such as 1e400)".to_string()
    })
}

/// What one pass over a JSON text already known to be well formed finds (strings
/// skipped): its nesting depth, and whether a number lies beyond an `f64` (such as
/// `1e400`), which JSON's grammar allows but serde_json, the plugin SDK and many
/// receivers refuse to read.
#[derive(Debug, PartialEq)]
struct Scan {
    depth: usize,
    number_out_of_range: bool,
}

fn scan(text: &str) -> Scan {
    let (mut depth, mut deepest, mut in_string, mut escaped) = (0usize, 0usize, false, false);
    let mut number_out_of_range = false;
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        i += 1;
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            b'-' | b'0'..=b'9' => {
                let start = i - 1;
                while i < bytes.len()
                    && matches!(bytes[i], b'0'..=b'9' | b'.' | b'e' | b'E' | b'+' | b'-')
                {
                    i += 1;
                }
                let number = &text[start..i];
                // Short integers always fit; only the rest are parsed.
                let plain =
                    number.len() <= 18 && number.bytes().all(|b| b.is_ascii_digit() || b == b'-');
                if !plain && !number.parse::<f64>().is_ok_and(f64::is_finite) {
                    number_out_of_range = true;
                }
            }
            _ => {}
        }
    }
    Scan {
        depth: deepest,
        number_out_of_range,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depth_counts_nesting_outside_strings() {
        assert_eq!(scan("{}").depth, 1);
        assert_eq!(scan(r#"{"a":[{"b":1}]}"#).depth, 3);
        assert_eq!(scan(r#"{"a":"[[[[{{{\"]]]"}"#).depth, 1);
    }

    /// Found by the `wire` fuzz target: `{"type": …, "data": 3e506}` was kept, and no
    /// JSON reader downstream could read its data.
    #[test]
    fn numbers_beyond_a_float_are_found_outside_strings() {
        let out = |text: &str| scan(text).number_out_of_range;
        assert!(out("3e506"));
        assert!(out(r#"{"a":[1,-1e400]}"#));
        assert!(out(&format!("[{}]", "9".repeat(400))));
        assert!(!out(
            r#"{"a":"3e506","b":1e300,"c":-12345678901234567890,"d":1e-400}"#
        ));
        assert!(!out("[0,-0.5,123456789012345678]"));
    }
}
