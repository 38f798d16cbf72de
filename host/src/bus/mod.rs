//! The dispatcher: a pool of workers that hands committed events to the plugin
//! pipeline and to subscribers matched by type pattern.
//!
//! - Events reach it from the log once committed ([`Bus::dispatch_committed`]), each
//!   with its [`Ticket`]; the log's lag admission bounds how many wait, so the
//!   hand-over never refuses. A job lets go of its ticket once every subscriber has
//!   handled it; durable subscribers (the webhook outbox) keep a clone until their
//!   own commit ([`Subscriber::handle_ticketed`]).
//! - [`Bus::publish`] queues an event that is not in any log (tests, the benchmark):
//!   a full queue pushes back with [`PublishError::QueueFull`] at once.
//! - Plugin decisions and emits go to the log ([`LogSink`]); deliveries a plugin
//!   asks for go to the [`DeliverySink`], holding the event's ticket.
//! - A subscriber that fails, panics or exceeds the handler time limit is counted and
//!   logged with its id; the others still get the event.
//! - [`Bus::shutdown`] refuses new events, lets the workers finish every event already
//!   handed over, and returns when they have.
//!
//! The subscriber list is swapped atomically on (un)subscribe, so workers read it
//! without a lock.

mod worker;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use serde::Serialize;
use tokio::sync::{Mutex, mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::event::{Event, TypePattern};
use crate::eventlog::Ticket;
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

    /// Whether this subscriber counts events as they were accepted, before plugins
    /// replace or drop them (the platform metrics). Such a subscriber sees every
    /// accepted event; the others see events as the plugins leave them.
    fn records_accepted(&self) -> bool {
        false
    }

    /// [`Subscriber::handle`] with the event's ticket (none for an event that is in
    /// no log). A durable subscriber keeps a clone of it until its own work for the
    /// event is committed, so the log's position does not pass the event before.
    fn handle_ticketed<'a>(
        &'a self,
        event: &'a Arc<Event>,
        _ticket: Option<&'a Ticket>,
    ) -> Handling<'a> {
        self.handle(event)
    }
}

/// Where the bus records what plugins did, and appends what they emitted: the log.
pub trait LogSink: Send + Sync + 'static {
    /// Records that plugins dropped or replaced `event`, as a row of its own that
    /// refers to it; `hold` is kept until that row is committed.
    fn decided(&self, event: &Arc<Event>, verdict: &Verdict, hold: Option<Ticket>);

    /// Appends events a plugin emitted while handling the event `hold` belongs to;
    /// returns those the log took (not duplicates of ones it has), each with its
    /// ticket, once committed.
    fn emitted(
        &self,
        events: Vec<Event>,
        hold: Option<Ticket>,
    ) -> BoxFuture<'_, Vec<(Arc<Event>, Ticket)>>;
}

/// Where `deliver` actions go: the webhook outbox.
pub trait DeliverySink: Send + Sync + 'static {
    /// Queues `event` for the enabled endpoint named `target` only; `ticket` is held
    /// until the delivery row is committed. Waits when the outbox writer is full.
    fn deliver_to<'a>(
        &'a self,
        target: &'a str,
        event: Arc<Event>,
        ticket: Option<Ticket>,
    ) -> BoxFuture<'a, Result<(), String>>;
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
    /// Drops and replacements, recorded in the log.
    pub verdict: Verdict,
    /// New events, appended to the log and dispatched after this one.
    pub emitted: Vec<Event>,
    /// Deliveries asked for: an endpoint's name and the event to send it.
    pub delivered: Vec<(String, Arc<Event>)>,
}

/// A pipeline's answer for one event: unchanged (the fast path, no allocation), or
/// decided.
pub enum Pipelined {
    Unchanged,
    Done(Outcome),
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

    fn run(&mut self, event: &Arc<Event>) -> Pipelined;
}

/// Most events one plugin pass may emit from one event.
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
    /// Most events [`Bus::publish`] queues (committed events are bounded by the
    /// log's lag instead).
    pub queue_size: usize,
    pub handler_timeout: Duration,
}

/// A committed event handed to the bus by the log.
pub struct Committed {
    pub event: Arc<Event>,
    pub ticket: Ticket,
    /// Told the subscribers' failures once every subscriber has handled the event.
    pub done: Option<oneshot::Sender<Vec<SubscriberFailure>>>,
}

struct Job {
    event: Arc<Event>,
    ticket: Option<Ticket>,
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
    log: std::sync::OnceLock<Arc<dyn LogSink>>,
    delivery: std::sync::OnceLock<Arc<dyn DeliverySink>>,
    metrics: Arc<Metrics>,
    handler_timeout: Duration,
    /// Jobs queued and not yet taken by a worker.
    queued: AtomicUsize,
}

