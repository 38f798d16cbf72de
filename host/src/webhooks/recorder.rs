//! Records attempt results in batches: attempt rows, delivery states, endpoint
//! failure runs; then wakes lanes for retries and disables failing endpoints.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio::sync::mpsc;

use super::Shared;
use super::db::{self, AttemptRecord, EndpointTally};
use crate::bus::recv_batch;
use crate::store::Fault;

/// How an attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Success,
    /// 410 Gone: the endpoint is disabled at once.
    Gone,
    HttpError,
    Timeout,
    ConnectError,
    /// The address is not allowed (or the stored URL is unusable).
    Refused,
    /// Not sent (the endpoint was disabled meanwhile): the claim is given back.
    Released,
}

impl Outcome {
    fn label(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Gone => "gone",
            Outcome::HttpError => "http_error",
            Outcome::Timeout => "timeout",
            Outcome::ConnectError => "connect_error",
            Outcome::Refused => "refused",
            Outcome::Released => "released",
        }
    }
}

/// One result on its way to the database.
pub struct Recorded {
    pub record: AttemptRecord,
    pub endpoint_id: String,
    pub outcome: Outcome,
    /// Answered once the result is committed (the test ping waits for it).
    pub ack: Option<tokio::sync::oneshot::Sender<()>>,
}

/// What the recorder does with a result once its record is written: count it,
/// wake or disable its endpoint, answer whoever waits.
struct Followup {
    endpoint_id: String,
    outcome: Outcome,
    ack: Option<tokio::sync::oneshot::Sender<()>>,
}

/// Ends the recorder once it has written what is queued.
pub fn close(shared: &Shared) {
    shared.recorder_stop.cancel();
}

pub async fn run(shared: Arc<Shared>, mut rx: mpsc::Receiver<Recorded>) {
    let batch_size = shared.options.batch_size;
    let mut batch = Vec::with_capacity(batch_size);
    while recv_batch(&mut rx, &mut batch, batch_size, &shared.recorder_stop).await {
        write(&shared, std::mem::take(&mut batch)).await;
    }
}

async fn write(shared: &Arc<Shared>, batch: Vec<Recorded>) {
    // The records go to the database task as they are; the rest stays here.
    let (records, followups): (Vec<AttemptRecord>, Vec<Followup>) = batch
        .into_iter()
        .map(|r| {
            let followup = Followup {
                endpoint_id: r.endpoint_id,
                outcome: r.outcome,
                ack: r.ack,
            };
            (r.record, followup)
        })
        .unzip();
    // The failure run per endpoint, in the order results arrived.
    let mut tallies: HashMap<&str, EndpointTally> = HashMap::new();
    for (record, r) in records.iter().zip(&followups) {
        let finished_ok = r.outcome == Outcome::Success;
        let finished_failed = record.status == db::FAILED;
        if !finished_ok && !finished_failed {
            continue;
        }
        let t = tallies
            .entry(r.endpoint_id.as_str())
            .or_insert_with(|| EndpointTally {
                endpoint_id: r.endpoint_id.clone(),
                reset: false,
                failures: 0,
                last_success_us: None,
            });
        if finished_ok {
            t.reset = true;
            t.failures = 0;
            t.last_success_us = Some(record.time_us);
        } else {
            t.failures += 1;
        }
    }
    let tallies: Arc<Vec<EndpointTally>> = Arc::new(tallies.into_values().collect());
    let records = Arc::new(records);
    let mut to_write = records.clone();
    let mut backoff = Duration::from_millis(100);
    let counts = loop {
        match db::record(
            &shared.writes,
            to_write.clone(),
            tallies.clone(),
            Utc::now().timestamp_micros(),
        )
        .await
        {
            Ok(counts) => break counts,
            Err(error) => {
                shared.metrics.webhooks.write_errors.inc();
                match error.fault() {
                    Fault::Disk => crate::store::disk_failed(&error),
                    // One result the database refuses must not hold up the others:
                    // each is written on its own, then the endpoints' counters.
                    Fault::Permanent if !to_write.is_empty() => {
                        tracing::error!(%error, results = to_write.len(), "the database refuses a batch of attempt results; writing them one by one");
                        record_each(shared, &to_write).await;
                        to_write = Arc::new(Vec::new());
                        continue;
                    }
                    Fault::Permanent => {
                        tracing::error!(%error, "the database refuses the endpoints' failure counters; left as they were");
                        break Vec::new();
                    }
                    Fault::Retry | Fault::DiskFull => {}
                }
                tracing::error!(%error, results = to_write.len(), "cannot record webhook attempts; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    };
    let m = &shared.metrics.webhooks;
    let mut gone = Vec::new();
    for (record, r) in records.iter().zip(followups) {
        if r.outcome != Outcome::Released {
            m.count_attempt(r.outcome.label());
        }
        if record.status == db::FAILED {
            m.failed.inc();
            tracing::warn!(delivery = %record.delivery_id, webhook = %r.endpoint_id, attempts = record.attempt, error = record.error.as_deref().unwrap_or(""), "webhook delivery failed");
        }
        if record.status == db::PENDING {
            shared.wake(&r.endpoint_id, record.next_attempt_us);
        }
        if r.outcome == Outcome::Gone && !gone.contains(&r.endpoint_id) {
            gone.push(r.endpoint_id.clone());
        }
        if let Some(ack) = r.ack {
            let _ = ack.send(());
        }
    }
    for id in gone {
        shared.disable(&id, "gone").await;
    }
    let limit = i64::from(shared.options.disable_after_failures);
    if limit > 0 {
        for (id, count) in counts {
            if count >= limit {
                shared.disable(&id, "failing").await;
            }
        }
    }
}

/// Writes results one at a time. One the database refuses is written without what
/// the receiver sent (the only free text); if even that is refused it is given up,
/// and its delivery, still leased, is sent again (same `webhook-id`) once the lease
/// ends: repeated, never lost.
async fn record_each(shared: &Shared, records: &[AttemptRecord]) {
    for record in records {
        let mut one = record.clone();
        let mut stripped = false;
        let mut backoff = Duration::from_millis(100);
        loop {
            let now = Utc::now().timestamp_micros();
            let tallies = Arc::new(Vec::new());
            let Err(error) =
                db::record(&shared.writes, Arc::new(vec![one.clone()]), tallies, now).await
            else {
                break;
            };
            shared.metrics.webhooks.write_errors.inc();
            match error.fault() {
                Fault::Disk => crate::store::disk_failed(&error),
                Fault::Permanent if !stripped => {
                    tracing::error!(%error, delivery = %one.delivery_id, "the database refuses this attempt result; recording it without the receiver's answer");
                    one = without_text(one);
                    stripped = true;
                }
                Fault::Permanent => {
                    tracing::error!(%error, delivery = %one.delivery_id, "the database refuses this attempt result even without text; given up: the delivery is sent again when its lease ends");
                    break;
                }
                Fault::Retry | Fault::DiskFull => {
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }
}

/// A result without what the receiver sent (its answer and the error text).
fn without_text(mut record: AttemptRecord) -> AttemptRecord {
    record.response = None;
    record.error = record
        .error
        .map(|_| "not stored: the database refused the text".to_string());
    record
}
