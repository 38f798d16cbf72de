//! The open connections: how many, which are idle, and how one is asked to close.
//!
//! A connection is *busy* from the moment its request head is parsed until its
//! response body has been written (a guard rides inside the response body), and
//! *idle* otherwise. At `server.max_connections`, a new connection is let in by
//! closing the connection that has been idle longest; if none is idle, the listener
//! waits for one to end.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use futures_util::task::AtomicWaker;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

/// One connection's state, shared by its task, its socket wrapper and its requests.
pub struct ConnState {
    id: u64,
    /// Requests whose response has not been written yet.
    in_flight: AtomicUsize,
    /// Request heads parsed so far.
    requests: AtomicU64,
    /// Milliseconds (since the registry began) when the connection last became idle.
    idle_since: AtomicU64,
    /// Asked to close (evicted, or the server is stopping).
    pub close: CancellationToken,
    evicted: AtomicBool,
    /// Which deadline cut the connection, if one did (0: none).
    cut: AtomicU8,
    /// The socket's reader, woken when the connection turns idle so that it arms
    /// the idle deadline (hyper may already be waiting on a read armed while busy).
    reader: AtomicWaker,
    epoch: Instant,
}

/// Which deadline cut a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cut {
    Idle = 1,
    Header = 2,
}

impl ConnState {
    pub fn is_busy(&self) -> bool {
        self.in_flight.load(Ordering::Acquire) > 0
    }

    /// Heads parsed so far: the socket wrapper notices a new request by this changing.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Acquire)
    }

    pub fn set_cut(&self, cut: Cut) {
        self.cut.store(cut as u8, Ordering::Release);
    }

    pub fn cut(&self) -> Option<Cut> {
        match self.cut.load(Ordering::Acquire) {
            1 => Some(Cut::Idle),
            2 => Some(Cut::Header),
            _ => None,
        }
    }

    /// The task to wake when the connection turns idle.
    pub fn register_reader(&self, waker: &std::task::Waker) {
        self.reader.register(waker);
    }

    pub fn was_evicted(&self) -> bool {
        self.evicted.load(Ordering::Acquire)
    }

    /// A request head was parsed: the connection is busy until the guard (carried by
    /// the response body) is dropped.
    pub fn begin(self: &Arc<Self>) -> InFlight {
        self.requests.fetch_add(1, Ordering::AcqRel);
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight(self.clone())
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }
}

/// Marks a request in flight on its connection until dropped.
pub struct InFlight(Arc<ConnState>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let now = self.0.now_ms();
        if self.0.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle_since.store(now, Ordering::Release);
            self.0.reader.wake();
        }
    }
}

/// The open connections, bounded.
pub struct Registry {
    open: Mutex<HashMap<u64, Arc<ConnState>>>,
    places: Arc<Semaphore>,
    next_id: AtomicU64,
    epoch: Instant,
    /// Cancelled when the server stops: every connection is asked to close.
    stopping: CancellationToken,
}

/// A connection's place in the registry; gives it back when dropped.
pub struct Place {
    registry: Arc<Registry>,
    pub state: Arc<ConnState>,
    _permit: OwnedSemaphorePermit,
}

impl Drop for Place {
    fn drop(&mut self) {
        let mut open = self.registry.open.lock().unwrap_or_else(|e| e.into_inner());
        open.remove(&self.state.id);
    }
}

impl Registry {
    pub fn new(max_connections: usize, stopping: CancellationToken) -> Arc<Registry> {
        Arc::new(Registry {
            open: Mutex::new(HashMap::new()),
            places: Arc::new(Semaphore::new(max_connections)),
            next_id: AtomicU64::new(0),
            epoch: Instant::now(),
            stopping,
        })
    }

    pub fn open_count(&self) -> usize {
        self.open.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// A place for a new connection. At the limit, the longest-idle connections are
    /// asked to close; this waits until one has.
    pub async fn enter(self: &Arc<Self>) -> Place {
        let permit = match self.places.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                self.evict_longest_idle();
                self.places
                    .clone()
                    .acquire_owned()
                    .await
                    .expect("the places semaphore is never closed")
            }
        };
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let state = Arc::new(ConnState {
            id,
            in_flight: AtomicUsize::new(0),
            requests: AtomicU64::new(0),
            idle_since: AtomicU64::new(self.epoch.elapsed().as_millis() as u64),
            close: self.stopping.child_token(),
            evicted: AtomicBool::new(false),
            cut: AtomicU8::new(0),
            reader: AtomicWaker::new(),
            epoch: self.epoch,
        });
        self.open
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, state.clone());
        Place {
            registry: self.clone(),
            state,
            _permit: permit,
        }
    }

    /// Asks the connections idle longest to close: a 32nd of the limit at a time, so
    /// that a flood of new connections finds places without waiting on each
    /// eviction (and without the kernel's accept queue filling). False when none
    /// is idle. Nothing more is evicted while earlier evictions are still closing.
    fn evict_longest_idle(&self) -> bool {
        let open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if open.values().any(|c| c.was_evicted()) {
            return true;
        }
        let mut idle: Vec<(u64, &Arc<ConnState>)> = open
            .values()
            .filter(|c| !c.is_busy() && !c.was_evicted())
            .map(|c| (c.idle_since.load(Ordering::Acquire), c))
            .collect();
        if idle.is_empty() {
            return false;
        }
        let batch = (open.len() / 32).clamp(1, idle.len());
        if batch < idle.len() {
            idle.select_nth_unstable_by_key(batch - 1, |(since, _)| *since);
        }
        for (_, conn) in &idle[..batch] {
            conn.evicted.store(true, Ordering::Release);
            conn.close.cancel();
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn at_the_limit_the_longest_idle_connection_is_asked_to_close() {
        let registry = Registry::new(2, CancellationToken::new());
        let first = registry.enter().await;
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        let second = registry.enter().await;
        let busy = first.state.begin();
        // Both places taken: the idle one (second) is asked to close, not the busy one.
        let third = tokio::spawn({
            let registry = registry.clone();
            async move { registry.enter().await }
        });
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        assert!(second.state.close.is_cancelled());
        assert!(!first.state.close.is_cancelled());
        assert!(!third.is_finished(), "waits until the evicted one ends");
        drop(second);
        let third = third.await.unwrap();
        assert_eq!(registry.open_count(), 2);
        // With every connection busy, nothing is evicted.
        let _busy3 = third.state.begin();
        assert!(!registry.evict_longest_idle());
        drop(busy);
        assert!(registry.evict_longest_idle());
        assert!(first.state.close.is_cancelled());
    }
}
