//! A circuit breaker per plugin: after `threshold` failed calls in a row the plugin
//! is skipped (its events pass, or are dropped per `on_error`) for `cooldown`; then
//! one event tries it (half-open): success closes the breaker, failure reopens it.
//!
//! Lock-free: the bus workers share it through atomics, and a closed breaker costs
//! one load per call.

use std::sync::atomic::{AtomicI64, AtomicU32, Ordering};
use std::time::Duration;

pub struct Breaker {
    threshold: u32,
    cooldown_ms: i64,
    failures: AtomicU32,
    /// 0 while closed; else the time (ms since the epoch) before which calls are
    /// skipped.
    open_until_ms: AtomicI64,
}

/// What a failure did to the breaker.
#[derive(Debug, PartialEq, Eq)]
pub enum Tripped {
    No,
    /// It just opened (or reopened after a failed trial).
    Opened,
}

impl Breaker {
    pub fn new(threshold: u32, cooldown: Duration) -> Breaker {
        Breaker {
            threshold: threshold.max(1),
            cooldown_ms: cooldown.as_millis().min(i64::MAX as u128) as i64,
            failures: AtomicU32::new(0),
            open_until_ms: AtomicI64::new(0),
        }
    }

    /// Whether a call may go ahead now. While open, false until the cooldown ends;
    /// then exactly one caller gets true (the trial) and the cooldown restarts for
    /// the others.
    pub fn allow(&self, now_ms: impl FnOnce() -> i64) -> bool {
        let until = self.open_until_ms.load(Ordering::Acquire);
        if until == 0 {
            return true;
        }
        let now = now_ms();
        if now < until {
            return false;
        }
        self.open_until_ms
            .compare_exchange(
                until,
                now + self.cooldown_ms,
                Ordering::AcqRel,
                Ordering::Relaxed,
            )
            .is_ok()
    }

    /// A call succeeded: the run of failures ends and an open breaker closes.
    /// Returns whether it was open.
    pub fn success(&self) -> bool {
        if self.failures.load(Ordering::Relaxed) != 0 {
            self.failures.store(0, Ordering::Relaxed);
        }
        self.open_until_ms.load(Ordering::Relaxed) != 0
            && self.open_until_ms.swap(0, Ordering::AcqRel) != 0
    }

    /// A call failed.
    pub fn failure(&self, now_ms: i64) -> Tripped {
        let run = self.failures.fetch_add(1, Ordering::AcqRel) + 1;
        let open = self.open_until_ms.load(Ordering::Acquire) != 0;
        // A failed trial reopens at once; a closed breaker opens at the threshold.
        if open || run >= self.threshold {
            self.open_until_ms
                .store(now_ms + self.cooldown_ms, Ordering::Release);
            return Tripped::Opened;
        }
        Tripped::No
    }

    pub fn is_open(&self) -> bool {
        self.open_until_ms.load(Ordering::Relaxed) != 0
    }

    pub fn failures_in_a_row(&self) -> u32 {
        self.failures.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_the_threshold_then_half_opens_after_the_cooldown() {
        let b = Breaker::new(3, Duration::from_millis(100));
        assert!(b.allow(|| 0));
        assert_eq!(b.failure(0), Tripped::No);
        assert_eq!(b.failure(0), Tripped::No);
        assert_eq!(b.failure(10), Tripped::Opened);
        assert!(b.is_open());
        assert!(!b.allow(|| 50), "open during the cooldown");
        assert!(b.allow(|| 110), "one trial after the cooldown");
        assert!(!b.allow(|| 111), "only one trial at a time");
        // The trial fails: open again for a full cooldown.
        assert_eq!(b.failure(111), Tripped::Opened);
        assert!(!b.allow(|| 200));
        assert!(b.allow(|| 212));
        // The trial succeeds: closed.
        assert!(b.success());
        assert!(!b.is_open());
        assert!(b.allow(|| 213));
        assert_eq!(b.failures_in_a_row(), 0);
    }

    #[test]
    fn a_success_ends_the_run() {
        let b = Breaker::new(2, Duration::from_secs(1));
        b.failure(0);
        assert!(!b.success());
        assert_eq!(b.failure(0), Tripped::No);
        assert!(!b.is_open());
    }
}
