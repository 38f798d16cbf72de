//! An audit writer holds its batches back while the daemon is busy, and not for
//! long, on either backend. A file of its own: the hold reads the whole process's
//! CPU time, so other tests running beside it in one process would make the
//! "daemon" busy.
//! The two tests here keep every core busy in turn (each waits for the other: see
//! `ONE_AT_A_TIME`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use evhost::audit::{self, Audit};
use evhost::bus::Handling;
use evhost::event::{Actor, Event};
use evhost::metrics::Metrics;
use serde_json::value::RawValue;

mod support;

use support::TestDb;

fn event(id: String) -> Arc<Event> {
    Arc::new(Event {
        id: id.into(),
        kind: "message.received".into(),
        time: chrono::Utc::now(),
        source: "/test".into(),
        actor: Actor::default(),
        data: Arc::from(RawValue::from_string(r#"{"message_id":"m"}"#.into()).unwrap()),
        hops: 0,
    })
}

async fn record(audit: &Arc<Audit>, from: usize, n: usize) {
    let subscriber = audit.subscriber();
    for i in from..from + n {
        match subscriber.handle(&event(format!("hold-{i}"))) {
            Handling::Done(r) => r.unwrap(),
            Handling::Later(f) => f.await.unwrap(),
        }
    }
}

/// How long until the log holds `rows` rows, if it does within `limit`.
async fn rows_within(db: &TestDb, rows: usize, limit: Duration) -> Option<Duration> {
    let started = Instant::now();
    while started.elapsed() < limit {
        if audit::count(&db.store).await.unwrap() >= rows as i64 {
            return Some(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    None
}

/// Keeps every core busy until the returned flag is set.
fn burn() -> Arc<AtomicBool> {
    let done = Arc::new(AtomicBool::new(false));
    for _ in 0..std::thread::available_parallelism().map_or(1, |n| n.get()) {
        let done = done.clone();
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                std::hint::spin_loop();
            }
        });
    }
    done
}

/// An audit log on `db` with the test settings (see `TestDb::audit_options`), and
/// its metrics.
async fn start(db: &TestDb, chain: &str) -> (Arc<Audit>, Arc<Metrics>) {
    let metrics = Metrics::new(10);
    let audit = Audit::start(
        db.store.clone(),
        db.audit_options(),
        metrics.clone(),
        chain.into(),
    )
    .await
    .unwrap();
    (audit, metrics)
}

/// Soon, for an idle writer.
const AT_ONCE: Duration = Duration::from_millis(500);

/// What a busy writer may hold a batch for (as `audit::busy::MAX_HOLD`).
const MAX_HOLD: Duration = Duration::from_secs(1);

/// Each test keeps every core busy for a while, which the other must not see.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Idle, the rows go in at once; busy, a batch is held for at most a second; after a
/// full hold, nothing is held for a while (a sustained load).
///
/// A hold also ends when one look at the CPU reads low, which can happen even with
/// every core kept busy (see `audit::busy::WINDOW`); so the test tries a few batches
/// for a full hold rather than expecting the first to be one.
#[tokio::test]
async fn a_writer_holds_batches_while_the_daemon_is_busy_and_not_for_long() {
    let _turn = ONE_AT_A_TIME.lock().await;
    for db in TestDb::all().await {
        let backend = db.store.backend();
        let (audit, metrics) = start(&db, "hold").await;
        let held = || metrics.audit.batches_held.get();
        let to_the_limit = || metrics.audit.holds_to_the_limit.get();
        let mut rows = 0;

        record(&audit, rows, 10).await;
        rows += 10;
        let took = rows_within(&db, rows, Duration::from_secs(5)).await;
        assert!(
            took.is_some_and(|t| t < AT_ONCE),
            "{backend}, idle: {took:?}"
        );
        assert_eq!(held(), 0, "{backend}");

        let done = burn();
        // Longer than a writer's look reaches back: it measures the busy cores afresh.
        tokio::time::sleep(Duration::from_millis(150)).await;
        // A hold's length is read from the metric, not from how long the rows took:
        // on SQLite the lowered threads that place and insert them get little CPU
        // with every core taken, which adds to the time whether a hold ran its full
        // second or not.
        // Ten tries: in one run of the whole suite none of five held on PostgreSQL
        // (cause not found; run alone, the test then passed 6 times of 6).
        let mut full_hold = None;
        for _ in 0..10 {
            record(&audit, rows, 10).await;
            rows += 10;
            let took = rows_within(&db, rows, Duration::from_secs(5)).await;
            let took = took.unwrap_or_else(|| panic!("{backend}: the rows never came"));
            if to_the_limit() > 0 {
                full_hold = Some(took);
                break;
            }
        }
        let took = full_hold
            .unwrap_or_else(|| panic!("{backend}: a batch held for the full second while busy"));
        assert!(
            (MAX_HOLD..2 * MAX_HOLD).contains(&took),
            "{backend}: held for the full second, then written while still busy: {took:?}"
        );
        assert_eq!(to_the_limit(), 1, "{backend}");
        assert!(held() >= 1, "{backend}");
        // Still busy, after a full hold: not held again. (Not timed: with every core
        // taken, the writer's lowered threads get little CPU, held or not.)
        let before = held();
        record(&audit, rows, 10).await;
        rows += 10;
        let took = rows_within(&db, rows, Duration::from_secs(5)).await;
        assert!(took.is_some(), "{backend}, sustained");
        assert_eq!(held(), before, "{backend}: a sustained load is not held");
        assert_eq!(to_the_limit(), 1, "{backend}");
        done.store(true, Ordering::Relaxed);

        tokio::time::sleep(Duration::from_millis(150)).await;
        record(&audit, rows, 10).await;
        rows += 10;
        let took = rows_within(&db, rows, Duration::from_secs(5)).await;
        assert!(
            took.is_some_and(|t| t < AT_ONCE),
            "{backend}, idle again: {took:?}"
        );
        assert_eq!(held(), before, "{backend}");
        audit.shutdown().await;
        let report = audit::verify(&db.store).await.unwrap();
        assert!(
            report.ok && report.rows == rows as u64,
            "{backend}: {report:?}"
        );
        db.cleanup().await;
    }
}

/// A hold ends as soon as the backlog reaches half full, busy or not.
#[tokio::test]
async fn a_hold_ends_when_the_backlog_is_half_full() {
    let _turn = ONE_AT_A_TIME.lock().await;
    for db in TestDb::all().await {
        let backend = db.store.backend();
        let (audit, metrics) = start(&db, "half").await;
        let done = burn();
        tokio::time::sleep(Duration::from_millis(150)).await;
        // A batch being held (a few tries: see the test above).
        let mut rows = 0;
        let mut holding = false;
        for _ in 0..5 {
            record(&audit, rows, 10).await;
            rows += 10;
            tokio::time::sleep(Duration::from_millis(200)).await;
            if audit::count(&db.store).await.unwrap() < rows as i64 {
                holding = true;
                break;
            }
        }
        assert!(holding, "{backend}: a batch held while busy");
        // 600 more, past half the backlog of 1,000: the held batch goes, and the rows
        // above half with it, well within the hold's limit. (Timed on PostgreSQL
        // only: on SQLite the batch in flight is inserted on a lowered thread, which
        // gets little CPU with every core taken, and the rows after it wait for it.
        // That the hold ended before its limit shows there too.)
        record(&audit, rows, 600).await;
        rows += 600;
        let took = rows_within(&db, rows - 500, Duration::from_secs(5)).await;
        done.store(true, Ordering::Relaxed);
        assert!(
            took.is_some_and(|t| backend != "postgres" || t < MAX_HOLD),
            "{backend}: {took:?}"
        );
        assert_eq!(metrics.audit.holds_to_the_limit.get(), 0, "{backend}");
        assert!(
            rows_within(&db, rows, Duration::from_secs(5))
                .await
                .is_some()
        );
        let held = metrics.audit.batches_held.get();
        assert!(held >= 1, "{backend}: {held}");
        audit.shutdown().await;
        assert!(audit::verify(&db.store).await.unwrap().ok);
        db.cleanup().await;
    }
}
