//! From the bus to the outbox: the subscriber that matches events against the
//! endpoints, and the writer that stores deliveries before anything is sent.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;
use serde_json::value::RawValue;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::Shared;
use super::db::{self, NewDelivery, NewMessage};
use super::endpoint::Format;
use super::lane::{Job, Lane};
use crate::bus::{Handling, Subscriber};
use crate::event::Event;

/// An event and the lanes of the endpoints it goes to.
pub struct Item {
    event: Arc<Event>,
    lanes: Vec<Arc<Lane>>,
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
        let routes = self.shared.routes.load();
        if routes.is_empty() {
            return Handling::ok();
        }
        let mut event_domain: Option<Option<String>> = None;
        let mut lanes = Vec::new();
        for lane in routes.iter() {
            let route = lane.route();
            if !route.matches(&event.kind) {
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
        };
        match self.tx.try_send(item) {
            Ok(()) => Handling::ok(),
            // The writer is behind (or the database down): wait for room. This holds
            // the bus, which pushes back on publishers; nothing is dropped.
            Err(mpsc::error::TrySendError::Full(item)) => Handling::later(async move {
                self.tx
                    .send(item)
                    .await
                    .map_err(|_| "the webhook outbox writer has stopped".into())
            }),
            Err(mpsc::error::TrySendError::Closed(_)) => {
                Handling::Done(Err("the webhook outbox writer has stopped".into()))
            }
        }
    }

    fn time_limit(&self, _default: Duration) -> Option<Duration> {
        None
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
pub async fn run_writer(
    shared: Arc<Shared>,
    mut rx: mpsc::Receiver<Item>,
    stop: CancellationToken,
) {
    let batch_size = shared.options.batch_size;
    let mut items: Vec<Item> = Vec::with_capacity(batch_size);
    let mut stopping = false;
    loop {
        shared.metrics.webhooks.outbox_backlog.set(rx.len() as i64);
        if !stopping {
            tokio::select! {
                biased;
                n = rx.recv_many(&mut items, batch_size) => if n == 0 { break },
                () = stop.cancelled() => {
                    rx.close();
                    stopping = true;
                    continue;
                }
            }
        } else if rx.recv_many(&mut items, batch_size).await == 0 {
            break;
        }
        write(&shared, std::mem::take(&mut items)).await;
    }
    shared.metrics.webhooks.outbox_backlog.set(0);
}

/// A delivery and where it goes after the commit.
struct Fresh {
    lane: Arc<Lane>,
    permit: Option<mpsc::OwnedPermit<Job>>,
    job: Job,
}

async fn write(shared: &Shared, items: Vec<Item>) {
    let now = Utc::now();
    let now_us = now.timestamp_micros();
    let lease_us = now_us + shared.options.lease().as_micros() as i64;
    let mut messages = Vec::with_capacity(items.len());
    let mut deliveries = Vec::new();
    let mut fresh = Vec::new();
    for item in &items {
        let e = &item.event;
        let esp = Bytes::from(body_esp(&e.id, &e.kind, e.time, e.data.get()));
        let wants_ce = item
            .lanes
            .iter()
            .any(|l| l.route().endpoint.format == Format::Cloudevents);
        let ce = wants_ce.then(|| {
            Bytes::from(body_cloudevent(
                &e.id,
                &e.kind,
                &e.source,
                e.time,
                e.data.get(),
            ))
        });
        messages.push(NewMessage {
            id: e.id.to_string(),
            event_type: e.kind.to_string(),
            body: String::from_utf8_lossy(&esp).into_owned(),
            cloudevent: ce.as_ref().map(|b| String::from_utf8_lossy(b).into_owned()),
        });
        for lane in &item.lanes {
            let id = uuid::Uuid::now_v7().to_string();
            let permit = lane.try_reserve();
            deliveries.push(NewDelivery {
                id: id.clone(),
                endpoint_id: lane.id().to_string(),
                message_id: e.id.to_string(),
                event_type: e.kind.to_string(),
                next_attempt_us: if permit.is_some() { lease_us } else { now_us },
                owner: permit.as_ref().map(|_| shared.options.owner.clone()),
            });
            let body = match (lane.route().endpoint.format, &ce) {
                (Format::Cloudevents, Some(ce)) => ce.clone(),
                _ => esp.clone(),
            };
            fresh.push(Fresh {
                lane: lane.clone(),
                permit,
                job: Job {
                    delivery_id: id,
                    event_type: e.kind.clone(),
                    attempts: 0,
                    body,
                },
            });
        }
    }
    let mut backoff = Duration::from_millis(100);
    loop {
        match db::enqueue(&shared.store, &messages, &deliveries, now_us).await {
            Ok(()) => break,
            Err(error) => {
                shared.metrics.webhooks.write_errors.inc();
                tracing::error!(%error, deliveries = deliveries.len(), "cannot write webhook deliveries; retrying, nothing is dropped");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
    for f in fresh {
        match f.permit {
            Some(permit) => {
                permit.send(f.job);
            }
            None => f.lane.due_at(now_us),
        }
    }
}
