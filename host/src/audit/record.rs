//! Audit rows and their hash chain.
//!
//! Each row's `hash` is SHA-256 over a length-prefixed encoding of every column but
//! `seq` (which the database assigns) and the previous row's hash in the same chain.
//! Changing, removing or reordering any row therefore breaks the chain at that row.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::event::Event;

/// The hash before a chain's first row.
pub const GENESIS: [u8; 32] = [0; 32];

/// What one audit row says, before it is placed in a chain.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    pub event_id: String,
    pub event_type: String,
    /// The on-behalf-of user, else the token name, else `evhost` for the daemon's own.
    pub actor: Option<String>,
    /// The token that published it.
    pub actor_token: Option<String>,
    pub actor_ip: Option<String>,
    pub resource_type: Option<String>,
    pub resource_id: Option<String>,
    /// JSON: the payload for events, the action's particulars for management actions.
    pub details: String,
    /// Event time, microseconds since the Unix epoch.
    pub time_us: i64,
    /// The event's source, for a row that is an accepted event (the rows the log
    /// dispatches); `None` for a management action or a decision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
}

impl Entry {
    /// The audit entry of an accepted event.
    pub fn of_event(event: &Event) -> Entry {
        let resource = evhost_catalog::resource_of(&event.kind, event.data.get());
        let token = event.actor.token.as_deref().map(str::to_string);
        // Without a token the daemon itself is the actor, or, for a request to an
        // API running open (no tokens configured), an anonymous client.
        let actor = event
            .actor
            .on_behalf_of
            .clone()
            .or_else(|| token.clone())
            .unwrap_or_else(|| {
                if event.actor.ip.is_none() {
                    "evhost"
                } else {
                    "anonymous"
                }
                .to_string()
            });
        Entry {
            event_id: event.id.to_string(),
            event_type: event.kind.to_string(),
            actor: Some(actor),
            actor_token: token,
            actor_ip: event.actor.ip.map(|ip| ip.to_string()),
            resource_type: resource.as_ref().map(|r| r.kind.to_string()),
            resource_id: resource.map(|r| resource_key(&r.id)),
            details: event.data.get().to_string(),
            time_us: event.time.timestamp_micros(),
            source: Some(event.source.to_string()),
        }
    }

    /// The row of an operator's action through the API: the actor is the token's
    /// name (`anonymous` on an API running open), with the client's address.
    pub fn of_action(
        event_type: &str,
        actor: &crate::event::Actor,
        resource_type: &str,
        resource_id: &str,
        details: serde_json::Value,
    ) -> Entry {
        let token = actor.token.as_deref().map(str::to_string);
        Entry {
            event_id: crate::event::new_event_id().to_string(),
            event_type: event_type.into(),
            actor: Some(token.clone().unwrap_or_else(|| "anonymous".into())),
            actor_token: token,
            actor_ip: actor.ip.map(|ip| ip.to_string()),
            resource_type: Some(resource_type.into()),
            resource_id: Some(resource_id.into()),
            details: details.to_string(),
            time_us: chrono::Utc::now().timestamp_micros(),
            source: None,
        }
    }

    /// The row that records what plugins did to an accepted event: a row of its
    /// own (type `plugin.decided`, resource `event` and the event's id), so the
    /// event's own row stays as it was accepted. `details` holds who dropped it under
    /// `dropped` (`{"plugin", "reason"}`) and who replaced it under `replaced_by`.
    pub fn of_decision(event: &Event, verdict: &crate::bus::Verdict) -> Entry {
        let mut details = serde_json::json!({ "event_type": event.kind });
        if let Some(dropped) = &verdict.dropped {
            details["dropped"] = serde_json::json!(dropped);
        }
        if !verdict.replaced_by.is_empty() {
            details["replaced_by"] = serde_json::json!(verdict.replaced_by);
        }
        Entry {
            event_id: crate::event::new_event_id().to_string(),
            event_type: DECIDED.into(),
            actor: Some("evhost".into()),
            actor_token: None,
            actor_ip: None,
            resource_type: Some("event".into()),
            resource_id: Some(event.id.to_string()),
            details: details.to_string(),
            time_us: chrono::Utc::now().timestamp_micros(),
            source: None,
        }
    }
}

/// Longest resource id stored as it is (bytes).
pub const MAX_RESOURCE_ID: usize = 256;

/// How a resource id read from a payload is stored and looked up: as it is when it
/// is at most [`MAX_RESOURCE_ID`] bytes with no NUL, else `sha256:<hex>` of it. The
/// column is indexed (PostgreSQL refuses an index entry over about 2.7 KB, and any
/// text with a NUL), and one such event must never stop the writer; the full value
/// stays in the row's payload. A query names the value as published and is looked up
/// the same way.
pub fn resource_key(id: &str) -> String {
    if id.len() <= MAX_RESOURCE_ID && !id.contains('\0') {
        return id.to_string();
    }
    format!("sha256:{}", hex::encode(Sha256::digest(id.as_bytes())))
}

/// The type of the rows that record plugin decisions.
pub const DECIDED: &str = "plugin.decided";

