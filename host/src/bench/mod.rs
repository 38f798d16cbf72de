//! `evhost bench`: measures, in one run on this machine, the figures the project
//! tracks in BENCHMARKS.md:
//!
//! - the bus: publish → dispatch with 1 and with 3 no-op subscribers, against a bare
//!   tokio channel moving an `Arc`'d event (the baseline, same capacity);
//! - HTTP ingest on loopback: single-event POSTs/s and batched events/s, client and
//!   daemon in this process, sharing the machine's cores;
//! - idle RSS of a freshly started `evhost serve`;
//! - the event log ([`log`]): events/s committed with group commit and in batches
//!   against one commit per event, and a restart's replay of undispatched events, on
//!   SQLite and (with a URL) PostgreSQL;
//! - webhooks ([`webhooks`]): deliveries/s (1 and 50 endpoints) and publish → receive
//!   latency at 5,000 events/s, against a bare loopback POST loop;
//! - plugins ([`plugins`]): bus throughput with one inline plugin against the bus
//!   without plugins, and how long a dropped-in file takes to serve.

mod http;
mod languages;
mod log;
mod plugins;
mod webhooks;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use serde_json::value::RawValue;
use tokio::sync::mpsc;

use crate::bus::{Bus, BusOptions, Handling, PublishError, Subscriber};
use crate::config::Config;
use crate::event::{Actor, Event, TypePattern};
use crate::metrics::Metrics;

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Events pushed through the bus in each bus measurement.
    #[arg(long, default_value_t = 2_000_000)]
    bus_events: u64,
    /// Bus workers (the daemon's default is 4).
    #[arg(long, default_value_t = 4)]
    workers: usize,
    /// Bus queue size for the bus measurements and the baseline channel.
    #[arg(long, default_value_t = 1000)]
    queue_size: usize,
    /// Seconds each HTTP measurement runs.
    #[arg(long, default_value_t = 3)]
    http_seconds: u64,
    /// Concurrent HTTP connections for single-event POSTs.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Events per batch request.
    #[arg(long, default_value_t = 500)]
    batch_size: usize,
    /// Skip the idle-RSS measurement (it starts a child daemon).
    #[arg(long)]
    skip_rss: bool,
    /// Measure only these parts (default: all).
    #[arg(long, value_delimiter = ',', value_enum)]
    only: Vec<Part>,
    /// Events appended in each batched log measurement.
    #[arg(long, default_value_t = 200_000)]
    log_events: u64,
    /// Events pushed through the bus in each plugin measurement.
    #[arg(long, default_value_t = 500_000)]
    plugin_events: u64,
    /// Where the built plugins are (cargo build --profile plugin --target wasm32-wasip2).
    #[arg(long, default_value = "target/wasm32-wasip2/plugin")]
    plugins_dir: std::path::PathBuf,
    /// The evhost sources, where the Python and JavaScript builds are (`languages`).
    #[arg(long, default_value = ".")]
    sources: std::path::PathBuf,
    /// PostgreSQL to measure the log and webhooks on as well (a scratch schema is made and dropped).
    #[arg(long, env = "EVHOST_BENCH_POSTGRES_URL")]
    postgres_url: Option<String>,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    Bus,
    Http,
    Log,
    Webhooks,
    Plugins,
    /// Plugins in Rust, Python and JavaScript: per-call cost, load time, memory.
    Languages,
    Rss,
}

impl BenchArgs {
    fn wants(&self, part: Part) -> bool {
        self.only.is_empty() || self.only.contains(&part)
    }
}

/// A `message.received` payload of about 330 bytes, validated strictly at ingest.
const PAYLOAD: &str = r#"{"message_id":"<20261127.1234@mx1.example.com>","from":"alice@example.org","to":["bob@example.com","carol@example.com"],"subject":"Quarterly report and the numbers for the board meeting","size":48213,"domain":"example.com","user":"bob@example.com","mailbox":"INBOX","spam_score":0.4,"is_spam":false}"#;

pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    println!(
        "evhost bench — {} core(s), {} runtime threads; release build: {}",
        cores,
        cores,
        !cfg!(debug_assertions)
    );
    println!();
    println!("| measurement | result | vs baseline |");
    println!("|---|---|---|");

    if args.wants(Part::Bus) {
        let baseline = rt.block_on(channel_baseline(args.bus_events, args.queue_size));
        row(
            "bare tokio channel, Arc'd event (baseline)",
            format!("{} events/s", thousands(baseline)),
            "1.00".into(),
        );
        for subscribers in [1usize, 3] {
            let rate = rt.block_on(bus_rate(&args, subscribers))?;
            row(
                &format!(
                    "bus publish → dispatch, {subscribers} no-op subscriber(s), {} workers",
                    args.workers
                ),
                format!("{} events/s", thousands(rate)),
                format!("{:.2}", rate / baseline),
            );
        }
    }
    if args.wants(Part::Http) {
        let mut backends = vec![None];
        if args.postgres_url.is_some() {
            backends.push(args.postgres_url.as_deref());
        }
        for backend in backends {
            let label = if backend.is_some() {
                "PostgreSQL"
            } else {
                "SQLite"
            };
            let rates = rt.block_on(http::rates(&args, backend))?;
            row(
                &format!(
                    "HTTP POST /v1/events, {} in flight, durable 202 ({label})",
                    args.concurrency
                ),
                format!("{} requests/s", thousands(rates.single)),
                "".into(),
            );
            row(
                &format!(
                    "HTTP POST /v1/events/batch, {} events/batch, durable 202 ({label})",
                    args.batch_size
                ),
                format!("{} events/s", thousands(rates.batched)),
                "".into(),
            );
            row(
                &format!("HTTP POST /v1/events at a steady 5,000/s: time to the 202 ({label})"),
                rates.paced,
                "".into(),
            );
        }
    }
    if args.wants(Part::Log) {
        rt.block_on(log::report(args.log_events, args.postgres_url.as_deref()))?;
    }
    if args.wants(Part::Webhooks) {
        rt.block_on(webhooks::report(
            args.postgres_url.as_deref(),
            args.http_seconds,
        ))?;
    }
    if args.wants(Part::Plugins) {
        rt.block_on(plugins::report(&args))?;
    }
    if args.wants(Part::Languages) {
        rt.block_on(languages::report(&args))?;
    }
    if args.wants(Part::Rss) && !args.skip_rss {
        let rss = idle_rss().context("idle RSS measurement")?;
        row(
            "idle RSS of `evhost serve`",
            format!("{:.1} MiB", rss as f64 / 1024.0),
            "".into(),
        );
    }
    Ok(())
}

fn row(what: &str, result: String, ratio: String) {
    println!("| {what} | {result} | {ratio} |");
}

/// CPU time (user and system) this process has used so far, from the process CPU
/// clock; zero where it cannot be read.
fn cpu_time() -> Duration {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_PROCESS_CPUTIME_ID)
        .map(Duration::from)
        .unwrap_or_default()
}

/// How busy this process kept the machine between two readings: "CPU 1.8 of 2
/// cores", so a figure says whether it was bound by the processor or by waiting.
struct CpuMeter {
    cpu: Duration,
    wall: Instant,
}

impl CpuMeter {
    fn start() -> CpuMeter {
        CpuMeter {
            cpu: cpu_time(),
            wall: Instant::now(),
        }
    }

    fn report(&self) -> String {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let busy = (cpu_time() - self.cpu).as_secs_f64() / self.wall.elapsed().as_secs_f64();
        format!("CPU {busy:.2} of {cores} cores")
    }
}

fn thousands(rate: f64) -> String {
    let n = rate.round() as u64;
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn template_event() -> Event {
    Event {
        id: "bench-event".into(),
        kind: "message.received".into(),
        time: chrono::Utc::now(),
        source: "/bench".into(),
        actor: Actor::default(),
        data: Arc::from(RawValue::from_string(PAYLOAD.into()).expect("valid JSON")),
        hops: 0,
    }
}

/// One producer task, one consumer task, a bounded channel of `Arc<Event>`.
async fn channel_baseline(events: u64, capacity: usize) -> f64 {
    let (tx, mut rx) = mpsc::channel::<Arc<Event>>(capacity);
    let event = Arc::new(template_event());
    let start = Instant::now();
    let consumer = tokio::spawn(async move {
        let mut seen = 0u64;
        while let Some(e) = rx.recv().await {
            drop(e);
            seen += 1;
        }
        seen
    });
    for _ in 0..events {
        tx.send(event.clone()).await.expect("consumer alive");
    }
    drop(tx);
    let seen = consumer.await.expect("consumer finished");
    seen as f64 / start.elapsed().as_secs_f64()
}

struct NoOp {
    id: String,
    seen: Arc<AtomicU64>,
}

impl Subscriber for NoOp {
    fn id(&self) -> &str {
        &self.id
    }
    fn handle<'a>(&'a self, _: &'a Arc<Event>) -> Handling<'a> {
        self.seen.fetch_add(1, Ordering::Relaxed);
        Handling::ok()
    }
}

/// Publishes as fast as the bus takes events (yielding when it pushes back) and
/// stops the clock when every subscriber has seen every event.
async fn bus_rate(args: &BenchArgs, subscribers: usize) -> anyhow::Result<f64> {
    bus_rate_with(args, subscribers, None, args.bus_events).await
}

/// [`bus_rate`] with a pipeline (the plugins) between acceptance and subscribers.
async fn bus_rate_with(
    args: &BenchArgs,
    subscribers: usize,
    pipeline: Option<Arc<dyn crate::bus::Pipeline>>,
    events: u64,
) -> anyhow::Result<f64> {
    let bus = Bus::start(
        BusOptions {
            workers: args.workers,
            queue_size: args.queue_size,
            handler_timeout: Duration::from_secs(5),
        },
        Metrics::new(1000),
    );
    if let Some(pipeline) = pipeline
        && bus.set_pipeline(pipeline).is_err()
    {
        bail!("the bus already had a pipeline");
    }
    let seen = Arc::new(AtomicU64::new(0));
    for n in 0..subscribers {
        bus.subscribe(
            vec![TypePattern::All],
            Arc::new(NoOp {
                id: format!("noop-{n}"),
                seen: seen.clone(),
            }),
        )?;
    }
    let template = template_event();
    let start = Instant::now();
    for _ in 0..events {
        loop {
            match bus.publish(template.clone()) {
                Ok(()) => break,
                Err(PublishError::QueueFull { .. }) => tokio::task::yield_now().await,
                Err(e) => bail!("bus refused an event: {e}"),
            }
        }
    }
    bus.shutdown().await;
    let elapsed = start.elapsed();
    let expected = events * subscribers as u64;
    if seen.load(Ordering::Relaxed) != expected {
        bail!(
            "subscribers saw {} of {expected} deliveries",
            seen.load(Ordering::Relaxed)
        );
    }
    Ok(events as f64 / elapsed.as_secs_f64())
}

/// Starts a daemon on a free loopback port and measures single and batched ingest.
/// A measurement's own state: a fresh data folder and, on PostgreSQL, a fresh schema
/// (dropped by [`Scratch::remove`]), so no measurement sees another's rows.
struct Scratch {
    dir: tempfile::TempDir,
    postgres: Option<(String, String)>,
}

impl Scratch {
    fn new(postgres: Option<&str>) -> anyhow::Result<Scratch> {
        Ok(Scratch {
            dir: tempfile::tempdir()?,
            postgres: postgres.map(|url| {
                let schema = format!("evhost_bench_{}", uuid::Uuid::new_v4().simple());
                (url.to_string(), schema)
            }),
        })
    }

    /// The settings that point a daemon or a store here.
    fn env(&self) -> Vec<(String, String)> {
        let mut env = vec![(
            "EVHOST_DATA_DIR".to_string(),
            self.dir.path().display().to_string(),
        )];
        if let Some((url, schema)) = &self.postgres {
            env.push(("EVHOST_DATABASE__URL".into(), url.clone()));
            env.push(("EVHOST_DATABASE__SCHEMA".into(), schema.clone()));
        }
        env
    }

    async fn remove(self) {
        if let Some((url, schema)) = self.postgres
            && let Ok(pool) = sqlx::PgPool::connect(&url).await
        {
            let sql = format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE");
            let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(sql)).execute(&pool).await;
            pool.close().await;
        }
    }
}

