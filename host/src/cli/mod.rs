//! The command line. `serve` runs the daemon; the other commands talk to a running
//! one over its HTTP API (`--url`, token from `--token` / `EVHOST_TOKEN` /
//! `EVHOST_API_TOKEN`).
//!
//! Exit codes: 0 success, 1 failure at run time, 2 bad usage or configuration.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, anyhow, bail};
use clap::{Args, Parser, Subcommand};
use futures_util::StreamExt;

mod audit;
mod catalog;
mod deadletters;
mod nodes;
mod plugin;
mod replay;
mod scaffold;
mod simulate;
mod webhooks;

use crate::config::{Config, LogFormat};
use crate::daemon::{self, ServeError};

#[derive(Parser)]
#[command(
    name = "evhost",
    version,
    about = "The event system of an email platform",
    propagate_version = true
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon (embedded defaults work without a config file).
    Serve {
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Publish one event to a running daemon.
    Publish(PublishArgs),
    /// Follow events live from a running daemon.
    Tail(TailArgs),
    /// Inspect the configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// The event types this build knows, with their JSON Schemas (--json).
    Catalog(catalog::CatalogArgs),
    /// Publish the traffic of an email platform to a running daemon (logins, mail,
    /// bounces, mailboxes, quota warnings, the odd virus or stuck queue).
    ///
    /// The mix of types is exact at any count (within one event of each share):
    /// user.login 30 %, user.logout 20 %, message.received 25 % (about 8 % of them
    /// spam), message.sent 12 %, message.bounced 3 %, mailbox.created 3 %,
    /// mailbox.renamed 2 %, user.quota_warning 2 %, virus.detected 1.5 %,
    /// queue.stuck 1.5 %. About 10 % of logins fail.
    Simulate(simulate::SimulateArgs),
    /// Measure the bus and HTTP ingest on this machine and print a report.
    Bench(crate::bench::BenchArgs),
    /// Apply the database migrations (the daemon also does at start-up).
    Migrate {
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Verify, query and export the audit log.
    #[command(subcommand)]
    Audit(audit::AuditCommand),
    /// Manage webhook endpoints and look at their deliveries.
    #[command(subcommand)]
    Webhooks(webhooks::WebhooksCommand),
    /// Write, check and run WebAssembly plugins; list a daemon's plugins.
    #[command(subcommand)]
    Plugin(plugin::PluginCommand),
    /// Rows the database refused for good: list, show, retry once fixed, discard.
    DeadLetters(deadletters::DeadLettersArgs),
    /// The daemons sharing the database: heartbeats, and what each holds.
    Nodes(nodes::NodesArgs),
}

#[derive(Args)]
struct ConfigArg {
    /// YAML config file.
    #[arg(long, short, env = crate::config::CONFIG_ENV)]
    config: Option<PathBuf>,
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Print the effective configuration (file + environment + defaults), secrets masked.
    Print {
        #[command(flatten)]
        config: ConfigArg,
    },
}

#[derive(Args)]
pub(crate) struct ClientArgs {
    /// The daemon's base URL.
    #[arg(long, env = "EVHOST_URL", default_value = "http://127.0.0.1:8080")]
    url: String,
    /// API token (falls back to EVHOST_API_TOKEN).
    #[arg(long, env = "EVHOST_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

impl ClientArgs {
    fn token(&self) -> Option<String> {
        self.token
            .clone()
            .or_else(|| std::env::var(crate::config::API_TOKEN_ENV).ok())
            .filter(|t| !t.is_empty())
    }

    /// Sends one request to the daemon; its JSON answer, or an error quoting the
    /// daemon's message.
    pub(crate) async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> anyhow::Result<serde_json::Value> {
        let mut request = self.request(&client()?, method, path);
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request
            .send()
            .await
            .with_context(|| format!("cannot reach the daemon at {}", self.url))?;
        check(response).await
    }

    fn request(
        &self,
        client: &reqwest::Client,
        method: reqwest::Method,
        path: &str,
    ) -> reqwest::RequestBuilder {
        let url = format!("{}{}", self.url.trim_end_matches('/'), path);
        let builder = client.request(method, url);
        match self.token() {
            Some(token) => builder.bearer_auth(token),
            None => builder,
        }
    }
}

#[derive(Args)]
struct PublishArgs {
    /// Event type, e.g. message.received.
    #[arg(value_name = "TYPE")]
    kind: String,
    /// The payload as JSON, or @FILE to read it from a file (@- for standard input).
    #[arg(long, short)]
    data: String,
    /// Your id for the event (a resend with the same id is not processed twice).
    #[arg(long)]
    id: Option<String>,
    /// Where the event comes from.
    #[arg(long)]
    source: Option<String>,
    /// Wait until every subscriber has handled it.
    #[arg(long)]
    wait: bool,
    #[command(flatten)]
    client: ClientArgs,
}

#[derive(Args)]
struct TailArgs {
    /// Type patterns to follow (message.received, message.*, *); all when none.
    patterns: Vec<String>,
    /// Print each event's envelope as one JSON line.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    client: ClientArgs,
}

/// Runs the CLI and maps failures to exit codes.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve { config } => return serve(config.config),
        Command::Config(ConfigCommand::Print { config }) => {
            return match Config::load(config.config.as_deref()) {
                Ok(c) => {
                    print!("{}", c.to_masked_yaml());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("evhost: {}", crate::error_chain(&e));
                    ExitCode::from(2)
                }
            };
        }
        Command::Publish(args) => runtime().and_then(|rt| rt.block_on(publish(args))),
        Command::Tail(args) => runtime().and_then(|rt| rt.block_on(tail(args))),
        Command::Bench(args) => crate::bench::run(args),
        Command::Catalog(args) => catalog::run(args),
        Command::Simulate(args) => runtime().and_then(|rt| rt.block_on(simulate::run(args))),
        Command::Migrate { config } => {
            return with_config(config.config, |c| runtime()?.block_on(migrate(c)));
        }
        Command::Audit(audit::AuditCommand::Verify {
            config,
            checkpoint,
            public_key,
        }) => {
            return with_config(config.config, |c| {
                runtime()?.block_on(audit::verify(c, checkpoint, public_key))
            });
        }
        Command::Audit(audit::AuditCommand::Query(args)) => {
            runtime().and_then(|rt| rt.block_on(audit::query(args)))
        }
        Command::Audit(audit::AuditCommand::Export(args)) => {
            runtime().and_then(|rt| rt.block_on(audit::export(args)))
        }
        Command::Webhooks(command) => runtime().and_then(|rt| rt.block_on(webhooks::run(command))),
        Command::Plugin(command) => runtime().and_then(|rt| rt.block_on(plugin::run(command))),
        Command::DeadLetters(args) => runtime().and_then(|rt| rt.block_on(deadletters::run(args))),
        Command::Nodes(args) => runtime().and_then(|rt| rt.block_on(nodes::run(args))),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("evhost: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Loads the config (exit 2 if it is bad) and runs `f` with it (exit 1 if it fails).
fn with_config(file: Option<PathBuf>, f: impl FnOnce(Config) -> anyhow::Result<()>) -> ExitCode {
    let config = match Config::load(file.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("evhost: {}", crate::error_chain(&e));
            return ExitCode::from(2);
        }
    };
    match f(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("evhost: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Opens the configured database; for SQLite, only if the file is already there.
async fn open_store(config: &Config) -> anyhow::Result<crate::store::Store> {
    let url = config.database_url();
    if let Some(path) = url.strip_prefix("sqlite:") {
        let path = path.trim_start_matches("//");
        if !std::path::Path::new(path).exists() {
            bail!("no database at {path} (check data_dir or database.url)");
        }
    }
    Ok(crate::store::Store::connect(config).await?)
}

async fn migrate(config: Config) -> anyhow::Result<()> {
    let store = crate::store::Store::connect(&config).await?;
    store.migrate().await?;
    println!("{} database is up to date", store.backend());
    store.close().await;
    Ok(())
}

/// Prints `rows` as JSON lines (`json`), or as a table: `header`, then one
/// `line(row)` per row.
pub(crate) fn print_rows(
    rows: &[serde_json::Value],
    json: bool,
    header: &str,
    line: impl Fn(&serde_json::Value) -> String,
) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    if json {
        for row in rows {
            writeln!(out, "{row}")?;
        }
        return Ok(());
    }
    writeln!(out, "{header}")?;
    for row in rows {
        writeln!(out, "{}", line(row))?;
    }
    Ok(())
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

fn serve(config_file: Option<PathBuf>) -> ExitCode {
    let config = match Config::load(config_file.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("evhost: {}", crate::error_chain(&e));
            return ExitCode::from(2);
        }
    };
    init_logging(&config);
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("evhost: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    let stop = {
        let _runtime = rt.enter();
        stop_signal()
    };
    let scheme = if config.server.tls.is_some() {
        "https"
    } else {
        "http"
    };
    let result = rt.block_on(daemon::serve(config, stop, |running| {
        eprintln!(
            "evhost {} listening on {scheme}://{}",
            daemon::VERSION,
            running.addr
        );
    }));
    // Work cut off at the shutdown timeout (a write waiting on a database that does
    // not answer) must not hold the exit: it is in the log, or was never answered.
    rt.shutdown_timeout(std::time::Duration::from_secs(1));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e @ ServeError::Refused(_)) => {
            eprintln!("evhost: {}", crate::error_chain(&e));
            ExitCode::from(2)
        }
        // EX_SOFTWARE: started again by systemd or Kubernetes, it recovers from the log.
        Err(e @ ServeError::TaskFailed { .. }) => {
            eprintln!("evhost: {}", crate::error_chain(&e));
            ExitCode::from(70)
        }
        Err(e) => {
            eprintln!("evhost: {}", crate::error_chain(&e));
            ExitCode::FAILURE
        }
    }
}

/// Completes on SIGINT or SIGTERM.
/// Installs the SIGTERM and SIGINT handlers now (before the daemon answers anything,
/// so a signal sent right after start-up is never met by the default action, which
/// would kill the process without draining) and resolves when either arrives.
fn stop_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("can install a SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("can install a SIGINT handler");
    async move {
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
    }
}

fn init_logging(config: &Config) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&config.log.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match config.log.format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

fn client() -> anyhow::Result<reqwest::Client> {
    reqwest::Client::builder()
        .user_agent(concat!("evhost-cli/", env!("CARGO_PKG_VERSION")))
        .build()
        .context("cannot build the HTTP client")
}

/// Turns a non-success answer into an error that quotes the daemon's message.
async fn check(response: reqwest::Response) -> anyhow::Result<serde_json::Value> {
    let status = response.status();
    let body = response.text().await.unwrap_or_default();
    let json: serde_json::Value = serde_json::from_str(&body).unwrap_or(serde_json::Value::Null);
    if status.is_success() {
        return Ok(json);
    }
    let code = json["error"]["code"].as_str().unwrap_or("error");
    let message = json["error"]["message"]
        .as_str()
        .map(str::to_string)
        .unwrap_or(body);
    bail!("the daemon answered {status} ({code}): {message}")
}

fn read_data(arg: &str) -> anyhow::Result<String> {
    let text = match arg.strip_prefix('@') {
        Some("-") => std::io::read_to_string(std::io::stdin())
            .context("cannot read the payload from standard input")?,
        Some(path) => std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the payload file {path}"))?,
        None => arg.to_string(),
    };
    serde_json::from_str::<serde_json::Value>(&text)
        .map_err(|e| anyhow!("--data is not valid JSON: {e}"))?;
    Ok(text)
}

async fn publish(args: PublishArgs) -> anyhow::Result<()> {
    let data: serde_json::Value = serde_json::from_str(&read_data(&args.data)?)?;
    let mut body = serde_json::json!({ "type": args.kind, "data": data });
    if let Some(id) = args.id {
        body["id"] = id.into();
    }
    if let Some(source) = args.source {
        body["source"] = source.into();
    }
    let path = if args.wait {
        "/v1/events?wait=true"
    } else {
        "/v1/events"
    };
    let answer = args
        .client
        .call(reqwest::Method::POST, path, Some(&body))
        .await?;
    println!("{}", answer["id"].as_str().unwrap_or_default());
    if let Some(failures) = answer["failures"].as_array().filter(|f| !f.is_empty()) {
        for f in failures {
            eprintln!(
                "subscriber {} failed ({}): {}",
                f["subscriber"].as_str().unwrap_or("?"),
                f["kind"].as_str().unwrap_or("?"),
                f["message"].as_str().unwrap_or("")
            );
        }
        bail!("{} subscriber(s) failed on the event", failures.len());
    }
    Ok(())
}

async fn tail(args: TailArgs) -> anyhow::Result<()> {
    let types = args.patterns.join(",");
    for p in &args.patterns {
        crate::event::TypePattern::parse(p)?;
    }
    let path = format!("/v1/events/stream?types={}", urlencode(&types));
    let response = args
        .client
        .request(&client()?, reqwest::Method::GET, &path)
        .send()
        .await
        .with_context(|| format!("cannot reach the daemon at {}", args.client.url))?;
    if !response.status().is_success() {
        check(response).await?;
        unreachable!("check fails on a non-success status");
    }
    if std::io::stderr().is_terminal() {
        eprintln!(
            "following {} (Ctrl-C to stop)",
            if types.is_empty() {
                "all events"
            } else {
                &types
            }
        );
    }
    let mut stdout = std::io::stdout().lock();
    let mut buffer = String::new();
    let mut kind = String::new();
    let mut body = response.bytes_stream();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.context("the event stream broke off")?;
        buffer.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buffer.find('\n') {
            let line: String = buffer.drain(..=end).collect();
            let line = line.trim_end_matches(['\r', '\n']);
            if let Some(k) = line.strip_prefix("event:") {
                kind = k.trim().to_string();
            } else if let Some(data) = line.strip_prefix("data:") {
                let data = data.trim();
                if kind == "lagged" {
                    eprintln!("warning: fell behind, skipped events: {data}");
                } else if args.json {
                    writeln!(stdout, "{data}")?;
                } else {
                    let v: serde_json::Value = serde_json::from_str(data).unwrap_or_default();
                    writeln!(
                        stdout,
                        "{}  {:<24} {}  {}",
                        v["time"].as_str().unwrap_or(""),
                        v["type"].as_str().unwrap_or(""),
                        v["id"].as_str().unwrap_or(""),
                        v["data"]
                    )?;
                }
                stdout.flush()?;
            } else if line.is_empty() {
                kind.clear();
            }
        }
    }
    Ok(())
}

/// Percent-encodes a query value (patterns only hold a few special characters).
pub(crate) fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
