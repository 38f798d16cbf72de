//! The in-process event bus: a bounded queue, a pool of workers, and subscribers
//! matched by type pattern.
//!
//! - A full queue pushes back: [`Bus::publish`] returns [`PublishError::QueueFull`] at
//!   once (never blocks, never drops silently), and the refusal is counted.
//! - A batch is queued whole or not at all ([`Bus::publish_all`]).
//! - A subscriber that fails, panics or exceeds the handler time limit is counted and
//!   logged with its id; the others still get the event.
//! - [`Bus::shutdown`] refuses new events, lets the workers finish every event already
//!   accepted, and returns when they have.
//!
//! The subscriber list is swapped atomically on (un)subscribe, so workers read it
//! without a lock.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use futures_util::FutureExt;
use serde::Serialize;
use tokio::sync::{Mutex, mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::event::{Event, TypePattern};
use crate::metrics::{Metrics, RejectReason};

/// A boxed, sendable future, as subscribers return.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;
/// The error a subscriber reports for one event.
pub type HandlerError = Box<dyn std::error::Error + Send + Sync>;

/// Something that handles events from the bus. Handling should be quick (hand slow
/// work to a queue of your own); it is cut off after the bus's handler time limit.
pub trait Subscriber: Send + Sync + 'static {
    /// A stable name, used in logs and metrics.
    fn id(&self) -> &str;
    /// Handles one event, either at once ([`Handling::Done`]) or later
    /// ([`Handling::Later`]).
    fn handle<'a>(&'a self, event: &'a Arc<Event>) -> Handling<'a>;

    /// How long one call may take; `None` for a durable sink that must not lose an
    /// event and instead holds the bus (so publishers are pushed back) while it waits.
    fn time_limit(&self, default: Duration) -> Option<Duration> {
        Some(default)
    }

    /// Whether this subscriber keeps a record of events as they were accepted, before
    /// plugins replace or drop them (the audit log). Such a subscriber sees every
    /// accepted event; the others see events as the plugins leave them.
    fn records_accepted(&self) -> bool {
        false
    }

    /// For a recording subscriber: an accepted event that plugins dropped or changed,
    /// with what they did.
    fn handle_decided<'a>(&'a self, event: &'a Arc<Event>, _verdict: &'a Verdict) -> Handling<'a> {
        self.handle(event)
    }
}

/// What plugins did to an accepted event, for the record.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Verdict {
    /// Who stopped it, if anyone.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dropped: Option<Dropped>,
    /// The plugins that replaced it, in order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub replaced_by: Vec<String>,
}

impl Verdict {
    /// Whether plugins left the event as it was accepted.
    pub fn is_untouched(&self) -> bool {
        self.dropped.is_none() && self.replaced_by.is_empty()
    }
}

/// Who stopped an event, and why (recorded in the audit log).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Dropped {
    pub plugin: String,
    pub reason: String,
}

/// What the pipeline made of one event.
#[derive(Debug, Default)]
pub struct Outcome {
    /// The event as it continues downstream; `None` when it was dropped.
    pub event: Option<Arc<Event>>,
    /// Drops and replacements, for recording subscribers.
    pub verdict: Verdict,
    /// New events, dispatched after this one (as if published).
    pub emitted: Vec<Event>,
}

/// A pipeline's answer for one event: unchanged (the fast path, no allocation),
/// decided, or decided after waiting (a durable hand-off).
pub enum Pipelined<'a> {
    Unchanged,
    Done(Outcome),
    Later(BoxFuture<'a, Outcome>),
}

/// What runs between acceptance and the subscribers (the inline plugins). Each bus
/// worker gets its own [`PipelineWorker`], so per-worker state (plugin instances)
/// needs no lock.
pub trait Pipeline: Send + Sync + 'static {
    fn worker(&self) -> Box<dyn PipelineWorker>;
}

/// One bus worker's share of the pipeline.
pub trait PipelineWorker: Send {
    /// Called with each batch the worker takes, before [`PipelineWorker::run`] is
    /// called for its events in order: a chance to do the batch's work at once.
    fn prepare(&mut self, _events: &[Arc<Event>]) {}

