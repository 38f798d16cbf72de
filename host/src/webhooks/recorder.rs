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
    let mut backoff = Duration::from_millis(100);
    let counts = loop {
        match db::record(
            &shared.writes,
            records.clone(),
            tallies.clone(),
            Utc::now().timestamp_micros(),
        )
        .await
        {
            Ok(counts) => break counts,
            Err(error) => {
                shared.metrics.webhooks.write_errors.inc();
                tracing::error!(%error, results = records.len(), "cannot record webhook attempts; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    };
    let m = &shared.metrics.webhooks;
    let mut gone = Vec::new();
    for (record, r) in records.iter().zip(followups) {
        if r.outcome != Outcome::Released {
            m.attempts
                .get_or_create(&crate::metrics::OutcomeLabel {
                    outcome: r.outcome.label(),
                })
                .inc();
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
