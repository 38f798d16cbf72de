//! The component host: one shared engine, compiled plugins cached on disk, and
//! sandboxed instances with a memory cap and a deadline per call.
//!
//! A plugin sees a WASI context with nothing in it: no preopened folders, no
//! environment, no arguments, no sockets or name lookups, stdio discarded. What it
//! may ask the host for is the `host` interface of `wit/plugin.wit`.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use sha2::{Digest, Sha256};

use super::cache::{Cache, Lookup};
use super::clock::{self, Clock};
use super::limits::MemoryCap;
use wasmtime::component::{Component, HasSelf, Linker, ResourceTable};
use wasmtime::{Engine, Store};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use crate::event::Event;

wasmtime::component::bindgen!({
    path: "../wit/plugin.wit",
    world: "plugin",
});

use self::evhost::plugin::types as wit;
pub use self::evhost::plugin::types::{Action, Info, Level, NewEvent};

/// The least deadline of instantiation and `init`.
pub const INIT_TIMEOUT: Duration = Duration::from_secs(1);

/// Why a plugin could not be compiled or instantiated.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("not a WebAssembly component: {0}")]
    Compile(String),
    #[error("does not match the evhost:plugin@0.1.0 contract: {0}")]
    Contract(String),
}

/// How one call into a plugin failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CallError {
    #[error("ran past its deadline of {0:?}")]
    Timeout(Duration),
    #[error("used up its fuel")]
    Fuel,
    #[error("hit its memory cap of {0} MiB")]
    Memory(u64),
    #[error("trapped: {0}")]
    Trap(String),
    #[error("returned an error: {0}")]
    Error(String),
    #[error("returned a refused action: {0}")]
    Invalid(String),
    /// evhost's own code panicked during the call (a bug of ours, not the plugin's).
    #[error("the host panicked during the call: {0}")]
    Panic(String),
}

impl CallError {
    /// The `kind` label of `evhost_plugin_errors_total`.
    pub fn kind(&self) -> &'static str {
        match self {
            CallError::Timeout(_) | CallError::Fuel => "timeout",
            CallError::Memory(_) => "memory",
            CallError::Trap(_) => "trap",
            CallError::Error(_) => "error",
            CallError::Invalid(_) => "invalid_action",
            CallError::Panic(_) => "panic",
        }
    }

    /// Whether the instance is unusable afterwards (its state may be half-changed),
    /// so the next call gets a fresh one.
    pub fn poisons(&self) -> bool {
        !matches!(self, CallError::Error(_) | CallError::Invalid(_))
    }
}

/// Where a plugin's log lines go.
pub enum LogSink {
    /// The daemon's log, tagged with the plugin's name.
    Tracing,
    /// Kept for the caller (`evhost plugin run`).
    Capture(std::sync::Mutex<Vec<(Level, String)>>),
}

/// What a plugin's host functions use: its name, configuration, log gate and
/// counters. Shared by every instance of one loaded version.
pub struct PluginContext {
    pub name: String,
    config: HashMap<String, String>,
    log_per_second: u32,
    log_window: AtomicU64,
    pub logs_dropped: AtomicU64,
    pub sink: LogSink,
    counters: Option<Arc<crate::metrics::PluginMetrics>>,
    captured_counters: std::sync::Mutex<std::collections::BTreeMap<String, u64>>,
}

/// Distinct counter names one plugin may create (metric cardinality stays bounded).
const MAX_COUNTERS: usize = 64;

impl PluginContext {
    pub fn new(
        name: &str,
        config: &[(String, String)],
        log_per_second: u32,
        sink: LogSink,
        counters: Option<Arc<crate::metrics::PluginMetrics>>,
    ) -> Arc<PluginContext> {
        Arc::new(PluginContext {
            name: name.to_string(),
            config: config.iter().cloned().collect(),
            log_per_second,
            log_window: AtomicU64::new(0),
            logs_dropped: AtomicU64::new(0),
            sink,
            counters,
            captured_counters: Default::default(),
        })
    }

    /// Counters added by the plugin (kept only when there are no daemon metrics).
    pub fn captured_counters(&self) -> Vec<(String, u64)> {
        let map = self.captured_counters.lock().expect("not poisoned");
        map.iter().map(|(k, v)| (k.clone(), *v)).collect()
    }

