//! Where dispatch stands in each chain of the log, and how far it may fall behind.
//!
//! Every event row committed to the log gets a [`Ticket`] from the writer that
//! committed it. Whatever still has work to do for the event holds a clone: the bus
//! job until every subscriber has handled it, the webhook outbox until its delivery
//! rows are committed, the writer until a plugin decision about it is recorded.
//! When the last clone goes, the event is done.
//!
//! A chain's position is the highest `chain_seq` below which every event is done.
//! It only moves forward over done events, so after a crash everything above the
//! last stored position is dispatched again (which is why every consumer is
//! idempotent). A ticket given up with [`Ticket::abandon`] (its work could not be
//! handed on, as when the bus has stopped) is never done in this process: the
//! position stays below it and the next start dispatches it again.
//!
//! The same accounting bounds memory: committed events not yet done are the lag,
//! counted in events and bytes, and a publisher is refused (503) while it is full.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::oneshot;

/// Bytes an event is counted for beyond its payload: its envelope, queue slots and
/// the bodies the outbox makes of it.
pub const EVENT_OVERHEAD_BYTES: u64 = 512;

/// The lag is full: committed events waiting to be dispatched reached
/// `events.max_lag` (or `events.max_lag_bytes`).
#[derive(Debug, Clone, thiserror::Error)]
#[error(
    "dispatch is {events} events ({bytes} bytes) behind the log, at its limit (events.max_lag, events.max_lag_bytes); retry shortly"
)]
pub struct LagFull {
    pub events: u64,
    pub bytes: u64,
}

/// The positions of one daemon's chains, and its lag.
pub struct Tracker {
    chains: Vec<ChainState>,
    max_events: u64,
    max_bytes: u64,
    events: AtomicU64,
    bytes: AtomicU64,
}

struct ChainState {
    name: String,
    state: Mutex<Progress>,
}

#[derive(Default)]
struct Progress {
    /// The last row committed to the chain.
    committed: i64,
    /// Committed events whose ticket is still out (or was abandoned).
    outstanding: BTreeSet<i64>,
    /// While rows committed before this start are read back for dispatch: the last
    /// one handed out so far. Nothing above it can be passed yet.
    replaying: Option<i64>,
}

impl Progress {
    fn position(&self) -> i64 {
        let mut position = match self.outstanding.first() {
            Some(first) => first - 1,
            None => self.committed,
        };
        if let Some(replayed) = self.replaying {
            position = position.min(replayed);
        }
        position
    }
}

impl Tracker {
    /// A tracker for `chains` (in writer order), each starting at its stored
    /// position and committed head: `(name, position, head)`.
    pub fn new(chains: Vec<(String, i64, i64)>, max_events: u64, max_bytes: u64) -> Arc<Tracker> {
        Arc::new(Tracker {
            chains: chains
                .into_iter()
                .map(|(name, position, head)| ChainState {
                    name,
                    state: Mutex::new(Progress {
                        committed: head,
                        outstanding: BTreeSet::new(),
                        replaying: (position < head).then_some(position),
                    }),
                })
                .collect(),
            max_events: max_events.max(1),
            max_bytes: max_bytes.max(1),
            events: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
        })
    }

    /// Reserves room for `events` events of `bytes` bytes in all, or refuses when
    /// the lag is full. A request larger than the whole limit is let in alone, when
    /// nothing else is waiting, so that it cannot be refused forever.
    pub fn admit(self: &Arc<Self>, events: u64, bytes: u64) -> Result<Admission, LagFull> {
        let now_events = self.events.fetch_add(events, Ordering::AcqRel) + events;
        let now_bytes = self.bytes.fetch_add(bytes, Ordering::AcqRel) + bytes;
        let alone = now_events == events && now_bytes == bytes;
        if !alone && (now_events > self.max_events || now_bytes > self.max_bytes) {
            self.release(events, bytes);
            return Err(LagFull {
                events: now_events - events,
                bytes: now_bytes - bytes,
            });
        }
        Ok(Admission {
            tracker: self.clone(),
            events,
            bytes,
        })
    }

