//! One endpoint's lane: its own task, queue and concurrency limit, and the HTTP
//! attempt itself.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use bytes::Bytes;
use chrono::Utc;
use futures_util::StreamExt;
use tokio::sync::{Notify, Semaphore, mpsc, oneshot};
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;

use super::db::{self, AttemptRecord};
use super::endpoint::{Endpoint, Format};
use super::recorder::{Outcome, Recorded};
use super::{Shared, WebhookError, sign};
use crate::event::TypePattern;

/// How much of a response body is kept with the attempt.
pub const RESPONSE_EXCERPT_BYTES: usize = 1024;

/// What the dispatcher matches on, swapped whole when the endpoint changes.
pub struct Route {
    pub endpoint: Endpoint,
    pub patterns: Vec<TypePattern>,
    /// The URL, parsed once (stored URLs were checked when saved).
    url: Result<reqwest::Url, String>,
}

/// A delivery ready to send, body included.
pub struct Job {
    pub delivery_id: String,
    pub event_type: Arc<str>,
    /// Attempts made before this one.
    pub attempts: i64,
    pub body: Bytes,
}

pub struct Lane {
    id: String,
    route: ArcSwap<Route>,
    queue: mpsc::Sender<Job>,
    wake: Notify,
    /// The earliest time a delivery of this endpoint is known to be due (µs).
    next_due: AtomicI64,
    /// Fresh deliveries overflowed the memory queue into the table: until the lane
    /// has claimed the table empty, fresh ones follow them there (see
    /// [`Lane::try_reserve`]).
    overflowed: AtomicBool,
    stop: CancellationToken,
    task: std::sync::Mutex<Option<JoinHandle<()>>>,
}

impl Lane {
    pub fn start(shared: &Arc<Shared>, endpoint: Endpoint) -> Arc<Lane> {
        let (tx, rx) = mpsc::channel(shared.options.memory_queue());
        let lane = Arc::new(Lane {
            id: endpoint.id.clone(),
            route: ArcSwap::from_pointee(Route::of(endpoint)),
            queue: tx,
            wake: Notify::new(),
            next_due: AtomicI64::new(0),
            overflowed: AtomicBool::new(false),
            stop: shared.stop.child_token(),
            task: std::sync::Mutex::new(None),
        });
        let task = shared.metrics.tasks.spawn(
            "webhook lane",
            crate::supervise::Ends::OnStop(lane.stop.clone()),
            run(shared.clone(), lane.clone(), rx),
        );
        *lane.task.lock().expect("not poisoned") = Some(task);
        lane
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn route(&self) -> arc_swap::Guard<Arc<Route>> {
        self.route.load()
    }

    pub fn update(&self, endpoint: Endpoint) {
        self.route.store(Arc::new(Route::of(endpoint)));
        self.wake.notify_one();
    }

    /// Stops matching and sending at once (the receiver answered 410). The recorder
    /// then disables the endpoint in the database and reloads the routes; until it
    /// has, nothing more goes out.
    pub fn disable_now(&self) {
        let mut endpoint = self.route().endpoint.clone();
        if endpoint.enabled {
            endpoint.enabled = false;
            self.route.store(Arc::new(Route::of(endpoint)));
        }
    }

    /// Deliveries are due at `at_us`: look for them then (or now, if sooner).
    pub fn due_at(&self, at_us: i64) {
        self.next_due.fetch_min(at_us, Ordering::Relaxed);
        self.wake.notify_one();
    }

    /// A place in this lane's memory queue, if it has room, and how many deliveries
    /// are before it (queued, or reserved and on their way): the writer then inserts
    /// the delivery leased to this daemon for that long and hands it over after the
    /// commit. None leaves the delivery due in the table, for a claim.
    ///
    /// Once the queue has been full, deliveries keep going to the table until the
    /// lane has claimed it empty: the lane serves its memory queue before it claims,
    /// so under a steady flow a fresh delivery let into the queue would keep
    /// overtaking the overflow, which then went out seconds late, all at once.
    pub fn try_reserve(&self) -> Option<(mpsc::OwnedPermit<Job>, usize)> {
        if self.overflowed.load(Ordering::Acquire) {
            return None;
        }
        let reserved = reserve(&self.queue);
        if reserved.is_none() {
            self.overflowed.store(true, Ordering::Release);
        }
        reserved
    }

    /// Stops taking work and waits for attempts in flight (bounded by the timeout).
    pub async fn stop(&self) {
        self.stop.cancel();
        let task = self.task.lock().expect("not poisoned").take();
        if let Some(task) = task
            && let Err(e) = task.await
        {
            tracing::error!(error = %e, webhook = %self.id, "webhook lane ended abnormally");
        }
    }
}

/// A place in `queue` and how many are taken before it (queued, or reserved and
/// not yet sent). One writer reserves, so nothing comes between the two.
fn reserve<T>(queue: &mpsc::Sender<T>) -> Option<(mpsc::OwnedPermit<T>, usize)> {
    let ahead = queue.max_capacity() - queue.capacity();
    let permit = queue.clone().try_reserve_owned().ok()?;
    Some((permit, ahead))
}

impl Route {
    fn of(endpoint: Endpoint) -> Route {
        Route {
            patterns: endpoint.patterns(),
            url: reqwest::Url::parse(&endpoint.url)
                .map_err(|e| format!("the stored URL is not valid: {e}")),
            endpoint,
        }
    }

