//! The clock of call deadlines. wasmtime interrupts a call when its engine's epoch
//! passes the store's deadline; this clock advances the epoch once per [`TICK`], but
//! only while some call is running, so an idle daemon does not wake at all.
//!
//! A deadline is set in ticks relative to the epoch when the call starts, and the
//! epoch only stands still while nothing runs, so pausing changes no deadline. The
//! tick is 1 ms because a sidecar may ask for a 1 ms deadline.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use wasmtime::{Engine, EngineWeak};

/// How often the epoch advances while a call runs.
pub const TICK: Duration = Duration::from_millis(1);

/// How often an idle clock looks whether its engines are gone (then it stops).
const IDLE_CHECK: Duration = Duration::from_secs(1);

/// Counts the calls running now and wakes the clock thread when the first starts.
#[derive(Default)]
pub struct Clock {
    running: AtomicUsize,
    lock: Mutex<()>,
    wake: Condvar,
    /// Epoch increments made, for tests.
    #[cfg(test)]
    ticks: std::sync::atomic::AtomicU64,
}

impl Clock {
    /// Starts the clock thread for `engines`. It holds them weakly and ends when
    /// none is left.
    pub fn start(engines: &[&Engine]) -> std::io::Result<Arc<Clock>> {
        let clock = Arc::new(Clock::default());
        let engines: Vec<EngineWeak> = engines.iter().map(|e| e.weak()).collect();
        let thread_clock = clock.clone();
        std::thread::Builder::new()
            .name("evhost-plugin-clock".into())
            .spawn(move || thread_clock.run(&engines))?;
        Ok(clock)
    }

    fn run(&self, engines: &[EngineWeak]) {
        loop {
            {
                let mut guard = self.lock.lock().expect("not poisoned");
                while self.running.load(Ordering::Acquire) == 0 {
                    if engines.iter().all(|e| e.upgrade().is_none()) {
                        return;
                    }
                    guard = self
                        .wake
                        .wait_timeout(guard, IDLE_CHECK)
                        .expect("not poisoned")
                        .0;
                }
            }
            std::thread::sleep(TICK);
            let mut alive = false;
            for engine in engines.iter().filter_map(|e| e.upgrade()) {
                engine.increment_epoch();
                alive = true;
            }
            #[cfg(test)]
            self.ticks.fetch_add(1, Ordering::Relaxed);
            if !alive {
                return;
            }
        }
    }

    /// Marks a call as running until the guard is dropped.
    pub fn call(self: &Arc<Clock>) -> Running {
        if self.running.fetch_add(1, Ordering::AcqRel) == 0 {
            // Under the lock, so the thread cannot miss it between its check and its
            // wait.
            let _guard = self.lock.lock().expect("not poisoned");
            self.wake.notify_one();
        }
        Running(self.clone())
    }

    /// Epoch increments made so far.
    #[cfg(test)]
    fn ticks(&self) -> u64 {
        self.ticks.load(Ordering::Relaxed)
    }
}

/// A running call; the clock ticks while any exists.
pub struct Running(Arc<Clock>);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.running.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The deadline of a call of `timeout`, in ticks.
pub fn ticks_of(timeout: Duration) -> u64 {
    timeout.as_micros().div_ceil(TICK.as_micros()).max(1) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_clock_ticks_only_while_a_call_runs() {
        let engine = Engine::default();
        let clock = Clock::start(&[&engine]).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(clock.ticks(), 0, "no call ran, so no tick");
        let running = clock.call();
        std::thread::sleep(Duration::from_millis(50));
        let during = clock.ticks();
        assert!(during >= 10, "ticks while a call runs: {during}");
        drop(running);
        std::thread::sleep(Duration::from_millis(20));
        let after = clock.ticks();
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(clock.ticks(), after, "the clock stopped with the last call");
    }

    #[test]
    fn deadlines_round_up_to_whole_ticks() {
        assert_eq!(ticks_of(Duration::from_micros(1)), 1);
        assert_eq!(ticks_of(Duration::from_millis(10)), 10);
        assert_eq!(ticks_of(Duration::from_micros(10_500)), 11);
    }
}