/// A row as stored: an entry placed in a chain.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Record {
    /// Global order, assigned by the database (0 until written).
    pub seq: i64,
    /// The writer's chain.
    pub chain: String,
    /// Position in the chain, from 1.
    pub chain_seq: i64,
    #[serde(flatten)]
    pub entry: Entry,
    pub recorded_us: i64,
    /// Hex SHA-256 of the previous row in the chain.
    pub prev_hash: String,
    /// Hex SHA-256 of this row.
    pub hash: String,
}

impl Record {
    /// Places `entry` after `prev_hash` at `chain_seq` and computes its hash.
    pub fn chain(
        chain: &str,
        chain_seq: i64,
        entry: Entry,
        recorded_us: i64,
        prev_hash: &[u8; 32],
    ) -> Record {
        let mut record = Record {
            seq: 0,
            chain: chain.to_string(),
            chain_seq,
            entry,
            recorded_us,
            prev_hash: hex::encode(prev_hash),
            hash: String::new(),
        };
        record.hash = hex::encode(record.compute_hash());
        record
    }

    /// The hash this row should have, from its own columns.
    pub fn compute_hash(&self) -> [u8; 32] {
        row_hash(
            &self.chain,
            self.chain_seq,
            &self.entry,
            self.recorded_us,
            &self.prev_hash,
        )
    }
}

/// SHA-256 over a length-prefixed encoding of a row's columns (`prev_hash` as stored,
/// in hex). `None` and `""` encode differently.
pub fn row_hash(
    chain: &str,
    chain_seq: i64,
    e: &Entry,
    recorded_us: i64,
    prev_hash_hex: &str,
) -> [u8; 32] {
    fn field(h: &mut Sha256, value: Option<&str>) {
        match value {
            Some(v) => {
                h.update((v.len() as u32).to_be_bytes());
                h.update(v.as_bytes());
            }
            None => h.update(u32::MAX.to_be_bytes()),
        }
    }
    let mut h = Sha256::new();
    h.update(b"evhost-audit-v1");
    field(&mut h, Some(chain));
    h.update(chain_seq.to_be_bytes());
    field(&mut h, Some(&e.event_id));
    field(&mut h, Some(&e.event_type));
    field(&mut h, e.actor.as_deref());
    field(&mut h, e.actor_token.as_deref());
    field(&mut h, e.actor_ip.as_deref());
    field(&mut h, e.resource_type.as_deref());
    field(&mut h, e.resource_id.as_deref());
    field(&mut h, Some(&e.details));
    h.update(e.time_us.to_be_bytes());
    h.update(recorded_us.to_be_bytes());
    field(&mut h, Some(prev_hash_hex));
    // Rows from before the log carried sources hash as they did; a row's source,
    // once set, is covered like every other column.
    if let Some(source) = e.source.as_deref() {
        h.update(b"source");
        field(&mut h, Some(source));
    }
    h.finalize().into()
}

/// Decodes a stored hex hash.
pub fn parse_hash(hex_text: &str) -> Option<[u8; 32]> {
    let bytes = hex::decode(hex_text).ok()?;
    bytes.try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: &str) -> Entry {
        Entry {
            event_id: id.into(),
            event_type: "message.received".into(),
            actor: Some("smtp".into()),
            actor_token: Some("smtp".into()),
            actor_ip: Some("127.0.0.1".into()),
            resource_type: Some("message".into()),
            resource_id: Some("m1".into()),
            details: "{}".into(),
            time_us: 1,
            source: Some("/test".into()),
        }
    }

    #[test]
    fn every_column_is_covered() {
        let base = Record::chain("c", 1, entry("e1"), 5, &GENESIS);
        let mut changed = base.clone();
        changed.entry.actor = None;
        assert_ne!(changed.compute_hash(), base.compute_hash());
        let mut changed = base.clone();
        changed.entry.details = "{ }".into();
        assert_ne!(changed.compute_hash(), base.compute_hash());
        let mut changed = base.clone();
        changed.chain_seq = 2;
        assert_ne!(changed.compute_hash(), base.compute_hash());
        let mut changed = base.clone();
        changed.entry.source = None;
        assert_ne!(changed.compute_hash(), base.compute_hash());
        let mut changed = base.clone();
        changed.recorded_us = 6;
        assert_ne!(changed.compute_hash(), base.compute_hash());
        // None and "" are different.
        let mut a = base.clone();
        a.entry.actor_ip = None;
        let mut b = base.clone();
        b.entry.actor_ip = Some(String::new());
        assert_ne!(a.compute_hash(), b.compute_hash());
        assert_eq!(parse_hash(&base.hash), Some(base.compute_hash()));
    }

    #[test]
    fn long_or_nul_resource_ids_are_stored_as_their_hash() {
        assert_eq!(resource_key("<1@mx>"), "<1@mx>");
        let long = "x".repeat(3000);
        let key = resource_key(&long);
        assert!(key.starts_with("sha256:") && key.len() == 7 + 64, "{key}");
        assert_eq!(key, resource_key(&long), "the same value, the same key");
        assert!(resource_key("a\0b").starts_with("sha256:"));
        assert_eq!(resource_key(&"y".repeat(256)), "y".repeat(256));
    }

    #[test]
    fn rows_link_to_their_predecessor() {
        let first = Record::chain("c", 1, entry("e1"), 5, &GENESIS);
        let second = Record::chain("c", 2, entry("e2"), 5, &parse_hash(&first.hash).unwrap());
        assert_eq!(second.prev_hash, first.hash);
    }
}
