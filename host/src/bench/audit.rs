//! Audit log figures: sustained rows/s with batching against one transaction per
//! row (the baseline, same code path with a batch size of 1), the highest event rate
//! at which the writer's backlog stays flat, and what auditing costs the bus.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;

use super::{CpuMeter, Scratch, template_event, thousands};
use crate::audit::{Audit, AuditOptions};
use crate::bus::{Bus, BusOptions, Handling, PublishError, Subscriber};
use crate::config::Config;
use crate::event::{Event, TypePattern};
use crate::metrics::Metrics;
use crate::store::Store;

/// A database to measure on, removed afterwards.
struct BenchDb {
    name: &'static str,
    store: Store,
    scratch: Scratch,
}

async fn open(postgres: Option<&str>) -> anyhow::Result<BenchDb> {
    let scratch = Scratch::new(postgres)?;
    let env = scratch.env();
    let config = Config::load_from(None, env)?;
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

impl BenchDb {
    fn options(
        &self,
        batch_size: usize,
        max_backlog: usize,
        writers: Option<usize>,
    ) -> AuditOptions {
        let config = Config::load_from(
            None,
            [(
                "EVHOST_DATA_DIR".to_string(),
                self.scratch.dir.path().display().to_string(),
            )],
        )
        .expect("the default config loads");
        AuditOptions {
            batch_size,
            flush_interval: Duration::from_millis(if batch_size == 1 { 0 } else { 5 }),
            max_backlog,
            retention_days: 0,
            writers,
            ..AuditOptions::from_config(&config)
        }
    }

    /// An audit log, and the metrics it counts its held batches in.
    async fn audit(
        &self,
        chain: &str,
        batch_size: usize,
        max_backlog: usize,
        writers: Option<usize>,
    ) -> anyhow::Result<(Arc<Audit>, Arc<Metrics>)> {
        let metrics = Metrics::new(10);
        let audit = Audit::start(
            self.store.clone(),
            self.options(batch_size, max_backlog, writers),
            metrics.clone(),
            chain.to_string(),
        )
        .await?;
        Ok((audit, metrics))
    }

    /// On SQLite, copies what earlier runs left in the write-ahead logs into the
    /// database files before a run's clock starts, so that no run pays for the one
    /// before it. Without this, the checkpoint thread was still copying the previous
    /// audited run's rows during the first tens of milliseconds of the next burst
    /// (`perf`, session 13), which fell on the run with the audit in some pairs and on
    /// the one without in others: noise in both directions.
    async fn settle(&self) -> anyhow::Result<()> {
        if let Store::Sqlite(pool) = &self.store {
            sqlx::raw_sql(
                "PRAGMA main.wal_checkpoint(TRUNCATE); PRAGMA audit.wal_checkpoint(TRUNCATE);",
            )
            .execute(pool)
            .await
            .context("checkpoint between bench runs")?;
        }
        Ok(())
    }

    async fn close(self) {
        self.store.close().await;
        self.scratch.remove().await;
    }
}

fn unique_event(template: &Event, n: u64, run: &str) -> Arc<Event> {
    let mut event = template.clone();
    event.id = format!("{run}-{n}").into();
    Arc::new(event)
}

async fn feed(subscriber: &Arc<dyn Subscriber>, event: &Arc<Event>) {
    match subscriber.handle(event) {
        Handling::Done(result) => result.expect("audit accepts"),
        Handling::Later(future) => future.await.expect("audit accepts"),
    }
}

/// Rows per batch in the batched measurements: the daemon's default.
fn default_batch() -> usize {
    crate::config::AuditConfig::default().batch_size
}

fn postgres_backend(db: &BenchDb) -> bool {
    matches!(db.store, Store::Postgres(_))
}

/// Rows/s from the first row handed over until the last is committed, and how busy
/// that kept the machine (this process's share; on PostgreSQL the server's is not in
/// it) and how many batches the writers held (see `audit::busy`).
async fn writer_rate(
    db: &BenchDb,
    rows: u64,
    batch_size: usize,
    writers: Option<usize>,
) -> anyhow::Result<(f64, String)> {
    let run = format!("w{batch_size}-{}", uuid::Uuid::new_v4().simple());
    let (audit, metrics) = db.audit(&run, batch_size, 10_000, writers).await?;
    let subscriber = audit.subscriber();
    let template = template_event();
    let cpu = CpuMeter::start();
    let start = Instant::now();
    for n in 0..rows {
        feed(&subscriber, &unique_event(&template, n, &run)).await;
    }
    audit.shutdown().await;
    let rate = rows as f64 / start.elapsed().as_secs_f64();
    let held = metrics.audit.batches_held.get();
    Ok((rate, format!("{}; {held} batches held", cpu.report())))
}

/// The highest of `rates` (events/s) at which the backlog does not grow over `seconds`.
///
/// Flat: the backlog's lowest point in the last quarter of the run is no higher than
/// in the second quarter, give or take one batch per writer. A writer that keeps up
/// returns to the same floor after each batch, and after a stall; one that falls
/// behind raises it. Floors, not two instants: the backlog at a given moment swings
/// by up to a batch per writer, and PostgreSQL's writers stall now and then for
/// 200–400 ms (seen with and without the hold of session 9; not traced), so the
/// comparison of two instants used before session 9 read one build's PostgreSQL
/// figure as anything from 20,000 to 100,000 events/s.
async fn flat_rate(db: &BenchDb, rates: &[u64], seconds: u64) -> anyhow::Result<Option<u64>> {
    let batch = default_batch();
    let template = template_event();
    let writers = if postgres_backend(db) { 2 } else { 1 };
    let mut best = None;
    for &rate in rates {
        let run = format!("flat{rate}-{}", uuid::Uuid::new_v4().simple());
        let (audit, _) = db.audit(&run, batch, 1_000_000, Some(writers)).await?;
        let subscriber = audit.subscriber();
        let ticks = (seconds * 100) as usize;
        let per_tick = rate / 100;
        let mut tick = tokio::time::interval(Duration::from_millis(10));
        let mut n = 0;
        let mut backlog: Vec<usize> = Vec::with_capacity(ticks);
        for _ in 0..ticks {
            tick.tick().await;
            for _ in 0..per_tick {
                feed(&subscriber, &unique_event(&template, n, &run)).await;
                n += 1;
            }
            backlog.push(audit.backlog());
        }
        audit.shutdown().await;
        let floor = |quarter: usize| {
            backlog[quarter * ticks / 4..(quarter + 1) * ticks / 4]
                .iter()
                .copied()
                .min()
                .unwrap_or(0)
        };
        if floor(3) <= floor(1) + batch * writers {
            best = Some(rate);
        } else {
            break;
        }
    }
    Ok(best)
}

/// What the audit subscriber costs the bus during a burst its backlog absorbs: the
/// bus's events/s with and without it, in `BUS_COST_PAIRS` pairs of runs back to back.
/// Returns each pair's cost (`1 − with/without`), sorted, and the median rates.
///
/// Pairs, not two long runs: on a shared 2-vCPU VM one run's rate swings between
/// phases (the same run gave 0.65 to 1.8 M events/s), but the two runs of a pair
/// fall in the same phase, so their ratio holds still where the rates do not.
///
/// Also counts how often the process's threads waited in each run. A cost below
/// zero (the bus faster with the audit than without) comes largely from there:
/// without the audit, the bus's workers run out of events more often and the
/// runtime parks them, and the one publishing thread pays a system call to wake
/// them again. In one run of session 10, the run without the audit waited more in
/// 21 of 22 pairs, 1.6 to 15 times as often.
async fn bus_cost(
    db: &BenchDb,
    events: u64,
    fill: Fill,
    workers: usize,
) -> anyhow::Result<BusCost> {
    let mut costs = Vec::new();
    let mut without = Vec::new();
    let mut with = Vec::new();
    for pair in 0..BUS_COST_PAIRS {
        // Every other pair runs the other way round, so that what one run leaves
        // behind (memory to give back, pages to fault in again) does not always fall
        // on the same side.
        let (bare, audited) = if pair % 2 == 0 {
            let bare = bus_rate(db, events, workers, None).await?;
            (bare, bus_rate(db, events, workers, Some(fill)).await?)
        } else {
            let audited = bus_rate(db, events, workers, Some(fill)).await?;
            (bus_rate(db, events, workers, None).await?, audited)
        };
        costs.push(1.0 - audited.rate / bare.rate);
        without.push(bare);
        with.push(audited);
    }
    costs.sort_by(f64::total_cmp);
    Ok(BusCost {
        costs,
        without: Medians::of(&without),
        with: Medians::of(&with),
    })
}

/// Pairs per bus-cost row. A burst lasts about 0.1 s, and one pair's cost can read
/// anything from −40 to +40 % on this 2-vCPU VM (the middle half of 11 pairs was
/// often 30 to 40 points wide), so the median of 11 still moved by about ten points
/// between reports of the same build; 21 pairs narrow that by about a quarter.
const BUS_COST_PAIRS: usize = 21;

/// How full a burst leaves the audit's backlog in a bus-cost row.
#[derive(Clone, Copy)]
struct Fill {
    quarters: u64,
}

impl Fill {
    /// Half is the edge: a writer works at full priority from half its backlog on
    /// (see `audit::background`), so a quarter is a burst well inside what the
    /// backlog absorbs and three quarters one that takes the writers past the edge.
    const ALL: [Fill; 3] = [
        Fill { quarters: 2 },
        Fill { quarters: 1 },
        Fill { quarters: 3 },
    ];

    /// The backlog (all writers together) that a burst of `events` fills this far.
    fn backlog(self, events: u64) -> usize {
        (events * 4 / self.quarters) as usize
    }

    fn name(self) -> &'static str {
        match self.quarters {
            1 => "a quarter",
            2 => "half",
            _ => "three quarters",
        }
    }
}

