//! The event log on both backends: SQLite always, PostgreSQL when
//! `EVHOST_TEST_POSTGRES_URL` is set (each test in its own schema). Appends share
//! commits; what was committed and not dispatched is dispatched at the next start,
//! once; with the audit log off, dispatched rows go; a writer behind its own chain
//! catches up.

use std::sync::Arc;
use std::time::Duration;

use evhost::audit::{self, Audit, AuditOptions, checkpoint};
use evhost::bus::{Bus, BusOptions, Handling, Subscriber};
use evhost::event::{Event, TypePattern};
use evhost::eventlog::Dispatch;
use evhost::metrics::Metrics;

mod log_support;
mod support;

use log_support::{event, record};
use support::TestDb;

/// Appends from many publishers at once share commits (group commit): a burst of
/// 5,000 single-event appends is written in batches, each event once, in one chain
/// that verifies, every row counted once, the last checkpoint at the head.
#[tokio::test]
async fn a_burst_of_single_appends_shares_commits() {
    for db in TestDb::all().await {
        let metrics = Metrics::new(10);
        let options = AuditOptions {
            batch_size: 400,
            max_backlog: 10_000,
            writers: Some(1),
            ..db.audit_options()
        };
        let audit = Audit::start(
            db.store.clone(),
            options,
            metrics.clone(),
            "burst".into(),
            None,
        )
        .await
        .unwrap();
        let events: Vec<_> = (0..5000)
            .map(|i| event(&format!("burst-e{i}"), "message.received", Some("smtp")))
            .collect();
        assert_eq!(record(&audit, &events).await, 5000);
        audit.shutdown().await;
        let backend = db.store.backend();
        assert_eq!(audit::count(&db.store).await.unwrap(), 5000, "{backend}");
        let report = audit::verify(&db.store).await.unwrap();
        assert!(report.ok && report.rows == 5000, "{backend}: {report:?}");
        assert_eq!(metrics.audit.rows_written.get(), 5000, "{backend}");
        let commits = metric(
            &metrics.encode(),
            "evhost_audit_write_duration_seconds_count",
        );
        assert!(
            (13.0..=1000.0).contains(&commits),
            "{backend}: {commits} commits for 5000 appends (at most 400 rows each)"
        );
        let checkpoints =
            checkpoint::read_latest(&db.dir.path().join("audit-checkpoints.jsonl")).unwrap();
        assert_eq!(
            checkpoints.iter().map(|c| c.chain_seq).collect::<Vec<_>>(),
            [5000],
            "{backend}"
        );
        db.cleanup().await;
    }
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("{name} not in\n{text}"))
}

/// Counts the events the dispatcher hands it, by id.
#[derive(Default)]
struct Seen(std::sync::Mutex<Vec<String>>);

impl Subscriber for Seen {
    fn id(&self) -> &str {
        "seen"
    }

    fn handle<'a>(&'a self, event: &'a Arc<Event>) -> Handling<'a> {
        self.0.lock().unwrap().push(event.id.to_string());
        Handling::ok()
    }
}

/// A dispatcher (2 workers) whose one subscriber is `seen`.
fn dispatcher(seen: Arc<Seen>) -> Bus {
    let bus = Bus::start(
        BusOptions {
            workers: 2,
            queue_size: 1000,
            handler_timeout: Duration::from_secs(5),
        },
        Metrics::new(10),
    );
    bus.subscribe(vec![TypePattern::All], seen).unwrap();
    bus
}

