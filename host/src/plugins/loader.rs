//! Loading plugins from the watched folder: compile off the event path, `init`,
//! then swap in; a failure leaves the previous version serving and is reported.
//!
//! The folder is watched with `notify`. A change is acted on once the file has stayed
//! the same (size and modification time) for `plugins.settle`, so a file still being
//! copied is not read half-written; if it still fails to compile and has changed
//! since it was read, it is tried again rather than reported.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use chrono::Utc;
use notify::Watcher;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::pipeline::PluginPipeline;
use super::runtime::{Instance, Limits, LogSink, PluginContext, Runtime};
use super::{Loaded, Manifest, Mode, PluginSet, PluginStatus, Registry, shadow, tap};
use crate::config::PluginsConfig;
use crate::event::{Catalog, TypePattern};
use crate::metrics::Metrics;
use crate::plugins::cache::Cache;

/// The largest plugin file read.
pub const MAX_FILE_BYTES: u64 = 64 << 20;

/// Why a plugin did not load.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    #[error("plugin names are 1 to 64 characters from a-z 0-9 - _ (got {0:?})")]
    BadName(String),
    #[error("no plugin file {0}")]
    NotFound(PathBuf),
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is {size} bytes; plugins may be at most {MAX_FILE_BYTES}")]
    TooLarge { path: PathBuf, size: u64 },
    #[error(transparent)]
    Manifest(#[from] super::manifest::ManifestError),
    #[error(transparent)]
    Load(#[from] super::runtime::LoadError),
    #[error("init failed: {0}")]
    Init(super::runtime::CallError),
    #[error("init answered badly: {0}")]
    Info(String),
    #[error("the plugin runtime could not start: {0}")]
    Runtime(String),
    #[error("no shadow named {0:?} or running beside a plugin of that name")]
    NoShadow(String),
}

/// The daemon's plugins: the registry, the runtime and the folder watcher.
#[derive(Clone)]
pub struct Plugins {
    pub(super) registry: Arc<Registry>,
    pub(super) runtime: Arc<Runtime>,
    /// One load at a time (watcher, API, promotion), so two loads of one name
    /// cannot race.
    pub(super) loading: Arc<tokio::sync::Mutex<()>>,
    stop: CancellationToken,
    /// Where loads, failed loads and unloads are recorded, when the audit log is on.
    audit: Arc<std::sync::OnceLock<Arc<crate::audit::Audit>>>,
}

/// Whether `name` may name a plugin.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

impl Plugins {
    /// Creates the folder if needed, loads every plugin in it, and starts watching it.
    /// Compiled code is kept in `cache`.
    pub async fn start(
        options: PluginsConfig,
        dir: PathBuf,
        cache: Cache,
        metrics: Arc<Metrics>,
        catalog: Arc<Catalog>,
        audit: Option<Arc<crate::audit::Audit>>,
    ) -> Result<Plugins, PluginError> {
        std::fs::create_dir_all(&dir).map_err(|source| PluginError::Read {
            path: dir.clone(),
            source,
        })?;
        let runtime = Runtime::new(Some(cache)).map_err(|e| PluginError::Runtime(e.to_string()))?;
        let registry = Arc::new(Registry {
            set: ArcSwap::from_pointee(PluginSet::default()),
            slots: Default::default(),
            load_errors: Default::default(),
            generation: Default::default(),
            catalog,
            metrics,
            options,
            dir: dir.clone(),
        });
        let plugins = Plugins {
            registry,
            runtime,
            loading: Default::default(),
            stop: CancellationToken::new(),
            audit: Default::default(),
        };
        if let Some(audit) = audit {
            plugins.set_audit(audit);
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let mut watcher =
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                // Reading a file (as the loader does) raises access events; only
                // creations, changes and removals matter.
                if let Ok(event) = event
                    && !matches!(event.kind, notify::EventKind::Access(_))
                {
                    for path in event.paths {
                        let _ = tx.send(path);
                    }
                }
            })
            .map_err(|e| PluginError::Runtime(format!("cannot watch {}: {e}", dir.display())))?;
        watcher
            .watch(&dir, notify::RecursiveMode::NonRecursive)
            .map_err(|e| PluginError::Runtime(format!("cannot watch {}: {e}", dir.display())))?;
        // Loaded after the watch starts, so a file added meanwhile is not missed.
        let mut names: Vec<String> = std::fs::read_dir(&dir)
            .map_err(|source| PluginError::Read {
                path: dir.clone(),
                source,
            })?
            .filter_map(|entry| entry.ok())
            .filter_map(|entry| plugin_name_of(&entry.path()))
            .collect();
        names.sort();
        names.dedup();
        for name in names {
            plugins.sync(&name).await;
        }
        plugins.registry.metrics.tasks.spawn(
            "plugin watcher",
            crate::supervise::Ends::OnStop(plugins.stop.clone()),
            plugins.clone().watch(rx, watcher),
        );
        Ok(plugins)
    }

    /// The bus stage that runs the inline plugins.
    pub fn pipeline(&self) -> Arc<dyn crate::bus::Pipeline> {
        Arc::new(PluginPipeline {
            registry: self.registry.clone(),
        })
    }

    /// Records every load, failed load and unload in the audit log (actor
    /// `evhost`: the folder changed) as `plugin.loaded`, `plugin.load_failed` and
    /// `plugin.unloaded` rows with resource `plugin:<name>`.
    fn set_audit(&self, audit: Arc<crate::audit::Audit>) {
        let _ = self.audit.set(audit);
    }

    pub(super) async fn record(&self, name: &str, action: &str, details: serde_json::Value) {
        let Some(audit) = self.audit.get() else {
            return;
        };
        audit
            .record_action(crate::audit::Entry {
                event_id: crate::event::new_event_id().to_string(),
                event_type: format!("plugin.{action}"),
                actor: Some("evhost".into()),
                actor_token: None,
                actor_ip: None,
                resource_type: Some("plugin".into()),
                resource_id: Some(name.to_string()),
                details: details.to_string(),
                time_us: Utc::now().timestamp_micros(),
                source: None,
            })
            .await;
    }

    pub fn list(&self) -> Vec<PluginStatus> {
        self.registry.list()
    }

    pub fn status(&self, name: &str) -> Option<PluginStatus> {
        self.registry.status(name)
    }

    /// Loads `name` from its file again (after the file or its sidecar changed, or to
    /// retry). The previous version keeps serving when it fails.
    pub async fn reload(&self, name: &str) -> Result<PluginStatus, PluginError> {
        if !valid_name(name) {
            return Err(PluginError::BadName(name.to_string()));
        }
        let path = self.registry.dir.join(format!("{name}.wasm"));
        if !path.exists() {
            return Err(PluginError::NotFound(path));
        }
        let _guard = self.loading.lock().await;
        self.load(name, true).await.map(|_| {
            self.registry
                .status(name)
                .expect("a loaded plugin has a status")
        })
    }

    /// Stops watching the folder.
    pub fn stop(&self) {
        self.stop.cancel();
    }

    /// Brings `name` in line with the folder: loads it when its file is there,
    /// unloads it when not. Failures are recorded, not returned.
    async fn sync(&self, name: &str) {
        let _guard = self.loading.lock().await;
        let path = self.registry.dir.join(format!("{name}.wasm"));
        if !path.exists() {
            if self.registry.remove(name) {
                tracing::info!(plugin = name, "plugin unloaded (its file was removed)");
                self.record(name, "unloaded", serde_json::json!({})).await;
            }
            return;
        }
        // A failure was logged and recorded by `load`.
        let _ = self.load(name, false).await;
    }

    /// Loads, retrying while the file is still changing; records the outcome. Unless
    /// `force`, a file and sidecar identical to the serving version's are left alone.
    async fn load(&self, name: &str, force: bool) -> Result<Arc<Loaded>, PluginError> {
        let path = self.registry.dir.join(format!("{name}.wasm"));
        let settle = self.registry.options.settle;
        let mut attempts = 0;
        loop {
            let before = stamp(&path);
            let result = {
                let registry = self.registry.clone();
                let runtime = self.runtime.clone();
                let name = name.to_string();
                tokio::task::spawn_blocking(move || load_version(&registry, &runtime, &name, force))
                    .await
                    .unwrap_or_else(|e| Err(PluginError::Runtime(format!("loader panicked: {e}"))))
            };
            match result {
                Ok(Fresh::Unchanged(serving)) => return Ok(serving),
                Ok(Fresh::Loaded(loaded)) => {
                    let previous = self.registry.serving(name);
                    tracing::info!(
                        plugin = name,
                        version = %loaded.info.version,
                        hash = %&loaded.hash[..12],
                        mode = ?loaded.manifest.mode,
                        priority = loaded.manifest.priority,
                        replaced = previous.as_ref().map(|p| p.info.version.as_str()),
                        "plugin loaded"
                    );
                    self.registry.install(loaded.clone());
                    self.record(
                        name,
                        "loaded",
                        serde_json::json!({
                            "version": loaded.info.version,
                            "plugin_name": loaded.info.name,
                            "file_hash": loaded.hash,
                            "mode": loaded.manifest.mode,
                            "priority": loaded.manifest.priority,
                        }),
                    )
                    .await;
                    return Ok(loaded);
                }
                Err(error) => {
                    attempts += 1;
                    // Still being written? Wait for it to settle and try again.
                    if attempts < 20 && stamp(&path) != before && path.exists() {
                        tokio::time::sleep(settle).await;
                        continue;
                    }
                    if !path.exists() {
                        return Err(PluginError::NotFound(path));
                    }
                    let kept = self.registry.serving(name).map(|p| p.info.version.clone());
                    tracing::error!(plugin = name, %error, previous_version_kept = kept.as_deref(), "plugin not loaded");
                    self.registry.load_failed(name, error.to_string());
                    let details = serde_json::json!({"error": error.to_string(), "previous_version_kept": kept});
                    self.record(name, "load_failed", details).await;
                    return Err(error);
                }
            }
        }
    }

    /// Acts on folder changes: waits for each changed name to settle, then syncs it.
    async fn watch(
        self,
        mut rx: mpsc::UnboundedReceiver<PathBuf>,
        watcher: notify::RecommendedWatcher,
    ) {
        let settle = self.registry.options.settle;
        // Name → the file's stamp when last seen changing.
        let mut pending: HashMap<String, Option<(u64, SystemTime)>> = HashMap::new();
        loop {
            let wait = if pending.is_empty() {
                Duration::from_secs(3600)
            } else {
                settle
            };
            tokio::select! {
                () = self.stop.cancelled() => break,
                path = rx.recv() => {
                    let Some(path) = path else { break };
                    if let Some(name) = plugin_name_of(&path) {
                        let wasm = self.registry.dir.join(format!("{name}.wasm"));
                        pending.insert(name, stamp(&wasm));
                    }
                    continue;
                }
                () = tokio::time::sleep(wait) => {}
            }
            // Settle: anything whose file changed since it was noted waits another round.
            let mut ready = HashSet::new();
            for (name, seen) in pending.iter_mut() {
                let now = stamp(&self.registry.dir.join(format!("{name}.wasm")));
                if now == *seen {
                    ready.insert(name.clone());
                } else {
                    *seen = now;
                }
            }
            pending.retain(|name, _| !ready.contains(name));
            let mut ready: Vec<String> = ready.into_iter().collect();
            ready.sort();
            for name in ready {
                self.sync(&name).await;
            }
        }
        drop(watcher);
    }
}

