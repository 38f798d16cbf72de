//! One chain's writer: takes what is waiting, places and hashes it, inserts and
//! commits it durably, then answers the waiters and hands the events on.
//!
//! Appends from concurrent requests that arrive while a batch is being written wait
//! together for the next one (group commit): a burst of single events costs one
//! commit per group. A batch that fails is written again until it is in; nothing
//! waiting is dropped, and the waiters wait.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU8, Ordering};
use std::time::{Duration, Instant};

use ed25519_dalek::SigningKey;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::db;
use super::record::Entry;
use super::{AuditOptions, checkpoint};
use crate::bus::Committed;
use crate::bus::{Verdict, recv_batch};
use crate::deadletter::{self, DeadLetters};
use crate::event::Event;
use crate::eventlog::{Accepted, Admission, Appended, Dispatch, Ticket, Tracker, event_bytes};
use crate::metrics::Metrics;
use crate::store::{Fault, Store, WriteError};

/// What waits in a writer's queue. Two words a slot: the rarer, larger kinds are
/// boxed.
pub(super) enum Item {
    /// Events to append; the answer says, per event, whether it is new.
    Events(Box<Append>),
    /// What plugins did to an event: a row of its own that refers to it.
    Decided(Box<(Arc<Event>, Verdict, Option<Ticket>)>),
    /// A row that is not an event (a management action, a dead letter's retry),
    /// and who waits to hear where it went.
    Action(Box<(Entry, Option<oneshot::Sender<Recorded>>)>),
}

pub(super) struct Append {
    pub events: Vec<Arc<Event>>,
    /// The lag reserved for the events; tickets take their share.
    pub admission: Admission,
    /// Kept until the events are committed: the ticket of the event they came from
    /// (emitted events).
    pub hold: Option<Ticket>,
    pub reply: Reply,
}

/// Who hands committed events to the dispatcher.
pub(super) enum Reply {
    /// The writer, before it answers: a publisher that goes away once its events
    /// are committed cannot keep them from being dispatched.
    Dispatch {
        wait: bool,
        reply: oneshot::Sender<Vec<Accepted>>,
    },
    /// The caller, with the tickets (a bus worker dispatching what a plugin
    /// emitted); if it has gone, the writer.
    Return(oneshot::Sender<Vec<Appended>>),
}

/// Where a row that is not an event went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    InLog,
    /// The database refused it: set aside as this dead letter.
    SetAside(i64),
}

/// How a log writer fares, as publishers and `/readyz` see it (worst last).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Condition {
    Writing = 0,
    /// Writes fail and are retried (the database is away, say).
    Failing = 1,
    /// The disk (or the database server's) is full: writes wait for space.
    DiskFull = 2,
}

impl Condition {
    pub fn from_u8(value: u8) -> Condition {
        match value {
            0 => Condition::Writing,
            1 => Condition::Failing,
            _ => Condition::DiskFull,
        }
    }
}

/// What one batch's write came to.
#[derive(Default)]
struct Written {
    /// What went into the log, in order.
    parts: Vec<Arc<db::Placed>>,
    /// Rows set aside, by event id, with their dead letters' ids.
    set_aside: HashMap<String, i64>,
}

/// Most rows a writer places on the runtime's worker (see [`Writer::write`]).
const PLACE_INLINE: usize = 64;

impl Item {
    fn rows(&self) -> usize {
        match self {
            Item::Events(append) => append.events.len(),
            Item::Decided(_) | Item::Action(_) => 1,
        }
    }
}

pub(super) struct Writer {
    pub store: Store,
    pub inserter: db::Inserter,
    /// This writer's index among the daemon's chains (its place in the tracker).
    pub index: usize,
    pub chain: String,
    /// The last row committed: where the next batch goes.
    pub head: db::Head,
    pub rx: mpsc::Receiver<Item>,
    pub tracker: Arc<Tracker>,
    /// Where committed events go when the one who appended them has gone.
    pub dispatch: Option<Arc<dyn Dispatch>>,
    pub options: AuditOptions,
    pub metrics: Arc<Metrics>,
    /// This writer's [`Condition`].
    pub healthy: Arc<AtomicU8>,
    pub last_write_ms: Arc<AtomicI64>,
    pub key: SigningKey,
    pub checkpointed: i64,
    /// None until the first checkpoint, which follows the first write, so the file
    /// exists soon after start.
    pub last_checkpoint: Option<Instant>,
    /// This writer's share of the backlog gauge (the writers add up).
    pub backlog_shown: i64,
    pub dead_letters: DeadLetters,
}

