//! A bus worker: takes jobs in turns with the others, runs the pipeline over each
//! and hands the result to the subscribers.

use std::collections::VecDeque;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_util::FutureExt;
use tokio::sync::{Mutex, mpsc};
use tokio_util::sync::CancellationToken;

use super::{
    FailureKind, Handling, Job, MAX_DERIVED, PipelineWorker, Pipelined, Shared, SubscriberFailure,
    Subscription,
};
use crate::event::Event;
use crate::eventlog::Ticket;

/// Most events one worker takes from the queue at a time: enough to amortise the
/// queue lock, few enough that the other workers get their share of a burst.
const TAKE: usize = 16;

pub(super) async fn run(
    n: usize,
    rx: Arc<Mutex<mpsc::UnboundedReceiver<Job>>>,
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
                    shared.queued.fetch_sub(taken, Ordering::AcqRel);
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

/// One event, and the events plugins emit from it (dispatched after it, each with
/// its own ticket once the log has them).
async fn dispatch(
    shared: &Shared,
    subscriptions: &[Arc<Subscription>],
    mut pipeline: Option<&mut (dyn PipelineWorker + 'static)>,
    job: Job,
) {
    let mut failures = Vec::new();
    let mut queue = VecDeque::new();
    queue.push_back((job.event.clone(), job.ticket));
    let mut derived = 0;
    while let Some((event, ticket)) = queue.pop_front() {
        let outcome = match pipeline.as_deref_mut().map(|p| p.run(&event)) {
            None | Some(Pipelined::Unchanged) => None,
            Some(Pipelined::Done(outcome)) => Some(outcome),
        };
        let current = match outcome {
            None => Some(event.clone()),
            Some(mut outcome) => {
                let room = MAX_DERIVED - derived;
                if outcome.emitted.len() > room {
                    let refused = outcome.emitted.len() - room;
                    shared.metrics.plugins.emits_refused.inc_by(refused as u64);
                    tracing::warn!(event_id = %job.event.id, limit = MAX_DERIVED, "plugins emitted too many events from one event; the rest are refused");
                    outcome.emitted.truncate(room);
                }
                derived += outcome.emitted.len();
                queue.extend(emit(shared, outcome.emitted, ticket.clone()).await);
                deliver(shared, std::mem::take(&mut outcome.delivered), &ticket).await;
                if !outcome.verdict.is_untouched()
                    && let Some(log) = shared.log.get()
                {
                    log.decided(&event, &outcome.verdict, ticket.clone());
                }
                outcome.event
            }
        };
        for sub in subscriptions {
            let seen = if sub.subscriber.records_accepted() {
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
            // The event as plugins left it is still the one the ticket is for.
            let limit = sub.subscriber.time_limit(shared.handler_timeout);
            let result = run_handler(
                || sub.subscriber.handle_ticketed(seen, ticket.as_ref()),
                limit,
            )
            .await;
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

/// Appends emitted events to the log (holding the parent's ticket until they are
/// committed) and returns those to dispatch. Without a log (an event published in
/// no log), they are dispatched as they are.
async fn emit(
    shared: &Shared,
    emitted: Vec<Event>,
    parent: Option<Ticket>,
) -> Vec<(Arc<Event>, Option<Ticket>)> {
    if emitted.is_empty() {
        return Vec::new();
    }
    let fresh: Vec<(Arc<Event>, Option<Ticket>)> = match shared.log.get() {
        Some(log) => log
            .emitted(emitted, parent)
            .await
            .into_iter()
            .map(|(event, ticket)| (event, Some(ticket)))
            .collect(),
        None => emitted.into_iter().map(|e| (Arc::new(e), None)).collect(),
    };
    for (event, _) in &fresh {
        shared.metrics.accepted(event.family());
    }
    fresh
}

/// Hands `deliver` actions to the outbox with the event's ticket.
async fn deliver(shared: &Shared, deliveries: Vec<(String, Arc<Event>)>, ticket: &Option<Ticket>) {
    if deliveries.is_empty() {
        return;
    }
    let Some(sink) = shared.delivery.get() else {
        tracing::warn!(
            "a plugin asked to deliver to a webhook endpoint, but webhooks are disabled"
        );
        return;
    };
    for (target, event) in deliveries {
        if let Err(error) = sink.deliver_to(&target, event, ticket.clone()).await {
            tracing::warn!(%target, %error, "plugin delivery not queued");
        }
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
