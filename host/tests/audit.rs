//! The event log (the audit log) on both backends: SQLite always, PostgreSQL when
//! `EVHOST_TEST_POSTGRES_URL` is set (each test in its own schema). Tampering
//! directly in the database must be caught; retention must not break verification;
//! what was committed and not dispatched is dispatched at the next start, once.

use std::sync::Arc;
use std::time::Duration;

use evhost::audit::{self, Audit, checkpoint};
use tokio_util::sync::CancellationToken;

mod log_support;
mod support;

use log_support::{event, record};
use support::TestDb;

async fn write_rows(db: &TestDb, chain: &str, n: usize) -> Arc<Audit> {
    let audit = db.audit(chain).await;
    let events: Vec<_> = (0..n)
        .map(|i| event(&format!("{chain}-e{i}"), "message.received", Some("smtp")))
        .collect();
    record(&audit, &events).await;
    audit
}

#[tokio::test]
async fn each_event_is_recorded_once_and_the_log_verifies() {
    for db in TestDb::all().await {
        let audit = db.audit("c1").await;
        let e1 = event("id-1", "message.received", Some("smtp"));
        let e2 = event("id-2", "message.sent", None);
        // The same id twice, in one batch and across batches.
        record(&audit, &[e1.clone(), e2, e1.clone()]).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        record(&audit, &[e1]).await;
        audit.shutdown().await;
        assert_eq!(
            audit::count(&db.store).await.unwrap(),
            2,
            "{}",
            db.store.backend()
        );
        let report = audit::verify(&db.store).await.unwrap();
        assert!(report.ok && report.rows == 2, "{report:?}");

        let rows = audit::query(
            &db.store,
            &audit::Filter {
                limit: 10,
                ..Default::default()
            },
        )
        .await
        .unwrap();
        assert_eq!(rows[0].entry.event_id, "id-2", "newest first");
        assert_eq!(rows[1].entry.actor.as_deref(), Some("smtp"));
        assert_eq!(rows[1].entry.actor_ip.as_deref(), Some("192.0.2.9"));
        assert_eq!(rows[1].entry.resource_type.as_deref(), Some("message"));
        assert_eq!(rows[1].entry.resource_id.as_deref(), Some("id-1"));
        assert_eq!(rows[0].entry.actor.as_deref(), Some("anonymous"));
        db.cleanup().await;
    }
}

#[tokio::test]
async fn altering_deleting_or_reordering_a_row_is_caught() {
    let cases = [
        (
            "alter",
            "UPDATE audit_log SET details = '{\"message_id\":\"forged\"}' WHERE chain_seq = 5",
            5,
            "changed",
        ),
        (
            "delete",
            "DELETE FROM audit_log WHERE chain_seq = 5",
            5,
            "missing",
        ),
        (
            "reorder",
            "UPDATE audit_log SET chain_seq = -chain_seq WHERE chain_seq IN (4, 5); \
                     UPDATE audit_log SET chain_seq = 99 WHERE chain_seq = -4; \
                     UPDATE audit_log SET chain_seq = 4 WHERE chain_seq = -5; \
                     UPDATE audit_log SET chain_seq = 5 WHERE chain_seq = 99",
            4,
            "link",
        ),
        (
            "actor",
            "UPDATE audit_log SET actor = 'someone-else' WHERE chain_seq = 7",
            7,
            "changed",
        ),
    ];
    for (what, sql, at, reason) in cases {
        for db in TestDb::all().await {
            let audit = write_rows(&db, "c1", 10).await;
            audit.shutdown().await;
            assert!(audit::verify(&db.store).await.unwrap().ok);
            db.exec(sql).await;
            let report = audit::verify(&db.store).await.unwrap();
            let broken = report
                .broken
                .clone()
                .unwrap_or_else(|| panic!("{what} not caught on {}", db.store.backend()));
            assert!(!report.ok);
            assert_eq!(
                broken.chain_seq,
                at,
                "{what} on {}: {broken:?}",
                db.store.backend()
            );
            assert!(broken.reason.contains(reason), "{what}: {}", broken.reason);
            db.cleanup().await;
        }
    }
}

