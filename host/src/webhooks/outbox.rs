//! From the bus to the outbox: the subscriber that matches events against the
//! endpoints, and the writer that stores deliveries before anything is sent.
//!
//! Each delivery's id, which is also its `webhook-id`, is derived from the event's
//! id and the endpoint's (see [`delivery_id`]), and rows are inserted only if they
//! are not there yet: an event dispatched again after a crash reaches each endpoint
//! under the same `webhook-id`, and its delivery rows are written once. An item
//! holds its event's ticket until its rows are committed, so the log's position
//! does not pass an event whose deliveries are not stored.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;
use serde_json::value::RawValue;
use tokio::sync::{mpsc, oneshot};

use super::Shared;
use super::db::{self, NewDelivery, NewMessage};
use super::endpoint::Format;
use super::lane::{Job, Lane};
use crate::audit::Entry;
use crate::bus::{Handling, Subscriber, recv_batch};
use crate::deadletter::{DeadLetters, Kind};
use crate::event::Event;
use crate::eventlog::Ticket;
use crate::store::{Fault, WriteError};

/// An event and the lanes of the endpoints it goes to.
pub struct Item {
    event: Arc<Event>,
    lanes: Vec<Arc<Lane>>,
    /// Why it goes there: by subscription, or because a plugin asked.
    route: Route,
    /// Let go once the rows are committed.
    ticket: Option<Ticket>,
    /// Told once the rows are committed, or the dead letter's id if the database
    /// refused them (a dead letter's retry waits on it).
    written: Option<oneshot::Sender<Result<(), i64>>>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Route {
    Subscription,
    Plugin,
}

/// The id of the delivery of event `event_id` to endpoint `endpoint_id`: the same
/// for every dispatch of the event, so receivers can deduplicate on `webhook-id`.
/// A UUID in version 7's layout, so ids sort by the event's time: the first 48
/// bits are its Unix milliseconds, the rest come from SHA-256 of the two ids.
fn delivery_id(event: &Event, endpoint_id: &str, route: Route) -> String {
    let via: &[u8] = match route {
        Route::Subscription => b"",
        Route::Plugin => b"deliver",
    };
    let parts = [event.id.as_bytes(), endpoint_id.as_bytes(), via];
    crate::event::derived_uuid(b"evhost-delivery-v2", &parts, event.time.timestamp_millis())
}

/// The bus subscriber: matching is in memory; a match costs one channel send.
pub struct Dispatcher {
    pub(super) shared: Arc<Shared>,
    pub(super) tx: mpsc::Sender<Item>,
}

impl Subscriber for Dispatcher {
    fn id(&self) -> &str {
        "webhooks"
    }

    fn handle<'a>(&'a self, event: &'a Arc<Event>) -> Handling<'a> {
        self.handle_ticketed(event, None)
    }

    fn handle_ticketed<'a>(
        &'a self,
        event: &'a Arc<Event>,
        ticket: Option<&'a Ticket>,
    ) -> Handling<'a> {
        let routes = self.shared.routes.load();
        if routes.is_empty() {
            return Handling::ok();
        }
        let mut event_domain: Option<Option<String>> = None;
        let mut lanes = Vec::new();
        for lane in routes.iter() {
            let route = lane.route();
            if !route.endpoint.enabled || !route.matches(&event.kind) {
                continue;
            }
            if let Some(scope) = &route.endpoint.domain {
                let domain = event_domain
                    .get_or_insert_with(|| evhost_catalog::mail_domain_of(event.data.get()));
                if domain.as_deref() != Some(scope.as_str()) {
                    continue;
                }
            }
            lanes.push(lane.clone());
        }
        if lanes.is_empty() {
            return Handling::ok();
        }
        let item = Item {
            event: event.clone(),
            lanes,
            route: Route::Subscription,
            ticket: ticket.cloned(),
            written: None,
        };
        Handling::hand_off(&self.tx, item, "the webhook outbox writer")
    }

    fn time_limit(&self, _default: Duration) -> Option<Duration> {
        None
    }
}

/// Where plugins' `deliver` actions enter the outbox: one named, enabled endpoint,
/// whatever it subscribes to.
pub struct Targeted {
    pub(super) shared: Arc<Shared>,
    pub(super) tx: mpsc::Sender<Item>,
}

