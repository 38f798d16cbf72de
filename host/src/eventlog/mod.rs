//! The event log at the centre: every accepted event is appended to the log (the
//! audit log, [`crate::audit`]) and committed before its publisher is answered;
//! only then is it handed to the dispatcher ([`crate::bus`]), which runs the
//! plugins and the subscribers.
//!
//! [`Log`] is the one way in, for the API, the CLI and the daemon's own events.
//! [`ticket`] tracks where dispatch stands in the log and how far behind it may
//! fall; after a crash, what was committed but not passed is dispatched again.

pub mod ticket;

use std::sync::Arc;

use tokio::sync::oneshot;

pub use ticket::{Admission, EVENT_OVERHEAD_BYTES, LagFull, Ticket, Tracker};

use crate::audit::{Audit, Condition, Entry, Record, Stopped};
use crate::bus::{BoxFuture, Bus, Committed, LogSink, SubscriberFailure, Verdict};
use crate::event::{Actor, Event};
use crate::metrics::{Metrics, RejectReason};

/// What the log answered for one appended event.
pub enum Appended {
    /// Committed: the event's ticket.
    Fresh(Ticket),
    /// The log already has an event with this id: nothing was written.
    Duplicate,
    /// The database refused the event for good: it was kept as this dead letter.
    SetAside(i64),
}

/// Where committed events go: the dispatcher.
pub trait Dispatch: Send + Sync + 'static {
    /// Hands over committed events, in log order.
    fn dispatch(&self, events: Vec<Committed>);
}

impl Dispatch for Bus {
    fn dispatch(&self, events: Vec<Committed>) {
        self.dispatch_committed(events);
    }
}

/// Bytes an event holds in the lag.
pub fn event_bytes(event: &Event) -> u64 {
    event.data.get().len() as u64 + EVENT_OVERHEAD_BYTES
}

/// Why events were not taken.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error(transparent)]
    Lag(#[from] LagFull),
    #[error("the event log cannot write to its database; nothing was written; retry shortly")]
    Unavailable,
    #[error("the event log's disk is full; nothing was written; retry once space is freed")]
    DiskFull,
    #[error("evhost is shutting down and takes no new events")]
    Stopped,
}

impl From<Stopped> for LogError {
    fn from(_: Stopped) -> LogError {
        LogError::Stopped
    }
}

/// The log's answer for one published event.
pub struct Accepted {
    /// The log already had an event with this id: nothing was done.
    pub duplicate: bool,
    /// The database refused the event for good: it was kept as this dead letter
    /// instead, and is processed once retried.
    pub dead_letter: Option<i64>,
    /// When asked to wait: completes once every consumer has handled the event.
    pub processed: Option<Processed>,
}

impl Accepted {
    pub fn duplicate() -> Accepted {
        Accepted {
            duplicate: true,
            dead_letter: None,
            processed: None,
        }
    }

    pub fn set_aside(id: i64) -> Accepted {
        Accepted {
            duplicate: false,
            dead_letter: Some(id),
            processed: None,
        }
    }

    /// A committed event's answer, and (when `wait`) what the dispatcher tells once
    /// every subscriber has handled it.
    pub fn fresh(
        ticket: &Ticket,
        wait: bool,
    ) -> (Option<oneshot::Sender<Vec<SubscriberFailure>>>, Accepted) {
        let (tx, processed) = if wait {
            let (tx, dispatched) = oneshot::channel();
            let done = ticket.done();
            (Some(tx), Some(Processed { dispatched, done }))
        } else {
            (None, None)
        };
        let accepted = Accepted {
            duplicate: false,
            dead_letter: None,
            processed,
        };
        (tx, accepted)
    }
}

/// Waits for one event to be processed.
pub struct Processed {
    dispatched: oneshot::Receiver<Vec<SubscriberFailure>>,
    done: oneshot::Receiver<()>,
}

impl Processed {
    /// The subscribers' failures once every consumer has handled the event (its
    /// delivery rows committed, plugins run); an error when it was not processed
    /// (the daemon stopped first; the next start processes it).
    pub async fn wait(self) -> Result<Vec<SubscriberFailure>, Stopped> {
        let failures = self.dispatched.await.map_err(|_| Stopped)?;
        self.done.await.map_err(|_| Stopped)?;
        Ok(failures)
    }
}

/// The way into the log: appends, and the log hands what it committed to the
/// dispatcher.
#[derive(Clone)]
pub struct Log {
    audit: Arc<Audit>,
    metrics: Arc<Metrics>,
}

impl Log {
    pub fn new(audit: Arc<Audit>, metrics: Arc<Metrics>) -> Log {
        Log { audit, metrics }
    }

    pub fn audit(&self) -> &Arc<Audit> {
        &self.audit
    }

    pub fn tracker(&self) -> &Arc<Tracker> {
        self.audit.tracker()
    }

