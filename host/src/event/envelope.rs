use std::net::IpAddr;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::value::RawValue;

/// An event identifier: a UUID v7 made by evhost, or the publisher's own id.
pub type EventId = Arc<str>;

/// Why a publisher-given id was refused.
#[derive(Debug, thiserror::Error)]
#[error("event id {0:?} is not allowed: use 1 to 128 characters from A-Z a-z 0-9 . _ : -")]
pub struct IdError(pub String);

/// A new time-ordered id (UUID v7).
pub fn new_event_id() -> EventId {
    uuid::Uuid::now_v7().to_string().into()
}

/// An id derived from `parts` (each length-prefixed, after the tag `domain`): the
/// same parts always give the same id. A UUID in version 7's layout, the first 48
/// bits being `millis` (Unix milliseconds) so that ids sort by time, the rest from
/// SHA-256 of the parts.
pub fn derived_uuid(domain: &[u8], parts: &[&[u8]], millis: i64) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(domain);
    for part in parts {
        h.update((part.len() as u32).to_be_bytes());
        h.update(part);
    }
    let digest = h.finalize();
    let mut random = [0u8; 10];
    random.copy_from_slice(&digest[..10]);
    uuid::Builder::from_unix_timestamp_millis(millis.max(0) as u64, &random)
        .into_uuid()
        .to_string()
}

/// Checks a publisher-given id: short, printable, safe in URLs, headers and logs.
pub fn check_event_id(id: &str) -> Result<EventId, IdError> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'));
    if ok {
        Ok(id.into())
    } else {
        Err(IdError(id.chars().take(140).collect()))
    }
}

/// Who caused an event. It travels inside the envelope, so every worker and
/// subscriber sees it (no task-local context).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Actor {
    /// Name of the API token that published it; `None` for the daemon's own events.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<Arc<str>>,
    /// Address of the HTTP client that published it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ip: Option<IpAddr>,
    /// The user a trusted publisher acted for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub on_behalf_of: Option<String>,
}

/// One accepted event. Built once at ingest and shared (`Arc<Event>`) by every
/// subscriber; the payload stays the validated JSON text the publisher sent.
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    pub id: EventId,
    #[serde(rename = "type")]
    pub kind: Arc<str>,
    pub time: DateTime<Utc>,
    pub source: Arc<str>,
    pub actor: Actor,
    pub data: Arc<RawValue>,
    /// How many plugin emits led to this event (0 for a published one); emits stop at
    /// `plugins.max_hops`, so plugins cannot loop forever.
    #[serde(skip)]
    pub hops: u8,
}

impl Event {
    /// The type family: the part before the first dot (`message` for `message.received`).
    pub fn family(&self) -> &str {
        self.kind.split('.').next().unwrap_or("")
    }
}

impl Event {
    /// An event the daemon publishes about itself (`server.started`, …), with no
    /// token or client address as its actor.
    pub fn from_daemon<T: Serialize>(kind: &str, data: &T) -> Result<Event, serde_json::Error> {
        let json = serde_json::to_string(data)?;
        Ok(Event {
            id: new_event_id(),
            kind: kind.into(),
            time: Utc::now(),
            source: "/evhost".into(),
            actor: Actor::default(),
            data: Arc::from(RawValue::from_string(json)?),
            hops: 0,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_ids_are_uuid_v7() {
        let id = new_event_id();
        let parsed = uuid::Uuid::parse_str(&id).unwrap();
        assert_eq!(parsed.get_version_num(), 7);
    }

    #[test]
    fn publisher_ids_are_checked() {
        assert!(check_event_id("msg-123:abc.def_9").is_ok());
        assert!(check_event_id("").is_err());
        assert!(check_event_id("has space").is_err());
        assert!(check_event_id("new\nline").is_err());
        assert!(check_event_id(&"x".repeat(129)).is_err());
    }
}