struct BusCost {
    /// Each pair's cost, lowest first.
    costs: Vec<f64>,
    without: Medians,
    with: Medians,
}

/// The medians of a row's runs without or with the audit.
struct Medians {
    rate: f64,
    waits: f64,
    held: f64,
}

impl Medians {
    fn of(runs: &[Run]) -> Medians {
        Medians {
            rate: median(runs.iter().map(|run| run.rate).collect()),
            waits: median(runs.iter().map(|run| run.waits as f64).collect()),
            held: median(runs.iter().map(|run| run.held as f64).collect()),
        }
    }
}

impl BusCost {
    fn median(&self) -> f64 {
        self.costs[self.costs.len() / 2]
    }

    /// The middle half of the pairs' costs.
    fn quartiles(&self) -> (f64, f64) {
        let n = self.costs.len();
        (self.costs[n / 4], self.costs[(3 * n) / 4])
    }
}

fn median(mut rates: Vec<f64>) -> f64 {
    rates.sort_by(f64::total_cmp);
    rates[rates.len() / 2]
}

/// One run of [`bus_cost`]: events/s until the bus has handled `events`. The other
/// subscriber keeps every event until the clock stops, as the audit's backlog does,
/// so that both runs free the events after the clock (without it, the run with the
/// audit was the one that freed nothing on the clock, and came out faster).
async fn bus_rate(
    db: &BenchDb,
    events: u64,
    workers: usize,
    audit_filled: Option<Fill>,
) -> anyhow::Result<Run> {
    let bus = Bus::start(
        BusOptions {
            workers,
            queue_size: 1000,
            handler_timeout: Duration::from_secs(5),
        },
        Metrics::new(10),
    );
    let (keeper, kept) = Keeper::new();
    bus.subscribe(vec![TypePattern::All], Arc::new(keeper))?;
    let run = format!("cost-{}", uuid::Uuid::new_v4().simple());
    let audit = if let Some(fill) = audit_filled {
        let (audit, metrics) = db
            .audit(&run, default_batch(), fill.backlog(events), None)
            .await?;
        bus.subscribe(vec![TypePattern::All], audit.subscriber())?;
        Some((audit, metrics))
    } else {
        None
    };
    db.settle().await?;
    let template = template_event();
    let waits = super::waits();
    let start = Instant::now();
    for n in 0..events {
        let mut event = (*unique_event(&template, n, &run)).clone();
        loop {
            match bus.publish(event) {
                Ok(()) => break,
                Err(PublishError::QueueFull { .. }) => {
                    event = (*unique_event(&template, n, &run)).clone();
                    tokio::task::yield_now().await;
                }
                Err(e) => anyhow::bail!("bus refused an event: {e}"),
            }
        }
    }
    bus.shutdown().await;
    let rate = events as f64 / start.elapsed().as_secs_f64();
    let waits = super::waits() - waits;
    drop(bus);
    drop(kept);
    let mut held = 0;
    if let Some((audit, metrics)) = audit {
        audit.shutdown().await;
        held = metrics.audit.batches_held.get();
    }
    Ok(Run { rate, waits, held })
}

