//! The tamper-evident audit log.
//!
//! Every accepted event (through the bus subscriber [`Audit::subscriber`]) and every
//! management action ([`Audit::record_action`]) becomes one row, written in batches
//! by a single writer task per daemon. The writer never drops a row: on a database
//! error it retries with backoff while its bounded backlog fills, and a full backlog
//! holds the bus, which pushes back on publishers. Rows form a hash chain per writer
//! ([`record`]), signed checkpoints pin the chain heads ([`checkpoint`]), retention
//! purges the oldest rows without breaking verification ([`verify`]).

mod background;
mod busy;
pub mod checkpoint;
mod db;
pub mod record;
pub mod verify;

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ed25519_dalek::SigningKey;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use db::{Filter, count, query, recent_event_ids};
pub use record::{Entry, Record};
pub use verify::{Break, Report, verify};

use crate::bus::{Handling, Subscriber, recv_batch};
use crate::event::{Event, new_event_id};
use crate::metrics::Metrics;
use crate::store::{Durability, Store};

/// Why the audit log could not start.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("audit chain id file {path}")]
    ChainId {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Checkpoint(#[from] checkpoint::CheckpointError),
    #[error("reading the audit chain head")]
    Db(#[from] sqlx::Error),
    #[error("opening the audit writer's database connection")]
    Writer(#[from] db::WriteError),
    #[error("starting the audit writer's placing thread")]
    Thread(#[source] std::io::Error),
}

/// Audit settings (from `audit.*`).
#[derive(Debug, Clone)]
pub struct AuditOptions {
    pub batch_size: usize,
    pub flush_interval: Duration,
    pub max_backlog: usize,
    pub checkpoint_interval: Duration,
    pub checkpoint_file: PathBuf,
    pub checkpoint_key: PathBuf,
    pub retention_days: u32,
    pub purge_interval: Duration,
    pub refusals_per_minute: u32,
    /// Writers (chains); `None`: 1 on SQLite, 2 on PostgreSQL.
    pub writers: Option<usize>,
    /// Steps below the daemon's CPU priority for placing and hashing (`audit.nice`);
    /// 0 also turns off holding batches while the daemon is busy.
    pub nice: u8,
}

impl AuditOptions {
    /// The options `audit.*` (and `data_dir`) give.
    pub fn from_config(config: &crate::config::Config) -> AuditOptions {
        AuditOptions {
            batch_size: config.audit.batch_size,
            flush_interval: config.audit.flush_interval,
            max_backlog: config.audit.max_backlog,
            checkpoint_interval: config.audit.checkpoint_interval,
            checkpoint_file: config.checkpoint_file(),
            checkpoint_key: config.checkpoint_key(),
            retention_days: config.audit.retention_days,
            purge_interval: config.audit.purge_interval,
            refusals_per_minute: config.audit.refusals_per_minute,
            writers: config.audit.writers,
            nice: config.audit.nice,
        }
    }
}

/// What waits in a writer's backlog. Kept to two words: the backlog holds up to
/// `audit.max_backlog` of them and every accepted event writes one, so the rarer,
/// larger kinds are boxed (an unboxed `Entry` made each slot 240 bytes).
enum Item {
    Event(Arc<Event>),
    /// An accepted event plugins dropped or replaced: recorded with what they did.
    Decided(Box<(Arc<Event>, crate::bus::Verdict)>),
    Action(Box<Entry>),
}

impl Item {
    /// The row's contents: reads the resource out of the payload, so it is CPU work
    /// for the placing thread, not the bus.
    fn into_entry(self) -> Entry {
        match self {
            Item::Event(event) => Entry::of_event(&event),
            Item::Decided(decided) => Entry::of_decided_event(&decided.0, &decided.1),
            Item::Action(entry) => *entry,
        }
    }
}

/// A running audit log. Dropping it does not flush; call [`Audit::shutdown`].
pub struct Audit {
    lanes: Arc<Lanes>,
    capacity: usize,
    /// One flag per writer.
    healthy: Vec<Arc<AtomicBool>>,
    last_write_ms: Arc<AtomicI64>,
    stop: CancellationToken,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    limiter: RefusalLimiter,
    metrics: Arc<Metrics>,
    chain: String,
}

impl Audit {
    /// Starts the writers (and retention) for this daemon's chain. With several
    /// writers (`audit.writers`), the first keeps `chain` and writer `k` the chain
    /// `<chain>.<k>`; each has its own database connection and backlog, and events
    /// are handed to them in turn.
    pub async fn start(
        store: Store,
        options: AuditOptions,
        metrics: Arc<Metrics>,
        chain: String,
    ) -> Result<Arc<Audit>, AuditError> {
        let key = checkpoint::load_or_create_key(&options.checkpoint_key)?;
        let writers = options.writers.unwrap_or(match store {
            Store::Sqlite(_) => 1,
            Store::Postgres(_) => 2,
        });
        let per_writer = options.max_backlog.div_ceil(writers);
        let stop = CancellationToken::new();
        let last_write_ms = Arc::new(AtomicI64::new(0));
        let mut senders = Vec::with_capacity(writers);
        let mut healthy = Vec::with_capacity(writers);
        let mut tasks = Vec::with_capacity(writers + 1);
        let own_cpu = busy::OwnCpu::default();
        for k in 0..writers {
            let chain = if k == 0 {
                chain.clone()
            } else {
                format!("{chain}.{k}")
            };
            let head = db::chain_head(&store, &chain).await?;
            let (tx, rx) = mpsc::channel(per_writer);
            let ok = Arc::new(AtomicBool::new(true));
            let writer = Writer {
                store: store.clone(),
                inserter: db::Inserter::open(&store)?,
                placing: background::LowPriority::start(
                    "evhost-audit",
                    options.nice,
                    own_cpu.clone(),
                )
                .map_err(AuditError::Thread)?,
                inserting: match store {
                    Store::Sqlite(_) => Some(
                        background::LowPriority::start(
                            "evhost-audit-ins",
                            options.nice,
                            own_cpu.clone(),
                        )
                        .map_err(AuditError::Thread)?,
                    ),
                    Store::Postgres(_) => None,
                },
                hold: if options.nice > 0 {
                    busy::Hold::new(own_cpu.clone())
                } else {
                    None
                },
                low_water: per_writer / 2,
                chain,
                head,
                syncing: None,
                rx,
                backlog_shown: 0,
                options: options.clone(),
                metrics: metrics.clone(),
                healthy: ok.clone(),
                last_write_ms: last_write_ms.clone(),
                key: key.clone(),
                checkpointed: head.0,
                last_checkpoint: None,
            };
            tracing::info!(chain = %writer.chain, head = head.0, "audit writer ready");
            tasks.push(tokio::spawn(writer.run(stop.clone())));
            senders.push(tx);
            healthy.push(ok);
        }
        let capacity = per_writer * writers;
        metrics.audit.backlog_capacity.set(capacity as i64);
        if options.retention_days > 0 {
            tasks.push(tokio::spawn(retention(
                store,
                options.clone(),
                metrics.clone(),
                stop.clone(),
            )));
        }
        Ok(Arc::new(Audit {
            lanes: Arc::new(Lanes {
                senders,
                next: AtomicUsize::new(0),
            }),
            capacity,
            healthy,
            last_write_ms,
            stop,
            tasks: Mutex::new(tasks),
            limiter: RefusalLimiter::new(options.refusals_per_minute),
            metrics,
            chain,
        }))
    }

    /// The bus subscriber that records every event.
    pub fn subscriber(self: &Arc<Self>) -> Arc<dyn Subscriber> {
        Arc::new(AuditSubscriber {
            lanes: self.lanes.clone(),
        })
    }

    /// This daemon's chain.
    pub fn chain(&self) -> &str {
        &self.chain
    }

    /// Records a management action; waits for room in the backlog.
    pub async fn record_action(&self, entry: Entry) {
        if self
            .lanes
            .next()
            .send(Item::Action(Box::new(entry)))
            .await
            .is_err()
        {
            tracing::error!("audit writer has stopped; a management action was not recorded");
        }
    }

    /// Records a refused authentication, at most `audit.refusals_per_minute` per
    /// client address, so a flood cannot swamp the log.
    pub fn record_refusal(
        &self,
        ip: Option<IpAddr>,
        method: &str,
        path: &str,
        status: u16,
        code: &str,
    ) {
        if !self.limiter.allow(ip) {
            self.metrics.audit.refusals_suppressed.inc();
            return;
        }
        let now = chrono::Utc::now();
        let entry = Entry {
            event_id: new_event_id().to_string(),
            event_type: "auth.refused".into(),
            actor: None,
            actor_token: None,
            actor_ip: ip.map(|ip| ip.to_string()),
            resource_type: Some("api".into()),
            resource_id: Some(path.chars().take(256).collect()),
            details: serde_json::json!({ "method": method, "path": path, "status": status, "code": code }).to_string(),
            time_us: now.timestamp_micros(),
        };
        if self
            .lanes
            .next()
            .try_send(Item::Action(Box::new(entry)))
            .is_err()
        {
            self.metrics.audit.refusals_suppressed.inc();
        }
    }

    /// Rows waiting to be written.
    pub fn backlog(&self) -> usize {
        let free: usize = self.lanes.senders.iter().map(|tx| tx.capacity()).sum();
        self.capacity - free
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// False while a writer is failing to write (and retrying).
    pub fn is_healthy(&self) -> bool {
        self.healthy.iter().all(|ok| ok.load(Ordering::Relaxed))
    }

    /// Milliseconds the last batch took to write.
    pub fn last_write_ms(&self) -> i64 {
        self.last_write_ms.load(Ordering::Relaxed)
    }

    /// Writes everything queued, signs a last checkpoint and stops. Call after the
    /// bus has drained.
    pub async fn shutdown(&self) {
        self.stop.cancel();
        let tasks = std::mem::take(&mut *self.tasks.lock().expect("not poisoned"));
        for task in tasks {
            if let Err(e) = task.await {
                tracing::error!(error = %e, "audit task ended abnormally");
            }
        }
    }
}

/// The writers' queues, used in turn.
struct Lanes {
    senders: Vec<mpsc::Sender<Item>>,
    next: AtomicUsize,
}

impl Lanes {
    fn next(&self) -> &mpsc::Sender<Item> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        &self.senders[n % self.senders.len()]
    }
}

struct AuditSubscriber {
    lanes: Arc<Lanes>,
}

impl Subscriber for AuditSubscriber {
    fn id(&self) -> &str {
        "audit"
    }

    fn handle<'a>(&'a self, event: &'a Arc<Event>) -> Handling<'a> {
        Handling::hand_off(
            self.lanes.next(),
            Item::Event(event.clone()),
            "the audit writer",
        )
    }

    fn records_accepted(&self) -> bool {
        true
    }

    fn handle_decided<'a>(
        &'a self,
        event: &'a Arc<Event>,
        verdict: &'a crate::bus::Verdict,
    ) -> Handling<'a> {
        let item = Item::Decided(Box::new((event.clone(), verdict.clone())));
        Handling::hand_off(self.lanes.next(), item, "the audit writer")
    }

    fn time_limit(&self, _default: Duration) -> Option<Duration> {
        None
    }
}

struct Writer {
    store: Store,
    inserter: db::Inserter,
    /// Where placing, and on SQLite inserting, run while the backlog is below
    /// `low_water`.
    placing: background::LowPriority,
    inserting: Option<background::LowPriority>,
    /// Holds a batch back while the rest of the daemon is busy and the backlog is
    /// below `low_water` (see `busy`).
    hold: Option<busy::Hold>,
    low_water: usize,
    chain: String,
    /// The last row committed: where the next batch goes.
    head: (i64, [u8; 32]),
    /// On SQLite, a batch committed at full priority whose fsync is still running
    /// (see `Writer::settle`).
    syncing: Option<Syncing>,
    rx: mpsc::Receiver<Item>,
    /// This writer's share of the backlog gauge (the writers add up).
    backlog_shown: i64,
    options: AuditOptions,
    metrics: Arc<Metrics>,
    healthy: Arc<AtomicBool>,
    last_write_ms: Arc<AtomicI64>,
    key: SigningKey,
    checkpointed: i64,
    /// None until the first checkpoint, which follows the first write, so the file
    /// exists soon after start.
    last_checkpoint: Option<Instant>,
}

/// Turns backlog items into rows placed after `after`: reading each payload's
/// resource and hashing, the CPU part of a write.
fn place_items(chain: &str, after: db::Head, items: Vec<Item>, recorded_us: i64) -> db::Placed {
    let entries = items.into_iter().map(Item::into_entry).collect();
    db::place(chain, after, entries, recorded_us, &HashSet::new())
}

/// A batch being inserted by its own task while the writer places the next one.
struct InFlight {
    placed: Arc<db::Placed>,
    /// Placed and inserted at the lower priority.
    background: bool,
    /// Committed without an fsync (SQLite at full priority): `settle` starts one.
    unsynced: bool,
    task: JoinHandle<(Result<(), db::WriteError>, Duration)>,
}

/// A committed batch whose fsync runs while the next batch is inserted; its rows
/// count as written (and a checkpoint may sign them) once the fsync returns.
struct Syncing {
    placed: Arc<db::Placed>,
    /// From the insert's start to its commit.
    took: Duration,
    /// The fsync, and how long it took.
    task: JoinHandle<(std::io::Result<()>, Duration)>,
}

impl Writer {
    async fn run(mut self, stop: CancellationToken) {
        let mut items = Vec::with_capacity(self.options.batch_size);
        let mut in_flight: Option<InFlight> = None;
        loop {
            self.show_backlog(self.rx.len());
            // With nothing queued there is nothing to overlap the insert with: finish
            // it, so its rows count and the checkpoint follows, before waiting.
            if self.rx.is_empty()
                && let Some(batch) = in_flight.take()
            {
                self.settle(batch).await;
                self.finish_sync().await;
                self.checkpoint_if_due();
            }
            // Below half its backlog the writer is absorbing a burst, or keeping up:
            // its work can wait for spare CPU. Above, or when stopping, it works at
            // the daemon's priority.
            let background = !stop.is_cancelled() && self.rx.len() < self.low_water;
            let limit = if background && self.inserting.is_some() {
                self.options.batch_size.min(background::BATCH_ON_SQLITE)
            } else {
                self.options.batch_size
            };
            if !recv_batch(&mut self.rx, &mut items, limit, &stop).await {
                break;
            }
            if !stop.is_cancelled() {
                // Let a batch fill for a moment under moderate load.
                let deadline = tokio::time::Instant::now() + self.options.flush_interval;
                while items.len() < limit {
                    let room = limit - items.len();
                    tokio::select! {
                        n = self.rx.recv_many(&mut items, room) => { if n == 0 { break; } }
                        () = tokio::time::sleep_until(deadline) => break,
                        () = stop.cancelled() => break,
                    }
                }
            }
            // Place the batch after the one in flight, assuming it goes in as placed;
            // if it does not (a duplicate was left out, or it failed and was retried),
            // place it again after the head that was written.
            let after = in_flight
                .as_ref()
                .map_or(self.head, |batch| batch.placed.head);
            let recorded_us = chrono::Utc::now().timestamp_micros();
            let batch = std::mem::replace(&mut items, Vec::with_capacity(self.options.batch_size));
            let mut placed = if background {
                let chain = self.chain.clone();
                self.placing
                    .run(move || place_items(&chain, after, batch, recorded_us))
                    .await
                    .expect("the audit placing thread answers every batch")
            } else {
                // Not on the runtime's worker: placing 1,000 rows takes milliseconds,
                // and a worker held that long held up the bus. (With PostgreSQL's
                // holds, a burst that filled half the backlog ended with the writer
                // placing inline, and that alone cost the bus 41–43 % in the bench.)
                let chain = self.chain.clone();
                tokio::task::spawn_blocking(move || place_items(&chain, after, batch, recorded_us))
                    .await
                    .expect("placing a batch does not panic")
            };
            if let Some(batch) = in_flight.take() {
                self.settle(batch).await;
            }
            if placed.after != self.head {
                placed = db::place(
                    &self.chain,
                    self.head,
                    placed.entries(),
                    recorded_us,
                    &HashSet::new(),
                );
            }
            if background && let Some(hold) = &mut self.hold {
                let low_water = self.low_water;
                let release = || stop.is_cancelled() || self.rx.len() >= low_water;
                let held = hold.while_busy(release).await;
                if held != busy::Held::Not {
                    self.metrics.audit.batches_held.inc();
                }
                if held == busy::Held::ToTheLimit {
                    self.metrics.audit.holds_to_the_limit.inc();
                }
            }
            in_flight = Some(self.start_insert(placed, background));
            self.checkpoint_if_due();
        }
        if let Some(batch) = in_flight.take() {
            self.settle(batch).await;
        }
        self.finish_sync().await;
        self.checkpoint();
        self.show_backlog(0);
        tracing::info!(chain = %self.chain, head = self.head.0, "audit writer stopped; every row written");
    }

    fn show_backlog(&mut self, rows: usize) {
        let rows = rows as i64;
        self.metrics.audit.backlog.inc_by(rows - self.backlog_shown);
        self.backlog_shown = rows;
    }

    /// Starts inserting a placed batch: at the lower priority on SQLite when
    /// `background`, else on a task of the runtime (which, on SQLite, hands it to a
    /// blocking thread).
    fn start_insert(&self, placed: db::Placed, background: bool) -> InFlight {
        let placed = Arc::new(placed);
        let (chain, batch) = (self.chain.clone(), placed.clone());
        // At full priority SQLite commits without the fsync, which `settle` then
        // runs beside the next batch.
        let durability = match self.inserter {
            db::Inserter::Sqlite(_) => Durability::Crash,
            db::Inserter::Postgres(_) => Durability::PowerCut,
        };
        let (task, low_priority) = match (&self.inserting, self.inserter.sqlite()) {
            (Some(thread), Some(writer)) if background => {
                let writer = writer.clone();
                let answer = thread.run(move || {
                    let started = Instant::now();
                    let result = db::insert_sqlite_here(&writer, &chain, &batch);
                    (result, started.elapsed())
                });
                let task = tokio::spawn(async move {
                    answer.await.unwrap_or_else(|_| {
                        let gone =
                            db::WriteError::Task("the audit inserting thread stopped".into());
                        (Err(gone), Duration::ZERO)
                    })
                });
                (task, true)
            }
            _ => {
                let inserter = self.inserter.clone();
                let task = tokio::spawn(async move {
                    let started = Instant::now();
                    let result = inserter.insert(&chain, batch, durability).await;
                    (result, started.elapsed())
                });
                (task, false)
            }
        };
        InFlight {
            placed,
            background: low_priority,
            unsynced: !low_priority && durability == Durability::Crash,
            task,
        }
    }

    /// Waits for the batch in flight; if its insert failed, writes it again until it
    /// is in.
    ///
    /// A batch committed without an fsync gets one here, which runs while the next
    /// batch is inserted (one fsync at a time: the one before is finished first).
    async fn settle(&mut self, batch: InFlight) {
        self.finish_sync().await;
        let first = match batch.task.await {
            Ok((Ok(()), took)) if batch.unsynced => {
                self.head = batch.placed.head;
                self.syncing = Some(Syncing {
                    placed: batch.placed,
                    took,
                    task: self.start_sync(),
                });
                return;
            }
            Ok((Ok(()), took)) => {
                self.written(batch.placed.head, batch.placed.len(), took);
                if batch.background {
                    let rows = batch.placed.len() as u64;
                    self.metrics.audit.rows_written_low_priority.inc_by(rows);
                }
                return;
            }
            Ok((Err(error), _)) => error,
            Err(panic) => db::WriteError::Task(panic.to_string()),
        };
        let duplicate = first.is_duplicate();
        if !duplicate {
            self.failed(&first, batch.placed.len());
        }
        self.write(batch.placed.entries(), duplicate).await;
    }

    /// Waits for the fsync of the batch committed last, if one runs, and then counts
    /// its rows as written. A failed fsync is tried again until one succeeds: the
    /// rows are in the database, and only the fsync can make them durable.
    async fn finish_sync(&mut self) {
        let Some(mut syncing) = self.syncing.take() else {
            return;
        };
        let mut backoff = Duration::from_millis(100);
        let synced = loop {
            let error = match (&mut syncing.task).await {
                Ok((Ok(()), took)) => break took,
                Ok((Err(error), _)) => {
                    db::WriteError::Task(format!("fsync of the audit WAL: {error}"))
                }
                Err(panic) => db::WriteError::Task(panic.to_string()),
            };
            self.failed(&error, syncing.placed.len());
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(5));
            syncing.task = self.start_sync();
        };
        self.written(
            syncing.placed.head,
            syncing.placed.len(),
            syncing.took + synced,
        );
    }

    /// An fsync of the SQLite writer's WAL on a task of its own.
    fn start_sync(&self) -> JoinHandle<(std::io::Result<()>, Duration)> {
        let writer = self
            .inserter
            .sqlite()
            .expect("only SQLite commits without an fsync")
            .clone();
        tokio::spawn(async move {
            let started = Instant::now();
            (writer.sync_wal().await, started.elapsed())
        })
    }

    fn written(&mut self, head: db::Head, rows: usize, took: Duration) {
        self.head = head;
        self.metrics.audit.rows_written.inc_by(rows as u64);
        self.metrics.audit.write_seconds.observe(took.as_secs_f64());
        self.last_write_ms
            .store(took.as_millis() as i64, Ordering::Relaxed);
        if !self.healthy.swap(true, Ordering::Relaxed) {
            tracing::info!("audit writes succeed again");
        }
    }

    fn failed(&mut self, error: &db::WriteError, rows: usize) {
        self.metrics.audit.write_errors.inc();
        if self.healthy.swap(false, Ordering::Relaxed) {
            tracing::error!(%error, rows, "audit write failed; retrying with backoff, nothing is dropped");
        }
    }

    /// Writes one batch after the current head, retrying until it is in.
    async fn write(&mut self, entries: Vec<Entry>, mut known_duplicate: bool) {
        let mut backoff = Duration::from_millis(100);
        loop {
            let started = Instant::now();
            let recorded_us = chrono::Utc::now().timestamp_micros();
            let result = db::append(
                &self.store,
                &self.inserter,
                &self.chain,
                self.head,
                entries.clone(),
                recorded_us,
                known_duplicate,
            )
            .await;
            match result {
                Ok(placed) => {
                    self.written(placed.head, placed.len(), started.elapsed());
                    return;
                }
                Err(error) => {
                    self.failed(&error, entries.len());
                    known_duplicate = false;
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    fn checkpoint_if_due(&mut self) {
        if self
            .last_checkpoint
            .is_none_or(|at| at.elapsed() >= self.options.checkpoint_interval)
        {
            self.checkpoint();
        }
    }

    /// Signs the chain head into the checkpoint file, if it moved.
    /// Only rows that survive a power cut are signed: not a batch whose fsync runs.
    fn checkpoint(&mut self) {
        self.last_checkpoint = Some(Instant::now());
        let head = self
            .syncing
            .as_ref()
            .map_or(self.head, |syncing| syncing.placed.after);
        if head.0 == self.checkpointed {
            return;
        }
        let cp = checkpoint::Checkpoint::sign(&self.key, &self.chain, head.0, &hex::encode(head.1));
        match checkpoint::append(&self.options.checkpoint_file, &cp) {
            Ok(()) => self.checkpointed = head.0,
            Err(error) => {
                tracing::error!(error = %crate::error_chain(&error), "cannot write the audit checkpoint")
            }
        }
    }
}

/// Purges rows older than the retention period, in bounded batches, on a schedule.
async fn retention(
    store: Store,
    options: AuditOptions,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(options.purge_interval);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = stop.cancelled() => return,
        }
        match purge(&store, options.retention_days, &stop).await {
            Ok(0) => {}
            Ok(n) => {
                metrics.audit.rows_purged.inc_by(n);
                tracing::info!(
                    rows = n,
                    days = options.retention_days,
                    "purged audit rows past retention"
                );
            }
            Err(error) => tracing::error!(%error, "audit retention failed; will try again"),
        }
    }
}

/// Removes every row written more than `days` ago; returns how many.
pub async fn purge(store: &Store, days: u32, stop: &CancellationToken) -> Result<u64, sqlx::Error> {
    let now_us = chrono::Utc::now().timestamp_micros();
    let cutoff = now_us - i64::from(days) * 86_400 * 1_000_000;
    let mut total = 0;
    for chain in db::chains(store).await? {
        loop {
            if stop.is_cancelled() {
                return Ok(total);
            }
            let n = db::purge_some(store, &chain, cutoff, 10_000, now_us).await?;
            total += n;
            if n == 0 {
                break;
            }
        }
    }
    Ok(total)
}

/// The chain id of the daemon owning `data_dir`: made once, kept in a file there.
pub fn chain_id(data_dir: &Path) -> Result<String, AuditError> {
    let path = data_dir.join("audit-chain-id");
    crate::daemon::local_id(&path).map_err(|source| AuditError::ChainId { path, source })
}

/// Lets through a few refusals per client address and minute.
struct RefusalLimiter {
    per_minute: u32,
    seen: Mutex<HashMap<Option<IpAddr>, (Instant, u32)>>,
}

impl RefusalLimiter {
    const MAX_ADDRESSES: usize = 10_000;

    fn new(per_minute: u32) -> RefusalLimiter {
        RefusalLimiter {
            per_minute,
            seen: Mutex::new(HashMap::new()),
        }
    }

    fn allow(&self, ip: Option<IpAddr>) -> bool {
        let now = Instant::now();
        let mut seen = self.seen.lock().expect("not poisoned");
        if seen.len() >= Self::MAX_ADDRESSES {
            seen.retain(|_, (start, _)| now.duration_since(*start) < Duration::from_secs(60));
        }
        if seen.len() >= Self::MAX_ADDRESSES && !seen.contains_key(&ip) {
            return false;
        }
        let (start, count) = seen.entry(ip).or_insert((now, 0));
        if now.duration_since(*start) >= Duration::from_secs(60) {
            *start = now;
            *count = 0;
        }
        *count += 1;
        *count <= self.per_minute
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_backlog_slot_is_two_words() {
        assert_eq!(
            std::mem::size_of::<Item>(),
            2 * std::mem::size_of::<usize>()
        );
    }

    #[test]
    fn refusals_are_rate_limited_per_address() {
        let limiter = RefusalLimiter::new(3);
        let a = Some("10.0.0.1".parse().unwrap());
        let b = Some("10.0.0.2".parse().unwrap());
        assert!((0..3).all(|_| limiter.allow(a)));
        assert!(!limiter.allow(a));
        assert!(limiter.allow(b));
    }
}
