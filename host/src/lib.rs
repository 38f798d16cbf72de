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
pub mod daemon;
pub mod event;
pub mod ingest;
pub mod metrics;
pub mod store;
