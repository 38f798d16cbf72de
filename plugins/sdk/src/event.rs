//! The event a plugin handles.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::bindings::evhost::plugin::types as wit;

/// Who caused an event.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Actor {
    /// The API token that published it; none for evhost's own events.
    pub token: Option<String>,
    /// The publishing client's address.
    pub ip: Option<String>,
    /// The user a trusted publisher acted for.
    pub on_behalf_of: Option<String>,
}

/// An event as evhost accepted it. `data` is the payload's JSON text; read it typed
/// with [`Event::payload`].
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub id: String,
    /// The event type, such as `message.received`.
    pub kind: String,
    /// RFC 3339.
    pub time: String,
    pub source: String,
    pub actor: Actor,
    pub data: String,
}

impl Event {
    /// An event of `kind` carrying `payload`, for tests.
    pub fn new<T: Serialize>(kind: &str, payload: &T) -> Event {
        Event {
            id: "test-event".into(),
            kind: kind.into(),
            time: "2026-01-01T00:00:00Z".into(),
            source: "/test".into(),
            actor: Actor::default(),
            data: crate::action::to_json(payload),
        }
    }

    /// The payload as `T`, usually a catalog type such as
    /// [`MessageReceived`](crate::catalog::MessageReceived).
    pub fn payload<T: DeserializeOwned>(&self) -> Result<T, String> {
        serde_json::from_str(&self.data)
            .map_err(|e| format!("{} payload does not parse: {e}", self.kind))
    }

    /// The payload as untyped JSON.
    pub fn json(&self) -> Result<serde_json::Value, String> {
        self.payload()
    }

    /// Whether this event is of type `kind`.
    pub fn is(&self, kind: &str) -> bool {
        self.kind == kind
    }

    pub(crate) fn from_wit(event: wit::Event) -> Event {
        Event {
            id: event.id,
            kind: event.kind,
            time: event.time,
            source: event.source,
            actor: Actor {
                token: event.actor.token,
                ip: event.actor.ip,
                on_behalf_of: event.actor.on_behalf_of,
            },
            data: event.data,
        }
    }
}
