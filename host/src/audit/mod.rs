//! The event log, which is the tamper-evident audit log.
//!
//! Every accepted event ([`Audit::append`]), every management action
//! ([`Audit::record_action`]) and every plugin decision becomes one row, appended by
//! a writer per chain ([`writer`]) and committed durably before anyone is answered.
//! Rows form a hash chain per writer ([`record`]), signed checkpoints pin the chain
//! heads ([`checkpoint`]), retention purges the oldest rows without breaking
//! verification ([`verify`]) and never a row the dispatcher has not passed.
//!
//! Committed events are handed to the dispatcher with a ticket
//! ([`crate::eventlog`]); where dispatch stands in each chain is stored every
//! [`POSITION_EVERY`], and on start what was committed but not yet dispatched is
//! read back and dispatched ([`Audit::replay`]).

pub mod checkpoint;
mod db;
pub mod metrics;
mod positions;
pub mod record;
pub mod verify;
mod writer;

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use db::{Filter, count, query};
pub use positions::dispatch_orphans;
pub use record::{DECIDED, Entry, Record};
pub use verify::{Break, Report, verify};

use crate::bus::Verdict;
use crate::event::{Event, new_event_id};
use crate::eventlog::{Accepted, Admission, Appended, Dispatch, Ticket, Tracker};
use crate::metrics::Metrics;
use crate::store::Store;
use crate::supervise::Ends;
use writer::{Append, Item, Reply, Writer};
pub use writer::{Condition, Recorded};

/// The consumer name of the dispatcher's positions.
pub const DISPATCH: &str = "dispatch";

/// How often the dispatcher's positions are stored.
pub const POSITION_EVERY: Duration = Duration::from_millis(200);

