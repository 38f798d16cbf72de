//! evhost: the event system of an email platform.
//!
//! Mail components publish events over HTTP ([`api`]); each is checked against the
//! catalog and given an envelope ([`event`], [`ingest`]), queued on the bus ([`bus`])
//! and dispatched to subscribers: metrics ([`metrics`]), the live tail, and (in later
//! parts) webhooks, the audit log and WebAssembly plugins. [`daemon`] wires it all
//! together; [`cli`] is the command line.

pub mod api;
pub mod audit;
pub mod bench;
pub mod bus;
pub mod cli;
pub mod config;
pub mod cpu;
pub mod daemon;
pub mod event;
pub mod ingest;
pub mod metrics;
pub mod plugins;
pub mod store;
pub mod webhooks;

/// An error and its causes, joined by `: `, for one-line messages and logs.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(e) = cause {
        text.push_str(": ");
        text.push_str(&e.to_string());
        cause = e.source();
    }
    text
}