    /// Whether one more line fits this second's allowance. The window is packed
    /// into one atomic: the second in the high bits, the count in the low 20.
    fn admit_log(&self) -> bool {
        let second = chrono::Utc::now().timestamp() as u64;
        let mut current = self.log_window.load(Ordering::Relaxed);
        loop {
            let (window, count) = (current >> 20, current & 0xF_FFFF);
            let next = if window == second {
                if count >= u64::from(self.log_per_second) {
                    self.logs_dropped.fetch_add(1, Ordering::Relaxed);
                    return false;
                }
                current + 1
            } else {
                (second << 20) | 1
            };
            match self.log_window.compare_exchange_weak(
                current,
                next,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return true,
                Err(seen) => current = seen,
            }
        }
    }
}

/// A store's data: the empty WASI context, the memory cap, the plugin's context.
pub struct HostState {
    wasi: WasiCtx,
    table: ResourceTable,
    memory: MemoryCap,
    plugin: Arc<PluginContext>,
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl wit::Host for HostState {}

/// Longest log line kept; the rest is cut.
const MAX_LOG_LINE: usize = 4096;

impl self::evhost::plugin::host::Host for HostState {
    fn log(&mut self, level: Level, message: String) {
        let plugin = &self.plugin;
        if !plugin.admit_log() {
            return;
        }
        let mut message = message;
        if message.len() > MAX_LOG_LINE {
            let mut cut = MAX_LOG_LINE;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
            message.push('…');
        }
        match &plugin.sink {
            LogSink::Capture(lines) => lines.lock().expect("not poisoned").push((level, message)),
            LogSink::Tracing => {
                let name = plugin.name.as_str();
                // One plugin line is one log line: a newline or another control
                // character cannot forge a line of the daemon's own.
                let message = super::log::escape_controls(&message);
                match level {
                    Level::Trace => tracing::trace!(plugin = name, "{message}"),
                    Level::Debug => tracing::debug!(plugin = name, "{message}"),
                    Level::Info => tracing::info!(plugin = name, "{message}"),
                    Level::Warn => tracing::warn!(plugin = name, "{message}"),
                    Level::Error => tracing::error!(plugin = name, "{message}"),
                }
            }
        }
    }

    fn config(&mut self, key: String) -> Option<String> {
        self.plugin.config.get(&key).cloned()
    }

    fn now_ms(&mut self) -> u64 {
        chrono::Utc::now().timestamp_millis().max(0) as u64
    }

    fn counter_add(&mut self, name: String, value: u64) {
        let plugin = &self.plugin;
        let valid = !name.is_empty()
            && name.len() <= 64
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'-');
        if !valid {
            return;
        }
        match &plugin.counters {
            Some(metrics) => metrics.counter_add(&plugin.name, &name, value, MAX_COUNTERS),
            None => {
                let mut map = plugin.captured_counters.lock().expect("not poisoned");
                if map.len() < MAX_COUNTERS || map.contains_key(&name) {
                    *map.entry(name).or_default() += value;
                }
            }
        }
    }
}

/// Per-instance limits.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    pub memory_mib: u64,
    pub timeout: Duration,
    pub fuel: Option<u64>,
}

/// The shared engines (one plain, one counting fuel) and the linker of each.
pub struct Runtime {
    plain: Engine,
    fueled: Engine,
    plain_linker: Linker<HostState>,
    fueled_linker: Linker<HostState>,
    cache: Option<Cache>,
    /// Advances the engines' epochs while a call runs; it holds them only weakly.
    clock: Arc<Clock>,
}

/// A compiled plugin, ready to instantiate.
#[derive(Clone)]
pub struct Compiled {
    pre: PluginPre<HostState>,
    clock: Arc<Clock>,
    /// SHA-256 of the file, hex.
    pub hash: String,
    pub from_cache: bool,
    /// The interfaces the component imports and exports, by name.
    pub imports: Vec<String>,
    pub exports: Vec<String>,
}

