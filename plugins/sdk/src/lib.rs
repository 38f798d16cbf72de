//! The evhost plugin SDK.
//!
//! A plugin is a type that implements [`Plugin`], exported with one line:
//!
//! ```no_run
//! use evhost_plugin::prelude::*;
//!
//! struct Hello;
//!
//! impl Plugin for Hello {
//!     fn init(_config: &Config) -> Result<(Info, Self), String> {
//!         Ok((Info::new("hello", "0.1.0").subscribe(["message.received"]), Hello))
//!     }
//!     fn handle(&self, event: &Event) -> Result<Vec<Action>, String> {
//!         let message: MessageReceived = event.payload()?;
//!         log::info(&format!("message {} for {}", message.message_id, message.user));
//!         Ok(pass())
//!     }
//! }
//!
//! evhost_plugin::export_plugin!(Hello);
//! ```
//!
//! Build it with `cargo build --release --target wasm32-wasip2`; the `.wasm` file in
//! `target/wasm32-wasip2/release/` is the plugin. Its logic is plain Rust, so it can be
//! unit-tested natively with `cargo test`: there the host functions ([`log`],
//! [`config`], [`counter_add`], [`now_ms`]) go to a per-thread [`testing`] host that a
//! test can inspect.
//!
//! The payload types are the daemon's own (`evhost-catalog`), re-exported here, so a
//! plugin and the daemon agree on every field.

// Lets the generated bindings name this crate by its public name, inside it too.
extern crate self as evhost_plugin;

mod action;
mod event;
mod host;

#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../../wit/plugin.wit",
        world: "plugin",
        pub_export_macro: true,
        default_bindings_module: "evhost_plugin::bindings",
        runtime_path: "evhost_plugin::__private::wit_bindgen::rt",
    });
}

pub use action::{Action, pass};
pub use event::{Actor, Event};
pub use evhost_catalog as catalog;
pub use host::{config, counter_add, log, now_ms, testing};
/// The JSON library the SDK uses, for payloads outside the catalog.
pub use serde_json;

/// The event types of the catalog as constants, such as `types::MESSAGE_RECEIVED`.
pub use evhost_catalog::types;

/// Everything a plugin usually needs.
pub mod prelude {
    pub use crate::catalog::*;
    pub use crate::{Action, Actor, Config, Event, Info, Plugin, log, pass};
}

/// A plugin: built once by [`Plugin::init`], then asked about every matching event.
///
/// The host calls `handle` for one event at a time per instance, so `&self` needs no
/// locking; keep per-event work small (each call has a deadline, 10 ms by default).
pub trait Plugin: Sized + 'static {
    /// Reads the configuration (the `[config]` table of the plugin's sidecar file)
    /// and says who the plugin is. An error keeps this version from loading.
    fn init(config: &Config) -> Result<(Info, Self), String>;

    /// Decides about one event. An empty list lets it pass unchanged; see
    /// [`Action`] for the rest. An error is handled by the plugin's `on_error` policy.
    fn handle(&self, event: &Event) -> Result<Vec<Action>, String>;
}

/// The plugin's configuration: the `[config]` table of its sidecar file, as strings.
#[derive(Debug, Clone, Default)]
pub struct Config {
    values: Vec<(String, String)>,
}