#[tokio::test]
async fn retention_purges_a_prefix_and_verification_still_holds() {
    for db in TestDb::all().await {
        let audit = write_rows(&db, "c1", 20).await;
        audit.shutdown().await;
        // Age the first eight rows past a one-day retention.
        db.exec(
            "UPDATE audit_log SET recorded_us = recorded_us - 200000000000 WHERE chain_seq <= 8",
        )
        .await;
        // Nothing dispatched these events (no dispatcher here): retention keeps them.
        let purged = audit::purge(&db.store, 1, &CancellationToken::new())
            .await
            .unwrap();
        assert_eq!(purged, 0, "rows the dispatcher has not passed stay");
        db.exec("UPDATE log_positions SET position = (SELECT MAX(chain_seq) FROM audit_log a WHERE a.chain = log_positions.chain)")
            .await;
        let purged = audit::purge(&db.store, 1, &CancellationToken::new())
            .await
            .unwrap();
        assert_eq!(purged, 8);
        let report = audit::verify(&db.store).await.unwrap();
        assert!(report.ok && report.rows == 12, "{report:?}");
        // A restarted writer continues the chain after what remains.
        let audit = db.audit("c1").await;
        record(&audit, &[event("later", "message.received", None)]).await;
        audit.shutdown().await;
        let report = audit::verify(&db.store).await.unwrap();
        assert!(report.ok && report.rows == 13, "{report:?}");
        // Purging everything leaves an anchor to continue from.
        db.exec("UPDATE audit_log SET recorded_us = recorded_us - 200000000000")
            .await;
        db.exec("UPDATE log_positions SET position = (SELECT MAX(chain_seq) FROM audit_log a WHERE a.chain = log_positions.chain)")
            .await;
        assert_eq!(
            audit::purge(&db.store, 1, &CancellationToken::new())
                .await
                .unwrap(),
            13
        );
        let audit = db.audit("c1").await;
        record(&audit, &[event("after-all", "message.received", None)]).await;
        audit.shutdown().await;
        let report = audit::verify(&db.store).await.unwrap();
        assert!(report.ok && report.rows == 1, "{report:?}");
        db.cleanup().await;
    }
}

