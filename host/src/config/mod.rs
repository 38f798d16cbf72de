//! Configuration: a YAML file (optional), overridden key by key by `EVHOST_…`
//! environment variables, checked once at start-up.
//!
//! Keys follow the platform plan (`events.workers`, `events.queue_size`, `audit.*`,
//! `webhooks.*`). The plan nested `audit` and `webhooks` under `events`; that spelling
//! is accepted too, so a file written for the plan loads unchanged.
//!
//! Every key can be set from the environment as `EVHOST_<SECTION>__<KEY>` (for example
//! `EVHOST_SERVER__LISTEN=0.0.0.0:8080` or `EVHOST_WEBHOOKS__RETRY_DELAYS="[1s, 5s]"`);
//! the value is read as YAML, so numbers, booleans and lists work. `EVHOST_API_TOKEN`
//! alone defines one token with every scope.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use crate::server::ServerConfig;

mod check;
mod load;

use load::{mask, mask_url};

/// Why a configuration could not be loaded. Each variant names the key, the value and
/// what is allowed, so an operator can fix it without reading the source.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path} is not valid YAML: {message}")]
    Syntax { path: PathBuf, message: String },
    #[error("environment variable {var}: {message}")]
    Env { var: String, message: String },
    #[error("config key `{key}`: {message}")]
    Invalid { key: String, message: String },
}