    fn run<'a>(&'a mut self, event: &'a Arc<Event>) -> Pipelined<'a>;
}

/// Most events that may be emitted, directly or not, from one accepted event.
const MAX_DERIVED: usize = 256;

/// A subscriber's answer: most built-in subscribers finish synchronously, and
/// saying so spares the bus a boxed future and a timer per event.
pub enum Handling<'a> {
    Done(Result<(), HandlerError>),
    Later(BoxFuture<'a, Result<(), HandlerError>>),
}

impl<'a> Handling<'a> {
    /// Handled successfully, synchronously.
    pub fn ok() -> Handling<'a> {
        Handling::Done(Ok(()))
    }

    /// Handled by an async block or other future.
    pub fn later(
        future: impl Future<Output = Result<(), HandlerError>> + Send + 'a,
    ) -> Handling<'a> {
        Handling::Later(Box::pin(future))
    }

    /// Hands `item` to a durable sink's bounded queue (`sink` names it in errors):
    /// at once when there is room, else by waiting for room. Waiting holds this bus
    /// worker, so the bus queue fills and publishers are pushed back; nothing is
    /// dropped. Such a subscriber's [`Subscriber::time_limit`] is `None`.
    pub fn hand_off<T: Send + 'a>(
        tx: &'a mpsc::Sender<T>,
        item: T,
        sink: &'static str,
    ) -> Handling<'a> {
        match tx.try_send(item) {
            Ok(()) => Handling::ok(),
            Err(mpsc::error::TrySendError::Full(item)) => Handling::later(async move {
                tx.send(item)
                    .await
                    .map_err(|_| format!("{sink} has stopped").into())
            }),
            Err(mpsc::error::TrySendError::Closed(_)) => {
                Handling::Done(Err(format!("{sink} has stopped").into()))
            }
        }
    }
}

impl From<Result<(), HandlerError>> for Handling<'_> {
    fn from(result: Result<(), HandlerError>) -> Self {
        Handling::Done(result)
    }
}

/// Receives the next batch (up to `limit` items) of a sink's queue into `buf`. Once
/// `stop` fires the queue is closed and what is still in it keeps coming, batch by
/// batch; false when it is closed and empty. The loop of every batching writer.
pub async fn recv_batch<T>(
    rx: &mut mpsc::Receiver<T>,
    buf: &mut Vec<T>,
    limit: usize,
    stop: &CancellationToken,
) -> bool {
    if !stop.is_cancelled() {
        tokio::select! {
            biased;
            n = rx.recv_many(buf, limit) => return n > 0,
            () = stop.cancelled() => {}
        }
    }
    rx.close();
    rx.recv_many(buf, limit).await > 0
}

/// Why the bus did not take an event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PublishError {
    #[error("the event queue is full ({capacity} events); retry shortly")]
    QueueFull { capacity: usize },
    #[error("the batch of {len} events is larger than the whole event queue ({capacity})")]
    BatchTooLarge { len: usize, capacity: usize },
    #[error("the event bus is shutting down and takes no new events")]
    Closed,
}

#[derive(Debug, thiserror::Error)]
#[error("a subscriber with id {0:?} is already subscribed")]
pub struct DuplicateSubscriber(pub String);

/// How a subscriber failed on one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FailureKind {
    Error,
    Timeout,
    Panic,
}

impl FailureKind {
    fn label(self) -> &'static str {
        match self {
            FailureKind::Error => "error",
            FailureKind::Timeout => "timeout",
            FailureKind::Panic => "panic",
        }
    }
}

/// One subscriber's failure on one event, as [`Bus::publish_wait`] reports it.
#[derive(Debug, Clone, Serialize)]
pub struct SubscriberFailure {
    pub subscriber: String,
    pub kind: FailureKind,
    pub message: String,
}

/// Bus sizing.
#[derive(Debug, Clone)]
pub struct BusOptions {
    pub workers: usize,
    pub queue_size: usize,
    pub handler_timeout: Duration,
}