impl crate::bus::DeliverySink for Targeted {
    fn deliver_to<'a>(
        &'a self,
        target: &'a str,
        event: Arc<Event>,
        ticket: Option<Ticket>,
    ) -> crate::bus::BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            let lane = self
                .shared
                .routes
                .load()
                .iter()
                .find(|lane| {
                    let route = lane.route();
                    route.endpoint.enabled && route.endpoint.name == target
                })
                .cloned()
                .ok_or_else(|| format!("no enabled webhook endpoint is named {target:?}"))?;
            let item = Item {
                event,
                lanes: vec![lane],
                route: Route::Plugin,
                ticket,
                written: None,
            };
            self.tx
                .send(item)
                .await
                .map_err(|_| "the webhook outbox writer has stopped".to_string())
        })
    }
}

#[derive(Serialize)]
struct EspBody<'a> {
    id: &'a str,
    event: &'a str,
    timestamp: String,
    data: &'a RawValue,
}

#[derive(Serialize)]
struct CloudEventBody<'a> {
    specversion: &'static str,
    id: &'a str,
    source: &'a str,
    #[serde(rename = "type")]
    kind: &'a str,
    time: String,
    datacontenttype: &'static str,
    data: &'a RawValue,
}

fn raw(data: &str) -> Box<RawValue> {
    RawValue::from_string(data.to_string())
        .unwrap_or_else(|_| RawValue::from_string("null".into()).expect("null is JSON"))
}

/// The platform plan's body: `{"id", "event", "timestamp", "data"}`.
pub fn body_esp(id: &str, kind: &str, time: DateTime<Utc>, data: &str) -> String {
    serde_json::to_string(&EspBody {
        id,
        event: kind,
        timestamp: time.to_rfc3339_opts(SecondsFormat::AutoSi, true),
        data: &raw(data),
    })
    .expect("strings and JSON serialize")
}

/// A structured-mode CloudEvent 1.0.
pub fn body_cloudevent(
    id: &str,
    kind: &str,
    source: &str,
    time: DateTime<Utc>,
    data: &str,
) -> String {
    serde_json::to_string(&CloudEventBody {
        specversion: "1.0",
        id,
        source,
        kind,
        time: time.to_rfc3339_opts(SecondsFormat::AutoSi, true),
        datacontenttype: "application/json",
        data: &raw(data),
    })
    .expect("strings and JSON serialize")
}

/// Writes deliveries in batches; after each commit hands the fresh ones to their
/// lanes (or, when a lane's queue is full, leaves them due in the table).
/// On shutdown it writes everything queued, then ends.
pub async fn run_writer(shared: Arc<Shared>, mut rx: mpsc::Receiver<Item>) {
    let batch_size = shared.options.batch_size;
    let mut items: Vec<Item> = Vec::with_capacity(batch_size);
    loop {
        let backlog = &shared.metrics.webhooks.outbox_backlog;
        backlog.set(rx.len() as i64);
        if !recv_batch(&mut rx, &mut items, batch_size, &shared.stop).await {
            break;
        }
        // `batch_size` bounds delivery rows, not events: an event for 50 endpoints
        // is 50 rows, and one long transaction would hold SQLite's write turn while
        // the lanes wait to claim and the recorder to record.
        for chunk in split_by_rows(std::mem::take(&mut items), batch_size, |i| i.lanes.len()) {
            write(&shared, chunk).await;
        }
    }
    shared.metrics.webhooks.outbox_backlog.set(0);
}

/// Splits `items` into runs of at most `limit` rows, in order (an item of more rows
/// than that goes alone).
fn split_by_rows<T>(items: Vec<T>, limit: usize, rows: impl Fn(&T) -> usize) -> Vec<Vec<T>> {
    let mut runs = Vec::new();
    let mut run = Vec::new();
    let mut in_run = 0;
    for item in items {
        let n = rows(&item);
        if !run.is_empty() && in_run + n > limit {
            runs.push(std::mem::take(&mut run));
            in_run = 0;
        }
        in_run += n;
        run.push(item);
    }
    if !run.is_empty() {
        runs.push(run);
    }
    runs
}

/// A delivery and where it goes after the commit: into its lane's memory queue
/// (when a place was reserved) or, left due in the table, to a claim.
struct Fresh {
    lane: Arc<Lane>,
    permit: Option<mpsc::OwnedPermit<Job>>,
    delivery_id: String,
    /// Index of its event in the batch (and of the event's message).
    event: usize,
    cloudevent: bool,
}