/// The effective configuration of one daemon.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Folder for the embedded database, plugin cache and other state.
    pub data_dir: PathBuf,
    pub server: ServerConfig,
    pub events: EventsConfig,
    pub audit: AuditConfig,
    pub webhooks: WebhooksConfig,
    pub plugins: PluginsConfig,
    pub database: DatabaseConfig,
    pub auth: AuthConfig,
    pub metrics: MetricsConfig,
    pub log: LogConfig,
    pub cluster: crate::cluster::ClusterConfig,
    pub ui: crate::ui::UiConfig,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EventsConfig {
    /// Bus workers that dispatch events to subscribers.
    pub workers: usize,
    /// Events committed to the log but not yet dispatched, at most: past it,
    /// publishers get 503 with Retry-After (and nothing is written).
    pub max_lag: usize,
    /// The same limit in bytes of payload (plus about 0.5 KiB an event), which is
    /// what bounds the daemon's memory.
    pub max_lag_bytes: u64,
    /// The platform plan's name for `max_lag`; when set, it is the limit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queue_size: Option<usize>,
    /// Longest a single subscriber may take over one event.
    #[serde(with = "duration")]
    pub handler_timeout: Duration,
    /// Accept event types outside the catalog (matching `a.b[.c…]`).
    pub allow_custom_types: bool,
    /// Accept fields a known type does not define (publishers ahead of the catalog).
    pub allow_unknown_fields: bool,
    /// How long a publisher-given event id stays unique in the log, so a resend
    /// is answered with the original and not processed again. With the audit log on,
    /// ids stay unique as long as their rows are kept (`audit.retention_days`); with
    /// it off, rows are kept this long.
    #[serde(with = "duration")]
    pub dedup_window: Duration,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    pub enabled: bool,
    /// Rows older than this many days are purged (0 keeps everything).
    pub retention_days: u32,
    /// Most rows written in one transaction. Batches only fill when rows arrive
    /// faster than the writer commits (what arrives during one commit goes into the
    /// next); then bigger ones cost less per row (fewer commits, and on SQLite fewer
    /// partly filled pages written again).
    pub batch_size: usize,
    /// Appends (requests, management actions) waiting for a writer, at most; past
    /// it, appenders wait for room.
    pub max_backlog: usize,
    /// How often the chain head is signed into the checkpoint file.
    #[serde(with = "duration")]
    pub checkpoint_interval: Duration,
    /// Signed checkpoints, one JSON line each; `<data_dir>/audit-checkpoints.jsonl` when unset.
    pub checkpoint_file: Option<PathBuf>,
    /// Ed25519 key that signs checkpoints (made on first start);
    /// `<data_dir>/audit-checkpoint.key` when unset. Keep it out of the database's reach.
    pub checkpoint_key: Option<PathBuf>,
    /// How often retention runs.
    #[serde(with = "duration")]
    pub purge_interval: Duration,
    /// Refused API authentications recorded per client address and minute.
    pub refusals_per_minute: u32,
    /// Writers, each with its own hash chain and database connection, sharing the
    /// events between them. Unset: 1 on SQLite (one writer at a time anyway), 2 on
    /// PostgreSQL (two server processes insert in parallel).
    pub writers: Option<usize>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebhooksConfig {
    pub enabled: bool,
    /// Time limit of one delivery attempt.
    #[serde(with = "duration")]
    pub timeout: Duration,
    pub max_retries: u32,
    /// Delay before each retry, in order; the last one repeats if `max_retries` is larger.
    #[serde(with = "duration_list")]
    pub retry_delays: Vec<Duration>,
    /// Networks (CIDRs) that webhook URLs may reach although they are loopback,
    /// private, link-local or otherwise refused, such as `10.1.0.0/16`.
    pub allowed_networks: Vec<ipnet::IpNet>,
    /// Only `https` endpoint URLs (checked when stored and before each send).
    /// `require_https` is the name earlier builds read.
    #[serde(alias = "require_https")]
    pub https_only: bool,
    /// The ports endpoint URLs may use; empty: any.
    pub allowed_ports: Vec<u16>,
    /// Attempts in flight at once to one endpoint.
    pub concurrency: usize,
    /// Failed deliveries in a row (retries exhausted) that disable an endpoint; 0 never.
    pub disable_after_failures: u32,
    /// How long a rotated-out secret keeps signing beside the new one.
    #[serde(with = "duration")]
    pub secret_overlap: Duration,
    /// How often a daemon looks for due deliveries it was not told about (retries,
    /// work left by a stopped daemon) and reloads endpoints changed by other daemons.
    #[serde(with = "duration")]
    pub poll_interval: Duration,
    /// Delivery rows written per outbox transaction, at most.
    pub batch_size: usize,
    /// Events waiting for the outbox writer before the bus is held.
    pub max_backlog: usize,
    /// Finished (succeeded or failed) deliveries are removed this many days after
    /// they were created, with their attempts; 0 keeps them.
    pub retention_days: u32,
    /// How often retention runs.
    #[serde(with = "duration")]
    pub purge_interval: Duration,
    /// The key that seals endpoint secrets in the database; made on first start.
    /// `<data_dir>/webhook-secrets.key` when unset. Daemons sharing a database need
    /// the same key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_key_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PluginsConfig {
    pub enabled: bool,
    /// Watched folder of `.wasm` plugins; `<data_dir>/plugins` when unset.
    pub dir: Option<PathBuf>,
    /// Compiled plugins, reused at restart while the file and engine are unchanged;
    /// `<data_dir>/plugin-cache` when unset.
    pub cache_dir: Option<PathBuf>,
    /// Memory one plugin instance may use, in MiB (a sidecar may set its own, up to
    /// `max_memory_mib`).
    pub memory_mib: u64,
    /// Time limit of one call into a plugin (a sidecar may set its own, up to
    /// `max_timeout`).
    #[serde(with = "duration")]
    pub timeout: Duration,
    /// The most memory a sidecar may give its plugin (never less than `memory_mib`):
    /// one asking for more gets this, and a warning in `GET /v1/plugins`.
    pub max_memory_mib: u64,
    /// The longest call a sidecar may give its plugin (never less than `timeout`;
    /// as for `max_memory_mib`).
    #[serde(with = "duration")]
    pub max_timeout: Duration,
    /// An instruction budget per call that every plugin gets at most (a sidecar may
    /// set less); none when unset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_fuel: Option<u64>,
    /// How many times an event may be emitted from an emitted event (loops stop here).
    pub max_hops: u8,
    /// Actions one call may return.
    pub max_actions: usize,
    /// Bytes of event data one call may return, all actions together.
    pub max_output_bytes: usize,
    /// Failures in a row that open a plugin's circuit breaker.
    pub breaker_failures: u32,
    /// How long an open breaker skips the plugin before letting one event try it.
    #[serde(with = "duration")]
    pub breaker_cooldown: Duration,
    /// Log lines per second one plugin may write; the rest are counted and dropped.
    pub log_lines_per_second: u32,
    /// How long a plugin file must stay unchanged before it is loaded (so a file
    /// still being copied is not read half-written).
    #[serde(with = "duration")]
    pub settle: Duration,
}

impl Default for PluginsConfig {
    fn default() -> Self {
        PluginsConfig {
            enabled: true,
            dir: None,
            cache_dir: None,
            memory_mib: 64,
            timeout: Duration::from_millis(10),
            max_memory_mib: 256,
            max_timeout: Duration::from_secs(1),
            max_fuel: None,
            max_hops: 3,
            max_actions: 64,
            max_output_bytes: 1 << 20,
            breaker_failures: 5,
            breaker_cooldown: Duration::from_secs(30),
            log_lines_per_second: 20,
            settle: Duration::from_millis(100),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    /// `sqlite:PATH` or `postgres://…`; SQLite in `data_dir` when unset.
    pub url: Option<String>,
    /// PostgreSQL schema for evhost's tables (created if missing); `public` when unset.
    pub schema: Option<String>,
    pub max_connections: u32,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        DatabaseConfig {
            url: None,
            schema: None,
            max_connections: 8,
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    pub tokens: Vec<TokenConfig>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// Who the token belongs to; recorded as the actor of what it does.
    pub name: String,
    /// The bearer secret (at least 16 characters).
    pub token: String,
    pub scopes: BTreeSet<Scope>,
    /// May name the user an event is published on behalf of.
    #[serde(default)]
    pub trusted: bool,
    /// Sustained rate this token may use, in requests per second, where a publish
    /// counts each of its events. None by default (no limit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_per_second: Option<f64>,
    /// How many requests (or events) may come at once on top of the rate; the
    /// largest batch the token can publish. Default: one second's worth, at least 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<u32>,
}

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    Publish,
    Read,
    Admin,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Publish => "publish",
            Scope::Read => "read",
            Scope::Admin => "admin",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Distinct `domain` label values per metric before further ones count as `other`.
    pub max_domains: usize,
    /// When set, `GET /metrics` needs `Authorization: Bearer <token>` (it lists
    /// customer domains); unset, it is open like `/healthz`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// A tracing filter such as `info` or `evhost=debug`; `RUST_LOG` wins when set.
    pub level: String,
    /// `text` or `json`.
    pub format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("./data"),
            server: ServerConfig::default(),
            events: EventsConfig::default(),
            audit: AuditConfig::default(),
            webhooks: WebhooksConfig::default(),
            plugins: PluginsConfig::default(),
            database: DatabaseConfig::default(),
            auth: AuthConfig::default(),
            metrics: MetricsConfig::default(),
            log: LogConfig::default(),
            cluster: crate::cluster::ClusterConfig::default(),
            ui: crate::ui::UiConfig::default(),
        }
    }
}

impl Default for EventsConfig {
    fn default() -> Self {
        EventsConfig {
            workers: 4,
            max_lag: 100_000,
            max_lag_bytes: 256 * 1024 * 1024,
            queue_size: None,
            handler_timeout: Duration::from_secs(5),
            allow_custom_types: true,
            allow_unknown_fields: false,
            dedup_window: Duration::from_secs(24 * 3600),
        }
    }
}

/// Most audit writers (`audit.writers`).
pub const MAX_AUDIT_WRITERS: usize = 8;

/// Most rows in one log batch (`audit.batch_size`), about 1 KiB a row in hand.
const MAX_AUDIT_BATCH: usize = 10_000;

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            enabled: true,
            retention_days: 90,
            batch_size: 4000,
            max_backlog: 100_000,
            checkpoint_interval: Duration::from_secs(60),
            checkpoint_file: None,
            checkpoint_key: None,
            purge_interval: Duration::from_secs(3600),
            refusals_per_minute: 10,
            writers: None,
        }
    }
}

