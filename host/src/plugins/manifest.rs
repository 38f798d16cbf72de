//! The sidecar file `NAME.toml` beside `NAME.wasm`: how the operator runs a plugin.
//!
//! ```toml
//! priority = 10          # inline plugins run in ascending priority (default 100)
//! mode = "inline"        # or "tap": observe asynchronously, never hold an event;
//!                        # or "shadow" beside `shadow_of`: run on the events that
//!                        # plugin sees, compare, apply nothing
//! shadow_of = "spam-router"
//! subscriptions = ["message.received"]   # instead of what the plugin asks for
//! on_error = "pass"      # or "drop": what a failed call does to the event
//! memory_mib = 64        # memory cap of one instance
//! timeout = "10ms"       # deadline of one call
//! fuel = 50000000        # optional: an instruction budget per call as well
//!
//! [config]               # handed to the plugin's init and config lookups
//! threshold = 7.5
//! ```

use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::PluginsConfig;

/// Whether a plugin holds the event (inline), watches it go by (tap), or runs beside
/// another plugin on the same events to be compared with it (shadow).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    #[default]
    Inline,
    Tap,
    Shadow,
}

/// What a failed call (trap, timeout, memory cap, error result, refused action)
/// does to the event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum OnError {
    /// The event continues as if the plugin were not there.
    #[default]
    Pass,
    /// The event stops here (the audit log records why).
    Drop,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Sidecar {
    priority: Option<i32>,
    mode: Option<Mode>,
    shadow_of: Option<String>,
    subscriptions: Option<Vec<String>>,
    on_error: Option<OnError>,
    memory_mib: Option<u64>,
    #[serde(default, with = "humantime_serde_opt")]
    timeout: Option<Duration>,
    fuel: Option<u64>,
    #[serde(default)]
    config: toml::Table,
}

/// How one plugin runs: its sidecar over the daemon's defaults.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Manifest {
    pub priority: i32,
    pub mode: Mode,
    /// The plugin a shadow runs beside (with `mode = "shadow"`).
    pub shadow_of: Option<String>,
    pub subscriptions: Option<Vec<String>>,
    pub on_error: OnError,
    pub memory_mib: u64,
    #[serde(with = "crate::config::duration")]
    pub timeout: Duration,
    pub fuel: Option<u64>,
    /// Handed to init; never shown by the API (it may hold credentials).
    #[serde(skip)]
    pub config: Vec<(String, String)>,
    /// What the sidecar asked for and did not get (a limit above the daemon's
    /// ceiling), shown in `GET /v1/plugins`.
    #[serde(skip)]
    pub warnings: Vec<String>,
}

/// Why a sidecar was refused.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Invalid { path: String, message: String },
}

impl Manifest {
    /// The daemon's defaults, for a plugin without a sidecar.
    pub fn defaults(options: &PluginsConfig) -> Manifest {
        Manifest {
            priority: 100,
            mode: Mode::Inline,
            shadow_of: None,
            subscriptions: None,
            on_error: OnError::Pass,
            memory_mib: options.memory_mib,
            timeout: options.timeout,
            fuel: options.max_fuel,
            config: Vec::new(),
            warnings: Vec::new(),
        }
    }