struct Job {
    event: Arc<Event>,
    accepted_at: Instant,
    done: Option<oneshot::Sender<Vec<SubscriberFailure>>>,
}

struct Subscription {
    id: Arc<str>,
    patterns: Vec<TypePattern>,
    subscriber: Arc<dyn Subscriber>,
}

impl Subscription {
    fn wants(&self, kind: &str) -> bool {
        self.patterns.iter().any(|p| p.matches(kind))
    }
}

struct Shared {
    subscriptions: ArcSwap<Vec<Arc<Subscription>>>,
    pipeline: std::sync::OnceLock<Arc<dyn Pipeline>>,
    metrics: Arc<Metrics>,
    handler_timeout: Duration,
}

/// A handle to the bus; cheap to clone, one per publisher is fine.
#[derive(Clone)]
pub struct Bus {
    tx: mpsc::Sender<Job>,
    capacity: usize,
    shared: Arc<Shared>,
    stop: CancellationToken,
    workers: Arc<std::sync::Mutex<Vec<JoinHandle<()>>>>,
}

/// Most events one worker takes from the queue at a time: enough to amortise the
/// queue lock, few enough that the other workers get their share of a burst.
const TAKE: usize = 16;

impl Bus {
    /// Starts the workers on the current tokio runtime.
    pub fn start(options: BusOptions, metrics: Arc<Metrics>) -> Bus {
        let (tx, rx) = mpsc::channel(options.queue_size);
        let rx = Arc::new(Mutex::new(rx));
        let shared = Arc::new(Shared {
            subscriptions: ArcSwap::from_pointee(Vec::new()),
            pipeline: std::sync::OnceLock::new(),
            metrics,
            handler_timeout: options.handler_timeout,
        });
        let stop = CancellationToken::new();
        let workers = (0..options.workers.max(1))
            .map(|n| tokio::spawn(worker(n, rx.clone(), shared.clone(), stop.clone())))
            .collect();
        Bus {
            tx,
            capacity: options.queue_size,
            shared,
            stop,
            workers: Arc::new(std::sync::Mutex::new(workers)),
        }
    }

    /// Puts `pipeline` between acceptance and the subscribers (once; later calls are
    /// refused). Workers pick it up with their next batch.
    pub fn set_pipeline(&self, pipeline: Arc<dyn Pipeline>) -> Result<(), Arc<dyn Pipeline>> {
        self.shared.pipeline.set(pipeline)
    }

    /// Adds a subscriber for events matching any of `patterns`.
    pub fn subscribe(
        &self,
        patterns: Vec<TypePattern>,
        subscriber: Arc<dyn Subscriber>,
    ) -> Result<(), DuplicateSubscriber> {
        let id: Arc<str> = subscriber.id().into();
        let mut result = Ok(());
        self.shared.subscriptions.rcu(|current| {
            if current.iter().any(|s| s.id == id) {
                result = Err(DuplicateSubscriber(id.to_string()));
                return current.clone();
            }
            result = Ok(());
            let mut next = Vec::clone(current);
            next.push(Arc::new(Subscription {
                id: id.clone(),
                patterns: patterns.clone(),
                subscriber: subscriber.clone(),
            }));
            Arc::new(next)
        });
        result
    }

    /// Removes a subscriber by id; returns whether it was subscribed. Events already
    /// being dispatched may still reach it.
    pub fn unsubscribe(&self, id: &str) -> bool {
        let mut found = false;
        self.shared.subscriptions.rcu(|current| {
            found = current.iter().any(|s| &*s.id == id);
            Arc::new(
                current
                    .iter()
                    .filter(|s| &*s.id != id)
                    .cloned()
                    .collect::<Vec<_>>(),
            )
        });
        found
    }

    /// Queues an event; returns at once.
    pub fn publish(&self, event: Event) -> Result<(), PublishError> {
        self.enqueue(event, None)
    }