impl Default for WebhooksConfig {
    fn default() -> Self {
        WebhooksConfig {
            enabled: true,
            timeout: Duration::from_secs(30),
            max_retries: 5,
            retry_delays: [60, 300, 900, 3600, 4 * 3600]
                .into_iter()
                .map(Duration::from_secs)
                .collect(),
            allowed_networks: Vec::new(),
            https_only: false,
            allowed_ports: Vec::new(),
            concurrency: 32,
            disable_after_failures: 10,
            secret_overlap: Duration::from_secs(24 * 3600),
            poll_interval: Duration::from_secs(1),
            batch_size: 500,
            max_backlog: 20_000,
            retention_days: 30,
            purge_interval: Duration::from_secs(3600),
            secret_key_file: None,
        }
    }
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            max_domains: 1000,
            token: None,
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".into(),
            format: LogFormat::Text,
        }
    }
}

/// The environment variable naming the config file when `--config` is not given.
pub const CONFIG_ENV: &str = "EVHOST_CONFIG";
/// The environment variable that defines one all-scope token on its own.
pub const API_TOKEN_ENV: &str = "EVHOST_API_TOKEN";
const ENV_PREFIX: &str = "EVHOST_";

impl Config {
    /// Loads the file (if any), applies the process environment, and checks the result.
    pub fn load(file: Option<&Path>) -> Result<Config, ConfigError> {
        Self::load_from(file, std::env::vars())
    }

