//! Black-box tests: each starts the built `evhost` binary on a free loopback port
//! with its own data folder and drives it over HTTP and the CLI.

mod audit;
mod auth;
mod cli;
mod console;
mod deadletters;
mod disk;
mod egress;
mod errors;
mod examples;
mod faults;
mod fleet;
mod idle;
mod ingest;
mod kept;
mod metrics;
mod pg_restart;
mod plugins;
mod replay;
mod sandbox;
mod secrets;
mod server;
mod shadow;
mod shutdown;
mod signatures;
mod simulate;
mod stream;
mod supervision;
mod webhook_durability;
mod webhooks;
