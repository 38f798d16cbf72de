//! The daemon's long-lived tasks, watched. A task that panics, or ends while the
//! daemon is not stopping, is a part missing: the first such failure turns
//! `/readyz` 503 naming the task, and the daemon stops and exits non-zero (70,
//! `EX_SOFTWARE`), so that systemd or Kubernetes starts it again. The tasks own
//! their queues and positions, so a restart of the process, which recovers from the
//! log, is the restart that is known to be right; serving on with a writer or a
//! dispatcher missing would acknowledge events nobody handles.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};

use futures_util::FutureExt;
use serde::Serialize;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// The first task that failed.
#[derive(Clone, Debug, Serialize)]
pub struct Failure {
    pub task: String,
    pub reason: String,
}

/// When a task's end is expected.
pub enum Ends {
    /// Once `stop` fires; ending before is a failure.
    OnStop(CancellationToken),
    /// Whenever its work is done (a replay); only a panic is a failure.
    WhenDone,
}

/// Watches tasks; clones share what they saw.
#[derive(Clone, Default)]
pub struct Supervisor {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    failure: Mutex<Option<Failure>>,
    failed: CancellationToken,
}

impl Supervisor {
    /// Spawns `task` on the runtime, watched.
    pub fn spawn<F>(&self, name: &str, ends: Ends, task: F) -> JoinHandle<()>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let name = name.to_string();
        let supervisor = self.clone();
        tokio::spawn(async move {
            let reason = match AssertUnwindSafe(task).catch_unwind().await {
                Err(panic) => format!("panicked: {}", panic_message(&panic)),
                Ok(()) => match ends {
                    Ends::OnStop(stop) if !stop.is_cancelled() => {
                        "ended while the daemon was not stopping".to_string()
                    }
                    _ => return,
                },
            };
            supervisor.fail(&name, reason);
        })
    }

    /// Records a failure (the first one is kept) and wakes whoever waits in
    /// [`Supervisor::failed`].
    pub fn fail(&self, task: &str, reason: String) {
        tracing::error!(task, %reason, "a part of the daemon failed; stopping, to be started again");
        let mut failure = self.inner.failure.lock().unwrap_or_else(|e| e.into_inner());
        if failure.is_none() {
            *failure = Some(Failure {
                task: task.to_string(),
                reason,
            });
        }
        self.inner.failed.cancel();
    }

    /// The first failure, if any.
    pub fn failure(&self) -> Option<Failure> {
        self.inner
            .failure
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Completes once a task has failed.
    pub async fn failed(&self) {
        self.inner.failed.cancelled().await
    }
}

pub fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic with no message".to_string()
    }
}

/// A panic on demand, for the tests of what follows one: with
/// `EVHOST_TEST_PANIC=<point>` in the environment, the code at that point panics
/// (`log-writer`: a log writer, at a batch holding an event of type `test.panic`;
/// `plugin-call`: every plugin call).
pub fn panic_injected(point: &str) -> bool {
    use std::sync::LazyLock;
    static POINT: LazyLock<Option<String>> =
        LazyLock::new(|| std::env::var("EVHOST_TEST_PANIC").ok());
    POINT.as_deref() == Some(point)
}
