//! Event log figures: events/s appended and committed durably with group commit
//! (single events from many appenders, and batches), against one appender at a
//! time (one commit per event, the baseline); and how long a restart takes to
//! dispatch events that were committed but never dispatched.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;

use super::{CpuMeter, Scratch, template_event, thousands};
use crate::audit::{Audit, AuditOptions};
use crate::bus::{Bus, BusOptions, Handling, Subscriber};
use crate::config::Config;
use crate::event::{Event, TypePattern, new_event_id};
use crate::eventlog::{Appended, event_bytes};
use crate::metrics::Metrics;
use crate::store::Store;

/// A database to measure on, removed afterwards.
struct BenchDb {
    name: &'static str,
    store: Store,
    scratch: Scratch,
}

impl BenchDb {
    async fn open(postgres: Option<&str>) -> anyhow::Result<BenchDb> {
        let scratch = Scratch::new(postgres)?;
        let config = Config::load_from(None, scratch.env())?;
        let store = Store::connect(&config).await.context("bench database")?;
        store.migrate().await?;
        Ok(BenchDb {
            name: if postgres.is_some() {
                "PostgreSQL"
            } else {
                "SQLite"
            },
            store,
            scratch,
        })
    }

    /// A log with the daemon's defaults, writing to this database.
    async fn log(&self, dispatch: Option<Bus>) -> anyhow::Result<Arc<Audit>> {
        let config = Config::load_from(None, self.scratch.env())?;
        let options = AuditOptions {
            retention_days: 0,
            max_lag: 10_000_000,
            max_lag_bytes: 64 << 30,
            ..AuditOptions::from_config(&config)
        };
        let dispatch = dispatch.map(|bus| Arc::new(bus) as Arc<dyn crate::eventlog::Dispatch>);
        Ok(Audit::start(
            self.store.clone(),
            options,
            Metrics::new(10),
            "bench".into(),
            dispatch,
        )
        .await?)
    }

    async fn remove(self) {
        self.store.close().await;
        self.scratch.remove().await;
    }
}

fn fresh_event() -> Arc<Event> {
    let mut event = template_event();
    event.id = new_event_id();
    Arc::new(event)
}

/// `appenders` tasks append `per_append` events at a time until `events` are in;
/// returns events/s. No dispatcher: what they append stays for a next start.
async fn append_rate(
    log: &Arc<Audit>,
    events: u64,
    appenders: usize,
    per_append: usize,
) -> anyhow::Result<f64> {
    let left = Arc::new(AtomicU64::new(events));
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(appenders);
    for _ in 0..appenders {
        let (log, left) = (log.clone(), left.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let take = per_append as u64;
                let claimed = left.fetch_update(Ordering::AcqRel, Ordering::Acquire, |l| {
                    (l > 0).then(|| l.saturating_sub(take))
                });
                let Ok(before) = claimed else {
                    return Ok::<(), anyhow::Error>(());
                };
                let n = take.min(before) as usize;
                let batch: Vec<Arc<Event>> = (0..n).map(|_| fresh_event()).collect();
                let bytes = batch.iter().map(|e| event_bytes(e)).sum();
                let admission = log.tracker().admit_over(n as u64, bytes);
                let appended = log.append(batch, admission, None).await?;
                for a in appended {
                    if let Appended::Fresh(ticket) = a {
                        ticket.abandon();
                    }
                }
            }
        }));
    }
    for task in tasks {
        task.await??;
    }
    Ok(events as f64 / started.elapsed().as_secs_f64())
}

/// Counts what the dispatcher hands it.
struct Seen(Arc<AtomicU64>);

impl Subscriber for Seen {
    fn id(&self) -> &str {
        "seen"
    }

    fn handle<'a>(&'a self, _: &'a Arc<Event>) -> Handling<'a> {
        self.0.fetch_add(1, Ordering::Relaxed);
        Handling::ok()
    }
}

/// Commits `events` with no dispatcher (as if the daemon died before dispatching
/// them), then starts the log again with one and measures until every one of them
/// has been dispatched and the stored position has passed them.
async fn replay_time(db: &BenchDb, events: u64) -> anyhow::Result<Duration> {
    let log = db.log(None).await?;
    append_rate(&log, events, 4, 500).await?;
    log.shutdown().await;
    let seen = Arc::new(AtomicU64::new(0));
    let bus = Bus::start(
        BusOptions {
            workers: 4,
            queue_size: 100_000,
            handler_timeout: Duration::from_secs(5),
        },
        Metrics::new(10),
    );
    bus.subscribe(vec![TypePattern::All], Arc::new(Seen(seen.clone())))
        .expect("one subscriber");
    let started = Instant::now();
    let log = db.log(Some(bus.clone())).await?;
    log.replay(Arc::new(bus.clone()));
    let deadline = started + Duration::from_secs(120);
    loop {
        let heads = log.tracker().heads();
        if seen.load(Ordering::Relaxed) >= events && heads.iter().all(|(_, head, at)| at >= head) {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the replay did not finish in 120 s"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let took = started.elapsed();
    bus.shutdown().await;
    log.shutdown().await;
    Ok(took)
}

/// Prints the log's rows for SQLite and, with a URL, PostgreSQL.
pub async fn report(events: u64, postgres: Option<&str>) -> anyhow::Result<()> {
    let mut backends = vec![None];
    if postgres.is_some() {
        backends.push(postgres);
    }
    for backend in backends {
        let db = BenchDb::open(backend).await?;
        let name = db.name;
        let log = db.log(None).await?;
        let baseline_events = (events / 50).clamp(200, 5_000);
        let baseline = append_rate(&log, baseline_events, 1, 1).await?;
        super::row(
            &format!("log ({name}): one event per commit, 1 appender (baseline)"),
            format!("{} events/s", thousands(baseline)),
            "1.00".into(),
        );
        let cpu = CpuMeter::start();
        let grouped = append_rate(&log, events / 4, 64, 1).await?;
        super::row(
            &format!("log ({name}): single events, 64 appenders, group commit"),
            format!("{} events/s; {}", thousands(grouped), cpu.report()),
            format!("{:.1}", grouped / baseline),
        );
        let cpu = CpuMeter::start();
        let batched = append_rate(&log, events, 4, 500).await?;
        super::row(
            &format!("log ({name}): batches of 500, 4 appenders"),
            format!("{} events/s; {}", thousands(batched), cpu.report()),
            format!("{:.1}", batched / baseline),
        );
        log.shutdown().await;
        db.remove().await;

        let db = BenchDb::open(backend).await?;
        let replay = replay_time(&db, 100_000).await?;
        super::row(
            &format!(
                "log ({name}): restart with 100,000 committed, undispatched events → all dispatched"
            ),
            format!("{:.2} s", replay.as_secs_f64()),
            "".into(),
        );
        db.remove().await;
    }
    Ok(())
}
