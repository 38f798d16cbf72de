//! What webhook delivery counts, registered in the daemon's registry by
//! [`crate::metrics::Metrics`].

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// What webhook delivery counts.
pub struct WebhookMetrics {
    /// Attempts by outcome: `success`, `http_error`, `timeout`, `connect_error`,
    /// `refused`.
    pub attempts: Family<OutcomeLabel, Counter>,
    /// Attempts answered 2xx, and every other attempt: the rate history reads them
    /// (not exported; `attempts` is).
    pub succeeded: Counter,
    pub failed_attempts: Counter,
    pub attempt_seconds: Histogram,
    /// Deliveries committed to the outbox (from then on they survive a crash).
    pub enqueued: Counter,
    pub pending: Gauge,
    pub failed: Counter,
    pub endpoints_disabled: Gauge,
    pub oldest_due_seconds: Gauge<f64, std::sync::atomic::AtomicU64>,
    pub outbox_backlog: Gauge,
    pub write_errors: Counter,
    pub purged: Counter,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    pub outcome: &'static str,
}

impl WebhookMetrics {
    pub fn register(registry: &mut Registry) -> WebhookMetrics {
        let m = WebhookMetrics {
            attempts: Family::default(),
            succeeded: Counter::default(),
            failed_attempts: Counter::default(),
            // 500 µs … ~130 s
            attempt_seconds: Histogram::new(exponential_buckets(0.000_5, 2.0, 19)),
            enqueued: Counter::default(),
            pending: Gauge::default(),
            failed: Counter::default(),
            endpoints_disabled: Gauge::default(),
            oldest_due_seconds: Gauge::default(),
            outbox_backlog: Gauge::default(),
            write_errors: Counter::default(),
            purged: Counter::default(),
        };
        registry.register(
            "evhost_webhook_attempts",
            "Webhook delivery attempts by outcome (success, http_error, timeout, connect_error, refused)",
            m.attempts.clone(),
        );
        registry.register(
            "evhost_webhook_attempt_duration_seconds",
            "Time from sending a webhook request to its response",
            m.attempt_seconds.clone(),
        );
        registry.register(
            "evhost_webhook_deliveries_enqueued",
            "Webhook deliveries committed to the outbox (from then on they survive a crash)",
            m.enqueued.clone(),
        );
        registry.register(
            "evhost_webhook_deliveries_pending",
            "Webhook deliveries not yet succeeded or failed, fleet-wide (sampled from the outbox by one node of a fleet; 0 on the others, so sum() is right)",
            m.pending.clone(),
        );
        registry.register(
            "evhost_webhook_deliveries_failed",
            "Webhook deliveries that failed after their last retry",
            m.failed.clone(),
        );
        registry.register(
            "evhost_webhook_endpoints_disabled",
            "Webhook endpoints currently disabled",
            m.endpoints_disabled.clone(),
        );
        registry.register(
            "evhost_webhook_outbox_oldest_due_seconds",
            "How long the oldest due, unclaimed delivery has waited, fleet-wide (0 when none is due; exported by one node of a fleet, 0 on the others, so max() is right)",
            m.oldest_due_seconds.clone(),
        );
        registry.register(
            "evhost_webhook_outbox_backlog",
            "Events waiting for the outbox writer",
            m.outbox_backlog.clone(),
        );
        registry.register(
            "evhost_webhook_write_errors",
            "Failed outbox or attempt-record writes (each is retried)",
            m.write_errors.clone(),
        );
        registry.register(
            "evhost_webhook_deliveries_purged",
            "Finished webhook deliveries removed by retention",
            m.purged.clone(),
        );
        m
    }

    /// Counts one attempt under its outcome (`success`, `http_error`, …).
    pub fn count_attempt(&self, outcome: &'static str) {
        self.attempts.get_or_create(&OutcomeLabel { outcome }).inc();
        if outcome == "success" {
            self.succeeded.inc();
        } else {
            self.failed_attempts.inc();
        }
    }
}
