//! Webhook retention on both backends: old finished deliveries go with their
//! attempts; pending ones, recent ones and the messages they need stay.

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
        let bodies = db::bodies(&db.store, &["m1", "m2", "m3"]).await.unwrap();
        let mut left: Vec<&str> = bodies.keys().map(String::as_str).collect();
        left.sort();
        assert_eq!(left, ["m2", "m3"]);
        db.cleanup().await;
    }
}