/// Why the log could not start.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("audit chain id file {path}")]
    ChainId {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Checkpoint(#[from] checkpoint::CheckpointError),
    #[error("reading the log's chain heads and positions")]
    Db(#[from] sqlx::Error),
    #[error("opening the log writer's database connection")]
    Writer(#[from] db::WriteError),
}

/// The log has stopped and takes no more rows.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the event log has stopped")]
pub struct Stopped;

/// Log settings (from `audit.*` and `events.*`).
#[derive(Debug, Clone)]
pub struct AuditOptions {
    /// Whether the log is kept as the audit log (`audit.enabled`); when not, a row
    /// goes once the dispatcher has passed it and the dedup window is over.
    pub keep: bool,
    pub batch_size: usize,
    pub max_backlog: usize,
    pub checkpoint_interval: Duration,
    pub checkpoint_file: PathBuf,
    pub checkpoint_key: PathBuf,
    pub retention_days: u32,
    pub purge_interval: Duration,
    pub refusals_per_minute: u32,
    /// Writers (chains); `None`: 1 on SQLite, 2 on PostgreSQL.
    pub writers: Option<usize>,
    /// How long an event id stays unique (`events.dedup_window`).
    pub dedup_window: Duration,
    /// Committed events not yet dispatched, at most (`events.max_lag`).
    pub max_lag: u64,
    /// Their bytes, at most (`events.max_lag_bytes`).
    pub max_lag_bytes: u64,
}

impl AuditOptions {
    /// The options `audit.*`, `events.*` (and `data_dir`) give.
    pub fn from_config(config: &crate::config::Config) -> AuditOptions {
        AuditOptions {
            keep: config.audit.enabled,
            batch_size: config.audit.batch_size,
            max_backlog: config.audit.max_backlog,
            checkpoint_interval: config.audit.checkpoint_interval,
            checkpoint_file: config.checkpoint_file(),
            checkpoint_key: config.checkpoint_key(),
            retention_days: config.audit.retention_days,
            purge_interval: config.audit.purge_interval,
            refusals_per_minute: config.audit.refusals_per_minute,
            writers: config.audit.writers,
            dedup_window: config.events.dedup_window,
            max_lag: config.events.max_lag as u64,
            max_lag_bytes: config.events.max_lag_bytes,
        }
    }
}

/// A running log. Dropping it does not flush; call [`Audit::shutdown`].
pub struct Audit {
    lanes: Arc<Lanes>,
    capacity: usize,
    /// One flag per writer.
    healthy: Vec<Arc<AtomicU8>>,
    last_write_ms: Arc<AtomicI64>,
    stop: CancellationToken,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    /// The position keeper, stopped after the writers.
    positions: Mutex<Option<(CancellationToken, JoinHandle<()>)>>,
    limiter: RefusalLimiter,
    metrics: Arc<Metrics>,
    chain: String,
    chains: Vec<String>,
    tracker: Arc<Tracker>,
    store: Store,
}

impl Audit {
    /// Starts the writers (and retention) for this daemon's chains. With several
    /// writers (`audit.writers`), the first keeps `chain` and writer `k` the chain
    /// `<chain>.<k>`; each has its own database connection and queue, and appends
    /// go to them in turn. Committed events go to `dispatch` when the one who
    /// appended them has gone (none: they are left for the next start).
    pub async fn start(
        store: Store,
        options: AuditOptions,
        metrics: Arc<Metrics>,
        chain: String,
        dispatch: Option<Arc<dyn Dispatch>>,
    ) -> Result<Arc<Audit>, AuditError> {
        let key = checkpoint::load_or_create_key(&options.checkpoint_key)?;
        let writers = options.writers.unwrap_or(match store {
            Store::Sqlite(_) => 1,
            Store::Postgres(_) => 2,
        });
        let chains: Vec<String> = (0..writers)
            .map(|k| {
                if k == 0 {
                    chain.clone()
                } else {
                    format!("{chain}.{k}")
                }
            })
            .collect();
        let mut heads = Vec::with_capacity(writers);
        for name in &chains {
            heads.push(db::chain_head(&store, name).await?);
        }
        // A chain the dispatcher has no position in starts where it is now: rows
        // from before the log was dispatched from were handled as they came.
        let stored = positions::positions(&store, DISPATCH, &chains).await?;
        let now_us = chrono::Utc::now().timestamp_micros();
        let fresh: Vec<(String, i64)> = chains
            .iter()
            .zip(&stored)
            .zip(&heads)
            .filter(|((_, stored), _)| stored.is_none())
            .map(|((name, _), head)| (name.clone(), head.0))
            .collect();
        let keeper_inserter = db::Inserter::open(&store)?;
        positions::save_positions(&keeper_inserter, DISPATCH, &fresh, now_us).await?;
        let tracker = Tracker::new(
            chains
                .iter()
                .zip(&stored)
                .zip(&heads)
                .map(|((name, stored), head)| (name.clone(), stored.unwrap_or(head.0), head.0))
                .collect(),
            options.max_lag,
            options.max_lag_bytes,
        );
        let per_writer = options.max_backlog.div_ceil(writers);
        let stop = CancellationToken::new();
        let last_write_ms = Arc::new(AtomicI64::new(0));
        let mut senders = Vec::with_capacity(writers);
        let mut healthy = Vec::with_capacity(writers);
        let mut tasks = Vec::with_capacity(writers + 1);
        for (index, (name, head)) in chains.iter().zip(heads).enumerate() {
            let (tx, rx) = mpsc::channel(per_writer);
            let ok = Arc::new(AtomicU8::new(Condition::Writing as u8));
            let writer = Writer {
                store: store.clone(),
                inserter: db::Inserter::open(&store)?,
                index,
                chain: name.clone(),
                head,
                rx,
                tracker: tracker.clone(),
                dispatch: dispatch.clone(),
                options: options.clone(),
                metrics: metrics.clone(),
                healthy: ok.clone(),
                last_write_ms: last_write_ms.clone(),
                key: key.clone(),
                checkpointed: head.0,
                last_checkpoint: None,
                backlog_shown: 0,
                dead_letters: crate::deadletter::DeadLetters::new(store.clone()),
            };
            tracing::info!(chain = %name, head = head.0, "log writer ready");
            tasks.push(metrics.tasks.spawn(
                "log writer",
                Ends::OnStop(stop.clone()),
                writer.run(stop.clone()),
            ));
            senders.push(tx);
            healthy.push(ok);
        }
        let capacity = per_writer * writers;
        metrics.audit.backlog_capacity.set(capacity as i64);
        if options.retention_days > 0 || !options.keep {
            tasks.push(metrics.tasks.spawn(
                "log retention",
                Ends::OnStop(stop.clone()),
                retention(
                    store.clone(),
                    options.clone(),
                    metrics.clone(),
                    stop.clone(),
                ),
            ));
        }
        let keeper_stop = CancellationToken::new();
        let keeper = metrics.tasks.spawn(
            "log positions",
            Ends::OnStop(keeper_stop.clone()),
            positions::keep(keeper_inserter, tracker.clone(), keeper_stop.clone()),
        );
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
            positions: Mutex::new(Some((keeper_stop, keeper))),
            limiter: RefusalLimiter::new(options.refusals_per_minute),
            metrics,
            chain,
            chains,
            tracker,
            store,
        }))
    }

    /// This daemon's first chain.
    pub fn chain(&self) -> &str {
        &self.chain
    }

    /// Where dispatch stands, and the lag it may fall behind by.
    pub fn tracker(&self) -> &Arc<Tracker> {
        &self.tracker
    }

    /// Appends `events` and waits until they are committed and handed to the
    /// dispatcher. Per event, in order: whether the log already had its id, and
    /// (with `wait`) how to wait until it is processed. `admission` reserved the
    /// lag for them.
    pub async fn publish(
        &self,
        events: Vec<Arc<Event>>,
        admission: Admission,
        wait: bool,
    ) -> Result<Vec<Accepted>, Stopped> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let (reply, answer) = oneshot::channel();
        let reply = Reply::Dispatch { wait, reply };
        self.send_append(events, admission, None, reply).await?;
        answer.await.map_err(|_| Stopped)
    }

    /// Appends `events` and waits until they are committed; the caller dispatches
    /// them. Per event, in order: its ticket, or that the log already has an event
    /// with its id. `hold` is kept until the commit.
    pub async fn append(
        &self,
        events: Vec<Arc<Event>>,
        admission: Admission,
        hold: Option<Ticket>,
    ) -> Result<Vec<Appended>, Stopped> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let (reply, answer) = oneshot::channel();
        self.send_append(events, admission, hold, Reply::Return(reply))
            .await?;
        answer.await.map_err(|_| Stopped)
    }

    async fn send_append(
        &self,
        events: Vec<Arc<Event>>,
        admission: Admission,
        hold: Option<Ticket>,
        reply: Reply,
    ) -> Result<(), Stopped> {
        let item = Item::Events(Box::new(Append {
            events,
            admission,
            hold,
            reply,
        }));
        self.lanes.next().send(item).await.map_err(|_| Stopped)
    }

    /// Records what plugins did to `event`, as a row of its own; `hold` is kept until
    /// it is committed.
    pub fn record_decision(&self, event: &Arc<Event>, verdict: &Verdict, hold: Option<Ticket>) {
        let item = Item::Decided(Box::new((event.clone(), verdict.clone(), hold)));
        let tx = self.lanes.next();
        if let Err(mpsc::error::TrySendError::Full(item)) = tx.try_send(item) {
            let tx = tx.clone();
            tokio::spawn(async move {
                if tx.send(item).await.is_err() {
                    tracing::error!("the log has stopped; a plugin decision was not recorded");
                }
            });
        }
    }

    /// Records a management action; waits for room in the queue.
    pub async fn record_action(&self, entry: Entry) {
        if self
            .lanes
            .next()
            .send(Item::Action(Box::new((entry, None))))
            .await
            .is_err()
        {
            tracing::error!("the log has stopped; a management action was not recorded");
        }
    }

    /// Writes a row that is not an event (a dead letter's, retried) and waits for
    /// its commit: in the log, or set aside again.
    pub async fn write_entry(&self, entry: Entry) -> Result<Recorded, Stopped> {
        let (reply, answer) = oneshot::channel();
        self.lanes
            .next()
            .send(Item::Action(Box::new((entry, Some(reply)))))
            .await
            .map_err(|_| Stopped)?;
        answer.await.map_err(|_| Stopped)
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
            source: None,
        };
        if self
            .lanes
            .next()
            .try_send(Item::Action(Box::new((entry, None))))
            .is_err()
        {
            self.metrics.audit.refusals_suppressed.inc();
        }
    }

    /// Reads back the events of this daemon's chains that were committed but not
    /// dispatched before the last stop, and hands them to `dispatch` in log order,
    /// within the lag. Returns at once; the reading runs as a task of its own.
    pub fn replay(&self, dispatch: Arc<dyn Dispatch>) {
        let task = self.metrics.tasks.spawn(
            "log replay",
            Ends::WhenDone,
            positions::replay(
                self.store.clone(),
                self.tracker.clone(),
                self.chains.clone(),
                dispatch,
                self.stop.clone(),
            ),
        );
        self.tasks.lock().expect("not poisoned").push(task);
    }

    /// Items waiting for a writer.
    pub fn backlog(&self) -> usize {
        let free: usize = self.lanes.senders.iter().map(|tx| tx.capacity()).sum();
        self.capacity - free
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// False while a writer is failing to write (and retrying).
    pub fn is_healthy(&self) -> bool {
        self.condition() == Condition::Writing
    }

    /// How the writers fare: the worst of them.
    pub fn condition(&self) -> Condition {
        let worst = self
            .healthy
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .max()
            .unwrap_or(0);
        Condition::from_u8(worst)
    }

    /// Milliseconds the last batch took to write.
    pub fn last_write_ms(&self) -> i64 {
        self.last_write_ms.load(Ordering::Relaxed)
    }

    /// Writes everything queued, signs a last checkpoint, stores where dispatch
    /// stands and stops. Call after the dispatcher has drained.
    pub async fn shutdown(&self) {
        self.stop.cancel();
        let tasks = std::mem::take(&mut *self.tasks.lock().expect("not poisoned"));
        for task in tasks {
            if let Err(e) = task.await {
                tracing::error!(error = %e, "log task ended abnormally");
            }
        }
        let keeper = self.positions.lock().expect("not poisoned").take();
        if let Some((stop, task)) = keeper {
            stop.cancel();
            if let Err(e) = task.await {
                tracing::error!(error = %e, "log position keeper ended abnormally");
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

/// Purges, on a schedule and in bounded batches, rows past the retention period
/// (with the audit on) or rows every consumer has passed, once older than the
/// dedup window (with it off).
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
        // One node of a fleet at a time; the turn goes with the pass.
        let _turn = match crate::cluster::leader::try_turn(&store, "log-retention").await {
            Ok(Some(turn)) => turn,
            Ok(None) => continue,
            Err(error) => {
                tracing::warn!(%error, "log retention cannot start; will try again");
                continue;
            }
        };
        let keep = if options.keep {
            Duration::from_secs(u64::from(options.retention_days) * 86_400)
        } else {
            options.dedup_window
        };
        match purge_older_than(&store, keep, &stop).await {
            Ok(0) => {}
            Ok(n) => {
                metrics.audit.rows_purged.inc_by(n);
                tracing::info!(rows = n, kept = ?keep, "purged log rows past retention");
            }
            Err(error) => tracing::error!(%error, "log retention failed; will try again"),
        }
    }
}

/// Removes every row written more than `days` ago that every consumer has passed;
/// returns how many.
pub async fn purge(store: &Store, days: u32, stop: &CancellationToken) -> Result<u64, sqlx::Error> {
    purge_older_than(store, Duration::from_secs(u64::from(days) * 86_400), stop).await
}

async fn purge_older_than(
    store: &Store,
    keep: Duration,
    stop: &CancellationToken,
) -> Result<u64, sqlx::Error> {
    let now_us = chrono::Utc::now().timestamp_micros();
    let cutoff = now_us.saturating_sub(keep.as_micros().min(i64::MAX as u128) as i64);
    let chains = db::chains(store).await?;
    let positions = positions::positions(store, DISPATCH, &chains).await?;
    let mut total = 0;
    for (chain, position) in chains.iter().zip(positions) {
        // A chain with no position was written before the log was dispatched from.
        let upto = position.unwrap_or(i64::MAX);
        loop {
            if stop.is_cancelled() {
                return Ok(total);
            }
            let n = db::purge_some(store, chain, cutoff, 10_000, now_us, upto).await?;
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
mod props;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_queue_slot_is_two_words() {
        assert_eq!(
            std::mem::size_of::<writer::Item>(),
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