    /// Room for events that must be let in whatever the lag (events emitted while
    /// dispatching one already in it).
    pub fn admit_over(self: &Arc<Self>, events: u64, bytes: u64) -> Admission {
        self.events.fetch_add(events, Ordering::AcqRel);
        self.bytes.fetch_add(bytes, Ordering::AcqRel);
        Admission {
            tracker: self.clone(),
            events,
            bytes,
        }
    }

    /// [`Tracker::admit`], waiting for room instead of refusing.
    pub async fn admit_wait(self: &Arc<Self>, events: u64, bytes: u64) -> Admission {
        let mut wait = std::time::Duration::from_millis(1);
        loop {
            if let Ok(admission) = self.admit(events, bytes) {
                return admission;
            }
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(std::time::Duration::from_millis(50));
        }
    }

    fn release(&self, events: u64, bytes: u64) {
        self.events.fetch_sub(events, Ordering::AcqRel);
        self.bytes.fetch_sub(bytes, Ordering::AcqRel);
    }

    /// Committed events not yet done, and their bytes.
    pub fn lag(&self) -> (u64, u64) {
        (
            self.events.load(Ordering::Acquire),
            self.bytes.load(Ordering::Acquire),
        )
    }

    pub fn limits(&self) -> (u64, u64) {
        (self.max_events, self.max_bytes)
    }

    /// Records that writer `chain` committed up to `head`, after the tickets of the
    /// batch's events were made (so the position never passes them).
    pub fn committed(&self, chain: usize, head: i64) {
        let mut state = self.chains[chain].lock();
        state.committed = state.committed.max(head);
    }

    /// A ticket for the event row `seq` of writer `chain`, holding `bytes` of the
    /// lag taken from `admission`.
    pub fn ticket(
        self: &Arc<Self>,
        chain: usize,
        seq: i64,
        admission: &mut Admission,
        bytes: u64,
        replayed: bool,
    ) -> Ticket {
        let bytes = bytes.min(admission.bytes);
        admission.events = admission.events.saturating_sub(1);
        admission.bytes -= bytes;
        self.chains[chain].lock().outstanding.insert(seq);
        Ticket(Arc::new(Inner {
            tracker: self.clone(),
            chain,
            seq,
            bytes,
            replayed,
            abandoned: AtomicBool::new(false),
            watchers: Mutex::new(Vec::new()),
        }))
    }

    /// While replaying `chain`: every event row up to `seq` has its ticket.
    pub fn replayed_to(&self, chain: usize, seq: i64) {
        let mut state = self.chains[chain].lock();
        if let Some(replayed) = &mut state.replaying {
            *replayed = (*replayed).max(seq);
        }
    }

    /// The replay of `chain` is over.
    pub fn replay_done(&self, chain: usize) {
        self.chains[chain].lock().replaying = None;
    }

    /// Each chain's name and position.
    pub fn positions(&self) -> Vec<(String, i64)> {
        self.chains
            .iter()
            .map(|c| (c.name.clone(), c.lock().position()))
            .collect()
    }

    /// Each chain's name, committed head and position.
    pub fn heads(&self) -> Vec<(String, i64, i64)> {
        self.chains
            .iter()
            .map(|c| {
                let state = c.lock();
                (c.name.clone(), state.committed, state.position())
            })
            .collect()
    }

    fn done(&self, chain: usize, seq: i64, bytes: u64) {
        self.chains[chain].lock().outstanding.remove(&seq);
        self.release(1, bytes);
    }
}

impl ChainState {
    fn lock(&self) -> std::sync::MutexGuard<'_, Progress> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Room reserved in the lag for events about to be appended. What is not passed
/// on to tickets (duplicates, a failed append) is given back when it is dropped.
pub struct Admission {
    tracker: Arc<Tracker>,
    events: u64,
    bytes: u64,
}

impl Drop for Admission {
    fn drop(&mut self) {
        self.tracker.release(self.events, self.bytes);
    }
}

/// An event committed to the log and not yet done (see the module's comment).
#[derive(Clone)]
pub struct Ticket(Arc<Inner>);

struct Inner {
    tracker: Arc<Tracker>,
    chain: usize,
    seq: i64,
    bytes: u64,
    replayed: bool,
    abandoned: AtomicBool,
    watchers: Mutex<Vec<oneshot::Sender<()>>>,
}

impl Ticket {
    /// Whether the event was read back from the log at start-up (committed by an
    /// earlier run of the daemon), rather than handed over as it was committed.
    pub fn replayed(&self) -> bool {
        self.0.replayed
    }