    /// [`Config::load`] with an explicit environment, for tests.
    pub fn load_from(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let tree = match file {
            Some(path) => load::read_yaml_file(path)?,
            None => Value::Object(Default::default()),
        };
        load::build(tree, env)
    }

    /// [`Config::load_from`] with the file's text at hand; errors name it `path`.
    pub fn parse(
        text: &str,
        path: &Path,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        load::build(load::parse_yaml(text, path)?, env)
    }

    /// The plugin folder: `plugins.dir`, or `<data_dir>/plugins`.
    pub fn plugins_dir(&self) -> PathBuf {
        self.plugins
            .dir
            .clone()
            .unwrap_or_else(|| self.data_dir.join("plugins"))
    }

    /// The webhook secrets' key: `webhooks.secret_key_file`, or
    /// `<data_dir>/webhook-secrets.key`.
    pub fn webhook_secret_key_file(&self) -> PathBuf {
        self.webhooks
            .secret_key_file
            .clone()
            .unwrap_or_else(|| self.data_dir.join("webhook-secrets.key"))
    }

    /// The compiled-plugin cache: `plugins.cache_dir`, or `<data_dir>/plugin-cache`.
    pub fn plugin_cache_dir(&self) -> PathBuf {
        self.plugins
            .cache_dir
            .clone()
            .unwrap_or_else(|| self.data_dir.join("plugin-cache"))
    }

    /// The database URL: `database.url`, or a SQLite file in `data_dir`.
    pub fn database_url(&self) -> String {
        self.database
            .url
            .clone()
            .unwrap_or_else(|| format!("sqlite:{}", self.data_dir.join("evhost.db").display()))
    }

    /// Where signed audit checkpoints are appended.
    pub fn checkpoint_file(&self) -> PathBuf {
        self.audit
            .checkpoint_file
            .clone()
            .unwrap_or_else(|| self.data_dir.join("audit-checkpoints.jsonl"))
    }

    /// The key that signs audit checkpoints.
    pub fn checkpoint_key(&self) -> PathBuf {
        self.audit
            .checkpoint_key
            .clone()
            .unwrap_or_else(|| self.data_dir.join("audit-checkpoint.key"))
    }

    /// The effective config as YAML with every secret masked, derived values filled in.
    pub fn to_masked_yaml(&self) -> String {
        let mut shown = self.clone();
        for token in &mut shown.auth.tokens {
            token.token = mask(&token.token);
        }
        if let Some(token) = &mut shown.metrics.token {
            *token = mask(token);
        }
        shown.plugins.dir = Some(self.plugins_dir());
        shown.database.url = Some(mask_url(&self.database_url()));
        shown.audit.checkpoint_file = Some(self.checkpoint_file());
        shown.audit.checkpoint_key = Some(self.checkpoint_key());
        serde_saphyr::to_string(&shown).unwrap_or_else(|e| format!("# cannot render: {e}\n"))
    }
}

/// Durations written like `30s`, `1m`, `250ms`, `4h`.
pub(crate) mod duration {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        parse(&text).map_err(serde::de::Error::custom)
    }

    pub fn parse(text: &str) -> Result<Duration, String> {
        humantime::parse_duration(text.trim()).map_err(|e| {
            format!("{text:?} is not a duration ({e}); write it like 250ms, 30s, 1m or 4h")
        })
    }
}

mod duration_list {
    use serde::{Deserialize, Deserializer, Serializer, ser::SerializeSeq};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(list: &[Duration], s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(list.len()))?;
        for d in list {
            seq.serialize_element(&humantime::format_duration(*d).to_string())?;
        }
        seq.end()
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Duration>, D::Error> {
        let texts = Vec::<String>::deserialize(d)?;
        texts
            .iter()
            .map(|t| super::duration::parse(t).map_err(serde::de::Error::custom))
            .collect()
    }
}

#[cfg(test)]
mod tests;