impl Config {
    /// A configuration from key-value pairs (for tests).
    pub fn from_pairs<K: Into<String>, V: Into<String>>(
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Config {
        Config {
            values: pairs
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        }
    }

    /// The value of `key`, if set.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.values
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The value of `key` parsed as `T`, or `default` when it is not set; a value that
    /// does not parse is an error naming the key.
    pub fn parse_or<T: std::str::FromStr>(&self, key: &str, default: T) -> Result<T, String>
    where
        T::Err: std::fmt::Display,
    {
        match self.get(key) {
            None => Ok(default),
            Some(raw) => raw
                .trim()
                .parse()
                .map_err(|e| format!("config {key} = {raw:?}: {e}")),
        }
    }

    /// A comma-separated list (`"a, b,c"` → `["a", "b", "c"]`); empty when not set.
    pub fn list(&self, key: &str) -> Vec<String> {
        self.get(key)
            .map(|raw| {
                raw.split(',')
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Every key-value pair.
    pub fn pairs(&self) -> &[(String, String)] {
        &self.values
    }
}

/// What a plugin says about itself at init.
#[derive(Debug, Clone, PartialEq)]
pub struct Info {
    pub name: String,
    pub version: String,
    /// Event-type patterns: `message.received`, `message.*` or `*`.
    pub subscriptions: Vec<String>,
}

impl Info {
    pub fn new(name: impl Into<String>, version: impl Into<String>) -> Info {
        Info {
            name: name.into(),
            version: version.into(),
            subscriptions: Vec::new(),
        }
    }

    /// Adds event-type patterns to subscribe to.
    pub fn subscribe<S: Into<String>>(mut self, patterns: impl IntoIterator<Item = S>) -> Info {
        self.subscriptions
            .extend(patterns.into_iter().map(Into::into));
        self
    }
}

/// Exports a [`Plugin`] type as the component's `subscriber` interface.
///
/// ```text
/// evhost_plugin::export_plugin!(MyPlugin);
/// ```
#[macro_export]
macro_rules! export_plugin {
    ($plugin:ty) => {
        #[doc(hidden)]
        pub struct __EvhostPluginExport;

        impl $crate::bindings::exports::evhost::plugin::subscriber::Guest for __EvhostPluginExport {
            fn init(
                config: ::std::vec::Vec<(::std::string::String, ::std::string::String)>,
            ) -> ::std::result::Result<
                $crate::bindings::evhost::plugin::types::Info,
                ::std::string::String,
            > {
                $crate::__private::init::<$plugin>(config)
            }

            fn handle(
                event: $crate::bindings::evhost::plugin::types::Event,
            ) -> ::std::result::Result<
                ::std::vec::Vec<$crate::bindings::evhost::plugin::types::Action>,
                ::std::string::String,
            > {
                $crate::__private::handle::<$plugin>(event)
            }
        }

        // Only a component exports; a native build (for `cargo test`) must not,
        // since the export names are not valid native symbol names.
        #[cfg(target_arch = "wasm32")]
        $crate::bindings::export!(__EvhostPluginExport with_types_in $crate::bindings);
    };
}

/// What the export macro calls; not part of the public API.
#[doc(hidden)]
pub mod __private {
    use std::any::Any;
    use std::cell::RefCell;

    use crate::bindings::evhost::plugin::types as wit;
    pub use wit_bindgen;

    thread_local! {
        // A component instance runs one call at a time on one thread.
        static PLUGIN: RefCell<Option<Box<dyn Any>>> = const { RefCell::new(None) };
    }

    pub fn init<P: crate::Plugin>(config: Vec<(String, String)>) -> Result<wit::Info, String> {
        let (info, plugin) = P::init(&crate::Config { values: config })?;
        PLUGIN.with(|slot| *slot.borrow_mut() = Some(Box::new(plugin)));
        Ok(wit::Info {
            name: info.name,
            version: info.version,
            subscriptions: info.subscriptions,
        })
    }

    pub fn handle<P: crate::Plugin>(event: wit::Event) -> Result<Vec<wit::Action>, String> {
        let event = crate::Event::from_wit(event);
        PLUGIN.with(|slot| {
            let slot = slot.borrow();
            let plugin = slot
                .as_ref()
                .and_then(|p| p.downcast_ref::<P>())
                .ok_or_else(|| "handle called before a successful init".to_string())?;
            let actions = plugin.handle(&event)?;
            Ok(actions.into_iter().map(crate::Action::into_wit).collect())
        })
    }
}
