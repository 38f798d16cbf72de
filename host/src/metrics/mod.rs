//! Prometheus metrics. Each daemon owns its registry (never a global one), so several
//! instances can live in one process, as tests do.
//!
//! The platform plan's four counters (`esp_messages_received_total`, …) are driven by
//! the events themselves through [`EventMetrics`], a bus subscriber; the bus and the
//! API count their own work through [`Metrics`].

use std::collections::HashSet;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FamilyLabel {
    family: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SubscriberErrorLabels {
    subscriber: Escaped,
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DomainSpam {
    domain: Escaped,
    spam: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Domain {
    domain: Escaped,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DomainPermanent {
    domain: Escaped,
    permanent: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProtocolSuccess {
    protocol: String,
    success: &'static str,
}

/// Why an event was refused at ingest; the `reason` label of
/// `evhost_events_rejected_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RejectReason {
    Invalid,
    QueueFull,
    Stopping,
    TooLarge,
    Unauthorized,
    Forbidden,
    UnsupportedMediaType,
    /// The token is over its `rate_per_second`.
    RateLimited,
    /// The event log could not write.
    Unavailable,
    /// The event log's disk (or its database server's) is full.
    DiskFull,
}

impl RejectReason {
    fn label(self) -> &'static str {
        match self {
            RejectReason::Invalid => "invalid",
            RejectReason::QueueFull => "queue_full",
            RejectReason::Stopping => "stopping",
            RejectReason::TooLarge => "too_large",
            RejectReason::Unauthorized => "unauthorized",
            RejectReason::Forbidden => "forbidden",
            RejectReason::UnsupportedMediaType => "unsupported_media_type",
            RejectReason::RateLimited => "rate_limited",
            RejectReason::Unavailable => "log_unavailable",
            RejectReason::DiskFull => "disk_full",
        }
    }
}

/// The catalog's type families; anything else counts as `custom`, so a publisher
/// cannot grow the label set without bound.
const FAMILIES: &[&str] = &[
    "message",
    "user",
    "mailbox",
    "domain",
    "filter",
    "spam",
    "virus",
    "certificate",
    "queue",
    "delivery",
    "server",
    "webhook",
];

/// Position of a family's counter in `Metrics::accepted_by_family` (`custom` last).
fn family_index(family: &str) -> usize {
    FAMILIES
        .iter()
        .position(|f| *f == family)
        .unwrap_or(FAMILIES.len())
}

/// The daemon's metrics and the registry they are encoded from.
pub struct Metrics {
    registry: Registry,
    /// One counter per family, fetched once, so counting takes no lock on the hot path.
    accepted_by_family: Vec<Counter>,
    rejected: Family<ReasonLabel, Counter>,
    /// Every refusal, whatever its reason (not exported; the rate history reads it).
    rejected_total: Counter,
    duplicates: Counter,
    queue_depth: Gauge,
    queue_capacity: Gauge,
    dispatch_seconds: Histogram,
    subscriber_errors: Family<SubscriberErrorLabels, Counter>,
    messages_received: Family<DomainSpam, Counter>,
    messages_sent: Family<Domain, Counter>,
    messages_bounced: Family<DomainPermanent, Counter>,
    user_logins: Family<ProtocolSuccess, Counter>,
    domains: DomainGuard,
    pub audit: AuditMetrics,
    pub dead_letters: crate::deadletter::DeadLetterMetrics,
    pub server: crate::server::ServerMetrics,
    pub webhooks: WebhookMetrics,
    pub plugins: Arc<PluginMetrics>,
    /// The last 15 minutes of the main rates, for the console.
    pub history: history::History,
    /// The daemon's long-lived tasks, watched. It rides with the metrics because
    /// every subsystem is started with them; `/readyz` reads it.
    pub tasks: crate::supervise::Supervisor,
}

/// What plugins count. Per-plugin series are fetched once when a plugin loads
/// ([`PluginMetrics::series`]), so a call counts without a lookup.
pub struct PluginMetrics {
    calls: Family<PluginLabel, Counter>,
    errors: Family<PluginErrorLabels, Counter>,
    call_seconds: Family<PluginLabel, Histogram, fn() -> Histogram>,
    actions: Family<PluginActionLabels, Counter>,
    counters: Family<PluginCounterLabels, Counter>,
    counter_names: RwLock<std::collections::HashMap<String, HashSet<String>>>,
    pub loaded: Gauge,
    pub load_failures: Family<PluginLabel, Counter>,
    pub breaker_open: Family<PluginLabel, Gauge>,
    pub tap_skipped: Family<PluginLabel, Counter>,
    pub emits_refused: Counter,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PluginLabel {
    pub plugin: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PluginErrorLabels {
    plugin: String,
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PluginActionLabels {
    plugin: String,
    action: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PluginCounterLabels {
    plugin: String,
    name: String,
}

/// The error kinds a plugin call is counted under.
pub const PLUGIN_ERROR_KINDS: [&str; 5] = ["timeout", "memory", "trap", "error", "invalid_action"];
/// The action kinds counted per plugin.
pub const PLUGIN_ACTIONS: [&str; 4] = ["drop", "replace", "emit", "deliver"];

/// One plugin's series, taken once.
#[derive(Clone)]
pub struct PluginSeries {
    pub calls: Counter,
    pub call_seconds: Histogram,
    /// In the order of [`PLUGIN_ERROR_KINDS`].
    pub errors: [Counter; 5],
    /// In the order of [`PLUGIN_ACTIONS`].
    pub actions: [Counter; 4],
}

impl PluginSeries {
    pub fn error(&self, kind: &str) {
        if let Some(i) = PLUGIN_ERROR_KINDS.iter().position(|k| *k == kind) {
            self.errors[i].inc();
        }
    }
}

fn plugin_call_histogram() -> Histogram {
    // 1 µs … ~16 s
    Histogram::new(exponential_buckets(0.000_001, 4.0, 13))
}

impl PluginMetrics {
    fn register(registry: &mut Registry) -> PluginMetrics {
        let m = PluginMetrics {
            calls: Family::default(),
            errors: Family::default(),
            call_seconds: Family::new_with_constructor(plugin_call_histogram),
            actions: Family::default(),
            counters: Family::default(),
            counter_names: Default::default(),
            loaded: Gauge::default(),
            load_failures: Family::default(),
            breaker_open: Family::default(),
            tap_skipped: Family::default(),
            emits_refused: Counter::default(),
        };
        registry.register(
            "evhost_plugin_calls",
            "Calls into plugins (handle), by plugin",
            m.calls.clone(),
        );
        registry.register(
            "evhost_plugin_errors",
            "Failed plugin calls, by plugin and kind (timeout, memory, trap, error, invalid_action)",
            m.errors.clone(),
        );
        registry.register(
            "evhost_plugin_call_duration_seconds",
            "Time of one plugin call, by plugin",
            m.call_seconds.clone(),
        );
        registry.register(
            "evhost_plugin_actions",
            "Actions taken from plugin results, by plugin and action (drop, replace, emit, deliver)",
            m.actions.clone(),
        );
        registry.register(
            "evhost_plugin_counter",
            "Counters that plugins keep themselves (host counter-add), by plugin and name",
            m.counters.clone(),
        );
        registry.register(
            "evhost_plugins_loaded",
            "Plugins loaded and serving",
            m.loaded.clone(),
        );
        registry.register(
            "evhost_plugin_load_failures",
            "Plugin files that failed to compile, match the contract or init, by plugin",
            m.load_failures.clone(),
        );
        registry.register(
            "evhost_plugin_breaker_open",
            "1 while a plugin's circuit breaker is open (the plugin is skipped)",
            m.breaker_open.clone(),
        );
        registry.register(
            "evhost_plugin_tap_skipped",
            "Events a tap plugin did not see because its queue was full, by plugin",
            m.tap_skipped.clone(),
        );
        registry.register(
            "evhost_plugin_emits_refused",
            "Events emitted by plugins that were refused (hop limit, budget, full queue)",
            m.emits_refused.clone(),
        );
        m
    }

    /// The series of plugin `name`.
    pub fn series(&self, name: &str) -> PluginSeries {
        let label = PluginLabel {
            plugin: name.to_string(),
        };
        let errors = PLUGIN_ERROR_KINDS.map(|kind| {
            self.errors.get_or_create_owned(&PluginErrorLabels {
                plugin: name.to_string(),
                kind,
            })
        });
        let actions = PLUGIN_ACTIONS.map(|action| {
            self.actions.get_or_create_owned(&PluginActionLabels {
                plugin: name.to_string(),
                action,
            })
        });
        PluginSeries {
            calls: self.calls.get_or_create_owned(&label),
            call_seconds: self.call_seconds.get_or_create_owned(&label),
            errors,
            actions,
        }
    }

    /// Adds to a plugin's own counter; a plugin gets at most `max_names` of them.
    pub fn counter_add(&self, plugin: &str, name: &str, value: u64, max_names: usize) {
        // A name seen before takes only the shared lock.
        let known = self
            .counter_names
            .read()
            .expect("not poisoned")
            .get(plugin)
            .is_some_and(|seen| seen.contains(name));
        if !known {
            let mut names = self.counter_names.write().expect("not poisoned");
            let seen = names.entry(plugin.to_string()).or_default();
            if !seen.contains(name) {
                if seen.len() >= max_names {
                    return;
                }
                seen.insert(name.to_string());
            }
        }
        self.counters
            .get_or_create(&PluginCounterLabels {
                plugin: plugin.to_string(),
                name: name.to_string(),
            })
            .inc_by(value);
    }
}

impl Metrics {
    pub fn new(max_domains: usize) -> Arc<Metrics> {
        let mut registry = Registry::default();
        let accepted = Family::<FamilyLabel, Counter>::default();
        let rejected = Family::<ReasonLabel, Counter>::default();
        let duplicates = Counter::default();
        let queue_depth = Gauge::default();
        let queue_capacity = Gauge::default();
        // 10 µs … ~20 s
        let dispatch_seconds = Histogram::new(exponential_buckets(0.000_01, 4.0, 12));
        let subscriber_errors = Family::<SubscriberErrorLabels, Counter>::default();
        let messages_received = Family::<DomainSpam, Counter>::default();
        let messages_sent = Family::<Domain, Counter>::default();
        let messages_bounced = Family::<DomainPermanent, Counter>::default();
        let user_logins = Family::<ProtocolSuccess, Counter>::default();

        // prometheus-client appends `_total` to counters itself.
        registry.register(
            "esp_messages_received",
            "Total messages received",
            messages_received.clone(),
        );
        registry.register(
            "esp_messages_sent",
            "Total messages sent",
            messages_sent.clone(),
        );
        registry.register(
            "esp_messages_bounced",
            "Total messages bounced",
            messages_bounced.clone(),
        );
        registry.register("esp_user_logins", "Total user logins", user_logins.clone());
        registry.register(
            "evhost_events_accepted",
            "Events accepted onto the bus, by type family",
            accepted.clone(),
        );
        registry.register(
            "evhost_events_rejected",
            "Events refused at ingest, by reason",
            rejected.clone(),
        );
        registry.register(
            "evhost_events_duplicate",
            "Events not processed again because their id was seen within the dedup window",
            duplicates.clone(),
        );
        registry.register(
            "evhost_bus_queue_depth",
            "Events waiting in the bus queue",
            queue_depth.clone(),
        );
        registry.register(
            "evhost_bus_queue_capacity",
            "Capacity of the bus queue (events.queue_size)",
            queue_capacity.clone(),
        );
        registry.register(
            "evhost_bus_dispatch_duration_seconds",
            "Time from an event's acceptance until every subscriber has handled it",
            dispatch_seconds.clone(),
        );
        registry.register(
            "evhost_subscriber_errors",
            "Subscriber failures, by subscriber and kind (error, timeout, panic)",
            subscriber_errors.clone(),
        );

        let audit = AuditMetrics::register(&mut registry);
        let dead_letters = crate::deadletter::DeadLetterMetrics::register(&mut registry);
        let server = crate::server::ServerMetrics::register(&mut registry);
        let webhooks = WebhookMetrics::register(&mut registry);
        let plugins = Arc::new(PluginMetrics::register(&mut registry));
        let accepted_by_family = FAMILIES
            .iter()
            .chain(std::iter::once(&"custom"))
            .map(|family| accepted.get_or_create_owned(&FamilyLabel { family }))
            .collect();
        Arc::new(Metrics {
            registry,
            accepted_by_family,
            rejected,
            rejected_total: Counter::default(),
            duplicates,
            queue_depth,
            queue_capacity,
            dispatch_seconds,
            subscriber_errors,
            messages_received,
            messages_sent,
            messages_bounced,
            user_logins,
            domains: DomainGuard::new(max_domains),
            audit,
            dead_letters,
            server,
            webhooks,
            plugins,
            history: history::History::default(),
            tasks: crate::supervise::Supervisor::default(),
        })
    }

    pub fn accepted(&self, family: &str) {
        self.accepted_by_family[family_index(family)].inc();
    }

    pub fn rejected(&self, reason: RejectReason, count: u64) {
        self.rejected
            .get_or_create(&ReasonLabel {
                reason: reason.label(),
            })
            .inc_by(count);
        self.rejected_total.inc_by(count);
    }

    pub fn duplicate(&self) {
        self.duplicates.inc();
    }

    pub fn dispatched(&self, since_accepted: Duration) {
        self.dispatch_seconds.observe(since_accepted.as_secs_f64());
    }

    pub fn subscriber_error(&self, subscriber: &str, kind: &'static str) {
        self.subscriber_errors
            .get_or_create(&SubscriberErrorLabels {
                subscriber: Escaped(subscriber.to_string()),
                kind,
            })
            .inc();
    }

    /// The counters behind the console's rate charts, read now.
    pub fn totals(&self) -> history::Totals {
        history::Totals {
            accepted: self.accepted_by_family.iter().map(Counter::get).sum(),
            rejected: self.rejected_total.get(),
            delivered: self.webhooks.succeeded.get(),
            failed: self.webhooks.failed_attempts.get(),
        }
    }

    /// Sets the queue gauges; called just before each scrape.
    pub fn set_queue(&self, depth: usize, capacity: usize) {
        self.queue_depth.set(depth as i64);
        self.queue_capacity.set(capacity as i64);
    }

    /// The registry in the Prometheus text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

pub mod history;
mod label;
mod platform;
#[cfg(test)]
mod tests;

pub use crate::audit::metrics::AuditMetrics;
pub use crate::webhooks::metrics::{OutcomeLabel, WebhookMetrics};
pub use label::Escaped;
use platform::DomainGuard;
pub use platform::EventMetrics;