    /// Appends `events` (one commit for all of them, shared with concurrent
    /// appends); the new ones are dispatched. Refused at once, with nothing
    /// written, when dispatch is already `events.max_lag` behind. With `wait`,
    /// each new event's answer can be waited on until it is processed.
    pub async fn publish(&self, events: Vec<Event>, wait: bool) -> Result<Vec<Accepted>, LogError> {
        // While writes fail, a new publisher is told at once rather than left to
        // wait behind the retries (those already waiting are answered once the
        // database takes their rows).
        let (reason, error) = match self.audit.condition() {
            Condition::Writing => (None, LogError::Unavailable),
            Condition::Failing => (Some(RejectReason::Unavailable), LogError::Unavailable),
            Condition::DiskFull => (Some(RejectReason::DiskFull), LogError::DiskFull),
        };
        if let Some(reason) = reason {
            self.metrics.rejected(reason, events.len() as u64);
            return Err(error);
        }
        let bytes = events.iter().map(event_bytes).sum();
        let admission = match self.tracker().admit(events.len() as u64, bytes) {
            Ok(admission) => admission,
            Err(full) => {
                let refused = events.len() as u64;
                self.metrics.rejected(RejectReason::QueueFull, refused);
                return Err(full.into());
            }
        };
        let events = events.into_iter().map(Arc::new).collect();
        let accepted = self.audit.publish(events, admission, wait).await?;
        for _ in accepted.iter().filter(|a| a.duplicate) {
            self.metrics.duplicate();
        }
        Ok(accepted)
    }

    /// [`Log::publish`] for the daemon's own events: waits for room in the lag
    /// rather than refusing.
    pub async fn publish_own(&self, event: Event) -> Result<(), LogError> {
        let admission = self.tracker().admit_wait(1, event_bytes(&event)).await;
        self.audit
            .publish(vec![Arc::new(event)], admission, false)
            .await?;
        Ok(())
    }
}

impl LogSink for Log {
    fn decided(&self, event: &Arc<Event>, verdict: &Verdict, hold: Option<Ticket>) {
        self.audit.record_decision(event, verdict, hold);
    }

    fn emitted(
        &self,
        events: Vec<Event>,
        hold: Option<Ticket>,
    ) -> BoxFuture<'_, Vec<(Arc<Event>, Ticket)>> {
        Box::pin(async move {
            let bytes = events.iter().map(event_bytes).sum();
            // Emits are part of dispatching an event already in the lag: waiting for
            // room here could wait for this very worker, so they are let in.
            let admission = self.tracker().admit_over(events.len() as u64, bytes);
            let events: Vec<Arc<Event>> = events.into_iter().map(Arc::new).collect();
            match self.audit.append(events.clone(), admission, hold).await {
                Ok(appended) => events
                    .into_iter()
                    .zip(appended)
                    .filter_map(|(event, appended)| match appended {
                        Appended::Fresh(ticket) => Some((event, ticket)),
                        Appended::Duplicate | Appended::SetAside(_) => None,
                    })
                    .collect(),
                Err(Stopped) => {
                    tracing::error!("the log has stopped; events a plugin emitted were not kept");
                    Vec::new()
                }
            }
        })
    }
}

/// The event a log row holds, as it was accepted; `None` for a row that is not an
/// event (a management action, a decision) or that cannot be read back.
pub fn event_of(row: &Record) -> Option<Event> {
    event_of_entry(&row.entry)
}

/// [`event_of`] for an entry not yet in the log (a dead letter's).
pub fn event_of_entry(e: &Entry) -> Option<Event> {
    let source = e.source.as_deref()?;
    let data = serde_json::value::RawValue::from_string(e.details.clone()).ok()?;
    let ip = e.actor_ip.as_deref().and_then(|ip| ip.parse().ok());
    let token = e.actor_token.as_deref();
    // The actor column holds the on-behalf-of user, else what the envelope implies.
    let implied = token.unwrap_or(if ip.is_none() { "evhost" } else { "anonymous" });
    let on_behalf_of = e
        .actor
        .as_deref()
        .filter(|a| *a != implied)
        .map(str::to_string);
    Some(Event {
        id: e.event_id.as_str().into(),
        kind: e.event_type.as_str().into(),
        time: chrono::DateTime::from_timestamp_micros(e.time_us)?,
        source: source.into(),
        actor: Actor {
            token: token.map(Into::into),
            ip,
            on_behalf_of,
        },
        data: Arc::from(data),
        hops: 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_row_reads_back_as_the_event() {
        let event = Event {
            id: "e1".into(),
            kind: "user.login".into(),
            time: chrono::DateTime::from_timestamp_micros(1_700_000_000_123_456).unwrap(),
            source: "/imap".into(),
            actor: Actor {
                token: Some("imap".into()),
                ip: Some("192.0.2.1".parse().unwrap()),
                on_behalf_of: Some("alice".into()),
            },
            data: Arc::from(
                serde_json::value::RawValue::from_string(r#"{"user":"alice"}"#.into()).unwrap(),
            ),
            hops: 0,
        };
        let row = Record::chain(
            "c",
            1,
            Entry::of_event(&event),
            5,
            &crate::audit::record::GENESIS,
        );
        let back = event_of(&row).unwrap();
        assert_eq!(back.id, event.id);
        assert_eq!(back.kind, event.kind);
        assert_eq!(back.time, event.time);
        assert_eq!(back.source, event.source);
        assert_eq!(back.actor, event.actor);
        assert_eq!(back.data.get(), event.data.get());

        let mut own = event.clone();
        own.actor = Actor::default();
        let row = Record::chain(
            "c",
            2,
            Entry::of_event(&own),
            5,
            &crate::audit::record::GENESIS,
        );
        assert_eq!(event_of(&row).unwrap().actor, Actor::default());

        let mut action = Entry::of_event(&event);
        action.source = None;
        let row = Record::chain("c", 3, action, 5, &crate::audit::record::GENESIS);
        assert!(event_of(&row).is_none(), "actions are not dispatched");
    }
}