/// The plugin a folder entry belongs to: `NAME` of `NAME.wasm` or `NAME.toml`.
fn plugin_name_of(path: &Path) -> Option<String> {
    let ext = path.extension()?.to_str()?;
    if ext != "wasm" && ext != "toml" {
        return None;
    }
    let name = path.file_stem()?.to_str()?;
    if valid_name(name) {
        Some(name.to_string())
    } else {
        tracing::warn!(file = %path.display(), "ignoring a plugin file whose name is not 1 to 64 characters from a-z 0-9 - _");
        None
    }
}

fn stamp(path: &Path) -> Option<(u64, SystemTime)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.len(), meta.modified().ok()?))
}

pub(super) enum Fresh {
    Loaded(Arc<Loaded>),
    /// The serving version has this very file and sidecar.
    Unchanged(Arc<Loaded>),
}

/// Reads, compiles and initialises one version (blocking).
pub(super) fn load_version(
    registry: &Arc<Registry>,
    runtime: &Runtime,
    name: &str,
    force: bool,
) -> Result<Fresh, PluginError> {
    let dir = &registry.dir;
    let path = dir.join(format!("{name}.wasm"));
    let manifest = Manifest::load(&dir.join(format!("{name}.toml")), &registry.options)?;
    let bytes = read_plugin(&path)?;
    let hash = super::runtime::file_hash(&bytes);
    if !force
        && let Some(serving) = registry.serving(name)
        && serving.manifest == manifest
        && serving.hash == hash
    {
        return Ok(Fresh::Unchanged(serving));
    }
    let compiled = runtime.compile_hashed(&bytes, hash, manifest.fuel.is_some())?;
    let limits = Limits {
        memory_mib: manifest.memory_mib,
        timeout: manifest.timeout,
        fuel: manifest.fuel,
    };
    let context = PluginContext::new(
        name,
        &manifest.config,
        registry.options.log_lines_per_second,
        LogSink::Tracing,
        Some(registry.metrics.plugins.clone()),
    );
    let (_, info) = Instance::start(&compiled, context.clone(), limits, &manifest.config)
        .map_err(PluginError::Init)?;
    let patterns = subscriptions(&info, &manifest)?;
    let slot = registry.slot(name);
    let tap = match manifest.mode {
        Mode::Tap => Some(
            tap::TapQueue::start(
                name,
                compiled.clone(),
                context.clone(),
                limits,
                &manifest,
                slot.clone(),
            )
            .map_err(|e| PluginError::Runtime(format!("tap thread: {e}")))?,
        ),
        Mode::Inline | Mode::Shadow => None,
    };
    let shadow = match manifest.mode {
        Mode::Shadow => {
            if manifest.shadow_of.as_deref() == Some(name) {
                return Err(PluginError::Info(
                    "shadow_of names the plugin itself; name the plugin it runs beside".into(),
                ));
            }
            Some(
                shadow::ShadowQueue::start(shadow::ShadowParts {
                    name: name.to_string(),
                    compiled: compiled.clone(),
                    context: context.clone(),
                    limits,
                    config: manifest.config.clone(),
                    slot: slot.clone(),
                    catalog: registry.catalog.clone(),
                    options: registry.options.clone(),
                })
                .map_err(|e| PluginError::Runtime(format!("shadow thread: {e}")))?,
            )
        }
        Mode::Inline | Mode::Tap => None,
    };
    Ok(Fresh::Loaded(Arc::new(Loaded {
        name: name.to_string(),
        hash: compiled.hash.clone(),
        info,
        patterns,
        manifest,
        loaded_at: Utc::now(),
        generation: registry.generation.fetch_add(1, Ordering::Relaxed) + 1,
        compiled,
        context,
        limits,
        slot,
        tap,
        shadow,
    })))
}