impl Writer {
    pub async fn run(mut self, stop: CancellationToken) {
        let mut items = Vec::with_capacity(64);
        loop {
            self.show_backlog(self.rx.len());
            // One item (waiting for it), then what else waits, up to `batch_size` rows:
            // an item is taken whole (a batch request is one), so a batch may pass
            // `batch_size` by one item.
            if !recv_batch(&mut self.rx, &mut items, 1, &stop).await {
                break;
            }
            while items.iter().map(Item::rows).sum::<usize>() < self.options.batch_size {
                match self.rx.try_recv() {
                    Ok(item) => items.push(item),
                    Err(_) => break,
                }
            }
            self.write(std::mem::take(&mut items)).await;
            self.checkpoint_if_due();
        }
        self.checkpoint();
        self.show_backlog(0);
        tracing::info!(chain = %self.chain, head = self.head.0, "log writer stopped; every row written");
    }

    fn show_backlog(&mut self, items: usize) {
        let items = items as i64;
        self.metrics
            .audit
            .backlog
            .inc_by(items - self.backlog_shown);
        self.backlog_shown = items;
    }

    /// Writes one batch (retrying until it is in, setting aside the rows the
    /// database refuses), then answers and hands on.
    async fn write(&mut self, items: Vec<Item>) {
        if crate::supervise::panic_injected("log-writer") && items.iter().any(is_test_panic) {
            panic!("panic injected in a log writer (EVHOST_TEST_PANIC)");
        }
        let started = Instant::now();
        let (chain, after) = (self.chain.clone(), self.head);
        let recorded_us = chrono::Utc::now().timestamp_micros();
        // Reading each payload's resource and hashing is CPU work: a large batch is
        // placed off the runtime's workers, where milliseconds would hold up the
        // dispatcher; a small one (microseconds) here, sparing a thread hand-off
        // per commit when appends come a few at a time.
        let inline = items.iter().map(Item::rows).sum::<usize>() <= PLACE_INLINE;
        let place = move || {
            let entries = entries_of(&items);
            let placed = db::place(&chain, after, entries, recorded_us, &HashSet::new());
            (items, Arc::new(placed))
        };
        let (items, placed) = if inline {
            place()
        } else {
            tokio::task::spawn_blocking(place)
                .await
                .expect("placing a batch does not panic")
        };
        let mut written = Written::default();
        match self.commit(placed).await {
            Ok(placed) => written.parts.push(placed),
            Err((refused, error)) => self.salvage(refused.entries(), error, &mut written).await,
        }
        let took = started.elapsed();
        let rows = written.parts.iter().map(|p| p.len()).sum::<usize>();
        self.metrics.audit.rows_written.inc_by(rows as u64);
        self.metrics.audit.write_seconds.observe(took.as_secs_f64());
        self.last_write_ms
            .store(took.as_millis() as i64, Ordering::Relaxed);
        if self
            .healthy
            .swap(Condition::Writing as u8, Ordering::Relaxed)
            != Condition::Writing as u8
        {
            tracing::info!("log writes succeed again");
        }
        self.answer(items, &written);
    }