/// A handle to the bus; cheap to clone, one per publisher is fine.
#[derive(Clone)]
pub struct Bus {
    tx: mpsc::UnboundedSender<Job>,
    capacity: usize,
    shared: Arc<Shared>,
    stop: CancellationToken,
    workers: Arc<std::sync::Mutex<Vec<JoinHandle<()>>>>,
}

impl Bus {
    /// Starts the workers on the current tokio runtime.
    pub fn start(options: BusOptions, metrics: Arc<Metrics>) -> Bus {
        let (tx, rx) = mpsc::unbounded_channel();
        let rx = Arc::new(Mutex::new(rx));
        let shared = Arc::new(Shared {
            subscriptions: ArcSwap::from_pointee(Vec::new()),
            pipeline: std::sync::OnceLock::new(),
            log: std::sync::OnceLock::new(),
            delivery: std::sync::OnceLock::new(),
            metrics,
            handler_timeout: options.handler_timeout,
            queued: AtomicUsize::new(0),
        });
        let stop = CancellationToken::new();
        let workers = (0..options.workers.max(1))
            .map(|n| {
                shared.metrics.tasks.spawn(
                    "dispatcher",
                    crate::supervise::Ends::OnStop(stop.clone()),
                    worker::run(n, rx.clone(), shared.clone(), stop.clone()),
                )
            })
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

    /// Where plugin decisions are recorded and emitted events appended (once).
    pub fn set_log(&self, log: Arc<dyn LogSink>) -> Result<(), Arc<dyn LogSink>> {
        self.shared.log.set(log)
    }

    /// Where plugins' `deliver` actions go (once).
    pub fn set_delivery(&self, sink: Arc<dyn DeliverySink>) -> Result<(), Arc<dyn DeliverySink>> {
        self.shared.delivery.set(sink)
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

    /// Hands over events the log committed, in log order. Never refuses while the bus
    /// runs (the log's lag bounds them); once it has stopped, the events' tickets are
    /// abandoned, so they stay in the log for the next start.
    pub fn dispatch_committed(&self, events: Vec<Committed>) {
        let accepted_at = Instant::now();
        for committed in events {
            // A replayed event was counted as accepted by the run that accepted it.
            let replayed = committed.ticket.replayed();
            let job = Job {
                event: committed.event,
                ticket: Some(committed.ticket),
                accepted_at,
                done: committed.done,
            };
            if !replayed {
                self.shared.metrics.accepted(job.event.family());
            }
            self.shared.queued.fetch_add(1, Ordering::AcqRel);
            if let Err(mpsc::error::SendError(job)) = self.tx.send(job) {
                self.shared.queued.fetch_sub(1, Ordering::AcqRel);
                if let Some(ticket) = &job.ticket {
                    ticket.abandon();
                }
            }
        }
    }

    /// Queues an event that is in no log; returns at once.
    pub fn publish(&self, event: Event) -> Result<(), PublishError> {
        self.enqueue(vec![event], None)
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
        self.enqueue(events, None)
    }

    /// Queues an event and waits until every subscriber has handled it; returns the
    /// failures (empty when all succeeded).
    pub async fn publish_wait(&self, event: Event) -> Result<Vec<SubscriberFailure>, PublishError> {
        let (done, wait) = oneshot::channel();
        self.enqueue(vec![event], Some(done))?;
        // A worker always answers before it drops the job.
        Ok(wait.await.unwrap_or_default())
    }

    fn enqueue(
        &self,
        events: Vec<Event>,
        mut done: Option<oneshot::Sender<Vec<SubscriberFailure>>>,
    ) -> Result<(), PublishError> {
        let n = events.len();
        if self.tx.is_closed() || self.stop.is_cancelled() {
            return Err(self.refused(PublishError::Closed, n as u64));
        }
        let before = self.shared.queued.fetch_add(n, Ordering::AcqRel);
        if before + n > self.capacity {
            self.shared.queued.fetch_sub(n, Ordering::AcqRel);
            return Err(self.refused(
                PublishError::QueueFull {
                    capacity: self.capacity,
                },
                n as u64,
            ));
        }
        let accepted_at = Instant::now();
        for event in events {
            self.shared.metrics.accepted(event.family());
            let job = Job {
                event: Arc::new(event),
                ticket: None,
                accepted_at,
                done: done.take(),
            };
            if self.tx.send(job).is_err() {
                self.shared.queued.fetch_sub(1, Ordering::AcqRel);
                return Err(self.refused(PublishError::Closed, 1));
            }
        }
        Ok(())
    }

    fn refused(&self, error: PublishError, count: u64) -> PublishError {
        let reason = match error {
            PublishError::Closed => RejectReason::Stopping,
            _ => RejectReason::QueueFull,
        };
        self.shared.metrics.rejected(reason, count);
        error
    }

    /// The metrics the bus counts into.
    pub fn metrics(&self) -> &Metrics {
        &self.shared.metrics
    }

    /// Stops taking events, waits until every event handed over has been
    /// dispatched, and stops the workers.
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

#[cfg(test)]
mod tests;