/// Writes a run of items; a run the database refuses for good is written again in
/// halves, down to single items, and each item it refuses on its own is set aside
/// as a dead letter (its event goes on to the other consumers).
async fn write(shared: &Shared, items: Vec<Item>) {
    let mut todo = vec![items];
    while let Some(run) = todo.pop() {
        let Err((mut run, error)) = write_run(shared, run).await else {
            continue;
        };
        if run.len() == 1 {
            set_aside(shared, run.pop().expect("one item"), &error).await;
            continue;
        }
        let second = run.split_off(run.len() / 2);
        todo.push(second);
        todo.push(run);
    }
}

/// What a delivery dead letter keeps: the event, and where it was to go.
#[derive(Serialize, serde::Deserialize)]
struct Letter {
    event: Entry,
    endpoints: Vec<String>,
    /// `subscription`, or `plugin` (a plugin's `deliver`).
    route: String,
}

async fn set_aside(shared: &Shared, item: Item, error: &WriteError) {
    let (route, tag) = match item.route {
        Route::Subscription => ("subscription", ""),
        Route::Plugin => ("plugin", ":deliver"),
    };
    let letter = Letter {
        event: Entry::of_event(&item.event),
        endpoints: item.lanes.iter().map(|l| l.id().to_string()).collect(),
        route: route.into(),
    };
    let body = serde_json::to_string(&letter).expect("a letter serializes");
    let key = format!("{}{tag}", item.event.id);
    let error = crate::error_chain(error);
    let id = DeadLetters::new(shared.store.clone())
        .keep(
            &shared.metrics.dead_letters,
            Kind::Delivery,
            &key,
            &body,
            &error,
            &shared.options.owner,
        )
        .await;
    if let Some(written) = item.written {
        let _ = written.send(Err(id));
    }
}

/// A delivery dead letter's deliveries, written again: `Ok(Ok(()))` once stored
/// (and sent as any other), `Ok(Err(id))` if refused again, `Err` if they cannot be
/// tried (unreadable, or none of the endpoints is there and enabled any more).
pub(super) async fn redeliver(
    shared: &Shared,
    tx: &mpsc::Sender<Item>,
    body: &str,
) -> Result<Result<(), i64>, String> {
    let letter: Letter = serde_json::from_str(body).map_err(|e| e.to_string())?;
    let event = crate::eventlog::event_of_entry(&letter.event)
        .ok_or_else(|| "the dead letter does not hold an event".to_string())?;
    let lanes: Vec<Arc<Lane>> = shared
        .routes
        .load()
        .iter()
        .filter(|lane| letter.endpoints.iter().any(|id| id == lane.id()))
        .filter(|lane| lane.route().endpoint.enabled)
        .cloned()
        .collect();
    if lanes.is_empty() {
        return Err("none of its endpoints is there and enabled any more".into());
    }
    let (written, answer) = oneshot::channel();
    let item = Item {
        event: Arc::new(event),
        lanes,
        route: if letter.route == "plugin" {
            Route::Plugin
        } else {
            Route::Subscription
        },
        ticket: None,
        written: Some(written),
    };
    tx.send(item)
        .await
        .map_err(|_| "the webhook outbox writer has stopped".to_string())?;
    answer
        .await
        .map_err(|_| "the webhook outbox writer has stopped".to_string())
}