impl Runtime {
    /// Makes the engines and starts the epoch clock. `cache` keeps compiled code.
    pub fn new(cache: Option<Cache>) -> Result<Arc<Runtime>, LoadError> {
        let make = |fuel: bool| {
            let mut config = wasmtime::Config::new();
            config.epoch_interruption(true);
            config.consume_fuel(fuel);
            config.wasm_component_model(true);
            // On by default in wasmtime 48, and it makes every synchronous component
            // call about 3× dearer; evhost makes no concurrent (async) calls.
            config.concurrency_support(false);
            Engine::new(&config).map_err(|e| LoadError::Compile(format!("engine: {e:#}")))
        };
        let plain = make(false)?;
        let fueled = make(true)?;
        let linker = |engine: &Engine| -> Result<Linker<HostState>, LoadError> {
            let mut linker = Linker::new(engine);
            wasmtime_wasi::p2::add_to_linker_sync(&mut linker)
                .map_err(|e| LoadError::Compile(format!("linker: {e:#}")))?;
            Plugin::add_to_linker::<_, HasSelf<_>>(&mut linker, |state| state)
                .map_err(|e| LoadError::Compile(format!("linker: {e:#}")))?;
            Ok(linker)
        };
        let clock = Clock::start(&[&plain, &fueled])
            .map_err(|e| LoadError::Compile(format!("clock thread: {e}")))?;
        Ok(Arc::new(Runtime {
            clock,
            plain_linker: linker(&plain)?,
            fueled_linker: linker(&fueled)?,
            plain,
            fueled,
            cache,
        }))
    }

    /// Compiles a component (or takes it from the cache) and checks it against the
    /// contract. Slow (Cranelift); call it off the event path.
    pub fn compile(&self, bytes: &[u8], fuel: bool) -> Result<Compiled, LoadError> {
        self.compile_hashed(bytes, file_hash(bytes), fuel)
    }

    /// [`Runtime::compile`] for a caller that already has the file's [`file_hash`].
    pub fn compile_hashed(
        &self,
        bytes: &[u8],
        hash: String,
        fuel: bool,
    ) -> Result<Compiled, LoadError> {
        let (engine, linker) = if fuel {
            (&self.fueled, &self.fueled_linker)
        } else {
            (&self.plain, &self.plain_linker)
        };
        let name = cache_name(engine, &hash);
        let mut from_cache = false;
        let mut component = None;
        match self.cache.as_ref().map(|cache| cache.load(&name)) {
            None | Some(Lookup::Missing) => {}
            Some(Lookup::Found(code)) => {
                // SAFETY: the tag proves the daemon itself wrote these bytes with
                // `Component::serialize` (see `cache`), for this engine configuration
                // (the name carries the engine's compatibility hash); wasmtime checks
                // the header again before it maps the code.
                match unsafe { Component::deserialize(engine, &code) } {
                    Ok(c) => {
                        component = Some(c);
                        from_cache = true;
                    }
                    Err(error) => {
                        tracing::warn!(entry = %name, error = %format!("{error:#}"), "ignoring an unreadable compiled-plugin cache entry");
                    }
                }
            }
            Some(Lookup::Refused) => {
                tracing::warn!(entry = %name, "refused a compiled-plugin cache entry this daemon did not write (its tag does not match); compiling afresh");
            }
        }
        let component = match component {
            Some(c) => c,
            None => {
                let c = Component::new(engine, bytes)
                    .map_err(|e| LoadError::Compile(first_line(&format!("{e:#}"))))?;
                if let Some(cache) = &self.cache {
                    match c.serialize() {
                        Ok(code) => cache.store(&name, &code),
                        Err(error) => {
                            tracing::warn!(error = %format!("{error:#}"), "could not serialize a compiled plugin for the cache")
                        }
                    }
                }
                c
            }
        };
        let ty = component.component_type();
        let imports = ty
            .imports(engine)
            .map(|(name, _)| name.to_string())
            .collect();
        let exports = ty
            .exports(engine)
            .map(|(name, _)| name.to_string())
            .collect();
        let instance_pre = linker
            .instantiate_pre(&component)
            .map_err(|e| LoadError::Contract(format!("{e:#}")))?;
        let pre =
            PluginPre::new(instance_pre).map_err(|e| LoadError::Contract(format!("{e:#}")))?;
        Ok(Compiled {
            pre,
            clock: self.clock.clone(),
            hash,
            from_cache,
            imports,
            exports,
        })
    }
}

/// A cache entry's name: the file's hash and the engine's compatibility hash, so a
/// daemon built with another wasmtime never tries another's code.
fn cache_name(engine: &Engine, hash: &str) -> String {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut hasher);
    format!("{hash}-{:016x}", hasher.finish())
}