/// Events committed while nothing dispatched them (as when a daemon dies right
/// after the commit) are dispatched at the next start, each once and as they were
/// accepted; a start after that dispatches nothing again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_was_committed_and_not_dispatched_is_dispatched_at_the_next_start() {
    for db in TestDb::all().await {
        let backend = db.store.backend();
        let log = db.audit_with_writers("node", 2).await;
        let events: Vec<_> = (0..120)
            .map(|i| {
                event(
                    &format!("undispatched-{i}"),
                    "message.received",
                    Some("smtp"),
                )
            })
            .collect();
        assert_eq!(record(&log, &events).await, 120);
        log.record_action(evhost::audit::Entry {
            event_id: "an-action".into(),
            event_type: "plugin.reload".into(),
            actor: Some("evhost".into()),
            actor_token: None,
            actor_ip: None,
            resource_type: None,
            resource_id: None,
            details: "{}".into(),
            time_us: 0,
            source: None,
        })
        .await;
        log.shutdown().await;

        for run in 0..2 {
            let seen = Arc::new(Seen::default());
            let bus = dispatcher(seen.clone());
            let dispatch: Arc<dyn Dispatch> = Arc::new(bus.clone());
            let options = AuditOptions {
                writers: Some(2),
                ..db.audit_options()
            };
            let log = Audit::start(
                db.store.clone(),
                options,
                Metrics::new(10),
                "node".into(),
                Some(dispatch.clone()),
            )
            .await
            .unwrap();
            log.replay(dispatch);
            let started = std::time::Instant::now();
            let wanted = if run == 0 { 120 } else { 0 };
            while seen.0.lock().unwrap().len() < wanted
                || log.tracker().heads().iter().any(|(_, head, at)| at < head)
            {
                assert!(
                    started.elapsed() < Duration::from_secs(20),
                    "{backend}: run {run}: {} of {wanted} dispatched; {:?}",
                    seen.0.lock().unwrap().len(),
                    log.tracker().heads()
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            bus.shutdown().await;
            log.shutdown().await;
            let mut ids = seen.0.lock().unwrap().clone();
            ids.sort();
            ids.dedup();
            assert_eq!(ids.len(), wanted, "{backend}: run {run}: each once");
            assert_eq!(seen.0.lock().unwrap().len(), wanted, "{backend}: run {run}");
        }
        assert!(audit::verify(&db.store).await.unwrap().ok);
        db.cleanup().await;
    }
}

/// With the audit log off (`keep: false`) the log is still written, since it is what
/// makes an answer durable, and a row goes once the dispatcher has passed it and the
/// dedup window is over; what remains still verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_audit_off_dispatched_rows_go_after_the_dedup_window() {
    for db in TestDb::all().await {
        let backend = db.store.backend();
        let bus = dispatcher(Arc::new(Seen::default()));
        let options = AuditOptions {
            keep: false,
            dedup_window: Duration::from_millis(300),
            purge_interval: Duration::from_millis(100),
            ..db.audit_options()
        };
        let log = Audit::start(
            db.store.clone(),
            options,
            Metrics::new(10),
            "off".into(),
            Some(Arc::new(bus.clone())),
        )
        .await
        .unwrap();
        let events: Vec<_> = (0..30)
            .map(|i| event(&format!("off-{i}"), "message.received", None))
            .collect();
        assert_eq!(record(&log, &events).await, 30);
        assert_eq!(
            audit::count(&db.store).await.unwrap(),
            30,
            "{backend}: written first"
        );
        let started = std::time::Instant::now();
        while audit::count(&db.store).await.unwrap() > 0 {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "{backend}: {} rows left",
                audit::count(&db.store).await.unwrap()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(
            started.elapsed() >= Duration::from_millis(250),
            "{backend}: rows went before the dedup window was over"
        );
        bus.shutdown().await;
        log.shutdown().await;
        assert!(audit::verify(&db.store).await.unwrap().ok, "{backend}");
        db.cleanup().await;
    }
}

/// A writer whose chain moved on in the database without it knowing — as when a
/// connection is lost right after COMMIT and the batch it reported as failed is in —
/// reads where the chain really ends and places its next batch after that, instead
/// of colliding with those rows for ever.
#[tokio::test]
async fn a_writer_behind_its_own_chain_places_after_the_real_head() {
    for db in TestDb::all().await {
        let backend = db.store.backend();
        let log = db.audit("moved").await;
        let first: Vec<_> = (0..3)
            .map(|i| event(&format!("moved-{i}"), "message.received", None))
            .collect();
        assert_eq!(record(&log, &first).await, 3);
        // Row 4 of the chain, committed where this writer did not hear of it.
        let last = audit::query(
            &db.store,
            &audit::Filter {
                limit: 1,
                ..Default::default()
            },
        )
        .await
        .unwrap()
        .remove(0);
        assert_eq!(last.chain_seq, 3);
        let lost = audit::Entry {
            source: Some("/test".into()),
            ..audit::Entry::of_event(&event("lost-ack", "message.received", None))
        };
        let row = audit::Record::chain(
            "moved",
            4,
            lost,
            chrono::Utc::now().timestamp_micros(),
            &audit::record::parse_hash(&last.hash).unwrap(),
        );
        let text = |v: &Option<String>| match v {
            Some(v) => format!("'{}'", v.replace('\'', "''")),
            None => "NULL".into(),
        };
        let e = &row.entry;
        db.exec(&format!(
            "INSERT INTO audit_log (chain, chain_seq, event_id, event_type, actor, actor_token, \
             actor_ip, resource_type, resource_id, details, time_us, recorded_us, prev_hash, hash, \
             source) VALUES ('moved', 4, '{}', '{}', {}, {}, {}, {}, {}, '{}', {}, {}, '{}', '{}', {})",
            e.event_id,
            e.event_type,
            text(&e.actor),
            text(&e.actor_token),
            text(&e.actor_ip),
            text(&e.resource_type),
            text(&e.resource_id),
            e.details.replace('\'', "''"),
            e.time_us,
            row.recorded_us,
            row.prev_hash,
            row.hash,
            text(&e.source),
        ))
        .await;
        let after: Vec<_> = (0..2)
            .map(|i| event(&format!("after-{i}"), "message.received", None))
            .collect();
        let appended = tokio::time::timeout(Duration::from_secs(10), record(&log, &after))
            .await
            .unwrap_or_else(|_| panic!("{backend}: the writer never got past its stale head"));
        assert_eq!(appended, 2, "{backend}");
        log.shutdown().await;
        let report = audit::verify(&db.store).await.unwrap();
        assert!(report.ok && report.rows == 6, "{backend}: {report:?}");
        db.cleanup().await;
    }
}