    pub fn matches(&self, event_type: &str) -> bool {
        self.patterns.iter().any(|p| p.matches(event_type))
    }
}

async fn run(shared: Arc<Shared>, lane: Arc<Lane>, mut rx: mpsc::Receiver<Job>) {
    let options = &shared.options;
    let slots = Arc::new(Semaphore::new(options.concurrency));
    let mut in_flight = JoinSet::new();
    // Claimed from the table, leased, not yet sent. Claims fill this in batches
    // (a claim per freed slot would cost a write transaction per delivery when a
    // backlog is in the table); it is served before the memory queue so that what
    // was claimed goes out well within its lease.
    let mut claimed: VecDeque<Job> = VecDeque::new();
    let claim_batch = options.claim_batch();
    // A claim under way, in a task of its own so the slots keep sending meanwhile.
    let mut claiming: Option<JoinHandle<Result<Vec<Job>, db::WriteError>>> = None;
    // The last claim was full: more is due. The next claim starts when fewer than a
    // round of slots is left claimed and the memory queue is empty, so a backlog in
    // the table flows without a pause at each batch.
    let mut more_due = false;
    let mut next_poll = tokio::time::Instant::now();
    let start_claim = |claiming: &mut Option<JoinHandle<_>>| {
        // Forget a due time this claim covers, unless the recorder has just set
        // another.
        let due = lane.next_due.load(Ordering::Relaxed);
        if due <= Utc::now().timestamp_micros() {
            let _ =
                lane.next_due
                    .compare_exchange(due, i64::MAX, Ordering::Relaxed, Ordering::Relaxed);
        }
        let (shared, lane) = (shared.clone(), lane.clone());
        *claiming = Some(tokio::spawn(async move {
            claim(&shared, &lane, claim_batch).await
        }));
    };
    loop {
        while in_flight.try_join_next().is_some() {}
        let permit = tokio::select! {
            biased;
            () = lane.stop.cancelled() => break,
            permit = slots.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
        };
        if claiming.as_ref().is_some_and(JoinHandle::is_finished) {
            let task = claiming.take().expect("checked");
            more_due = took_claim(&shared, &lane, task.await, claim_batch, &mut claimed);
        }
        let enabled = lane.route().endpoint.enabled;
        // Not while the memory queue holds deliveries: claimed ones go first, so
        // claiming on and on would leave the queued ones waiting past their lease.
        if enabled
            && more_due
            && claiming.is_none()
            && claimed.len() < options.concurrency
            && rx.is_empty()
        {
            more_due = false;
            start_claim(&mut claiming);
        }
        if let Some(job) = claimed.pop_front() {
            // (If the endpoint was disabled meanwhile, the attempt gives the lease
            // back unsent.)
            in_flight.spawn(attempt_and_record(
                shared.clone(),
                lane.clone(),
                job,
                permit,
            ));
            continue;
        }
        let wake_at = if enabled {
            let due = lane.next_due.load(Ordering::Relaxed);
            let until_due =
                Duration::from_micros((due - Utc::now().timestamp_micros()).max(0) as u64);
            next_poll.min(tokio::time::Instant::now() + until_due)
        } else {
            tokio::time::Instant::now() + Duration::from_secs(3600)
        };
        tokio::select! {
            biased;
            () = lane.stop.cancelled() => break,
            job = rx.recv() => match job {
                Some(job) => {
                    in_flight.spawn(attempt_and_record(shared.clone(), lane.clone(), job, permit));
                }
                None => break,
            },
            done = async { claiming.as_mut().expect("guarded").await }, if claiming.is_some() => {
                claiming = None;
                more_due = took_claim(&shared, &lane, done, claim_batch, &mut claimed);
                if let Some(job) = claimed.pop_front() {
                    in_flight.spawn(attempt_and_record(shared.clone(), lane.clone(), job, permit));
                }
            }
            () = lane.wake.notified() => continue,
            () = tokio::time::sleep_until(wake_at), if claiming.is_none() => {
                next_poll = tokio::time::Instant::now() + options.poll_interval;
                start_claim(&mut claiming);
            }
        }
    }
    // A claim under way finishes first (its deliveries keep their lease, as queued
    // ones do).
    if let Some(task) = claiming {
        let _ = task.await;
    }
    // Jobs still queued keep their lease; shutdown gives the leases back.
    rx.close();
    let grace = options.timeout + Duration::from_secs(1);
    if tokio::time::timeout(grace, async {
        while in_flight.join_next().await.is_some() {}
    })
    .await
    .is_err()
    {
        tracing::warn!(webhook = %lane.id, "webhook attempts still running at shutdown were abandoned; they will be sent again");
    }
}

/// Takes a finished claim's deliveries into the lane's claimed queue; true when
/// the claim was full (more may be due).
fn took_claim(
    shared: &Shared,
    lane: &Lane,
    done: Result<Result<Vec<Job>, db::WriteError>, tokio::task::JoinError>,
    claim_batch: usize,
    claimed: &mut VecDeque<Job>,
) -> bool {
    let error = match done {
        Ok(Ok(jobs)) => {
            let full = jobs.len() == claim_batch;
            // The table is claimed empty unless a delivery was left due since this
            // claim started (`due_at` after its commit): fresh deliveries may use the
            // memory queue again.
            if !full && lane.next_due.load(Ordering::Relaxed) > Utc::now().timestamp_micros() {
                lane.overflowed.store(false, Ordering::Release);
            }
            claimed.extend(jobs);
            return full;
        }
        Ok(Err(error)) => error.to_string(),
        Err(error) => error.to_string(),
    };
    shared.metrics.webhooks.write_errors.inc();
    tracing::warn!(%error, webhook = %lane.id, "could not claim due webhook deliveries; trying again");
    false
}

/// Claims due deliveries from the table, bodies included.
async fn claim(shared: &Shared, lane: &Lane, limit: usize) -> Result<Vec<Job>, db::WriteError> {
    let now = Utc::now().timestamp_micros();
    let lease = now + shared.options.lease(0).as_micros() as i64;
    let claimed = db::claim(
        &shared.writes,
        &lane.id,
        &shared.options.owner,
        now,
        lease,
        limit as i64,
    )
    .await?;
    let format = lane.route().endpoint.format;
    Ok(claimed
        .into_iter()
        .map(|c| {
            let body = match (format, c.cloudevent) {
                (Format::Cloudevents, Some(ce)) => ce,
                // Written before the endpoint switched to CloudEvents: the plain body
                // is the one evhost has.
                _ => c.body,
            };
            Job {
                delivery_id: c.id,
                event_type: c.event_type.into(),
                attempts: c.attempts,
                body: Bytes::from(body),
            }
        })
        .collect())
}

async fn attempt_and_record(
    shared: Arc<Shared>,
    lane: Arc<Lane>,
    job: Job,
    permit: tokio::sync::OwnedSemaphorePermit,
) {
    let route = lane.route.load_full();
    let recorded = attempt(&shared, &route, &job, false).await;
    if recorded.outcome == Outcome::Gone {
        lane.disable_now();
    }
    // Holding the slot until the recorder has room keeps memory bounded when the
    // database falls behind.
    if shared.recorder.send(recorded).await.is_err() {
        tracing::error!(delivery = %job.delivery_id, "the webhook recorder has stopped; the attempt is not recorded (the delivery will be sent again)");
    }
    drop(permit);
}

/// Sends one delivery and classifies the answer. Nothing is sent for a disabled
/// endpoint unless `even_if_disabled` (the test ping).
pub async fn attempt(
    shared: &Shared,
    route: &Route,
    job: &Job,
    even_if_disabled: bool,
) -> Recorded {
    let endpoint = &route.endpoint;
    let now = Utc::now();
    let now_us = now.timestamp_micros();
    let mut record = AttemptRecord {
        delivery_id: job.delivery_id.clone(),
        attempt: 0,
        time_us: now_us,
        status_code: None,
        latency_us: 0,
        error: None,
        response: None,
        status: db::PENDING,
        next_attempt_us: now_us,
    };
    if !endpoint.enabled && !even_if_disabled {
        return Recorded {
            record,
            endpoint_id: endpoint.id.clone(),
            outcome: Outcome::Released,
            ack: None,
        };
    }
    record.attempt = job.attempts + 1;
    let started = Instant::now();
    let result = send(shared, route, job, now).await;
    let latency = started.elapsed();
    record.latency_us = latency.as_micros() as i64;
    let (outcome, retry_after) = match result {
        Ok(answer) => {
            record.status_code = Some(i64::from(answer.status));
            record.response = Some(answer.excerpt);
            shared
                .metrics
                .webhooks
                .attempt_seconds
                .observe(latency.as_secs_f64());
            match answer.status {
                200..=299 => (Outcome::Success, None),
                410 => (Outcome::Gone, None),
                code => {
                    record.error = Some(format!("the receiver answered {code}"));
                    (Outcome::HttpError, answer.retry_after)
                }
            }
        }
        Err((outcome, message)) => {
            record.error = Some(message);
            (outcome, None)
        }
    };
    match outcome {
        Outcome::Success => {
            record.status = db::SUCCEEDED;
        }
        Outcome::Gone => {
            record.status = db::FAILED;
        }
        _ => match shared.options.retry_delay(record.attempt, retry_after) {
            Some(delay) => {
                record.status = db::PENDING;
                record.next_attempt_us = Utc::now().timestamp_micros() + delay.as_micros() as i64;
            }
            None => record.status = db::FAILED,
        },
    }
    Recorded {
        record,
        endpoint_id: endpoint.id.clone(),
        outcome,
        ack: None,
    }
}

struct Answer {
    status: u16,
    excerpt: String,
    retry_after: Option<Duration>,
}

async fn send(
    shared: &Shared,
    route: &Route,
    job: &Job,
    now: chrono::DateTime<Utc>,
) -> Result<Answer, (Outcome, String)> {
    let endpoint = &route.endpoint;
    let url = route.url.clone().map_err(|e| (Outcome::Refused, e))?;
    shared
        .options
        .egress
        .check_rules(&url)
        .map_err(|e| (Outcome::Refused, e.to_string()))?;
    // Names are checked by the client's resolver; literal addresses here.
    if let Some(ip) = super::egress::literal_ip(&url) {
        shared
            .options
            .egress
            .check(ip)
            .map_err(|e| (Outcome::Refused, e.to_string()))?;
    }
    let secrets = endpoint.signing_secrets(now.timestamp_micros());
    let timestamp = now.timestamp();
    let mut standard: Vec<String> = secrets
        .iter()
        .map(|s| sign::standard_signature(s, &job.delivery_id, timestamp, &job.body))
        .collect();
    if endpoint.asymmetric {
        standard.extend(
            secrets
                .iter()
                .map(|s| sign::asymmetric_signature(s, &job.delivery_id, timestamp, &job.body)),
        );
    }
    let content_type = match endpoint.format {
        Format::Esp => "application/json",
        Format::Cloudevents => "application/cloudevents+json",
    };
    let mut request = shared
        .client
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, content_type)
        .header("X-ESP-Event", &*job.event_type)
        .header("X-ESP-Delivery", &job.delivery_id)
        .header(
            "X-ESP-Signature",
            sign::esp_signature(secrets[0], &job.body),
        )
        .header("webhook-id", &job.delivery_id)
        .header("webhook-timestamp", timestamp.to_string())
        .header("webhook-signature", standard.join(" "));
    if let Some(previous) = secrets.get(1) {
        request = request.header(
            "X-ESP-Signature-Previous",
            sign::esp_signature(previous, &job.body),
        );
    }
    let response = request
        .body(job.body.clone())
        .send()
        .await
        .map_err(classify)?;
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| super::parse_retry_after(v, Utc::now()));
    // Read no more than the excerpt; the rest is never buffered.
    let mut excerpt = Vec::new();
    let mut stream = response.bytes_stream();
    while excerpt.len() < RESPONSE_EXCERPT_BYTES {
        match stream.next().await {
            Some(Ok(chunk)) => {
                let room = RESPONSE_EXCERPT_BYTES - excerpt.len();
                excerpt.extend_from_slice(&chunk[..chunk.len().min(room)]);
            }
            // The status counts; a body cut short does not change the outcome.
            Some(Err(_)) | None => break,
        }
    }
    Ok(Answer {
        status,
        // As text any database stores: PostgreSQL refuses a NUL in text, and one
        // receiver's answer must not stop the recorder for every endpoint.
        excerpt: String::from_utf8_lossy(&excerpt).replace('\0', "\u{FFFD}"),
        retry_after,
    })
}

