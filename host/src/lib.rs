//! evhost: the event system of an email platform.
//!
//! Mail components publish events over HTTP ([`api`]); each is checked against the
//! catalog and given an envelope ([`event`], [`ingest`]), committed to the event log
//! ([`eventlog`], which is the audit log, [`audit`]) before it is acknowledged, and
//! then dispatched ([`bus`]) through the WebAssembly plugins ([`plugins`]) to the
//! consumers: webhooks ([`webhooks`]), metrics ([`metrics`]) and the live tail.
//! A row the database refuses for good is set aside ([`deadletter`]) rather than
//! stop its writer. [`daemon`] wires it all together; [`cli`] is the command line.

pub mod api;
pub mod audit;
pub mod bench;
pub mod bus;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod daemon;
pub mod deadletter;
pub mod event;
pub mod eventlog;
pub mod ingest;
pub mod keyfile;
pub mod metrics;
pub mod plugins;
pub mod server;
pub mod store;
pub mod supervise;
pub mod ui;
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