/// SHA-256 of a plugin file, hex: how the API and the cache name a version.
pub fn file_hash(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn first_line(text: &str) -> String {
    text.lines().next().unwrap_or(text).to_string()
}

/// One live instance of a plugin: a store and the component's exports. Used by one
/// worker at a time; replaced after any call that poisons it.
pub struct Instance {
    store: Store<HostState>,
    bindings: Plugin,
    limits: Limits,
    clock: Arc<Clock>,
}

impl Instance {
    /// Instantiates `compiled` in a fresh, empty sandbox and calls `init` with the
    /// plugin's configuration. Instantiation and `init` get a deadline of at least
    /// [`INIT_TIMEOUT`] (a plugin may build its tables there); calls get
    /// `limits.timeout`.
    pub fn start(
        compiled: &Compiled,
        context: Arc<PluginContext>,
        limits: Limits,
        config: &[(String, String)],
    ) -> Result<(Instance, Info), CallError> {
        let engine = compiled.pre.engine();
        let wasi = WasiCtx::builder()
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .build();
        let state = HostState {
            wasi,
            table: ResourceTable::new(),
            memory: MemoryCap::new((limits.memory_mib as usize).saturating_mul(1 << 20)),
            plugin: context,
        };
        let mut store = Store::new(engine, state);
        store.limiter(|state| &mut state.memory);
        let starting = Limits {
            timeout: limits.timeout.max(INIT_TIMEOUT),
            ..limits
        };
        arm(&mut store, &starting);
        let running = compiled.clock.call();
        let bindings = compiled
            .pre
            .instantiate(&mut store)
            .map_err(|e| classify(e, &store, &limits))?;
        drop(running);
        let mut instance = Instance {
            store,
            bindings,
            limits,
            clock: compiled.clock.clone(),
        };
        arm(&mut instance.store, &starting);
        instance.store.data_mut().memory.hit = false;
        let running = instance.clock.call();
        let result = instance
            .bindings
            .evhost_plugin_subscriber()
            .call_init(&mut instance.store, config);
        drop(running);
        let info = instance.finish(result)?;
        Ok((instance, info))
    }

    /// Bytes of the instance's linear memories and tables (what its memory cap counts).
    pub fn memory_bytes(&self) -> usize {
        self.store.data().memory.used()
    }

    /// Calls `handle` with one event.
    pub fn handle(&mut self, event: &Event) -> Result<Vec<Action>, CallError> {
        let ip = event.actor.ip.map(|ip| ip.to_string());
        let wit_event = wit::Event {
            id: event.id.to_string(),
            kind: event.kind.to_string(),
            time: event
                .time
                .to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            source: event.source.to_string(),
            actor: wit::Actor {
                token: event.actor.token.as_deref().map(str::to_string),
                ip,
                on_behalf_of: event.actor.on_behalf_of.clone(),
            },
            data: event.data.get().to_string(),
        };
        self.arm();
        let running = self.clock.call();
        let result = self
            .bindings
            .evhost_plugin_subscriber()
            .call_handle(&mut self.store, &wit_event);
        drop(running);
        self.finish(result)
    }

    fn arm(&mut self) {
        arm(&mut self.store, &self.limits);
        self.store.data_mut().memory.hit = false;
    }

    fn finish<T>(&mut self, result: wasmtime::Result<Result<T, String>>) -> Result<T, CallError> {
        match result {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(message)) => Err(CallError::Error(message)),
            Err(error) => Err(classify(error, &self.store, &self.limits)),
        }
    }
}

/// Sets the deadline (and fuel) for the next call.
fn arm(store: &mut Store<HostState>, limits: &Limits) {
    store.set_epoch_deadline(clock::ticks_of(limits.timeout));
    store.epoch_deadline_trap();
    if let Some(fuel) = limits.fuel {
        // Only the fueled engine counts; setting it there cannot fail.
        let _ = store.set_fuel(fuel);
    }
}

fn classify(error: wasmtime::Error, store: &Store<HostState>, limits: &Limits) -> CallError {
    if store.data().memory.hit {
        return CallError::Memory(limits.memory_mib);
    }
    match error.downcast_ref::<wasmtime::Trap>() {
        Some(wasmtime::Trap::Interrupt) => CallError::Timeout(limits.timeout),
        Some(wasmtime::Trap::OutOfFuel) => CallError::Fuel,
        Some(trap) => CallError::Trap(trap.to_string()),
        None => CallError::Trap(first_line(&format!("{error:#}"))),
    }
}
