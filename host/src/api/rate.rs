//! Per-token rate limits (`auth.tokens[].rate_per_second`, `burst`): a token over
//! its rate is answered 429 `rate_limited` with `Retry-After`, and the other tokens
//! are not slowed, so one publisher cannot fill the shared queue for everyone.
//!
//! Every request with the token takes one unit; a batch takes one per event (the
//! rest once its events are counted, before anything is written).

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

use super::error::ApiError;
use crate::server::ServerMetrics;

/// One token's allowance.
pub struct Limiter {
    name: Arc<str>,
    bucket: DefaultDirectRateLimiter,
    burst: u32,
    clock: DefaultClock,
}

impl std::fmt::Debug for Limiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limiter")
            .field("name", &self.name)
            .field("burst", &self.burst)
            .finish_non_exhaustive()
    }
}

impl Limiter {
    /// `rate` units a second, `burst` at once (default: a second's worth, at least 1).
    pub fn new(name: Arc<str>, rate: f64, burst: Option<u32>) -> Limiter {
        let burst = burst.unwrap_or((rate.ceil() as u32).max(1));
        let period = Duration::from_secs_f64(1.0 / rate).max(Duration::from_nanos(1));
        let quota = Quota::with_period(period)
            .expect("the period is positive")
            .allow_burst(NonZeroU32::new(burst).expect("burst is at least 1"));
        Limiter {
            name,
            bucket: RateLimiter::direct(quota),
            burst,
            clock: DefaultClock::default(),
        }
    }

    /// The rest of a batch of `events`, whose request took one unit on arrival. A
    /// batch larger than the burst could never pass, and is told so.
    pub fn take_batch(&self, events: usize, metrics: &ServerMetrics) -> Result<(), ApiError> {
        match u32::try_from(events) {
            Ok(events) if events <= self.burst => self.take(events.saturating_sub(1), metrics),
            _ => self.refuse(self.never(events), metrics),
        }
    }

    fn never(&self, events: usize) -> ApiError {
        ApiError::too_many(
            "rate_limited",
            format!(
                "{events} events at once is more than token {:?} may ever send at once (burst {}); send smaller batches",
                &*self.name, self.burst
            ),
            1,
        )
    }

    fn refuse(&self, refused: ApiError, metrics: &ServerMetrics) -> Result<(), ApiError> {
        metrics.rate_limited(&self.name);
        Err(refused)
    }

    /// Takes `n` units, or refuses the request (counted under the token's name).
    pub fn take(&self, n: u32, metrics: &ServerMetrics) -> Result<(), ApiError> {
        let Some(units) = NonZeroU32::new(n) else {
            return Ok(());
        };
        let refused = match self.bucket.check_n(units) {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(not_until)) => {
                let wait = not_until.wait_time_from(self.clock.now());
                ApiError::too_many(
                    "rate_limited",
                    format!(
                        "token {:?} is over its rate (auth.tokens[].rate_per_second); retry in {} ms",
                        &*self.name,
                        wait.as_millis()
                    ),
                    wait.as_secs_f64().ceil().max(1.0) as u32,
                )
            }
            Err(_) => self.never(n as usize),
        };
        self.refuse(refused, metrics)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_passes_then_the_rate_holds_and_a_batch_over_the_burst_never_passes() {
        let metrics = ServerMetrics::register(&mut Default::default());
        let limiter = Limiter::new("smtp".into(), 10.0, Some(5));
        for _ in 0..5 {
            limiter.take(1, &metrics).unwrap();
        }
        let refused = limiter.take(1, &metrics).unwrap_err();
        assert_eq!(refused.code, "rate_limited");
        assert_eq!(refused.retry_after, Some(1));
        std::thread::sleep(Duration::from_millis(220));
        limiter.take(2, &metrics).unwrap();
        let refused = limiter.take_batch(6, &metrics).unwrap_err();
        assert!(refused.message.contains("burst 5"), "{}", refused.message);
    }
}