    /// Queues every event or none (when the queue cannot take them all).
    pub fn publish_all(&self, events: Vec<Event>) -> Result<(), PublishError> {
        if events.is_empty() {
            return Ok(());
        }
        if events.len() > self.capacity {
            return Err(self.refused(
                PublishError::BatchTooLarge {
                    len: events.len(),
                    capacity: self.capacity,
                },
                events.len() as u64,
            ));
        }
        let permits = match self.tx.try_reserve_many(events.len()) {
            Ok(permits) => permits,
            Err(e) => return Err(self.refused(self.translate(e), events.len() as u64)),
        };
        let accepted_at = Instant::now();
        for (permit, event) in permits.zip(events) {
            self.shared.metrics.accepted(event.family());
            permit.send(Job {
                event: Arc::new(event),
                accepted_at,
                done: None,
            });
        }
        Ok(())
    }

    /// Queues an event and waits until every subscriber has handled it; returns the
    /// failures (empty when all succeeded).
    pub async fn publish_wait(&self, event: Event) -> Result<Vec<SubscriberFailure>, PublishError> {
        let (done, wait) = oneshot::channel();
        self.enqueue(event, Some(done))?;
        // A worker always answers before it drops the job.
        Ok(wait.await.unwrap_or_default())
    }

    fn enqueue(
        &self,
        event: Event,
        done: Option<oneshot::Sender<Vec<SubscriberFailure>>>,
    ) -> Result<(), PublishError> {
        let event = Arc::new(event);
        let job = Job {
            event: event.clone(),
            accepted_at: Instant::now(),
            done,
        };
        match self.tx.try_send(job) {
            Ok(()) => {
                self.shared.metrics.accepted(event.family());
                Ok(())
            }
            Err(mpsc::error::TrySendError::Full(_)) => Err(self.refused(
                PublishError::QueueFull {
                    capacity: self.capacity,
                },
                1,
            )),
            Err(mpsc::error::TrySendError::Closed(_)) => Err(self.refused(PublishError::Closed, 1)),
        }
    }

    fn translate(&self, e: mpsc::error::TrySendError<()>) -> PublishError {
        match e {
            mpsc::error::TrySendError::Full(()) => PublishError::QueueFull {
                capacity: self.capacity,
            },
            mpsc::error::TrySendError::Closed(()) => PublishError::Closed,
        }
    }

    fn refused(&self, error: PublishError, count: u64) -> PublishError {
        let reason = match error {
            PublishError::Closed => RejectReason::Stopping,
            _ => RejectReason::QueueFull,
        };
        self.shared.metrics.rejected(reason, count);
        error
    }

