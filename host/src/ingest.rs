//! Ingest: turns what a publisher sent into accepted events on the bus.
//!
//! Checks the type and payload against the catalog, gives the event its id, time,
//! source and actor, drops resends of an id seen within the dedup window, and queues
//! the result. Nothing is queued unless everything in the request passed.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;

use crate::bus::{Bus, PublishError, SubscriberFailure};
use crate::event::wire::Draft;
use crate::event::{Actor, Catalog, Event, EventId, ValidationError, new_event_id};

/// Deepest nesting of arrays and objects accepted in `data`.
pub const MAX_DATA_DEPTH: usize = 64;
const MAX_SOURCE_LEN: usize = 256;
const MAX_USER_LEN: usize = 256;

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
    Publish(#[from] PublishError),
    #[error("evhost is shutting down and takes no new events")]
    Stopping,
}

/// The answer for one event: its id, and whether it was a resend.
#[derive(Debug, Clone)]
pub struct Accepted {
    pub id: EventId,
    pub duplicate: bool,
}

pub struct Ingest {
    catalog: Arc<Catalog>,
    bus: Bus,
    dedup: Dedup,
    stopping: AtomicBool,
}

impl Ingest {
    pub fn new(
        catalog: Arc<Catalog>,
        bus: Bus,
        dedup_window: Duration,
        dedup_capacity: usize,
    ) -> Ingest {
        Ingest {
            catalog,
            bus,
            dedup: Dedup::new(dedup_window, dedup_capacity),
            stopping: AtomicBool::new(false),
        }
    }

    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    pub fn bus(&self) -> &Bus {
        &self.bus
    }

    /// Seeds the dedup window with ids recorded before a restart (newest first).
    pub fn remember(&self, ids: impl IntoIterator<Item = String>) -> usize {
        let mut n = 0;
        for id in ids {
            self.dedup.first_sighting(&EventId::from(id));
            n += 1;
        }
        n
    }

    /// From now on every request is refused with [`IngestError::Stopping`].
    pub fn stop(&self) {
        self.stopping.store(true, Ordering::SeqCst);
    }

    pub fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    /// Accepts one event and returns at once.
    pub fn accept(&self, draft: Draft, origin: &Origin) -> Result<Accepted, IngestError> {
        self.accept_inner(draft, origin, false)
            .map(|(accepted, _)| accepted)
    }

    /// Accepts one event and waits until every subscriber has handled it.
    pub async fn accept_wait(
        &self,
        draft: Draft,
        origin: &Origin,
    ) -> Result<(Accepted, Vec<SubscriberFailure>), IngestError> {
        let (accepted, event) = self.accept_inner(draft, origin, true)?;
        let Some(event) = event else {
            return Ok((accepted, Vec::new()));
        };
        match self.bus.publish_wait(event).await {
            Ok(failures) => Ok((accepted, failures)),
            Err(e) => {
                self.dedup.forget(&accepted.id);
                Err(e.into())
            }
        }
    }

    /// Checks, dedups and (unless `defer`) queues one event. With `defer`, the built
    /// event is handed back for the caller to queue.
    fn accept_inner(
        &self,
        draft: Draft,
        origin: &Origin,
        defer: bool,
    ) -> Result<(Accepted, Option<Event>), IngestError> {
        if self.is_stopping() {
            return Err(IngestError::Stopping);
        }
        let given_id = draft.id.is_some();
        let event = self.build(draft, origin, None)?;
        let id = event.id.clone();
        if given_id && !self.dedup.first_sighting(&id) {
            self.bus_metrics_duplicate();
            return Ok((
                Accepted {
                    id,
                    duplicate: true,
                },
                None,
            ));
        }
        if defer {
            return Ok((
                Accepted {
                    id,
                    duplicate: false,
                },
                Some(event),
            ));
        }
        if let Err(e) = self.bus.publish(event) {
            if given_id {
                self.dedup.forget(&id);
            }
            return Err(e.into());
        }
        Ok((
            Accepted {
                id,
                duplicate: false,
            },
            None,
        ))
    }