/// A failed request's outcome and message (without the URL, which may carry
/// tokens in its query).
fn classify(error: reqwest::Error) -> (Outcome, String) {
    let outcome = if error.is_timeout() {
        Outcome::Timeout
    } else if is_refused(&error) {
        Outcome::Refused
    } else {
        Outcome::ConnectError
    };
    let error = error.without_url();
    let message = if outcome == Outcome::Timeout {
        "no answer within webhooks.timeout".to_string()
    } else {
        crate::error_chain(&error)
    };
    (outcome, message)
}

fn is_refused(error: &reqwest::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = source {
        if e.is::<super::egress::Refused>() {
            return true;
        }
        source = e.source();
    }
    false
}

/// Writes and sends a `webhook.test` ping to one endpoint (enabled or not), waits
/// until its attempt is recorded, and returns the delivery id.
pub async fn send_test(shared: &Arc<Shared>, endpoint: &Endpoint) -> Result<String, WebhookError> {
    if shared.stop.is_cancelled() {
        return Err(WebhookError::Stopping);
    }
    let now = Utc::now();
    let message_id = uuid::Uuid::now_v7().to_string();
    let data = serde_json::json!({
        "webhook_id": endpoint.id,
        "name": endpoint.name,
        "message": "A test delivery from evhost: the endpoint is reachable and the signature can be checked.",
    });
    let body = super::outbox::body_esp(&message_id, "webhook.test", now, &data.to_string());
    let cloudevent = super::outbox::body_cloudevent(
        &message_id,
        "webhook.test",
        "/evhost",
        now,
        &data.to_string(),
    );
    let delivery_id = uuid::Uuid::now_v7().to_string();
    let now_us = now.timestamp_micros();
    db::enqueue(
        &shared.writes,
        Arc::new(vec![db::NewMessage {
            id: message_id.clone(),
            event_type: "webhook.test".into(),
            body: body.clone(),
            cloudevent: Some(cloudevent.clone()),
        }]),
        Arc::new(vec![db::NewDelivery {
            id: delivery_id.clone(),
            endpoint_id: endpoint.id.clone(),
            message_id,
            event_type: "webhook.test".into(),
            next_attempt_us: now_us + shared.options.lease(0).as_micros() as i64,
            owner: Some(shared.options.owner.clone()),
        }]),
        now_us,
    )
    .await?;
    let job = Job {
        delivery_id: delivery_id.clone(),
        event_type: "webhook.test".into(),
        attempts: 0,
        body: Bytes::from(match endpoint.format {
            Format::Esp => body,
            Format::Cloudevents => cloudevent,
        }),
    };
    let mut recorded = attempt(shared, &Route::of(endpoint.clone()), &job, true).await;
    let (ack, recorded_signal) = oneshot::channel();
    recorded.ack = Some(ack);
    shared
        .recorder
        .send(recorded)
        .await
        .map_err(|_| WebhookError::Stopping)?;
    recorded_signal.await.map_err(|_| WebhookError::Stopping)?;
    Ok(delivery_id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_reserved_place_knows_how_many_are_before_it() {
        let (tx, mut rx) = mpsc::channel::<u32>(3);
        let (first, ahead) = reserve(&tx).unwrap();
        assert_eq!(ahead, 0);
        let (second, ahead) = reserve(&tx).unwrap();
        assert_eq!(ahead, 1, "a reserved place counts before it is used");
        first.send(1);
        let (_third, ahead) = reserve(&tx).unwrap();
        assert_eq!(ahead, 2);
        assert!(reserve(&tx).is_none(), "the queue is full");
        assert_eq!(rx.recv().await, Some(1));
        second.send(2);
        let (_, ahead) = reserve(&tx).unwrap();
        assert_eq!(ahead, 2, "one sent on, one queued, one reserved");
    }
}
