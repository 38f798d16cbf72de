//! WebAssembly plugins: the component host, the live set of loaded plugins, the
//! pipeline that runs them on each event, and the folder watcher that loads them.
//!
//! - [`runtime`]: engines, compiled-code cache, sandboxed instances, host functions.
//! - [`manifest`]: the sidecar `NAME.toml`.
//! - [`loader`]: compiling, `init`, atomic swap-in, and the `notify` watcher.
//! - [`pipeline`]: what each bus worker runs per event (inline plugins), and the
//!   validation of their actions.
//! - [`tap`]: plugins that observe on their own thread.
//! - [`shadow`]: new versions compared with the serving one on live events.
//! - [`offline`], [`replay`]: running a plugin file outside the daemon.
//!
//! The live set is an [`ArcSwap`]: a bus worker takes a snapshot per event, so an
//! event in flight finishes on the versions it started with and later events see the
//! new ones; swapping takes no lock the event path waits on.

mod breaker;
pub mod cache;
mod clock;
mod limits;
pub mod loader;
mod log;
pub mod manifest;
pub mod offline;
pub mod pipeline;
mod promote;
pub mod replay;
pub mod runtime;
pub mod shadow;
mod tap;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::config::PluginsConfig;
use crate::event::{Catalog, TypePattern};
use crate::metrics::{Metrics, PLUGIN_ERROR_KINDS, PluginSeries};
pub use breaker::Breaker;
pub use manifest::{Manifest, Mode, OnError};
pub use runtime::{CallError, LoadError, Runtime};

/// One loaded version of a plugin.
pub struct Loaded {
    /// The file's stem: `spam-router` for `spam-router.wasm`.
    pub name: String,
    pub info: runtime::Info,
    pub manifest: Manifest,
    pub patterns: Vec<TypePattern>,
    /// SHA-256 of the `.wasm` file, hex.
    pub hash: String,
    pub loaded_at: DateTime<Utc>,
    /// Unique per load: worker caches key their instances by it.
    pub generation: u64,
    compiled: runtime::Compiled,
    context: Arc<runtime::PluginContext>,
    limits: runtime::Limits,
    slot: Arc<Slot>,
    /// A tap plugin's queue (its thread ends when this version is dropped).
    tap: Option<tap::TapQueue>,
    /// A shadow's queue and figures (its thread ends when this version is dropped).
    shadow: Option<shadow::ShadowQueue>,
}

impl Loaded {
    fn wants(&self, kind: &str) -> bool {
        self.patterns.iter().any(|p| p.matches(kind))
    }
}

/// What is kept per plugin name across versions: the breaker, the metric series
/// (which the API reads its counters from), the last error.
pub struct Slot {
    name: String,
    series: PluginSeries,
    breaker: Breaker,
    last_error: Mutex<Option<(DateTime<Utc>, String)>>,
}

impl Slot {
    /// Makes one call, timed and counted.
    fn call<T>(&self, call: impl FnOnce() -> T) -> T {
        let started = std::time::Instant::now();
        let result = call();
        self.series
            .call_seconds
            .observe(started.elapsed().as_secs_f64());
        self.series.calls.inc();
        result
    }

    fn record_error(&self, error: &CallError) {
        self.series.error(error.kind());
        *self.last_error.lock().expect("not poisoned") = Some((Utc::now(), error.to_string()));
    }
}

/// The plugins serving now.
#[derive(Default)]
pub struct PluginSet {
    /// In ascending priority, then name.
    inline: Vec<Arc<Loaded>>,
    tap: Vec<Arc<Loaded>>,
    shadow: Vec<Arc<Loaded>>,
}

impl PluginSet {
    fn with(&self, loaded: Option<Arc<Loaded>>, without: &str) -> PluginSet {
        let keep = |list: &[Arc<Loaded>]| -> Vec<Arc<Loaded>> {
            list.iter().filter(|p| p.name != without).cloned().collect()
        };
        let mut set = PluginSet {
            inline: keep(&self.inline),
            tap: keep(&self.tap),
            shadow: keep(&self.shadow),
        };
        if let Some(loaded) = loaded {
            match loaded.manifest.mode {
                Mode::Inline => set.inline.push(loaded),
                Mode::Tap => set.tap.push(loaded),
                Mode::Shadow => set.shadow.push(loaded),
            }
        }
        set.inline
            .sort_by(|a, b| (a.manifest.priority, &a.name).cmp(&(b.manifest.priority, &b.name)));
        set
    }