/// Recomputes every hash from `from` on, as someone rewriting the chain would.
async fn rewrite_chain(db: &TestDb, from: i64) {
    let all = audit::query(
        &db.store,
        &audit::Filter {
            limit: 1000,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let mut rows: Vec<_> = all.into_iter().filter(|r| r.chain == "c1").collect();
    rows.sort_by_key(|r| r.chain_seq);
    let mut prev = rows[(from - 2) as usize].hash.clone();
    for row in rows.iter_mut().filter(|r| r.chain_seq >= from) {
        if row.chain_seq == from {
            row.entry.details = r#"{"message_id":"forged"}"#.into();
        }
        row.prev_hash = prev.clone();
        row.hash = hex::encode(row.compute_hash());
        prev = row.hash.clone();
        db.exec(&format!(
            "UPDATE audit_log SET details = '{}', prev_hash = '{}', hash = '{}' WHERE seq = {}",
            row.entry.details, row.prev_hash, row.hash, row.seq
        ))
        .await;
    }
}

#[tokio::test]
async fn signed_checkpoints_catch_a_rewritten_or_shortened_chain() {
    for db in TestDb::all().await {
        let audit = write_rows(&db, "c1", 10).await;
        audit.shutdown().await;
        let file = db.dir.path().join("audit-checkpoints.jsonl");
        let checkpoints = checkpoint::read_latest(&file).unwrap();
        assert_eq!(checkpoints.len(), 1);
        assert_eq!(checkpoints[0].chain_seq, 10);
        let key = checkpoint::load_or_create_key(&db.dir.path().join("audit-checkpoint.key"))
            .unwrap()
            .verifying_key();

        let mut report = audit::verify(&db.store).await.unwrap();
        checkpoint::verify_against(&db.store, &checkpoints, Some(&key), &mut report)
            .await
            .unwrap();
        assert!(report.ok, "{report:?}");

        rewrite_chain(&db, 3).await;
        let mut report = audit::verify(&db.store).await.unwrap();
        assert!(report.ok, "a whole rewrite passes the chain check alone");
        checkpoint::verify_against(&db.store, &checkpoints, Some(&key), &mut report)
            .await
            .unwrap();
        assert!(!report.ok);
        assert!(
            report.broken.as_ref().unwrap().reason.contains("rewritten"),
            "{report:?}"
        );
        db.cleanup().await;
    }
    for db in TestDb::all().await {
        let audit = write_rows(&db, "c1", 10).await;
        audit.shutdown().await;
        let checkpoints =
            checkpoint::read_latest(&db.dir.path().join("audit-checkpoints.jsonl")).unwrap();
        db.exec("DELETE FROM audit_log WHERE chain_seq >= 9").await;
        let mut report = audit::verify(&db.store).await.unwrap();
        assert!(report.ok, "cutting the tail passes the chain check alone");
        checkpoint::verify_against(&db.store, &checkpoints, None, &mut report)
            .await
            .unwrap();
        assert!(
            report.broken.as_ref().unwrap().reason.contains("cut short"),
            "{report:?}"
        );
        db.cleanup().await;
    }
}

#[tokio::test]
async fn several_writers_share_the_events_each_with_its_own_chain() {
    for db in TestDb::all().await {
        let audit = db.audit_with_writers("host", 3).await;
        let events: Vec<_> = (0..300)
            .map(|i| event(&format!("e{i}"), "message.received", Some("smtp")))
            .collect();
        record(&audit, &events).await;
        // Resent ids land on other writers: still one row each.
        record(&audit, &events[..10]).await;
        audit.shutdown().await;
        let backend = db.store.backend();
        assert_eq!(audit::count(&db.store).await.unwrap(), 300, "{backend}");
        let mut report = audit::verify(&db.store).await.unwrap();
        assert!(
            report.ok && report.chains == 3 && report.rows == 300,
            "{backend}: {report:?}"
        );
        let checkpoints =
            checkpoint::read_latest(&db.dir.path().join("audit-checkpoints.jsonl")).unwrap();
        let mut chains: Vec<_> = checkpoints
            .iter()
            .map(|cp| (cp.chain.as_str(), cp.chain_seq))
            .collect();
        chains.sort();
        assert_eq!(chains.len(), 3, "{backend}: {chains:?}");
        assert_eq!(
            chains.iter().map(|(_, n)| n).sum::<i64>(),
            300,
            "{backend}: {chains:?}"
        );
        assert_eq!(
            chains.iter().map(|(c, _)| *c).collect::<Vec<_>>(),
            ["host", "host.1", "host.2"]
        );
        let key = checkpoint::load_or_create_key(&db.dir.path().join("audit-checkpoint.key"))
            .unwrap()
            .verifying_key();
        checkpoint::verify_against(&db.store, &checkpoints, Some(&key), &mut report)
            .await
            .unwrap();
        assert!(report.ok, "{backend}: {report:?}");

        // A restart continues each chain where it ended.
        let again = db.audit_with_writers("host", 3).await;
        let more: Vec<_> = (300..330)
            .map(|i| event(&format!("e{i}"), "message.received", None))
            .collect();
        record(&again, &more).await;
        again.shutdown().await;
        let report = audit::verify(&db.store).await.unwrap();
        assert!(
            report.ok && report.chains == 3 && report.rows == 330,
            "{backend}: {report:?}"
        );
        db.cleanup().await;
    }
}

#[tokio::test]
async fn two_writers_keep_two_chains_and_verify_checks_both() {
    for db in TestDb::all().await {
        let a = write_rows(&db, "host-a", 5).await;
        let b = write_rows(&db, "host-b", 7).await;
        a.shutdown().await;
        b.shutdown().await;
        let report = audit::verify(&db.store).await.unwrap();
        assert!(
            report.ok && report.chains == 2 && report.rows == 12,
            "{report:?}"
        );
        db.exec("UPDATE audit_log SET event_type = 'x.y' WHERE chain = 'host-b' AND chain_seq = 3")
            .await;
        let report = audit::verify(&db.store).await.unwrap();
        let broken = report.broken.unwrap();
        assert_eq!((broken.chain.as_str(), broken.chain_seq), ("host-b", 3));
        db.cleanup().await;
    }
}

#[tokio::test]
async fn the_writer_retries_until_the_database_takes_the_rows() {
    for db in TestDb::all().await {
        let audit = db.audit("c1").await;
        db.exec("ALTER TABLE audit_log RENAME TO audit_log_away")
            .await;
        let events: Vec<_> = (0..50)
            .map(|i| event(&format!("r{i}"), "message.received", None))
            .collect();
        let pending = {
            let (audit, events) = (audit.clone(), events.clone());
            tokio::spawn(async move { record(&audit, &events).await })
        };
        let started = std::time::Instant::now();
        while audit.is_healthy() && started.elapsed() < Duration::from_secs(5) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(!audit.is_healthy(), "writes are failing, and that shows");
        assert!(
            !pending.is_finished(),
            "nobody is answered before the commit"
        );
        db.exec("ALTER TABLE audit_log_away RENAME TO audit_log")
            .await;
        assert_eq!(pending.await.unwrap(), 50);
        audit.shutdown().await;
        assert!(audit.is_healthy());
        assert_eq!(
            audit::count(&db.store).await.unwrap(),
            50,
            "nothing dropped on {}",
            db.store.backend()
        );
        assert!(audit::verify(&db.store).await.unwrap().ok);
        db.cleanup().await;
    }
}