async fn write_run(shared: &Shared, items: Vec<Item>) -> Result<(), (Vec<Item>, WriteError)> {
    let now = Utc::now();
    let now_us = now.timestamp_micros();
    let mut messages = Vec::with_capacity(items.len());
    let mut deliveries = Vec::new();
    let mut fresh = Vec::new();
    for (index, item) in items.iter().enumerate() {
        let e = &item.event;
        let formats: Vec<Format> = item
            .lanes
            .iter()
            .map(|l| l.route().endpoint.format)
            .collect();
        let wants_ce = formats.contains(&Format::Cloudevents);
        messages.push(NewMessage {
            id: e.id.to_string(),
            event_type: e.kind.to_string(),
            body: body_esp(&e.id, &e.kind, e.time, e.data.get()),
            cloudevent: wants_ce
                .then(|| body_cloudevent(&e.id, &e.kind, &e.source, e.time, e.data.get())),
        });
        // An event read back from the log after a restart may have its rows already
        // (and have been sent): its rows go due in the table, where a claim takes
        // only those still pending, not straight to a lane.
        let replayed = item.ticket.as_ref().is_some_and(Ticket::replayed);
        for (lane, format) in item.lanes.iter().zip(formats) {
            let delivery_id = delivery_id(e, lane.id(), item.route);
            let reserved = if replayed { None } else { lane.try_reserve() };
            deliveries.push(NewDelivery {
                id: delivery_id.clone(),
                endpoint_id: lane.id().to_string(),
                message_id: e.id.to_string(),
                event_type: e.kind.to_string(),
                next_attempt_us: match &reserved {
                    Some((_, ahead)) => now_us + shared.options.lease(*ahead).as_micros() as i64,
                    None => now_us,
                },
                owner: reserved.as_ref().map(|_| shared.options.owner.clone()),
            });
            let permit = reserved.map(|(permit, _)| permit);
            fresh.push(Fresh {
                lane: lane.clone(),
                permit,
                delivery_id,
                event: index,
                cloudevent: format == Format::Cloudevents,
            });
        }
    }
    let (messages, deliveries) = (Arc::new(messages), Arc::new(deliveries));
    let mut backoff = Duration::from_millis(100);
    loop {
        match db::enqueue(&shared.writes, messages.clone(), deliveries.clone(), now_us).await {
            Ok(()) => {
                let enqueued = deliveries.len() as u64;
                shared.metrics.webhooks.enqueued.inc_by(enqueued);
                break;
            }
            Err(error) => {
                shared.metrics.webhooks.write_errors.inc();
                match error.fault() {
                    Fault::Permanent => return Err((items, error)),
                    Fault::Disk => crate::store::disk_failed(&error),
                    Fault::Retry | Fault::DiskFull => {}
                }
                tracing::error!(%error, deliveries = deliveries.len(), "cannot write webhook deliveries; retrying, nothing is dropped");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
    // Committed: the events' tickets go (their deliveries are stored), and the
    // bodies move into shared buffers, one per event and format (the
    // write's task has let go of its reference by now; copied only if it had not).
    let items: Vec<(Arc<Event>, Route)> = items
        .into_iter()
        .map(|i| {
            if let Some(written) = i.written {
                let _ = written.send(Ok(()));
            }
            (i.event, i.route)
        })
        .collect();
    let messages = Arc::try_unwrap(messages).unwrap_or_else(|shared| (*shared).clone());
    let bodies: Vec<(Bytes, Option<Bytes>)> = messages
        .into_iter()
        .map(|m| (Bytes::from(m.body), m.cloudevent.map(Bytes::from)))
        .collect();
    for f in fresh {
        let Some(permit) = f.permit else {
            f.lane.due_at(now_us);
            continue;
        };
        let (esp, ce) = &bodies[f.event];
        let body = match (f.cloudevent, ce) {
            (true, Some(ce)) => ce.clone(),
            _ => esp.clone(),
        };
        permit.send(Job {
            delivery_id: f.delivery_id,
            event_type: items[f.event].0.kind.clone(),
            attempts: 0,
            body,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::split_by_rows;

    #[test]
    fn transactions_are_bounded_by_rows_not_events() {
        let runs = split_by_rows(vec![50, 50, 50, 10, 600, 1, 1], 100, |n| *n);
        assert_eq!(
            runs,
            vec![vec![50, 50], vec![50, 10], vec![600], vec![1, 1]]
        );
        assert!(split_by_rows(Vec::<usize>::new(), 100, |n| *n).is_empty());
        assert_eq!(split_by_rows(vec![1; 5], 2, |n| *n).len(), 3);
    }
}

#[cfg(test)]
mod id_tests {
    use super::*;
    use crate::event::Actor;

    fn event(id: &str, ms: i64) -> Event {
        Event {
            id: id.into(),
            kind: "a.b".into(),
            time: chrono::DateTime::from_timestamp_millis(ms).unwrap(),
            source: "/t".into(),
            actor: Actor::default(),
            data: Arc::from(RawValue::from_string("{}".into()).unwrap()),
            hops: 0,
        }
    }

    #[test]
    fn a_delivery_id_depends_on_the_event_and_the_endpoint_only() {
        let e = event("e1", 1_700_000_000_000);
        let id = delivery_id(&e, "wh_1", Route::Subscription);
        assert_eq!(id, delivery_id(&e, "wh_1", Route::Subscription));
        assert_ne!(id, delivery_id(&e, "wh_2", Route::Subscription));
        assert_ne!(
            id,
            delivery_id(&event("e2", 1_700_000_000_000), "wh_1", Route::Subscription)
        );
        assert_ne!(id, delivery_id(&e, "wh_1", Route::Plugin));
        let uuid = uuid::Uuid::parse_str(&id).unwrap();
        assert_eq!(uuid.get_version_num(), 7);
        assert!(
            id < delivery_id(&event("e0", 1_700_000_000_001), "wh_1", Route::Subscription),
            "ids sort by the event's time"
        );
    }
}
