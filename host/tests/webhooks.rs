//! The outbox's tables on both backends: claims, and retention (old finished
//! deliveries go with their attempts; pending ones, recent ones and the messages
//! they need stay).

mod support;

use std::sync::Arc;

use evhost::webhooks::db::{self, AttemptRecord, NewDelivery, NewMessage};
use support::TestDb;

const DAY_US: i64 = 86_400 * 1_000_000;

fn message(id: &str) -> NewMessage {
    NewMessage {
        id: id.into(),
        event_type: "message.received".into(),
        body: format!(r#"{{"id":"{id}"}}"#),
        cloudevent: None,
    }
}

/// A delivery id made at `at_us` (UUID v7 carries its creation time).
fn id_at(at_us: i64) -> String {
    let ts = uuid::Timestamp::from_unix(
        uuid::NoContext,
        (at_us / 1_000_000) as u64,
        ((at_us % 1_000_000) * 1000) as u32,
    );
    uuid::Uuid::new_v7(ts).to_string()
}

fn delivery(id: &str, message: &str) -> NewDelivery {
    NewDelivery {
        id: id.into(),
        endpoint_id: "wh_test".into(),
        message_id: message.into(),
        event_type: "message.received".into(),
        next_attempt_us: 0,
        owner: None,
    }
}

fn finished(id: &str, status: &'static str) -> AttemptRecord {
    AttemptRecord {
        delivery_id: id.into(),
        attempt: 1,
        time_us: 0,
        status_code: Some(200),
        latency_us: 1,
        error: None,
        response: Some("ok".into()),
        status,
        next_attempt_us: 0,
    }
}

async fn count(db: &TestDb, table: &str) -> i64 {
    let sql = sqlx::AssertSqlSafe(format!("SELECT COUNT(*) FROM {table}"));
    match &db.store {
        evhost::store::Store::Sqlite(p) => sqlx::query_scalar(sql).fetch_one(p).await.unwrap(),
        evhost::store::Store::Postgres(p) => sqlx::query_scalar(sql).fetch_one(p).await.unwrap(),
    }
}

#[tokio::test]
async fn retention_removes_old_finished_deliveries_and_nothing_else() {
    for db in TestDb::all().await {
        let now = chrono::Utc::now().timestamp_micros();
        let old = now - 40 * DAY_US;
        // m1: two old finished deliveries (message goes); m2: old succeeded + old
        // pending (message stays); m3: a recent finished one (all stays).
        let (a, b, c, d, e) = (
            id_at(old),
            id_at(old + 1),
            id_at(old + 2),
            id_at(old + 3),
            id_at(now),
        );
        let writes = db::Writes::open(&db.store).unwrap();
        db::enqueue(
            &writes,
            Arc::new(vec![message("m1"), message("m2"), message("m3")]),
            Arc::new(vec![
                delivery(&a, "m1"),
                delivery(&b, "m1"),
                delivery(&c, "m2"),
                delivery(&d, "m2"),
                delivery(&e, "m3"),
            ]),
            now,
        )
        .await
        .unwrap();
        let records = vec![
            finished(&a, db::SUCCEEDED),
            finished(&b, db::FAILED),
            finished(&c, db::SUCCEEDED),
            finished(&e, db::SUCCEEDED),
        ];
        db::record(&writes, Arc::new(records), Arc::default(), now)
            .await
            .unwrap();
        assert_eq!(count(&db, "webhook_attempts").await, 4);

        let cutoff = now - 30 * DAY_US;
        assert_eq!(
            db::purge(&db.store, cutoff, 2).await.unwrap(),
            2,
            "bounded by the limit"
        );
        assert_eq!(db::purge(&db.store, cutoff, 100).await.unwrap(), 1);
        assert_eq!(db::purge(&db.store, cutoff, 100).await.unwrap(), 0);

        assert!(db::get_delivery(&db.store, &a).await.unwrap().is_none());
        assert!(db::get_delivery(&db.store, &c).await.unwrap().is_none());
        assert!(
            db::get_delivery(&db.store, &d).await.unwrap().is_some(),
            "pending stays"
        );
        assert!(
            db::get_delivery(&db.store, &e).await.unwrap().is_some(),
            "recent stays"
        );
        assert_eq!(count(&db, "webhook_attempts").await, 1);
        // m1 is gone; m2 is still needed by the pending delivery; m3 is recent.
        let sql = "SELECT id FROM webhook_messages ORDER BY id";
        let left: Vec<String> = match &db.store {
            evhost::store::Store::Sqlite(p) => sqlx::query_scalar(sql).fetch_all(p).await.unwrap(),
            evhost::store::Store::Postgres(p) => {
                sqlx::query_scalar(sql).fetch_all(p).await.unwrap()
            }
        };
        assert_eq!(left, ["m2", "m3"]);
        db.cleanup().await;
    }
}

#[tokio::test]
async fn a_claim_leases_due_deliveries_with_their_bodies_and_skips_leased_ones() {
    for db in TestDb::all().await {
        let now = chrono::Utc::now().timestamp_micros();
        let (a, b, c, later) = (id_at(now), id_at(now + 1), id_at(now + 2), id_at(now + 3));
        let mut with_ce = message("m2");
        with_ce.cloudevent = Some(r#"{"specversion":"1.0"}"#.into());
        let leased_elsewhere = NewDelivery {
            next_attempt_us: now + 60_000_000,
            owner: Some("other-daemon".into()),
            ..delivery(&c, "m1")
        };
        let not_yet_due = NewDelivery {
            next_attempt_us: now + 60_000_000,
            ..delivery(&later, "m1")
        };
        let writes = db::Writes::open(&db.store).unwrap();
        db::enqueue(
            &writes,
            Arc::new(vec![message("m1"), with_ce]),
            Arc::new(vec![
                delivery(&a, "m1"),
                delivery(&b, "m2"),
                leased_elsewhere,
                not_yet_due,
            ]),
            now,
        )
        .await
        .unwrap();

        let lease = now + 30_000_000;
        let mut claimed = db::claim(&writes, "wh_test", "me", now, lease, 10)
            .await
            .unwrap();
        claimed.sort_by(|x, y| x.body.cmp(&y.body));
        let got: Vec<(&str, &str, Option<&str>, i64)> = claimed
            .iter()
            .map(|c| {
                (
                    c.id.as_str(),
                    c.body.as_str(),
                    c.cloudevent.as_deref(),
                    c.attempts,
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                (a.as_str(), r#"{"id":"m1"}"#, None, 0),
                (
                    b.as_str(),
                    r#"{"id":"m2"}"#,
                    Some(r#"{"specversion":"1.0"}"#),
                    0
                ),
            ]
        );
        let stored = db::get_delivery(&db.store, &a).await.unwrap().unwrap();
        assert_eq!(
            stored.next_attempt_us, lease,
            "leased until the lease's end"
        );
        assert!(
            db::claim(&writes, "wh_test", "me", now, lease, 10)
                .await
                .unwrap()
                .is_empty(),
            "leased rows are not claimed twice"
        );
        assert_eq!(
            db::claim(&writes, "wh_test", "me", now + 61_000_000, lease, 1)
                .await
                .unwrap()
                .len(),
            1,
            "bounded by the limit once the others are due"
        );
        db.cleanup().await;
    }
}