    fn len(&self) -> usize {
        self.inline.len() + self.tap.len() + self.shadow.len()
    }

    fn all(&self) -> impl Iterator<Item = &Arc<Loaded>> {
        self.inline.iter().chain(&self.tap).chain(&self.shadow)
    }

    /// The shadow running beside the plugin `name`, if any.
    fn shadow_for(&self, name: &str) -> Option<&Arc<Loaded>> {
        self.shadow
            .iter()
            .find(|s| s.manifest.shadow_of.as_deref() == Some(name))
    }
}

/// A plugin as `GET /v1/plugins` shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct PluginStatus {
    /// The file's stem.
    pub name: String,
    /// `serving`, `breaker_open`, `shadow` (runs beside `shadow_of`, applies
    /// nothing) or `failed` (never loaded; see `last_error`).
    pub state: &'static str,
    /// What the plugin calls itself, and its version (from `init`).
    pub plugin_name: Option<String>,
    pub version: Option<String>,
    pub file: String,
    /// SHA-256 of the serving version's file.
    pub file_hash: Option<String>,
    pub loaded_at: Option<DateTime<Utc>>,
    pub mode: Option<Mode>,
    /// For a shadow: the plugin it runs beside.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shadow_of: Option<String>,
    pub priority: Option<i32>,
    pub subscriptions: Vec<String>,
    pub on_error: Option<OnError>,
    pub memory_mib: Option<u64>,
    pub timeout_ms: Option<u64>,
    /// What its sidecar asked for and did not get (a limit above the daemon's
    /// ceiling, `plugins.max_*`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// The latest problem: a load that failed (the previous version kept serving) or a
    /// failed call.
    pub last_error: Option<String>,
    pub last_error_at: Option<DateTime<Utc>>,
    pub calls: u64,
    /// Failed calls by kind: timeout, memory, trap, error, invalid_action.
    pub errors: BTreeMap<String, u64>,
    pub failures_in_a_row: u32,
}

/// The live set, the per-name slots and the load outcomes.
pub struct Registry {
    set: ArcSwap<PluginSet>,
    slots: Mutex<BTreeMap<String, Arc<Slot>>>,
    /// The last load failure per name, cleared by a successful load.
    load_errors: Mutex<BTreeMap<String, (DateTime<Utc>, String)>>,
    generation: AtomicU64,
    catalog: Arc<Catalog>,
    metrics: Arc<Metrics>,
    options: PluginsConfig,
    dir: PathBuf,
}

impl Registry {
    fn slot(&self, name: &str) -> Arc<Slot> {
        let mut slots = self.slots.lock().expect("not poisoned");
        slots
            .entry(name.to_string())
            .or_insert_with(|| {
                Arc::new(Slot {
                    name: name.to_string(),
                    series: self.metrics.plugins.series(name),
                    breaker: Breaker::new(
                        self.options.breaker_failures,
                        self.options.breaker_cooldown,
                    ),
                    last_error: Mutex::new(None),
                })
            })
            .clone()
    }

    /// Swaps `loaded` in for any version of the same name.
    fn install(&self, loaded: Arc<Loaded>) {
        let name = loaded.name.clone();
        self.set
            .rcu(|set| Arc::new(set.with(Some(loaded.clone()), &name)));
        self.load_errors.lock().expect("not poisoned").remove(&name);
        self.metrics
            .plugins
            .loaded
            .set(self.set.load().len() as i64);
    }

    /// Unloads `name`; whether it was loaded.
    fn remove(&self, name: &str) -> bool {
        let mut found = false;
        self.set.rcu(|set| {
            found = set.all().any(|p| p.name == name);
            Arc::new(set.with(None, name))
        });
        self.load_errors.lock().expect("not poisoned").remove(name);
        self.metrics
            .plugins
            .loaded
            .set(self.set.load().len() as i64);
        found
    }

    fn load_failed(&self, name: &str, error: String) {
        self.metrics
            .plugins
            .load_failures
            .get_or_create(&crate::metrics::PluginLabel {
                plugin: name.to_string(),
            })
            .inc();
        self.load_errors
            .lock()
            .expect("not poisoned")
            .insert(name.to_string(), (Utc::now(), error));
    }

    /// The loaded version of `name` (serving, or a shadow).
    fn serving(&self, name: &str) -> Option<Arc<Loaded>> {
        self.set.load().all().find(|p| p.name == name).cloned()
    }

    /// The shadow named `name`, or the one running beside the plugin `name`.
    fn shadow(&self, name: &str) -> Option<Arc<Loaded>> {
        let set = self.set.load();
        set.shadow
            .iter()
            .find(|s| s.name == name)
            .or_else(|| set.shadow_for(name))
            .cloned()
    }