/// `evhost serve` running in this process on its own [`Scratch`], listening on a
/// free loopback port, with large queue and body limits and the given settings.
struct InProcess {
    addr: std::net::SocketAddr,
    stop: tokio_util::sync::CancellationToken,
    task: tokio::task::JoinHandle<Result<(), crate::daemon::ServeError>>,
    scratch: Scratch,
}

impl InProcess {
    async fn start(
        settings: &[(&str, String)],
        postgres: Option<&str>,
    ) -> anyhow::Result<InProcess> {
        let scratch = Scratch::new(postgres)?;
        let mut env = scratch.env();
        env.push(("EVHOST_SERVER__LISTEN".into(), "127.0.0.1:0".into()));
        env.push(("EVHOST_EVENTS__MAX_LAG".into(), "100000".into()));
        env.push((
            "EVHOST_SERVER__MAX_BODY_BYTES".into(),
            (16 << 20).to_string(),
        ));
        env.extend(settings.iter().map(|(k, v)| (k.to_string(), v.clone())));
        let config = Config::load_from(None, env)?;
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let stop = tokio_util::sync::CancellationToken::new();
        let task = tokio::spawn(crate::daemon::serve(
            config,
            stop.clone().cancelled_owned(),
            move |running| {
                let _ = ready_tx.send(running.addr);
            },
        ));
        let addr = ready_rx.await.context("the daemon did not start")?;
        Ok(InProcess {
            addr,
            stop,
            task,
            scratch,
        })
    }

    async fn stop(self) -> anyhow::Result<()> {
        self.stop.cancel();
        self.task.await??;
        self.scratch.remove().await;
        Ok(())
    }
}

/// Starts `evhost serve` as a child, waits until it answers, lets it settle, and
/// reads its resident set size (KiB) from /proc.
fn idle_rss() -> anyhow::Result<u64> {
    let exe = std::env::current_exe()?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let data_dir = tempdir_path("rss");
    let mut child = std::process::Command::new(exe)
        .arg("serve")
        .env("EVHOST_SERVER__LISTEN", format!("127.0.0.1:{port}"))
        .env("EVHOST_DATA_DIR", &data_dir)
        .env("RUST_LOG", "warn")
        .env_remove("EVHOST_CONFIG")
        .env_remove("EVHOST_API_TOKEN")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .context("cannot start evhost serve")?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            let _ = child.kill();
            bail!("evhost serve did not start listening within 10 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_secs(1));
    let status = std::fs::read_to_string(format!("/proc/{}/status", child.id()))?;
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .context("no VmRSS in /proc status")?;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )?;
    child.wait()?;
    let _ = std::fs::remove_dir_all(&data_dir);
    Ok(rss)
}

fn tempdir_path(what: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("evhost-bench-{what}-{}", std::process::id()))
}
