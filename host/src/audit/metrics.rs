//! What the event log counts, registered in the daemon's registry by
//! [`crate::metrics::Metrics`].

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// What the log writers count.
pub struct AuditMetrics {
    pub rows_written: Counter,
    pub write_errors: Counter,
    pub write_seconds: Histogram,
    pub backlog: Gauge,
    pub backlog_capacity: Gauge,
    pub refusals_suppressed: Counter,
    pub rows_purged: Counter,
}

impl AuditMetrics {
    pub(crate) fn register(registry: &mut Registry) -> AuditMetrics {
        let m = AuditMetrics {
            rows_written: Counter::default(),
            write_errors: Counter::default(),
            // 100 µs … ~100 s
            write_seconds: Histogram::new(exponential_buckets(0.000_1, 4.0, 11)),
            backlog: Gauge::default(),
            backlog_capacity: Gauge::default(),
            refusals_suppressed: Counter::default(),
            rows_purged: Counter::default(),
        };
        registry.register(
            "evhost_audit_rows_written",
            "Audit rows written",
            m.rows_written.clone(),
        );
        registry.register(
            "evhost_audit_write_errors",
            "Failed audit batch writes (each is retried)",
            m.write_errors.clone(),
        );
        registry.register(
            "evhost_audit_write_duration_seconds",
            "Time to write one log batch, from its insert to its durable commit",
            m.write_seconds.clone(),
        );
        registry.register(
            "evhost_audit_backlog",
            "Appends waiting for a log writer",
            m.backlog.clone(),
        );
        registry.register(
            "evhost_audit_backlog_capacity",
            "Appends that may wait for a log writer before appenders wait for room (audit.max_backlog)",
            m.backlog_capacity.clone(),
        );
        registry.register(
            "evhost_audit_refusals_suppressed",
            "Refused authentications not recorded because of the per-address rate limit",
            m.refusals_suppressed.clone(),
        );
        registry.register(
            "evhost_audit_rows_purged",
            "Audit rows removed by retention",
            m.rows_purged.clone(),
        );
        m
    }
}