    /// Accepts a batch whole or not at all; returns the ids in request order.
    pub fn accept_batch(
        &self,
        drafts: Vec<Draft>,
        origin: &Origin,
    ) -> Result<Vec<EventId>, IngestError> {
        if self.is_stopping() {
            return Err(IngestError::Stopping);
        }
        let events = drafts
            .into_iter()
            .enumerate()
            .map(|(i, draft)| {
                let given_id = draft.id.is_some();
                self.build(draft, origin, Some(i)).map(|e| (e, given_id))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let ids: Vec<EventId> = events.iter().map(|(e, _)| e.id.clone()).collect();
        let mut fresh = Vec::with_capacity(events.len());
        let mut remembered = Vec::new();
        for (event, given_id) in events {
            if given_id {
                if !self.dedup.first_sighting(&event.id) {
                    self.bus_metrics_duplicate();
                    continue;
                }
                remembered.push(event.id.clone());
            }
            fresh.push(event);
        }
        if let Err(e) = self.bus.publish_all(fresh) {
            for id in &remembered {
                self.dedup.forget(id);
            }
            return Err(e.into());
        }
        Ok(ids)
    }

    fn bus_metrics_duplicate(&self) {
        self.bus.metrics().duplicate();
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
        self.catalog
            .validate(&draft.kind, &draft.data)
            .map_err(|e: ValidationError| {
                let field = e.field().map(|f| format!("data.{f}"));
                invalid(e.to_string(), field)
            })?;
        if json_depth(draft.data.get()) > MAX_DATA_DEPTH {
            return Err(invalid(
                format!("`data` is nested deeper than {MAX_DATA_DEPTH} levels"),
                Some("data".into()),
            ));
        }
        let source: Arc<str> = match draft.source {
            Some(s)
                if s.is_empty() || s.len() > MAX_SOURCE_LEN || s.chars().any(char::is_control) =>
            {
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
            if user.is_empty() || user.len() > MAX_USER_LEN || user.chars().any(char::is_control) {
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

/// Nesting depth of a JSON text already known to be valid (strings skipped).
fn json_depth(text: &str) -> usize {
    let (mut depth, mut deepest, mut in_string, mut escaped) = (0usize, 0usize, false, false);
    for b in text.bytes() {
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
            _ => {}
        }
    }
    deepest
}

/// Publisher-given ids seen within the window, bounded in number.
struct Dedup {
    window: Duration,
    capacity: usize,
    state: Mutex<DedupState>,
}

#[derive(Default)]
struct DedupState {
    seen: HashMap<EventId, Instant>,
    order: VecDeque<(Instant, EventId)>,
}

impl Dedup {
    fn new(window: Duration, capacity: usize) -> Dedup {
        Dedup {
            window,
            capacity,
            state: Mutex::new(DedupState::default()),
        }
    }

    /// Records `id`; false when it was seen within the window.
    fn first_sighting(&self, id: &EventId) -> bool {
        if self.window.is_zero() || self.capacity == 0 {
            return true;
        }
        let now = Instant::now();
        let mut state = self.state.lock().expect("not poisoned");
        // Forget what fell out of the window, and the oldest past the capacity.
        while let Some((at, old)) = state.order.front() {
            let expired = now.duration_since(*at) > self.window;
            if !expired && state.order.len() < self.capacity {
                break;
            }
            let old = old.clone();
            let at = *at;
            state.order.pop_front();
            if state.seen.get(&old) == Some(&at) {
                state.seen.remove(&old);
            }
        }
        if let Some(at) = state.seen.get(id)
            && now.duration_since(*at) <= self.window
        {
            return false;
        }
        state.seen.insert(id.clone(), now);
        state.order.push_back((now, id.clone()));
        true
    }

    /// Forgets an id whose event was not queued after all, so a retry goes through.
    fn forget(&self, id: &EventId) {
        self.state.lock().expect("not poisoned").seen.remove(id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depth_counts_nesting_outside_strings() {
        assert_eq!(json_depth("{}"), 1);
        assert_eq!(json_depth(r#"{"a":[{"b":1}]}"#), 3);
        assert_eq!(json_depth(r#"{"a":"[[[[{{{\"]]]"}"#), 1);
    }

    #[test]
    fn dedup_remembers_within_the_window() {
        let d = Dedup::new(Duration::from_secs(60), 10);
        let id: EventId = "a".into();
        assert!(d.first_sighting(&id));
        assert!(!d.first_sighting(&id));
        d.forget(&id);
        assert!(d.first_sighting(&id));
    }

    #[test]
    fn dedup_forgets_after_the_window() {
        let d = Dedup::new(Duration::from_millis(20), 10);
        let id: EventId = "a".into();
        assert!(d.first_sighting(&id));
        std::thread::sleep(Duration::from_millis(30));
        assert!(d.first_sighting(&id));
    }

    #[test]
    fn dedup_is_bounded() {
        let d = Dedup::new(Duration::from_secs(60), 3);
        for i in 0..10 {
            assert!(d.first_sighting(&EventId::from(format!("id{i}"))));
        }
        let state = d.state.lock().unwrap();
        assert!(state.seen.len() <= 3);
        assert!(state.order.len() <= 4);
    }
}