    /// Events waiting in the queue.
    pub fn depth(&self) -> usize {
        self.capacity - self.tx.capacity()
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// The metrics the bus counts into.
    pub fn metrics(&self) -> &Metrics {
        &self.shared.metrics
    }

    /// Stops taking events, waits until every accepted event has been dispatched,
    /// and stops the workers.
    pub async fn shutdown(&self) {
        self.stop.cancel();
        let workers = std::mem::take(&mut *self.workers.lock().expect("not poisoned"));
        for worker in workers {
            if let Err(e) = worker.await {
                tracing::error!(error = %e, "bus worker ended abnormally");
            }
        }
    }
}

async fn worker(
    n: usize,
    rx: Arc<Mutex<mpsc::Receiver<Job>>>,
    shared: Arc<Shared>,
    stop: CancellationToken,
) {
    let mut jobs = Vec::with_capacity(TAKE);
    let mut pipeline: Option<Box<dyn PipelineWorker>> = None;
    let mut batch: Vec<Arc<Event>> = Vec::with_capacity(TAKE);
    loop {
        {
            let mut rx = rx.lock().await;
            tokio::select! {
                biased;
                taken = rx.recv_many(&mut jobs, TAKE) => {
                    if taken == 0 {
                        // Closed and drained.
                        break;
                    }
                }
                () = stop.cancelled() => {
                    // Refuse new events; what is queued is still received above.
                    rx.close();
                    continue;
                }
            }
        }
        if pipeline.is_none() {
            pipeline = shared.pipeline.get().map(|p| p.worker());
        }
        if let Some(pipeline) = pipeline.as_deref_mut() {
            batch.clear();
            batch.extend(jobs.iter().map(|job| job.event.clone()));
            pipeline.prepare(&batch);
        }
        let subscriptions = shared.subscriptions.load();
        for job in jobs.drain(..) {
            dispatch(&shared, &subscriptions, pipeline.as_deref_mut(), job).await;
        }
    }
    tracing::debug!(worker = n, "bus worker stopped");
}

async fn dispatch(
    shared: &Shared,
    subscriptions: &[Arc<Subscription>],
    mut pipeline: Option<&mut (dyn PipelineWorker + 'static)>,
    job: Job,
) {
    let mut failures = Vec::new();
    let mut queue = std::collections::VecDeque::new();
    queue.push_back(job.event.clone());
    let mut derived = 0;
    while let Some(event) = queue.pop_front() {
        let outcome = match pipeline.as_deref_mut().map(|p| p.run(&event)) {
            None | Some(Pipelined::Unchanged) => None,
            Some(Pipelined::Done(outcome)) => Some(outcome),
            Some(Pipelined::Later(future)) => Some(future.await),
        };
        let (current, verdict) = match outcome {
            None => (Some(event.clone()), Verdict::default()),
            Some(outcome) => {
                for emitted in outcome.emitted {
                    if derived == MAX_DERIVED {
                        shared.metrics.plugins.emits_refused.inc();
                        tracing::warn!(event_id = %job.event.id, limit = MAX_DERIVED, "plugins emitted too many events from one event; the rest are refused");
                        break;
                    }
                    derived += 1;
                    shared.metrics.accepted(emitted.family());
                    queue.push_back(Arc::new(emitted));
                }
                (outcome.event, outcome.verdict)
            }
        };
        for sub in subscriptions {
            let records = sub.subscriber.records_accepted();
            let seen = if records {
                &event
            } else {
                match &current {
                    Some(e) => e,
                    None => continue,
                }
            };
            if !sub.wants(&seen.kind) {
                continue;
            }
            let limit = sub.subscriber.time_limit(shared.handler_timeout);
            let result = if records && !verdict.is_untouched() {
                run_handler(|| sub.subscriber.handle_decided(seen, &verdict), limit).await
            } else {
                run_handler(|| sub.subscriber.handle(seen), limit).await
            };
            let failure = match result {
                Ok(()) => continue,
                Err(failure) => failure,
            };
            shared.metrics.subscriber_error(&sub.id, failure.0.label());
            tracing::warn!(
                subscriber = %sub.id,
                event_id = %seen.id,
                event_type = %seen.kind,
                kind = failure.0.label(),
                error = %failure.1,
                "subscriber failed"
            );
            if job.done.is_some() {
                failures.push(SubscriberFailure {
                    subscriber: sub.id.to_string(),
                    kind: failure.0,
                    message: failure.1,
                });
            }
        }
    }
    shared.metrics.dispatched(job.accepted_at.elapsed());
    if let Some(done) = job.done {
        let _ = done.send(failures);
    }
}

/// Calls one subscriber, catching panics; a future it returns is polled once at
/// once, and only one still pending gets a timer (the fast path reads no clock).
async fn run_handler<'a>(
    call: impl FnOnce() -> Handling<'a>,
    limit: Option<Duration>,
) -> Result<(), (FailureKind, String)> {
    let handling = std::panic::catch_unwind(AssertUnwindSafe(call))
        .map_err(|panic| (FailureKind::Panic, panic_message(&panic)))?;
    let mut future = match handling {
        Handling::Done(result) => return result.map_err(|e| (FailureKind::Error, e.to_string())),
        Handling::Later(future) => AssertUnwindSafe(future).catch_unwind(),
    };
    let first = std::future::poll_fn(|cx| std::task::Poll::Ready(future.poll_unpin(cx))).await;
    let outcome = match first {
        std::task::Poll::Ready(outcome) => outcome,
        std::task::Poll::Pending => match limit {
            Some(limit) => tokio::time::timeout(limit, future)
                .await
                .map_err(|_| (FailureKind::Timeout, format!("took longer than {limit:?}")))?,
            None => future.await,
        },
    };
    match outcome {
        Ok(result) => result.map_err(|e| (FailureKind::Error, e.to_string())),
        Err(panic) => Err((FailureKind::Panic, panic_message(&panic))),
    }
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        format!("panicked: {s}")
    } else if let Some(s) = panic.downcast_ref::<String>() {
        format!("panicked: {s}")
    } else {
        "panicked".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Actor, new_event_id};
    use serde_json::value::RawValue;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn event(kind: &str) -> Event {
        Event {
            id: new_event_id(),
            kind: kind.into(),
            time: chrono::Utc::now(),
            source: "test".into(),
            actor: Actor::default(),
            data: Arc::from(RawValue::from_string("{}".into()).unwrap()),
            hops: 0,
        }
    }

