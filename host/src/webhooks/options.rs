//! The webhook settings (`webhooks.*`) and what follows from them: how long a lease
//! holds, how many deliveries a lane keeps in memory, when a failed one is retried.

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::Egress;

/// Webhook settings (from `webhooks.*`).
#[derive(Debug, Clone)]
pub struct WebhookOptions {
    pub timeout: Duration,
    pub max_retries: u32,
    pub retry_delays: Vec<Duration>,
    pub concurrency: usize,
    pub disable_after_failures: u32,
    pub secret_overlap: Duration,
    pub poll_interval: Duration,
    pub batch_size: usize,
    pub max_backlog: usize,
    pub egress: Egress,
    pub retention_days: u32,
    pub purge_interval: Duration,
    /// This daemon's name on the leases it holds.
    pub owner: String,
    /// The key file that seals endpoint secrets (`webhooks.secret_key_file`).
    pub secret_key_file: std::path::PathBuf,
}

impl WebhookOptions {
    /// The options `webhooks.*` give; `owner` names this daemon's leases.
    pub fn from_config(config: &crate::config::Config, owner: String) -> WebhookOptions {
        let w = &config.webhooks;
        WebhookOptions {
            timeout: w.timeout,
            max_retries: w.max_retries,
            retry_delays: w.retry_delays.clone(),
            concurrency: w.concurrency,
            disable_after_failures: w.disable_after_failures,
            secret_overlap: w.secret_overlap,
            poll_interval: w.poll_interval,
            batch_size: w.batch_size,
            max_backlog: w.max_backlog,
            egress: Egress::new(w.allowed_networks.clone())
                .with_rules(w.https_only, w.allowed_ports.clone()),
            retention_days: w.retention_days,
            purge_interval: w.purge_interval,
            owner,
            secret_key_file: config.webhook_secret_key_file(),
        }
    }

    /// How many fresh deliveries a lane's memory queue holds: 32 rounds of its
    /// slots. What does not fit stays due in the table and is claimed, and a claim
    /// is a write per delivery; a burst to one endpoint went through claims for 92 %
    /// of its deliveries with four rounds (BENCHMARKS.md, session 7).
    pub(super) fn memory_queue(&self) -> usize {
        self.concurrency * 32
    }

    /// How long a lease must hold a delivery that has `ahead` deliveries before it
    /// in its lane's memory queue (0 for a claimed one, which is served before that
    /// queue). Before it go, in rounds of the lane's slots, each bounded by the
    /// timeout: those; fewer than `concurrency + claim_batch()` claimed ones (a lane
    /// claims ahead only while its memory queue is empty); and a round in flight.
    /// Then its own attempt, and 30 s to record it. So a delivery deep in a long
    /// queue holds a long lease: if this daemon dies for good, another takes it
    /// over only then (a restarted daemon gives its leases back at once).
    pub(super) fn lease(&self, ahead: usize) -> Duration {
        let rounds = |deliveries: usize| deliveries.div_ceil(self.concurrency);
        let before = rounds(ahead) + rounds(self.concurrency + self.claim_batch()) + 1;
        // A lane's queues are bounded (`memory_queue`), so this is a small number.
        self.timeout * (before as u32 + 1) + Duration::from_secs(30)
    }

    /// How many due deliveries a lane claims from the table at once (two rounds of
    /// its slots).
    pub(super) fn claim_batch(&self) -> usize {
        self.concurrency * 2
    }

    /// When attempt `attempt` (1 for the first) failed, the delay before the next
    /// one, or `None` when the retries are used up. Every configured delay is used
    /// in order (the last repeats); jitter adds up to a tenth; a receiver's
    /// `Retry-After` lengthens it (to a day at most).
    pub fn retry_delay(&self, attempt: i64, retry_after: Option<Duration>) -> Option<Duration> {
        if attempt > i64::from(self.max_retries) || self.retry_delays.is_empty() {
            return None;
        }
        let index = (attempt as usize - 1).min(self.retry_delays.len() - 1);
        let base = self.retry_delays[index];
        let jitter = base.mul_f64(random_fraction() * 0.1);
        let delay = base + jitter;
        Some(match retry_after {
            Some(wanted) if wanted > delay => wanted.min(Duration::from_secs(86_400)),
            _ => delay,
        })
    }
}

/// A receiver's `Retry-After` at `now`: delay-seconds or an HTTP date (RFC 2822
/// form, which covers the IMF-fixdate HTTP sends). A date in the past, or anything
/// else, is no wish at all.
pub fn parse_retry_after(value: &str, now: DateTime<Utc>) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let when = DateTime::parse_from_rfc2822(value).ok()?;
    (when.with_timezone(&Utc) - now).to_std().ok()
}

fn random_fraction() -> f64 {
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes).expect("the operating system's random source works");
    (u64::from_le_bytes(bytes) >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_covers_every_round_before_the_delivery_and_its_own() {
        let mut config = crate::config::Config::default();
        config.webhooks.timeout = Duration::from_secs(30);
        config.webhooks.concurrency = 32;
        let options = WebhookOptions::from_config(&config, "me".into());
        let secs = |ahead| options.lease(ahead).as_secs();
        // Claimed (nothing of the memory queue before it): three rounds claimed, one
        // in flight, its own; then 30 s to record.
        assert_eq!(secs(0), 5 * 30 + 30);
        assert_eq!(secs(1), 6 * 30 + 30);
        assert_eq!(secs(32), 6 * 30 + 30);
        assert_eq!(secs(33), 7 * 30 + 30);
        // The last place of a full memory queue: 31 rounds before it there.
        assert_eq!(options.memory_queue(), 1024);
        assert_eq!(secs(1023), 37 * 30 + 30);
    }

    #[test]
    fn retry_after_takes_seconds_or_a_date() {
        // Whole seconds: a date on the wire has no fraction.
        let now = DateTime::from_timestamp(Utc::now().timestamp(), 0).unwrap();
        assert_eq!(parse_retry_after("7", now), Some(Duration::from_secs(7)));
        assert_eq!(parse_retry_after(" 7 ", now), Some(Duration::from_secs(7)));
        let later = (now + chrono::Duration::seconds(120)).to_rfc2822();
        assert_eq!(
            parse_retry_after(&later, now),
            Some(Duration::from_secs(120))
        );
        let http_date = (now + chrono::Duration::seconds(60))
            .format("%a, %d %b %Y %H:%M:%S GMT")
            .to_string();
        assert_eq!(
            parse_retry_after(&http_date, now),
            Some(Duration::from_secs(60))
        );
        let earlier = (now - chrono::Duration::seconds(5)).to_rfc2822();
        assert_eq!(parse_retry_after(&earlier, now), None);
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-1", now), None);
    }
}