    /// Reads `path` if it exists; the defaults when it does not.
    pub fn load(path: &Path, options: &PluginsConfig) -> Result<Manifest, ManifestError> {
        match std::fs::read_to_string(path) {
            Ok(text) => Manifest::parse(&text, options).map_err(|message| ManifestError::Invalid {
                path: path.display().to_string(),
                message,
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Manifest::defaults(options)),
            Err(source) => Err(ManifestError::Read {
                path: path.display().to_string(),
                source,
            }),
        }
    }

    /// Parses a sidecar's text; the error says which key is wrong and why.
    pub fn parse(text: &str, options: &PluginsConfig) -> Result<Manifest, String> {
        let sidecar: Sidecar = toml::from_str(text).map_err(|e| e.to_string())?;
        let defaults = Manifest::defaults(options);
        // The daemon's configuration is a ceiling: a sidecar may lower a limit, and
        // one asking for more gets the ceiling, with a warning.
        let mut warnings = Vec::new();
        let max_memory_mib = options.max_memory_mib.max(options.memory_mib);
        let max_timeout = options.max_timeout.max(options.timeout);
        let mut memory_mib = sidecar.memory_mib.unwrap_or(defaults.memory_mib);
        if memory_mib == 0 {
            return Err("memory_mib = 0 is out of range; allowed: 1 and up".into());
        }
        if memory_mib > max_memory_mib {
            warnings.push(format!(
                "memory_mib = {memory_mib} is above plugins.max_memory_mib; {max_memory_mib} is used"
            ));
            memory_mib = max_memory_mib;
        }
        let mut timeout = sidecar.timeout.unwrap_or(defaults.timeout);
        if timeout.is_zero() {
            return Err("timeout = 0 is out of range; allowed: 1ms and up".into());
        }
        if timeout > max_timeout {
            warnings.push(format!(
                "timeout = {timeout:?} is above plugins.max_timeout; {max_timeout:?} is used"
            ));
            timeout = max_timeout;
        }
        if sidecar.fuel == Some(0) {
            return Err("fuel = 0 would stop every call; leave it out for no fuel limit".into());
        }
        let fuel = match (sidecar.fuel, options.max_fuel) {
            (Some(asked), Some(max)) if asked > max => {
                warnings.push(format!(
                    "fuel = {asked} is above plugins.max_fuel; {max} is used"
                ));
                Some(max)
            }
            (Some(asked), _) => Some(asked),
            (None, max) => max,
        };
        let mode = sidecar.mode.unwrap_or_default();
        match (mode, &sidecar.shadow_of) {
            (Mode::Shadow, None) => {
                return Err(
                    "mode = \"shadow\" needs shadow_of = \"NAME\": the plugin it runs beside"
                        .into(),
                );
            }
            (Mode::Shadow, Some(name)) if !super::loader::valid_name(name) => {
                return Err(format!(
                    "shadow_of = {name:?}: plugin names are 1 to 64 characters from a-z 0-9 - _"
                ));
            }
            (Mode::Inline | Mode::Tap, Some(_)) => {
                return Err("shadow_of is only for mode = \"shadow\"".into());
            }
            _ => {}
        }
        if let Some(patterns) = &sidecar.subscriptions {
            for p in patterns {
                crate::event::TypePattern::parse(p)
                    .map_err(|e| format!("subscriptions: {p:?}: {e}"))?;
            }
        }
        let mut config = Vec::with_capacity(sidecar.config.len());
        for (key, value) in sidecar.config {
            let text = match value {
                toml::Value::String(s) => s,
                toml::Value::Integer(_) | toml::Value::Float(_) | toml::Value::Boolean(_) => {
                    value.to_string()
                }
                toml::Value::Array(items) => items
                    .iter()
                    .map(|v| match v {
                        toml::Value::String(s) => s.clone(),
                        other => other.to_string(),
                    })
                    .collect::<Vec<_>>()
                    .join(","),
                other => {
                    return Err(format!(
                        "config.{key}: a {} is not allowed; use a string, number, boolean or list",
                        other.type_str()
                    ));
                }
            };
            config.push((key, text));
        }
        Ok(Manifest {
            priority: sidecar.priority.unwrap_or(defaults.priority),
            mode,
            shadow_of: sidecar.shadow_of,
            subscriptions: sidecar.subscriptions,
            on_error: sidecar.on_error.unwrap_or_default(),
            memory_mib,
            timeout,
            fuel,
            config,
            warnings,
        })
    }
}

/// `timeout = "10ms"` in humantime form.
mod humantime_serde_opt {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        let Some(text) = Option::<String>::deserialize(d)? else {
            return Ok(None);
        };
        humantime::parse_duration(&text)
            .map(Some)
            .map_err(|e| serde::de::Error::custom(format!("{text:?}: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Manifest, String> {
        Manifest::parse(text, &PluginsConfig::default())
    }

    #[test]
    fn an_empty_sidecar_gives_the_defaults() {
        let m = parse("").unwrap();
        assert_eq!(m, Manifest::defaults(&PluginsConfig::default()));
        assert_eq!(m.timeout, Duration::from_millis(10));
        assert_eq!(m.memory_mib, 64);
    }

    #[test]
    fn every_key_is_read() {
        let m = parse(
            "priority = 5\nmode = \"tap\"\nsubscriptions = [\"message.*\"]\non_error = \"drop\"\nmemory_mib = 16\ntimeout = \"25ms\"\nfuel = 1000\n[config]\nthreshold = 7.5\nname = \"x\"\non = true\ndomains = [\"a.example\", \"b.example\"]\n",
        )
        .unwrap();
        assert_eq!(m.priority, 5);
        assert_eq!(m.mode, Mode::Tap);
        assert_eq!(m.on_error, OnError::Drop);
        assert_eq!(m.memory_mib, 16);
        assert_eq!(m.timeout, Duration::from_millis(25));
        assert_eq!(m.fuel, Some(1000));
        assert_eq!(
            m.subscriptions.as_deref(),
            Some(&["message.*".to_string()][..])
        );
        let get = |k: &str| m.config.iter().find(|(key, _)| key == k).unwrap().1.clone();
        assert_eq!(get("threshold"), "7.5");
        assert_eq!(get("name"), "x");
        assert_eq!(get("on"), "true");
        assert_eq!(get("domains"), "a.example,b.example");
    }

    #[test]
    fn a_shadow_names_the_plugin_it_runs_beside() {
        let m = parse("mode = \"shadow\"\nshadow_of = \"spam-router\"\n").unwrap();
        assert_eq!(m.mode, Mode::Shadow);
        assert_eq!(m.shadow_of.as_deref(), Some("spam-router"));
    }

    #[test]
    fn bad_sidecars_say_what_is_wrong() {
        for (text, expect) in [
            ("mode = \"sideways\"", "mode"),
            ("prority = 1", "prority"),
            ("memory_mib = 0", "memory_mib"),
            ("timeout = \"soon\"", "soon"),
            ("timeout = \"0s\"", "timeout"),
            ("fuel = 0", "fuel"),
            ("subscriptions = [\"Message!\"]", "Message!"),
            ("[config]\nnested = { a = 1 }", "config.nested"),
            ("mode = \"shadow\"", "shadow_of"),
            ("mode = \"shadow\"\nshadow_of = \"Bad Name\"", "Bad Name"),
            ("shadow_of = \"spam-router\"", "only for mode"),
        ] {
            let err = parse(text).unwrap_err();
            assert!(err.contains(expect), "{text:?} → {err}");
        }
    }

    #[test]
    fn the_daemon_is_a_ceiling_a_sidecar_can_lower_but_not_raise() {
        let options = PluginsConfig {
            max_memory_mib: 128,
            max_timeout: Duration::from_millis(50),
            max_fuel: Some(1_000_000),
            ..PluginsConfig::default()
        };
        let m = Manifest::parse(
            "memory_mib = 4096\ntimeout = \"60s\"\nfuel = 9000000000\n",
            &options,
        )
        .unwrap();
        assert_eq!(
            (m.memory_mib, m.timeout, m.fuel),
            (128, Duration::from_millis(50), Some(1_000_000))
        );
        assert_eq!(m.warnings.len(), 3, "{:?}", m.warnings);
        assert!(m.warnings[0].contains("plugins.max_memory_mib"));
        let lower =
            Manifest::parse("memory_mib = 8\ntimeout = \"5ms\"\nfuel = 10\n", &options).unwrap();
        assert_eq!((lower.memory_mib, lower.fuel), (8, Some(10)));
        assert!(lower.warnings.is_empty());
        assert_eq!(
            Manifest::parse("", &options).unwrap().fuel,
            Some(1_000_000),
            "every plugin gets at most max_fuel"
        );
    }
}
