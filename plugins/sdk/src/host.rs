//! What the host offers a plugin: logging, configuration, a clock and counters.
//!
//! Inside a component these call the host; in a native build (`cargo test`) they go
//! to a per-thread [`testing`] host, so plugin logic can be tested without a daemon.

#[cfg(target_arch = "wasm32")]
mod imp {
    use crate::bindings::evhost::plugin::host;
    use crate::bindings::evhost::plugin::types::Level;

    pub fn log(level: Level, message: &str) {
        host::log(level, message)
    }
    pub fn config(key: &str) -> Option<String> {
        host::config(key)
    }
    pub fn now_ms() -> u64 {
        host::now_ms()
    }
    pub fn counter_add(name: &str, value: u64) {
        host::counter_add(name, value)
    }
}

#[cfg(not(target_arch = "wasm32"))]
mod imp {
    use crate::bindings::evhost::plugin::types::Level;
    use crate::testing::HOST;

    pub fn log(level: Level, message: &str) {
        HOST.with(|h| h.borrow_mut().logs.push((level, message.to_string())));
    }
    pub fn config(key: &str) -> Option<String> {
        HOST.with(|h| h.borrow().config.get(key).map(str::to_string))
    }
    pub fn now_ms() -> u64 {
        HOST.with(|h| h.borrow().now_ms)
    }
    pub fn counter_add(name: &str, value: u64) {
        HOST.with(|h| *h.borrow_mut().counters.entry(name.to_string()).or_default() += value);
    }
}

/// Reads one value of the plugin's configuration (usually read once, in `init`).
pub fn config(key: &str) -> Option<String> {
    imp::config(key)
}

/// Milliseconds since the Unix epoch, from the host.
pub fn now_ms() -> u64 {
    imp::now_ms()
}

/// Adds to a plugin-scoped counter, exported by the daemon as
/// `evhost_plugin_counter_total{plugin, name}`.
pub fn counter_add(name: &str, value: u64) {
    imp::counter_add(name, value)
}

/// Log lines, tagged by the host with the plugin's name and rate-limited.
pub mod log {
    pub use crate::bindings::evhost::plugin::types::Level;

    pub fn trace(message: &str) {
        super::imp::log(Level::Trace, message)
    }
    pub fn debug(message: &str) {
        super::imp::log(Level::Debug, message)
    }
    pub fn info(message: &str) {
        super::imp::log(Level::Info, message)
    }
    pub fn warn(message: &str) {
        super::imp::log(Level::Warn, message)
    }
    pub fn error(message: &str) {
        super::imp::log(Level::Error, message)
    }
}

/// The host seen by native tests: what the plugin logged and counted, and the
/// configuration and clock it reads. Per thread, so tests run in parallel.
pub mod testing {
    use std::cell::RefCell;
    use std::collections::BTreeMap;

    pub use crate::bindings::evhost::plugin::types::Level;

    #[derive(Debug, Default)]
    pub struct TestHost {
        pub logs: Vec<(Level, String)>,
        pub counters: BTreeMap<String, u64>,
        pub config: crate::Config,
        pub now_ms: u64,
    }

    thread_local! {
        pub(crate) static HOST: RefCell<TestHost> = RefCell::new(TestHost::default());
    }

    /// Runs `f` with this thread's test host (to set config or the clock, or to read
    /// logs and counters).
    pub fn with_host<R>(f: impl FnOnce(&mut TestHost) -> R) -> R {
        HOST.with(|h| f(&mut h.borrow_mut()))
    }

    /// The lines logged so far on this thread, as `(level, message)`.
    pub fn logs() -> Vec<(Level, String)> {
        with_host(|h| h.logs.clone())
    }

    /// A counter's value on this thread.
    pub fn counter(name: &str) -> u64 {
        with_host(|h| h.counters.get(name).copied().unwrap_or(0))
    }
}