/// Reads a plugin file, refusing one over [`MAX_FILE_BYTES`].
pub fn read_plugin(path: &Path) -> Result<Vec<u8>, PluginError> {
    let size = std::fs::metadata(path)
        .map_err(|source| PluginError::Read {
            path: path.to_path_buf(),
            source,
        })?
        .len();
    if size > MAX_FILE_BYTES {
        return Err(PluginError::TooLarge {
            path: path.to_path_buf(),
            size,
        });
    }
    std::fs::read(path).map_err(|source| PluginError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// The patterns a plugin runs on: the sidecar's, else its own from `init`.
pub fn subscriptions(
    info: &super::runtime::Info,
    manifest: &Manifest,
) -> Result<Vec<TypePattern>, PluginError> {
    if info.name.trim().is_empty() || info.name.len() > 128 {
        return Err(PluginError::Info("name must be 1 to 128 characters".into()));
    }
    if info.version.trim().is_empty() || info.version.len() > 64 {
        return Err(PluginError::Info(
            "version must be 1 to 64 characters".into(),
        ));
    }
    let texts = manifest
        .subscriptions
        .as_ref()
        .unwrap_or(&info.subscriptions);
    if texts.is_empty() {
        return Err(PluginError::Info(
            "no subscriptions: the plugin would never run (set them in init or the sidecar)".into(),
        ));
    }
    texts
        .iter()
        .map(|t| {
            TypePattern::parse(t).map_err(|e| PluginError::Info(format!("subscription {t:?}: {e}")))
        })
        .collect()
}
