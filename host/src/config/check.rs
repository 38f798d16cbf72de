//! The rules a configuration must follow that its types alone do not express.

use super::*;

impl Config {
    /// Checks the rules that types alone do not express.
    pub(super) fn check(&self) -> Result<(), ConfigError> {
        let invalid = |key: &str, message: String| ConfigError::Invalid {
            key: key.into(),
            message,
        };
        if self.events.workers == 0 || self.events.workers > 1024 {
            return Err(invalid(
                "events.workers",
                format!(
                    "{} is out of range; allowed: 1 to 1024",
                    self.events.workers
                ),
            ));
        }
        let p = &self.plugins;
        for (key, value, low, high) in [
            ("plugins.memory_mib", p.memory_mib, 1, 4096),
            ("plugins.max_hops", p.max_hops as u64, 0, 16),
            ("plugins.max_actions", p.max_actions as u64, 1, 10_000),
            (
                "plugins.max_output_bytes",
                p.max_output_bytes as u64,
                1024,
                64 << 20,
            ),
            (
                "plugins.breaker_failures",
                p.breaker_failures as u64,
                1,
                1_000_000,
            ),
        ] {
            if !(low..=high).contains(&value) {
                return Err(invalid(
                    key,
                    format!("{value} is out of range; allowed: {low} to {high}"),
                ));
            }
        }
        let c = &self.cluster;
        if c.heartbeat_interval < Duration::from_millis(100)
            || c.heartbeat_interval > Duration::from_secs(60)
        {
            return Err(invalid(
                "cluster.heartbeat_interval",
                format!(
                    "{:?} is out of range; allowed: 100ms to 60s",
                    c.heartbeat_interval
                ),
            ));
        }
        if c.node_timeout < c.heartbeat_interval * 3 {
            return Err(invalid(
                "cluster.node_timeout",
                format!(
                    "{:?} is too short: at least three heartbeats ({:?}), or a busy node is taken for dead",
                    c.node_timeout,
                    c.heartbeat_interval * 3
                ),
            ));
        }
        if p.max_memory_mib > 4096 {
            return Err(invalid(
                "plugins.max_memory_mib",
                format!("{} is out of range; allowed: up to 4096", p.max_memory_mib),
            ));
        }
        if p.max_timeout > Duration::from_secs(60) {
            return Err(invalid(
                "plugins.max_timeout",
                format!("{:?} is out of range; allowed: up to 60s", p.max_timeout),
            ));
        }
        if p.max_fuel == Some(0) {
            return Err(invalid(
                "plugins.max_fuel",
                "0 would stop every call; leave it out for no fuel limit".into(),
            ));
        }
        if p.timeout.is_zero() || p.timeout > Duration::from_secs(60) {
            return Err(invalid(
                "plugins.timeout",
                format!("{:?} is out of range; allowed: 1ms to 60s", p.timeout),
            ));
        }
        for (key, value) in [
            ("events.max_lag", Some(self.events.max_lag)),
            ("events.queue_size", self.events.queue_size),
        ] {
            if let Some(value) = value
                && !(1..=10_000_000).contains(&value)
            {
                return Err(invalid(
                    key,
                    format!("{value} is out of range; allowed: 1 to 10000000"),
                ));
            }
        }
        if self.events.max_lag_bytes < 1024 * 1024 {
            return Err(invalid(
                "events.max_lag_bytes",
                format!(
                    "{} is too small; allowed: at least 1048576 (1 MiB)",
                    self.events.max_lag_bytes
                ),
            ));
        }
        if self.events.handler_timeout.is_zero() {
            return Err(invalid(
                "events.handler_timeout",
                "0s is not allowed; give a positive duration such as 5s".into(),
            ));
        }
        if self.server.max_body_bytes < 1024 {
            return Err(invalid(
                "server.max_body_bytes",
                format!(
                    "{} is too small; allowed: at least 1024",
                    self.server.max_body_bytes
                ),
            ));
        }
        if self.server.max_verifies == 0 {
            return Err(invalid(
                "server.max_verifies",
                "0 is not allowed; allowed: at least 1".into(),
            ));
        }
        if self.server.max_connections < 16 {
            return Err(invalid(
                "server.max_connections",
                format!(
                    "{} is too small; allowed: at least 16",
                    self.server.max_connections
                ),
            ));
        }
        for (key, value) in [
            ("server.header_timeout", self.server.header_timeout),
            ("server.body_timeout", self.server.body_timeout),
            ("server.idle_timeout", self.server.idle_timeout),
        ] {
            if value < std::time::Duration::from_millis(100) {
                return Err(invalid(
                    key,
                    format!("{value:?} is too short; allowed: at least 100ms"),
                ));
            }
        }
        if self.server.max_batch_events == 0 {
            return Err(invalid(
                "server.max_batch_events",
                "0 is not allowed; allowed: at least 1".into(),
            ));
        }
        if self.webhooks.retry_delays.is_empty() && self.webhooks.max_retries > 0 {
            return Err(invalid(
                "webhooks.retry_delays",
                "an empty list needs webhooks.max_retries: 0".into(),
            ));
        }
        if self.webhooks.timeout.is_zero() {
            return Err(invalid(
                "webhooks.timeout",
                "0s is not allowed; give a positive duration such as 30s".into(),
            ));
        }
        if self.webhooks.concurrency == 0 || self.webhooks.concurrency > 1024 {
            return Err(invalid(
                "webhooks.concurrency",
                format!(
                    "{} is out of range; allowed: 1 to 1024",
                    self.webhooks.concurrency
                ),
            ));
        }
        if self.webhooks.poll_interval.is_zero() {
            return Err(invalid(
                "webhooks.poll_interval",
                "0s is not allowed; give a positive duration such as 1s".into(),
            ));
        }
        if self.webhooks.batch_size == 0 || self.webhooks.batch_size > 2000 {
            return Err(invalid(
                "webhooks.batch_size",
                format!(
                    "{} is out of range; allowed: 1 to 2000",
                    self.webhooks.batch_size
                ),
            ));
        }
        if self.webhooks.purge_interval.is_zero() {
            return Err(invalid(
                "webhooks.purge_interval",
                "0s is not allowed; give a positive duration such as 1h".into(),
            ));
        }
        if self.webhooks.max_backlog == 0 {
            return Err(invalid(
                "webhooks.max_backlog",
                "0 is not allowed; allowed: at least 1".into(),
            ));
        }
        if self.metrics.max_domains == 0 {
            return Err(invalid(
                "metrics.max_domains",
                "0 is not allowed; allowed: at least 1".into(),
            ));
        }
        if let Some(url) = &self.database.url
            && !(url.starts_with("sqlite:")
                || url.starts_with("postgres://")
                || url.starts_with("postgresql://"))
        {
            return Err(invalid(
                "database.url",
                format!("{url:?} is not supported; allowed: sqlite:PATH or postgres://…"),
            ));
        }
        if let Some(schema) = &self.database.schema
            && (schema.is_empty()
                || schema.len() > 63
                || !schema
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'))
        {
            return Err(invalid(
                "database.schema",
                format!("{schema:?} is not allowed; use 1 to 63 of a-z 0-9 _"),
            ));
        }
        if self.database.max_connections == 0 {
            return Err(invalid(
                "database.max_connections",
                "0 is not allowed; allowed: at least 1".into(),
            ));
        }
        if self.audit.batch_size == 0 || self.audit.batch_size > MAX_AUDIT_BATCH {
            return Err(invalid(
                "audit.batch_size",
                format!(
                    "{} is out of range; allowed: 1 to {MAX_AUDIT_BATCH}",
                    self.audit.batch_size
                ),
            ));
        }
        if self.audit.max_backlog == 0 {
            return Err(invalid(
                "audit.max_backlog",
                "0 is not allowed; allowed: at least 1".into(),
            ));
        }
        if let Some(writers) = self.audit.writers
            && !(1..=MAX_AUDIT_WRITERS).contains(&writers)
        {
            return Err(invalid(
                "audit.writers",
                format!("{writers} is out of range; allowed: 1 to {MAX_AUDIT_WRITERS}"),
            ));
        }
        for (key, d) in [
            ("audit.checkpoint_interval", self.audit.checkpoint_interval),
            ("audit.purge_interval", self.audit.purge_interval),
        ] {
            if d.is_zero() {
                return Err(invalid(
                    key,
                    "0s is not allowed; give a positive duration".into(),
                ));
            }
        }
        let mut names = BTreeSet::new();
        for (i, token) in self.auth.tokens.iter().enumerate() {
            let key = format!("auth.tokens[{i}]");
            if token.name.trim().is_empty() {
                return Err(invalid(&format!("{key}.name"), "must not be empty".into()));
            }
            if !names.insert(token.name.as_str()) {
                return Err(invalid(
                    &format!("{key}.name"),
                    format!(
                        "{:?} is used by two tokens; names must be unique",
                        token.name
                    ),
                ));
            }
            if token.token.len() < 16 {
                return Err(invalid(
                    &format!("{key}.token"),
                    "is shorter than 16 characters; use a long random secret".into(),
                ));
            }
            if token.scopes.is_empty() {
                return Err(invalid(
                    &format!("{key}.scopes"),
                    "is empty; allowed: publish, read, admin".into(),
                ));
            }
            if let Some(rate) = token.rate_per_second
                && !(rate.is_finite() && (0.001..=1_000_000.0).contains(&rate))
            {
                return Err(invalid(
                    &format!("{key}.rate_per_second"),
                    format!("{rate} is out of range; allowed: 0.001 to 1000000"),
                ));
            }
            if token.burst == Some(0) {
                return Err(invalid(
                    &format!("{key}.burst"),
                    "0 is not allowed; allowed: at least 1".into(),
                ));
            }
            if token.burst.is_some() && token.rate_per_second.is_none() {
                return Err(invalid(
                    &format!("{key}.burst"),
                    "needs rate_per_second beside it".into(),
                ));
            }
        }
        Ok(())
    }
}