    /// Writes a placed batch, retrying what may pass later; the head moves past it.
    /// Gives the batch back (as last placed) with the error when the database
    /// refuses it for good.
    async fn commit(
        &mut self,
        placed: Arc<db::Placed>,
    ) -> Result<Arc<db::Placed>, (Arc<db::Placed>, WriteError)> {
        let rows = placed.len();
        let mut backoff = Duration::from_millis(100);
        let mut attempt = placed;
        loop {
            let error =
                match db::append(&self.store, &self.inserter, &self.chain, attempt.clone()).await {
                    Ok(placed) => {
                        self.head = placed.head;
                        return Ok(placed);
                    }
                    // What was tried last may be the batch without the ids already
                    // in the log: that is the one whose commit may have gone in.
                    Err((error, tried)) => {
                        attempt = tried;
                        error
                    }
                };
            self.metrics.audit.write_errors.inc();
            let now = match error.fault() {
                Fault::Permanent => return Err((attempt, error)),
                Fault::Disk => crate::store::disk_failed(&error),
                Fault::Retry => Condition::Failing,
                Fault::DiskFull => Condition::DiskFull,
            };
            if self.healthy.swap(now as u8, Ordering::Relaxed) != now as u8 {
                match now {
                    Condition::DiskFull => {
                        tracing::error!(%error, rows, "the disk is full: log writes wait for space (publishers get 503 disk_full meanwhile); nothing is dropped")
                    }
                    _ => {
                        tracing::error!(%error, rows, "log write failed; retrying with backoff, nothing is dropped")
                    }
                }
            }
            // A failed commit's outcome is not always known: a connection lost right
            // after COMMIT reports an error for a batch that is in. So before trying
            // again, read where the chain really ends (waiting until that can be
            // read): at this batch's head, it is in; elsewhere, the batch is placed
            // again after that.
            loop {
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
                match db::chain_head(&self.store, &self.chain).await {
                    Ok(head) if head == attempt.head => {
                        self.head = head;
                        return Ok(attempt);
                    }
                    Ok(head) => {
                        self.head = head;
                        break;
                    }
                    Err(error) => tracing::debug!(%error, "cannot read the chain's head yet"),
                }
            }
            let recorded_us = chrono::Utc::now().timestamp_micros();
            attempt = Arc::new(db::place(
                &self.chain,
                self.head,
                attempt.entries(),
                recorded_us,
                &HashSet::new(),
            ));
        }
    }

    /// After the database refused a batch for good: writes it again in halves, in
    /// order, down to single rows, and sets aside each row it refuses on its own
    /// (a dead letter), so that one bad row costs its batch a few more commits
    /// rather than stopping the log.
    async fn salvage(&mut self, entries: Vec<Entry>, error: WriteError, written: &mut Written) {
        // Runs still to write, the next last; with its error, a run known to fail.
        let mut todo: Vec<(Vec<Entry>, Option<WriteError>)> = vec![(entries, Some(error))];
        while let Some((mut run, failed)) = todo.pop() {
            let error = match failed {
                Some(error) => error,
                None => {
                    let recorded_us = chrono::Utc::now().timestamp_micros();
                    let placed =
                        db::place(&self.chain, self.head, run, recorded_us, &HashSet::new());
                    match self.commit(Arc::new(placed)).await {
                        Ok(placed) => {
                            written.parts.push(placed);
                            continue;
                        }
                        Err((refused, error)) => {
                            run = refused.entries();
                            error
                        }
                    }
                }
            };
            if run.len() == 1 {
                let entry = run.pop().expect("one entry");
                let id = self.set_aside(&entry, &error).await;
                written.set_aside.insert(entry.event_id, id);
                continue;
            }
            let second = run.split_off(run.len() / 2);
            todo.push((second, None));
            todo.push((run, None));
        }
    }

    /// Keeps a row the database refuses as a dead letter; returns its id.
    async fn set_aside(&self, entry: &Entry, error: &WriteError) -> i64 {
        let kind = if entry.source.is_some() {
            deadletter::Kind::Event
        } else {
            deadletter::Kind::Record
        };
        let body = serde_json::to_string(entry).expect("an entry serializes");
        let error = crate::error_chain(error);
        self.dead_letters
            .keep(
                &self.metrics.dead_letters,
                kind,
                &entry.event_id,
                &body,
                &error,
                &self.chain,
            )
            .await
    }

