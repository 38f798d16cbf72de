//! Running a plugin file outside the daemon: `evhost plugin check` and
//! `evhost plugin run`. Same runtime, same limits, same action checks as the daemon
//! (with its default settings); log lines and counters are captured and shown
//! instead of exported.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;

use super::Manifest;
use super::loader::{PluginError, read_plugin, subscriptions};
use super::pipeline::{Rules, decide};
use super::runtime::{Action, CallError, Instance, Level, Limits, LogSink, PluginContext, Runtime};
use crate::event::{Catalog, Event, TypePattern};

/// What `evhost plugin check` reports.
#[derive(Debug, Serialize)]
pub struct CheckReport {
    pub file: String,
    pub size: u64,
    pub hash: String,
    pub contract: &'static str,
    pub name: String,
    pub version: String,
    pub subscriptions: Vec<String>,
    pub imports: Vec<String>,
    pub exports: Vec<String>,
    pub memory_mib: u64,
    pub timeout_ms: u64,
    pub fuel: Option<u64>,
    pub compile_ms: u64,
    pub init_ms: u64,
}

/// What one `handle` call did.
#[derive(Debug, Serialize)]
pub struct CallReport {
    pub event_id: String,
    pub event_type: String,
    pub duration_us: u64,
    /// The actions, as JSON (`{"drop": reason}`, `{"replace": {kind, data}}`, …).
    pub actions: Vec<serde_json::Value>,
    pub error: Option<String>,
    pub error_kind: Option<&'static str>,
}

/// What `evhost plugin run` reports.
#[derive(Debug, Serialize)]
pub struct RunReport {
    pub check: CheckReport,
    pub calls: Vec<CallReport>,
    pub logs: Vec<LogLine>,
    pub counters: Vec<(String, u64)>,
}

#[derive(Debug, Serialize)]
pub struct LogLine {
    pub level: &'static str,
    pub message: String,
}

/// The contract a plugin must match.
pub const CONTRACT: &str = "evhost:plugin@0.1.0";

/// A plugin file loaded outside the daemon, ready to be called event by event.
pub struct Runner {
    compiled: super::runtime::Compiled,
    limits: Limits,
    instance: Instance,
    context: Arc<PluginContext>,
    config: Vec<(String, String)>,
    subscriptions: Vec<TypePattern>,
    catalog: Catalog,
    options: crate::config::PluginsConfig,
    check: CheckReport,
}

impl Runner {
    /// Compiles the file, matches it against the contract and calls `init`.
    pub fn open(path: &Path, manifest: &Manifest) -> Result<Runner, PluginError> {
        let bytes = read_plugin(path)?;
        let runtime = Runtime::new(None).map_err(|e| PluginError::Runtime(e.to_string()))?;
        let started = Instant::now();
        let compiled = runtime.compile(&bytes, manifest.fuel.is_some())?;
        let compile_ms = started.elapsed().as_millis() as u64;
        let limits = Limits {
            memory_mib: manifest.memory_mib,
            timeout: manifest.timeout,
            fuel: manifest.fuel,
        };
        let name = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("plugin")
            .to_string();
        let context = PluginContext::new(
            &name,
            &manifest.config,
            u32::MAX,
            LogSink::Capture(Default::default()),
            None,
        );
        let started = Instant::now();
        let (instance, info) =
            Instance::start(&compiled, context.clone(), limits, &manifest.config)
                .map_err(PluginError::Init)?;
        let init_ms = started.elapsed().as_millis() as u64;
        let subscriptions = subscriptions(&info, manifest)?;
        let check = CheckReport {
            file: path.display().to_string(),
            size: bytes.len() as u64,
            hash: compiled.hash.clone(),
            contract: CONTRACT,
            name: info.name,
            version: info.version,
            subscriptions: subscriptions.iter().map(|p| p.to_string()).collect(),
            imports: compiled.imports.clone(),
            exports: compiled.exports.clone(),
            memory_mib: limits.memory_mib,
            timeout_ms: limits.timeout.as_millis() as u64,
            fuel: limits.fuel,
            compile_ms,
            init_ms,
        };
        Ok(Runner {
            compiled,
            limits,
            instance,
            context,
            config: manifest.config.clone(),
            subscriptions,
            catalog: Catalog::new(true, false),
            options: crate::config::PluginsConfig::default(),
            check,
        })
    }