/// One run of [`bus_rate`].
struct Run {
    /// Events/s.
    rate: f64,
    /// How often the process's threads waited during the run (see [`super::waits`]).
    waits: u64,
    /// Batches the audit's writers held back while the bus was busy (none without
    /// the audit).
    held: u64,
}

/// Prints the audit rows of the report.
pub async fn report(rows: u64, workers: usize, postgres: Option<&str>) -> anyhow::Result<()> {
    let mut backends = vec![None];
    if postgres.is_some() {
        backends.push(postgres);
    }
    for backend in backends {
        let db = open(backend).await?;
        let (single, _) = writer_rate(&db, (rows / 40).clamp(500, 5000), 1, Some(1)).await?;
        super::row(
            &format!(
                "audit rows, {}: one transaction per row (baseline)",
                db.name
            ),
            format!("{} rows/s", thousands(single)),
            "1.00".into(),
        );
        // SQLite takes one writer at a time, so only PostgreSQL gets a second by default.
        let counts: &[usize] = if postgres_backend(&db) { &[1, 2] } else { &[1] };
        for &writers in counts {
            let (batched, cpu) = writer_rate(&db, rows, default_batch(), Some(writers)).await?;
            super::row(
                &format!(
                    "audit rows, {}: batched, {} rows/batch, {writers} writer{}",
                    db.name,
                    default_batch(),
                    if writers == 1 { "" } else { "s" }
                ),
                format!("{} rows/s ({cpu})", thousands(batched)),
                format!("{:.1}", batched / single),
            );
        }
        let rates = [10_000, 20_000, 30_000, 40_000, 50_000, 75_000, 100_000];
        let flat = flat_rate(&db, &rates, 3).await?;
        super::row(
            &format!(
                "audit backlog stays flat up to ({}; tried {:?}/s, 3 s each; flat: the backlog's floor in the last quarter within a batch per writer of the second's)",
                db.name, rates
            ),
            flat.map(|r| format!("{} events/s", thousands(r as f64)))
                .unwrap_or_else(|| "below the lowest rate".into()),
            "".into(),
        );
        let burst = rows.min(200_000);
        for fill in Fill::ALL {
            let cost = bus_cost(&db, burst, fill, workers).await?;
            let (low, high) = cost.quartiles();
            super::row(
                &format!(
                    "bus with 1 other subscriber, without → with the audit subscriber ({}; a burst of {} events that fills {} of the backlog; median of {BUS_COST_PAIRS} pairs of runs, middle half of the pairs' costs)",
                    db.name,
                    thousands(burst as f64),
                    fill.name(),
                ),
                format!(
                    "{} → {} events/s; threads waited {} → {} times a run; {} batches held a run",
                    thousands(cost.without.rate),
                    thousands(cost.with.rate),
                    thousands(cost.without.waits),
                    thousands(cost.with.waits),
                    thousands(cost.with.held),
                ),
                format!(
                    "cost {:.0} % ({:.0} to {:.0} %)",
                    cost.median() * 100.0,
                    low * 100.0,
                    high * 100.0
                ),
            );
        }
        db.close().await;
    }
    Ok(())
}

/// A no-op subscriber that keeps every event it sees until its channel's receiver
/// is dropped. A channel, not a locked `Vec`: under a lock the workers collided so
/// often that a second subscriber between them made the bus faster.
struct Keeper {
    kept: std::sync::mpsc::Sender<Arc<Event>>,
}

impl Keeper {
    fn new() -> (Keeper, std::sync::mpsc::Receiver<Arc<Event>>) {
        let (kept, receiver) = std::sync::mpsc::channel();
        (Keeper { kept }, receiver)
    }
}

impl Subscriber for Keeper {
    fn id(&self) -> &str {
        "keeper"
    }

    fn handle<'a>(&'a self, event: &'a Arc<Event>) -> Handling<'a> {
        // The receiver lives until the run is over.
        let _ = self.kept.send(event.clone());
        Handling::ok()
    }
}
