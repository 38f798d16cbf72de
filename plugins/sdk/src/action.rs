//! What a plugin can decide about an event.

use serde::Serialize;

use crate::bindings::evhost::plugin::types as wit;

/// One decision about the event being handled. Return none ([`pass`]) to let it
/// through unchanged.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Stop the event here: no webhook or later plugin sees it. The audit log still
    /// records it, with this reason.
    Drop { reason: String },
    /// Continue with this type and payload instead (same id and time). A catalog type's
    /// payload must fit its schema, or the host refuses the action.
    Replace { kind: String, data: String },
    /// Publish a new event as well (the host gives it an id, the time and the
    /// handled event's actor). Chains of emits are cut after a few hops.
    Emit { kind: String, data: String },
    /// Send an event to the webhook endpoint named `target` only: the handled event
    /// when `event` is none, else this type and payload.
    Deliver {
        target: String,
        event: Option<(String, String)>,
    },
}

/// No actions: the event passes unchanged.
pub fn pass() -> Vec<Action> {
    Vec::new()
}

pub(crate) fn to_json<T: Serialize>(value: &T) -> String {
    // Catalog payloads and JSON values always serialize.
    serde_json::to_string(value).expect("payload serializes to JSON")
}

impl Action {
    pub fn drop(reason: impl Into<String>) -> Action {
        Action::Drop {
            reason: reason.into(),
        }
    }

    /// Replaces the event with `payload` under type `kind`.
    pub fn replace<T: Serialize>(kind: &str, payload: &T) -> Action {
        Action::Replace {
            kind: kind.into(),
            data: to_json(payload),
        }
    }

    /// Publishes a new event of type `kind` with `payload`.
    pub fn emit<T: Serialize>(kind: &str, payload: &T) -> Action {
        Action::Emit {
            kind: kind.into(),
            data: to_json(payload),
        }
    }

    /// Sends the handled event, as it is, to the endpoint named `target`.
    pub fn deliver(target: impl Into<String>) -> Action {
        Action::Deliver {
            target: target.into(),
            event: None,
        }
    }

    /// Sends a new event of type `kind` with `payload` to the endpoint named `target`.
    pub fn deliver_new<T: Serialize>(target: impl Into<String>, kind: &str, payload: &T) -> Action {
        Action::Deliver {
            target: target.into(),
            event: Some((kind.into(), to_json(payload))),
        }
    }

    pub(crate) fn into_wit(self) -> wit::Action {
        let new = |kind, data| wit::NewEvent { kind, data };
        match self {
            Action::Drop { reason } => wit::Action::Drop(reason),
            Action::Replace { kind, data } => wit::Action::Replace(new(kind, data)),
            Action::Emit { kind, data } => wit::Action::Emit(new(kind, data)),
            Action::Deliver { target, event } => wit::Action::Deliver(wit::Delivery {
                target,
                event: event.map(|(kind, data)| new(kind, data)),
            }),
        }
    }
}
