//! A writer whose backlog is low holds its next batch back while the rest of the
//! daemon is busy, for at most [`MAX_HOLD`].
//!
//! Why: the lower CPU priority of the audit's own threads (see `background`) is not
//! enough. On PostgreSQL most of the CPU an audit row costs is the server's
//! (parsing, the heap and seven index entries), in processes whose priority the
//! daemon cannot lower: with the server on the daemon's machine, a burst of events
//! took that CPU from the bus for as long as it lasted (the bus ran 53–64 % slower
//! with the audit than without). On SQLite the inserts run in the daemon's own
//! lowered threads, but a thread at `nice` 10 still gets about a tenth of a core it
//! shares with the bus, and the WAL checkpointer copies the committed pages at the
//! daemon's priority: with fair pairs of runs the bus ran 1–22 % slower (the median
//! of eleven reports was 9 %). Holding the batch is the same bargain as the lower
//! priority: the backlog absorbs the burst, and the rows go in once the daemon has
//! room again.
//!
//! The hold is bounded three ways, so the log never falls far behind: it ends when
//! the daemon is no longer busy, when the backlog reaches half full (the writer then
//! works at full priority, see `Writer::run`), and after [`MAX_HOLD`]. A load that
//! outlasts [`MAX_HOLD`] is not a burst, and holding does not take work away from
//! it, only adds delay: after a hold that ran its full length the writer holds
//! nothing for [`COOLDOWN`], so under a sustained load at most a tenth of the time
//! goes to holding.
//!
//! "Busy" is the daemon's CPU time (all its threads, from the process CPU clock)
//! less the audit's own lowered threads ([`OwnCpu`]), over a short window: at least
//! [`BUSY_SHARE`] of the machine's cores. Without that subtraction a SQLite writer
//! catching up would read its own inserts as a busy daemon and hold itself up. A
//! server on another machine does not take the daemon's cores, and there a hold only
//! delays rows, by at most [`MAX_HOLD`].

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The share of all cores the daemon must have used over a window to count as busy.
const BUSY_SHARE: f64 = 0.5;

/// The shortest window the share is measured over, and the pause between looks
/// while holding. Not shorter: with 5 ms, a process keeping both cores of a 2-core
/// VM busy read below half often enough that in one test run five holds in a row
/// ended early. The likely reason is that a thread running on another core has its
/// CPU time added to the process clock only at scheduler ticks, several ms apart.
const WINDOW: Duration = Duration::from_millis(20);

/// A window longer than this (the writer was idle) is restarted and measured afresh:
/// an average over a quiet minute says nothing about the burst that just arrived.
const STALE: Duration = Duration::from_millis(100);

/// The longest a batch is held.
const MAX_HOLD: Duration = Duration::from_secs(1);

/// How long after a hold of [`MAX_HOLD`] the writer holds nothing.
const COOLDOWN: Duration = Duration::from_secs(10);

/// CPU time used by the audit's lowered threads, all writers' together: the part of
/// the daemon's CPU time that is the audit's own work, not a sign that the rest of
/// the daemon is busy. Each thread adds what it used after each job.
#[derive(Clone, Default)]
pub(super) struct OwnCpu(Arc<AtomicU64>);

impl OwnCpu {
    pub(super) fn add(&self, used: Duration) {
        let nanos = u64::try_from(used.as_nanos()).unwrap_or(u64::MAX);
        self.0.fetch_add(nanos, Ordering::Relaxed);
    }

    pub(super) fn used(&self) -> Duration {
        Duration::from_nanos(self.0.load(Ordering::Relaxed))
    }
}

/// The CPU use of the daemon less the audit's own, from the process CPU clock.
struct CpuUse {
    own: OwnCpu,
    cores: f64,
    /// When the current window started, and the CPU time used by then; none before
    /// the first look.
    window: Option<(Instant, Duration)>,
    /// The share over the last full window.
    last: f64,
}

impl CpuUse {
    /// None where the process CPU clock cannot be read.
    fn start(own: OwnCpu) -> Option<CpuUse> {
        crate::cpu::process_time()?;
        Some(CpuUse {
            own,
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()) as f64,
            window: None,
            last: 0.0,
        })
    }

    /// The daemon's CPU time so far, less the audit's own.
    fn others(&self) -> Duration {
        crate::cpu::process_time()
            .unwrap_or_default()
            .saturating_sub(self.own.used())
    }

    /// Whether the daemon, less the audit, used at least [`BUSY_SHARE`] of all cores
    /// over the current window, if it is at least [`WINDOW`] long (then the next
    /// window starts), else over the one before. Waits only at the first look and
    /// after a quiet spell (see [`STALE`]), for one fresh window: a writer that keeps
    /// busy loses no time to looking.
    async fn busy(&mut self) -> bool {
        let (at, used) = match self.window {
            Some((at, used)) if at.elapsed() <= STALE => (at, used),
            _ => {
                let fresh = (Instant::now(), self.others());
                tokio::time::sleep(WINDOW).await;
                fresh
            }
        };
        let elapsed = at.elapsed();
        if elapsed >= WINDOW {
            // It can read lower than at the window's start: a thread adds a job's
            // time once the job is done, and the process clock counted it all along.
            let now = self.others().max(used);
            self.last =
                now.saturating_sub(used).as_secs_f64() / (elapsed.as_secs_f64() * self.cores);
            self.window = Some((Instant::now(), now));
        }
        self.last >= BUSY_SHARE
    }
}

/// A writer's hold (one per writer).
pub(super) struct Hold {
    cpu: CpuUse,
    /// Set by a hold that ran its full [`MAX_HOLD`]: no hold before then.
    cooldown_until: Option<Instant>,
}

impl Hold {
    /// None where the daemon cannot tell how busy it is: then nothing is held.
    /// `own` is the CPU time of the audit's lowered threads.
    pub(super) fn new(own: OwnCpu) -> Option<Hold> {
        Some(Hold {
            cpu: CpuUse::start(own)?,
            cooldown_until: None,
        })
    }

    /// Waits while the daemon is busy, until `release` says not to wait any longer
    /// or [`MAX_HOLD`] has passed.
    pub(super) async fn while_busy(&mut self, mut release: impl FnMut() -> bool) -> Held {
        let started = Instant::now();
        if self.cooldown_until.is_some_and(|until| started < until) {
            return Held::Not;
        }
        let mut held = Held::Not;
        loop {
            if !self.cpu.busy().await || release() {
                break;
            }
            if started.elapsed() >= MAX_HOLD {
                self.cooldown_until = Some(Instant::now() + COOLDOWN);
                held = Held::ToTheLimit;
                break;
            }
            held = Held::Briefly;
            tokio::time::sleep(WINDOW).await;
        }
        held
    }
}

/// How long [`Hold::while_busy`] held a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Held {
    Not,
    /// Until the daemon was no longer busy or the backlog reached half full.
    Briefly,
    /// For the full [`MAX_HOLD`]: a sustained load, so nothing more is held for
    /// [`COOLDOWN`].
    ToTheLimit,
}