    fn bus(workers: usize, queue_size: usize, timeout_ms: u64) -> Bus {
        Bus::start(
            BusOptions {
                workers,
                queue_size,
                handler_timeout: Duration::from_millis(timeout_ms),
            },
            Metrics::new(10),
        )
    }

    fn all() -> Vec<TypePattern> {
        vec![TypePattern::All]
    }

    #[derive(Default)]
    struct Count {
        id: String,
        seen: AtomicUsize,
    }
    impl Count {
        fn new(id: &str) -> Arc<Count> {
            Arc::new(Count {
                id: id.into(),
                seen: AtomicUsize::new(0),
            })
        }
        fn seen(&self) -> usize {
            self.seen.load(Ordering::SeqCst)
        }
    }
    impl Subscriber for Count {
        fn id(&self) -> &str {
            &self.id
        }
        fn handle<'a>(&'a self, _: &'a Arc<Event>) -> Handling<'a> {
            self.seen.fetch_add(1, Ordering::SeqCst);
            Handling::ok()
        }
    }

    /// Fails, panics or sleeps, by event type.
    struct Misbehave;
    impl Subscriber for Misbehave {
        fn id(&self) -> &str {
            "misbehave"
        }
        fn handle<'a>(&'a self, e: &'a Arc<Event>) -> Handling<'a> {
            match &*e.kind {
                "x.fail" => Handling::Done(Err("nope".into())),
                "x.panic" => panic!("boom"),
                "x.later_fail" => Handling::later(async { Err("later nope".into()) }),
                "x.later_panic" => Handling::later(async {
                    tokio::task::yield_now().await;
                    panic!("later boom")
                }),
                "x.slow" => Handling::later(async {
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                    Ok(())
                }),
                _ => Handling::later(async {
                    tokio::task::yield_now().await;
                    Ok(())
                }),
            }
        }
    }

    #[tokio::test]
    async fn patterns_route_events() {
        let bus = bus(2, 100, 1000);
        let exact = Count::new("exact");
        let family = Count::new("family");
        let everything = Count::new("all");
        bus.subscribe(
            vec![TypePattern::parse("message.received").unwrap()],
            exact.clone(),
        )
        .unwrap();
        bus.subscribe(
            vec![TypePattern::parse("message.*").unwrap()],
            family.clone(),
        )
        .unwrap();
        bus.subscribe(all(), everything.clone()).unwrap();
        for kind in ["message.received", "message.sent", "user.login"] {
            bus.publish_wait(event(kind)).await.unwrap();
        }
        assert_eq!((exact.seen(), family.seen(), everything.seen()), (1, 2, 3));
    }

    #[tokio::test]
    async fn unsubscribe_by_id() {
        let bus = bus(1, 10, 1000);
        let c = Count::new("c");
        bus.subscribe(all(), c.clone()).unwrap();
        assert!(bus.subscribe(all(), Count::new("c")).is_err());
        bus.publish_wait(event("a.b")).await.unwrap();
        assert!(bus.unsubscribe("c"));
        assert!(!bus.unsubscribe("c"));
        bus.publish_wait(event("a.b")).await.unwrap();
        assert_eq!(c.seen(), 1);
    }

