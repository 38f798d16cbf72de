//! The last 15 minutes of the daemon's main rates (events accepted and refused,
//! webhook attempts delivered and failed), for the console's overview.
//!
//! A task samples the counters every [`INTERVAL`]; a reader gets the per-second rate
//! between each two samples, the last one taken at the moment of reading. The
//! counters are the ones `/metrics` exports, so the two agree. The samples live in
//! memory: a restarted daemon starts a new history, as Prometheus would see a reset.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio_util::sync::CancellationToken;
use utoipa::ToSchema;

use super::Metrics;

/// Time between two samples.
pub const INTERVAL: Duration = Duration::from_secs(5);
/// How far back the history goes.
pub const SPAN: Duration = Duration::from_secs(15 * 60);

/// The counters at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Totals {
    pub accepted: u64,
    pub rejected: u64,
    pub delivered: u64,
    pub failed: u64,
}

/// Per-second rates over one interval, ending at `time`.
#[derive(Clone, Debug, PartialEq, Serialize, ToSchema)]
pub struct RatePoint {
    /// The end of the interval, RFC 3339.
    pub time: String,
    /// Events accepted (written to the log) per second.
    pub accepted: f64,
    /// Events refused at ingest per second (invalid, too large, over a limit, …).
    pub rejected: f64,
    /// Webhook attempts answered 2xx per second.
    pub delivered: f64,
    /// Webhook attempts that failed per second (an error status, a timeout, no connection).
    pub failed: f64,
}

/// Samples of [`Totals`], oldest first, with their time (µs since the epoch).
#[derive(Default)]
pub struct History {
    samples: Mutex<VecDeque<(i64, Totals)>>,
}

impl History {
    /// Keeps `totals` as the sample at `now_us`, and forgets what is older than [`SPAN`].
    pub fn record(&self, now_us: i64, totals: Totals) {
        let mut samples = self.samples.lock().expect("history lock");
        samples.push_back((now_us, totals));
        let oldest = now_us - SPAN.as_micros() as i64;
        while samples.len() > 1 && samples.front().is_some_and(|(t, _)| *t < oldest) {
            samples.pop_front();
        }
    }

    /// The rates between consecutive samples, and from the last one to `(now_us, now)`.
    pub fn rates(&self, now_us: i64, now: Totals) -> Vec<RatePoint> {
        let samples = self.samples.lock().expect("history lock");
        let mut points = Vec::with_capacity(samples.len());
        let ends = samples
            .iter()
            .copied()
            .chain(std::iter::once((now_us, now)));
        let mut previous: Option<(i64, Totals)> = None;
        for (t, totals) in ends {
            if let Some((t0, before)) = previous
                && t > t0
            {
                let seconds = (t - t0) as f64 / 1e6;
                let rate = |a: u64, b: u64| a.saturating_sub(b) as f64 / seconds;
                points.push(RatePoint {
                    time: crate::api::rfc3339_us(t),
                    accepted: rate(totals.accepted, before.accepted),
                    rejected: rate(totals.rejected, before.rejected),
                    delivered: rate(totals.delivered, before.delivered),
                    failed: rate(totals.failed, before.failed),
                });
            }
            previous = Some((t, totals));
        }
        points
    }
}

/// Starts the task that samples `metrics` into their history every [`INTERVAL`],
/// until `stop` fires.
pub fn sample(metrics: &Arc<Metrics>, stop: &CancellationToken) {
    let (m, until) = (metrics.clone(), stop.clone());
    let ends = crate::supervise::Ends::OnStop(stop.clone());
    metrics.tasks.spawn("rate history", ends, async move {
        let mut tick = tokio::time::interval(INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    let now = chrono::Utc::now().timestamp_micros();
                    m.history.record(now, m.totals());
                }
                () = until.cancelled() => return,
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn totals(accepted: u64, failed: u64) -> Totals {
        Totals {
            accepted,
            failed,
            ..Totals::default()
        }
    }

    #[test]
    fn rates_are_per_second_between_samples_and_up_to_now() {
        let h = History::default();
        h.record(0, totals(0, 0));
        h.record(5_000_000, totals(50, 5));
        let points = h.rates(7_000_000, totals(70, 5));
        assert_eq!(points.len(), 2);
        assert_eq!((points[0].accepted, points[0].failed), (10.0, 1.0));
        assert_eq!((points[1].accepted, points[1].failed), (10.0, 0.0));
    }

    #[test]
    fn history_keeps_fifteen_minutes() {
        let h = History::default();
        let step = INTERVAL.as_micros() as i64;
        for i in 0..1000 {
            h.record(i * step, totals(i as u64, 0));
        }
        let now = 1000 * step;
        let points = h.rates(now, totals(1000, 0));
        assert_eq!(points.len() as u64, SPAN.as_secs() / INTERVAL.as_secs() + 1);
        assert!(points.iter().all(|p| (p.accepted - 0.2).abs() < 1e-9));
    }
}