    /// How the shadow `name` (or the one beside the plugin `name`) compares.
    pub fn shadow_report(&self, name: &str) -> Option<shadow::ShadowReport> {
        let loaded = self.shadow(name)?;
        let queue = loaded.shadow.as_ref()?;
        let of = loaded.manifest.shadow_of.clone().unwrap_or_default();
        let serving = self.serving(&of).map(|p| p.info.version.clone());
        Some(queue.report(
            &loaded.name,
            &of,
            &loaded.info.version,
            serving,
            loaded.loaded_at,
        ))
    }

    /// Swaps `loaded` in for its name and takes the shadow `shadow` out, in one step.
    fn promote(&self, loaded: Arc<Loaded>, shadow: &str) {
        let name = loaded.name.clone();
        self.set.rcu(|set| {
            let promoted = set.with(Some(loaded.clone()), &name);
            Arc::new(promoted.with(None, shadow))
        });
        self.load_errors.lock().expect("not poisoned").remove(&name);
        self.metrics
            .plugins
            .loaded
            .set(self.set.load().len() as i64);
    }

    /// Every plugin that is serving or failed to load, by name.
    pub fn list(&self) -> Vec<PluginStatus> {
        let set = self.set.load();
        let load_errors = self.load_errors.lock().expect("not poisoned").clone();
        let mut names: Vec<String> = set
            .all()
            .map(|p| p.name.clone())
            .chain(load_errors.keys().cloned())
            .collect();
        names.sort();
        names.dedup();
        names
            .iter()
            .map(|n| self.status_of(n, &load_errors))
            .collect()
    }

    /// One plugin's status, if it is serving or failed to load.
    pub fn status(&self, name: &str) -> Option<PluginStatus> {
        let load_errors = self.load_errors.lock().expect("not poisoned").clone();
        (self.serving(name).is_some() || load_errors.contains_key(name))
            .then(|| self.status_of(name, &load_errors))
    }

    fn status_of(
        &self,
        name: &str,
        load_errors: &BTreeMap<String, (DateTime<Utc>, String)>,
    ) -> PluginStatus {
        let loaded = self.serving(name);
        let slot = self.slot(name);
        let call_error = slot.last_error.lock().expect("not poisoned").clone();
        // The newer of the load failure and the last call failure.
        let last = match (load_errors.get(name).cloned(), call_error) {
            (Some(a), Some(b)) => Some(if a.0 >= b.0 { a } else { b }),
            (a, b) => a.or(b),
        };
        let state = match &loaded {
            None => "failed",
            Some(l) if l.manifest.mode == Mode::Shadow => "shadow",
            Some(_) if slot.breaker.is_open() => "breaker_open",
            Some(_) => "serving",
        };
        PluginStatus {
            name: name.to_string(),
            state,
            plugin_name: loaded.as_ref().map(|l| l.info.name.clone()),
            version: loaded.as_ref().map(|l| l.info.version.clone()),
            file: self.dir.join(format!("{name}.wasm")).display().to_string(),
            file_hash: loaded.as_ref().map(|l| l.hash.clone()),
            loaded_at: loaded.as_ref().map(|l| l.loaded_at),
            mode: loaded.as_ref().map(|l| l.manifest.mode),
            shadow_of: loaded.as_ref().and_then(|l| l.manifest.shadow_of.clone()),
            priority: loaded.as_ref().map(|l| l.manifest.priority),
            subscriptions: loaded
                .as_ref()
                .map(|l| l.patterns.iter().map(|p| p.to_string()).collect())
                .unwrap_or_default(),
            on_error: loaded.as_ref().map(|l| l.manifest.on_error),
            memory_mib: loaded.as_ref().map(|l| l.limits.memory_mib),
            timeout_ms: loaded.as_ref().map(|l| l.limits.timeout.as_millis() as u64),
            warnings: loaded
                .as_ref()
                .map(|l| l.manifest.warnings.clone())
                .unwrap_or_default(),
            last_error: last.as_ref().map(|(_, e)| e.clone()),
            last_error_at: last.map(|(t, _)| t),
            calls: slot.series.calls.get(),
            errors: PLUGIN_ERROR_KINDS
                .iter()
                .zip(&slot.series.errors)
                .map(|(k, n)| (k.to_string(), n.get()))
                .collect(),
            failures_in_a_row: slot.breaker.failures_in_a_row(),
        }
    }
}