    #[tokio::test]
    async fn full_queue_pushes_back_and_counts() {
        let bus = bus(1, 2, 10_000);
        // Hold the only worker so the queue fills.
        bus.subscribe(all(), Arc::new(Misbehave)).unwrap();
        bus.publish(event("x.slow")).unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        bus.publish(event("a.b")).unwrap();
        bus.publish(event("a.b")).unwrap();
        assert_eq!(
            bus.publish(event("a.b")),
            Err(PublishError::QueueFull { capacity: 2 })
        );
        assert!(matches!(
            bus.publish_all(vec![event("a.b"), event("a.b")]),
            Err(PublishError::QueueFull { .. })
        ));
        assert!(matches!(
            bus.publish_all((0..3).map(|_| event("a.b")).collect()),
            Err(PublishError::BatchTooLarge { .. })
        ));
        let text = bus.shared.metrics.encode();
        assert!(
            text.contains("evhost_events_rejected_total{reason=\"queue_full\"} 6"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn failing_subscribers_do_not_stop_the_others() {
        let bus = bus(2, 100, 100);
        let good = Count::new("good");
        bus.subscribe(all(), Arc::new(Misbehave)).unwrap();
        bus.subscribe(all(), good.clone()).unwrap();
        let failures = bus.publish_wait(event("x.fail")).await.unwrap();
        assert_eq!(failures.len(), 1);
        assert_eq!(failures[0].subscriber, "misbehave");
        assert_eq!(failures[0].kind, FailureKind::Error);
        let failures = bus.publish_wait(event("x.panic")).await.unwrap();
        assert_eq!(failures[0].kind, FailureKind::Panic);
        assert!(failures[0].message.contains("boom"));
        let failures = bus.publish_wait(event("x.later_fail")).await.unwrap();
        assert_eq!(failures[0].kind, FailureKind::Error);
        let failures = bus.publish_wait(event("x.later_panic")).await.unwrap();
        assert_eq!(failures[0].kind, FailureKind::Panic);
        assert!(failures[0].message.contains("later boom"));
        let failures = bus.publish_wait(event("x.slow")).await.unwrap();
        assert_eq!(failures[0].kind, FailureKind::Timeout);
        assert!(bus.publish_wait(event("x.ok")).await.unwrap().is_empty());
        assert_eq!(good.seen(), 6);
        let text = bus.shared.metrics.encode();
        for kind in ["error", "panic", "timeout"] {
            assert!(
                text.contains(&format!(
                    "evhost_subscriber_errors_total{{subscriber=\"misbehave\",kind=\"{kind}\"}} {}",
                    if kind == "timeout" { 1 } else { 2 }
                )),
                "{text}"
            );
        }
    }

    #[tokio::test]
    async fn batches_are_all_or_nothing() {
        let bus = bus(1, 10, 1000);
        let c = Count::new("c");
        bus.subscribe(all(), c.clone()).unwrap();
        bus.publish_all((0..10).map(|_| event("a.b")).collect())
            .unwrap();
        bus.shutdown().await;
        assert_eq!(c.seen(), 10);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn shutdown_drains_every_accepted_event() {
        let bus = bus(4, 20_000, 1000);
        let c = Count::new("c");
        bus.subscribe(all(), c.clone()).unwrap();
        let publisher = {
            let bus = bus.clone();
            tokio::spawn(async move {
                let mut accepted = 0;
                for _ in 0..10_000 {
                    match bus.publish(event("a.b")) {
                        Ok(()) => accepted += 1,
                        Err(PublishError::Closed) => break,
                        Err(e) => panic!("{e}"),
                    }
                    if accepted % 100 == 0 {
                        tokio::task::yield_now().await;
                    }
                }
                accepted
            })
        };
        tokio::time::sleep(Duration::from_millis(1)).await;
        bus.shutdown().await;
        let accepted = publisher.await.unwrap();
        assert!(accepted > 0);
        assert_eq!(
            c.seen(),
            accepted,
            "every accepted event handled, none twice"
        );
        assert_eq!(bus.publish(event("a.b")), Err(PublishError::Closed));
    }
}
