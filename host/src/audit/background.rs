//! A writer's work while its backlog is low, on threads of its own at a lower CPU
//! priority than the rest of the daemon: turning events into rows, hashing them into
//! the chain and, on SQLite, inserting them.
//!
//! Why: on a busy machine that work competed with the bus for the same cores, so a
//! burst of events slowed the bus while it lasted, though the backlog is there to
//! absorb bursts and write them afterwards. At a lower priority the threads take what
//! the rest leaves. Once the backlog is half full the writer does the work at the
//! daemon's priority again (see `Writer::run`), so a writer that the machine keeps
//! too busy still gets its share before the bus has to wait for room: a thread
//! cannot raise its own priority again without `CAP_SYS_NICE`, so the two
//! priorities are two places to run, not one thread that changes.
//!
//! Two such threads per writer, one placing and one inserting, so that one batch is
//! placed while the one before it is inserted, as at the normal priority. On SQLite an
//! insert holds the audit file's write lock, which retention's deletes also wait for
//! (the webhook outbox no longer does: it writes to the main file, see
//! `store::audit_file`), so at the lower priority it takes at most [`BATCH_ON_SQLITE`]
//! rows at a time: a short hold even when the thread gets little of a core.

use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::sync::oneshot;

use super::busy::OwnCpu;

/// Most rows one low-priority SQLite insert takes (one transaction): a sixteenth of
/// the default batch, so the write turn is held a short time even when the thread
/// gets little of a core, for one commit (and fsync) per 250 rows.
pub(super) const BATCH_ON_SQLITE: usize = 250;

/// A thread at a lower CPU priority that runs the jobs it is given, in order.
pub(super) struct LowPriority {
    jobs: Option<mpsc::Sender<Box<dyn FnOnce() + Send>>>,
    thread: Option<JoinHandle<()>>,
}

impl LowPriority {
    /// Starts a thread named `name`, `nice` steps below the daemon's CPU priority
    /// (0: the same priority), that adds the CPU time it uses to `own`.
    pub(super) fn start(name: &str, nice: u8, own: OwnCpu) -> std::io::Result<LowPriority> {
        let (jobs, queue) = mpsc::channel::<Box<dyn FnOnce() + Send>>();
        let thread = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                if let Err(error) = lower_priority(nice) {
                    tracing::warn!(%error, nice, "cannot lower an audit thread's CPU priority; it runs at the daemon's");
                }
                let mut counted = Duration::ZERO;
                for job in queue {
                    job();
                    if let Some(used) = crate::cpu::thread_time() {
                        own.add(used.saturating_sub(counted));
                        counted = used;
                    }
                }
            })?;
        Ok(LowPriority {
            jobs: Some(jobs),
            thread: Some(thread),
        })
    }

    /// Runs `job` on the thread; the answer comes when it is done.
    pub(super) fn run<T: Send + 'static>(
        &self,
        job: impl FnOnce() -> T + Send + 'static,
    ) -> oneshot::Receiver<T> {
        let (done, answer) = oneshot::channel();
        let job = Box::new(move || {
            // The caller only stops waiting when it is gone itself.
            let _ = done.send(job());
        });
        self.jobs
            .as_ref()
            .expect("taken only on drop")
            .send(job)
            .expect("an audit thread runs while its writer does");
        answer
    }
}

impl Drop for LowPriority {
    fn drop(&mut self) {
        // Closing the queue ends the thread's loop once the jobs sent are done.
        drop(self.jobs.take());
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::error!("an audit thread panicked");
        }
    }
}

/// Lowers the calling thread's CPU priority by `nice` steps (Linux: `nice` is per
/// thread). Raising it again would need `CAP_SYS_NICE`, which is why only a thread
/// that keeps the lower priority for good gets one.
#[cfg(target_os = "linux")]
fn lower_priority(nice: u8) -> std::io::Result<()> {
    if nice == 0 {
        return Ok(());
    }
    // SAFETY: plain system calls on the calling thread's own id; no memory is shared.
    unsafe {
        let tid = libc::gettid() as libc::id_t;
        // getpriority may return -1 as a priority: errno tells an error apart.
        *libc::__errno_location() = 0;
        let current = libc::getpriority(libc::PRIO_PROCESS, tid);
        if current == -1 && *libc::__errno_location() != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let lower = (current + i32::from(nice)).min(19);
        if libc::setpriority(libc::PRIO_PROCESS, tid, lower) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Elsewhere `nice` applies to the whole process, so the thread keeps its priority.
#[cfg(not(target_os = "linux"))]
fn lower_priority(_nice: u8) -> std::io::Result<()> {
    Ok(())
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    fn own_priority() -> i32 {
        // SAFETY: as in `lower_priority`.
        unsafe { libc::getpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t) }
    }

    #[test]
    fn a_thread_lowers_its_own_priority_and_no_other() {
        let before = own_priority();
        let lowered = std::thread::spawn(|| {
            lower_priority(5).unwrap();
            own_priority()
        })
        .join()
        .unwrap();
        assert_eq!(lowered, (before + 5).min(19));
        assert_eq!(own_priority(), before, "only the calling thread is lowered");
    }

    #[test]
    fn jobs_run_in_turn_on_the_lowered_thread() {
        let before = own_priority();
        let thread = LowPriority::start("evhost-test", 3, OwnCpu::default()).unwrap();
        let first = thread.run(own_priority);
        let second = thread.run(|| "second");
        assert_eq!(first.blocking_recv().unwrap(), (before + 3).min(19));
        assert_eq!(second.blocking_recv().unwrap(), "second");
    }

    #[test]
    fn the_thread_counts_the_cpu_time_its_jobs_use() {
        let own = OwnCpu::default();
        let thread = LowPriority::start("evhost-test", 0, own.clone()).unwrap();
        let spin = |for_how_long: Duration| {
            let started = crate::cpu::thread_time().unwrap();
            while crate::cpu::thread_time().unwrap() - started < for_how_long {
                std::hint::spin_loop();
            }
        };
        thread
            .run(move || spin(Duration::from_millis(30)))
            .blocking_recv()
            .unwrap();
        // The count follows the job's answer: a job later, it holds the first.
        thread.run(|| ()).blocking_recv().unwrap();
        let after_one = own.used();
        assert!(after_one >= Duration::from_millis(30), "{after_one:?}");
        thread
            .run(move || spin(Duration::from_millis(30)))
            .blocking_recv()
            .unwrap();
        drop(thread);
        let after_two = own.used();
        assert!(
            after_two >= after_one + Duration::from_millis(30),
            "{after_one:?} then {after_two:?}"
        );
        // Its own work, not the process's: this thread spun for none of it.
        assert!(after_two < Duration::from_millis(500), "{after_two:?}");
    }
}