    /// The event's work could not be handed on: it is not done, and stays in the log
    /// for the next start to dispatch.
    pub fn abandon(&self) {
        self.0.abandoned.store(true, Ordering::Release);
    }

    /// Completes (`Ok`) when every holder has let go of the event, having done its
    /// work; fails when the work was abandoned.
    pub fn done(&self) -> oneshot::Receiver<()> {
        let (tx, rx) = oneshot::channel();
        self.0
            .watchers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(tx);
        rx
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        if self.abandoned.load(Ordering::Acquire) {
            // Counted out of the lag (the memory is free), never out of the chain.
            self.tracker.release(1, self.bytes);
            return;
        }
        self.tracker.done(self.chain, self.seq, self.bytes);
        let watchers = std::mem::take(
            self.watchers
                .get_mut()
                .unwrap_or_else(PoisonError::into_inner),
        );
        for watcher in watchers {
            let _ = watcher.send(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tracker() -> Arc<Tracker> {
        Tracker::new(vec![("c".into(), 0, 0)], 10, 10_000)
    }

    #[test]
    fn the_position_stops_below_the_first_event_not_done() {
        let t = tracker();
        let mut a = t.admit(3, 300).unwrap();
        let one = t.ticket(0, 1, &mut a, 100, false);
        let two = t.ticket(0, 2, &mut a, 100, false);
        let three = t.ticket(0, 4, &mut a, 100, false);
        t.committed(0, 5);
        assert_eq!(t.positions(), vec![("c".into(), 0)]);
        drop(two);
        assert_eq!(t.positions()[0].1, 0, "1 is not done yet");
        drop(one);
        assert_eq!(t.positions()[0].1, 3, "row 3 is not an event");
        let extra = three.clone();
        drop(three);
        assert_eq!(t.positions()[0].1, 3, "a clone still holds 4");
        drop(extra);
        assert_eq!(t.positions()[0].1, 5);
        assert_eq!(t.lag(), (0, 0));
    }

    #[test]
    fn an_abandoned_event_holds_the_position_for_the_next_start() {
        let t = tracker();
        let mut a = t.admit(2, 200).unwrap();
        let one = t.ticket(0, 1, &mut a, 100, false);
        let two = t.ticket(0, 2, &mut a, 100, false);
        t.committed(0, 2);
        let done = one.done();
        one.abandon();
        drop(one);
        drop(two);
        assert_eq!(t.positions()[0].1, 0);
        assert_eq!(t.lag(), (0, 0), "its memory is given back");
        assert!(
            done.blocking_recv().is_err(),
            "a waiter hears it was not done"
        );
    }

    #[test]
    fn the_lag_refuses_past_its_limit_and_gives_back_what_was_not_used() {
        let t = tracker();
        let mut a = t.admit(8, 800).unwrap();
        assert!(t.admit(3, 10).is_err(), "8 + 3 events is over 10");
        let ticket = t.ticket(0, 1, &mut a, 100, false);
        drop(a);
        assert_eq!(t.lag(), (1, 100), "the 7 duplicates went back");
        drop(ticket);
        assert_eq!(t.lag(), (0, 0));
        let alone = t.admit(50, 50).expect("too big, but alone: let in");
        assert!(t.admit(1, 1).is_err());
        drop(alone);
    }

    #[test]
    fn a_replay_holds_the_position_until_its_rows_have_tickets() {
        let t = Tracker::new(vec![("c".into(), 10, 20)], 100, 100_000);
        assert_eq!(t.positions()[0].1, 10);
        let mut a = t.admit(1, 100).unwrap();
        let ticket = t.ticket(0, 12, &mut a, 100, true);
        t.replayed_to(0, 15);
        assert_eq!(t.positions()[0].1, 11);
        drop(ticket);
        assert_eq!(t.positions()[0].1, 15);
        t.replay_done(0);
        assert_eq!(t.positions()[0].1, 20);
    }
}