    /// Gives every appended event its ticket (before the chain's committed head
    /// moves, so its position cannot pass them), hands the events on in log order,
    /// and answers each waiter. Of two appends of one id in a batch, the first gets
    /// the row.
    fn answer(&mut self, items: Vec<Item>, written: &Written) {
        let mut seqs: HashMap<&str, i64> = written.parts.iter().flat_map(|p| p.seqs()).collect();
        let mut committed = Vec::new();
        for item in items {
            let append = match item {
                Item::Events(append) => append,
                // Decisions let go of what they held: they are committed.
                Item::Decided(_) => continue,
                Item::Action(action) => {
                    let (entry, reply) = *action;
                    if let Some(reply) = reply {
                        let _ = reply.send(match written.set_aside.get(&entry.event_id) {
                            Some(id) => Recorded::SetAside(*id),
                            None => Recorded::InLog,
                        });
                    }
                    continue;
                }
            };
            let Append {
                events,
                mut admission,
                hold,
                reply,
            } = *append;
            drop(hold);
            let appended: Vec<Appended> = events
                .iter()
                .map(|event| match seqs.remove(&*event.id) {
                    Some(seq) => {
                        let bytes = event_bytes(event);
                        let ticket =
                            self.tracker
                                .ticket(self.index, seq, &mut admission, bytes, false);
                        Appended::Fresh(ticket)
                    }
                    None => match written.set_aside.get(&*event.id) {
                        Some(id) => Appended::SetAside(*id),
                        None => Appended::Duplicate,
                    },
                })
                .collect();
            match reply {
                Reply::Dispatch { wait, reply } => {
                    let mut accepted = Vec::with_capacity(events.len());
                    for (event, appended) in events.into_iter().zip(appended) {
                        let ticket = match appended {
                            Appended::Fresh(ticket) => ticket,
                            Appended::Duplicate => {
                                accepted.push(Accepted::duplicate());
                                continue;
                            }
                            Appended::SetAside(id) => {
                                accepted.push(Accepted::set_aside(id));
                                continue;
                            }
                        };
                        let (done, answer) = Accepted::fresh(&ticket, wait);
                        accepted.push(answer);
                        committed.push(Committed {
                            event,
                            ticket,
                            done,
                        });
                    }
                    let _ = reply.send(accepted);
                }
                Reply::Return(reply) => {
                    if let Err(appended) = reply.send(appended) {
                        committed.extend(events.into_iter().zip(appended).filter_map(
                            |(event, a)| match a {
                                Appended::Fresh(ticket) => Some(Committed {
                                    event,
                                    ticket,
                                    done: None,
                                }),
                                Appended::Duplicate | Appended::SetAside(_) => None,
                            },
                        ));
                    }
                }
            }
        }
        self.tracker.committed(self.index, self.head.0);
        if committed.is_empty() {
            return;
        }
        match &self.dispatch {
            Some(dispatch) => dispatch.dispatch(committed),
            None => {
                // No dispatcher (a log opened by a test or a tool): these stay in the
                // log for a daemon to dispatch.
                for c in &committed {
                    c.ticket.abandon();
                }
            }
        }
    }

    pub fn checkpoint_if_due(&mut self) {
        if self
            .last_checkpoint
            .is_none_or(|at| at.elapsed() >= self.options.checkpoint_interval)
        {
            self.checkpoint();
        }
    }

    /// Signs the chain head into the checkpoint file, if it moved. Every row up to
    /// the head is committed with an fsync.
    pub fn checkpoint(&mut self) {
        self.last_checkpoint = Some(Instant::now());
        let head = self.head;
        if head.0 == self.checkpointed {
            return;
        }
        let cp = checkpoint::Checkpoint::sign(&self.key, &self.chain, head.0, &hex::encode(head.1));
        match checkpoint::append(&self.options.checkpoint_file, &cp) {
            Ok(()) => self.checkpointed = head.0,
            Err(error) => {
                tracing::error!(error = %crate::error_chain(&error), "cannot write the audit checkpoint")
            }
        }
    }
}

/// An append holding an event of type `test.panic` (see
/// [`crate::supervise::panic_injected`]).
fn is_test_panic(item: &Item) -> bool {
    matches!(item, Item::Events(a) if a.events.iter().any(|e| &*e.kind == "test.panic"))
}

/// The rows of a batch, in order.
fn entries_of(items: &[Item]) -> Vec<Entry> {
    let mut entries = Vec::with_capacity(items.iter().map(Item::rows).sum());
    for item in items {
        match item {
            Item::Events(append) => {
                entries.extend(append.events.iter().map(|e| Entry::of_event(e)))
            }
            Item::Decided(decided) => entries.push(Entry::of_decision(&decided.0, &decided.1)),
            Item::Action(action) => entries.push(action.0.clone()),
        }
    }
    entries
}