    pub fn check(&self) -> &CheckReport {
        &self.check
    }

    /// Whether the daemon would call the plugin with events of this type.
    pub fn subscribes_to(&self, kind: &str) -> bool {
        self.subscriptions.iter().any(|p| p.matches(kind))
    }

    /// Calls `handle` with one event and applies the daemon's checks (schema,
    /// limits) to what it returns: a refused result is shown with its actions and
    /// the reason.
    pub fn call(&mut self, event: &Arc<Event>) -> Result<CallReport, PluginError> {
        let started = Instant::now();
        let result = self.instance.handle(event);
        let duration_us = started.elapsed().as_micros() as u64;
        let (actions, error) = match result {
            Ok(actions) => {
                let shown = actions.iter().map(action_json).collect();
                let rules = Rules {
                    catalog: &self.catalog,
                    options: &self.options,
                    plugin: &self.check.name,
                    series: None,
                    metrics: None,
                };
                (shown, decide(&rules, event, actions).err())
            }
            Err(error) => (Vec::new(), Some(error)),
        };
        if error.as_ref().is_some_and(CallError::poisons) {
            // Like the daemon: a fresh instance for the next event.
            self.instance = Instance::start(
                &self.compiled,
                self.context.clone(),
                self.limits,
                &self.config,
            )
            .map_err(PluginError::Init)?
            .0;
        }
        Ok(CallReport {
            event_id: event.id.to_string(),
            event_type: event.kind.to_string(),
            duration_us,
            actions,
            error_kind: error.as_ref().map(CallError::kind),
            error: error.map(|e| e.to_string()),
        })
    }

    /// The log lines and counters captured so far.
    pub fn captured(&self) -> (Vec<LogLine>, Vec<(String, u64)>) {
        let logs = match &self.context.sink {
            LogSink::Capture(lines) => lines
                .lock()
                .expect("not poisoned")
                .iter()
                .map(|(level, message)| LogLine {
                    level: level_name(*level),
                    message: message.clone(),
                })
                .collect(),
            LogSink::Tracing => Vec::new(),
        };
        (logs, self.context.captured_counters())
    }
}

/// Compiles the file, matches it against the contract and calls `init`.
pub fn check(path: &Path, manifest: &Manifest) -> Result<CheckReport, PluginError> {
    Runner::open(path, manifest).map(|r| r.check)
}

/// Checks the file, then calls `handle` with each event in turn.
pub fn run(
    path: &Path,
    manifest: &Manifest,
    events: &[Arc<Event>],
) -> Result<RunReport, PluginError> {
    let mut runner = Runner::open(path, manifest)?;
    let calls = events
        .iter()
        .map(|event| runner.call(event))
        .collect::<Result<Vec<_>, _>>()?;
    let (logs, counters) = runner.captured();
    Ok(RunReport {
        check: runner.check,
        calls,
        logs,
        counters,
    })
}

fn level_name(level: Level) -> &'static str {
    match level {
        Level::Trace => "trace",
        Level::Debug => "debug",
        Level::Info => "info",
        Level::Warn => "warn",
        Level::Error => "error",
    }
}

/// An action as JSON, with the event data parsed when it is JSON.
pub fn action_json(action: &Action) -> serde_json::Value {
    use serde_json::json;
    let data = |text: &str| {
        serde_json::from_str::<serde_json::Value>(text).unwrap_or_else(|_| json!(text))
    };
    match action {
        Action::Drop(reason) => json!({ "drop": reason }),
        Action::Replace(e) => json!({ "replace": { "type": e.kind, "data": data(&e.data) } }),
        Action::Emit(e) => json!({ "emit": { "type": e.kind, "data": data(&e.data) } }),
        Action::Deliver(d) => json!({ "deliver": {
            "target": d.target,
            "event": d.event.as_ref().map(|e| json!({ "type": e.kind, "data": data(&e.data) })),
        } }),
    }
}
