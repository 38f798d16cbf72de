//! Faults around the daemon, black-box: the database failing, its connections cut
//! under load, and inputs a database refuses as they are. Each affects only itself
//! and heals by itself; nothing acknowledged is lost.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use evhost_e2e::receiver::Receiver;
use evhost_e2e::{Backend, Daemon, Options, json};

/// The database failing (PostgreSQL, the log's table renamed away by the test): the
/// publisher already waiting is answered once its row commits, new publishers get
/// 503 `log_unavailable` meanwhile, `/readyz` says so, and all resumes by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_database_answers_503_and_recovers_by_itself() {
    use sqlx::Connection;
    let Some(backend) = Backend::postgres() else {
        return; // Backend::all() said SKIPPING
    };
    let Backend::Postgres { url, schema } = &backend else {
        unreachable!()
    };
    let d = Daemon::start_with(Options::default().backend(&backend)).await;
    let mut admin = sqlx::PgConnection::connect(url).await.unwrap();
    let exec = |sql: String| sqlx::raw_sql(sqlx::AssertSqlSafe(sql));
    exec(format!(
        "ALTER TABLE \"{schema}\".audit_log RENAME TO audit_log_away"
    ))
    .execute(&mut admin)
    .await
    .unwrap();
    let first = {
        let (client, url) = (reqwest::Client::new(), d.url("/v1/events"));
        tokio::spawn(async move {
            let event = json!({"type": "db.down", "id": "waited", "data": {}});
            client.post(url).json(&event).send().await.unwrap().status()
        })
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, ready) = d.get_json("/readyz").await;
        if status == 503 {
            assert_eq!(ready["status"], "audit_unavailable", "{ready}");
            break;
        }
        assert!(Instant::now() < deadline, "readyz stayed {status}: {ready}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let response = d
        .request(reqwest::Method::POST, "/v1/events")
        .json(&json!({"type": "db.down", "id": "refused", "data": {}}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["retry-after"], "5");
    let (_, body) = evhost_e2e::status_json(response).await;
    assert_eq!(body["error"]["code"], "log_unavailable", "{body}");
    assert!(
        !first.is_finished(),
        "the waiting publisher is not answered yet"
    );

    exec(format!(
        "ALTER TABLE \"{schema}\".audit_log_away RENAME TO audit_log"
    ))
    .execute(&mut admin)
    .await
    .unwrap();
    assert_eq!(first.await.unwrap(), 202);
    let (status, body) = d
        .post_json(
            "/v1/events",
            &json!({"type": "db.down", "id": "after", "data": {}}),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let (status, _) = d.get_json("/readyz").await;
    assert_eq!(status, 200);
    let ids: HashSet<String> = d
        .audit_rows("types=db.down", 100, None)
        .await
        .iter()
        .map(|r| r["event_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        ids,
        HashSet::from(["waited".to_string(), "after".to_string()])
    );
}

/// Inputs a database refuses as they are affect nothing else, on both backends: a NUL
/// and a 3 KB value in `message_id` (the log's indexed resource id), and a receiver
/// that answers with NUL bytes (the stored excerpt of its answer). Each event is
/// kept and delivered, later events too, and the log can be queried by those ids.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inputs_a_database_refuses_as_they_are_stop_nothing() {
    use evhost_e2e::receiver::Reply;
    for backend in Backend::all() {
        let name = backend.name();
        let nul_rx = Receiver::start_with(Reply::status(200).body("ok\0\0ok".into())).await;
        let rx = Receiver::start().await;
        let d = Daemon::start_with(Options::default().webhooks_local().backend(&backend)).await;
        let (nul_id, _) = d
            .add_webhook(&json!({"name": "nul", "url": nul_rx.url("/"), "events": ["message.*"]}))
            .await;
        d.add_webhook(&json!({"name": "ok", "url": rx.url("/"), "events": ["message.*"]}))
            .await;
        let long = format!("<{}@mx.example.com>", "x".repeat(3000));
        let ids = [
            "<nul\u{0}id@mx.example.com>",
            long.as_str(),
            "<plain@mx.example.com>",
        ];
        for id in ids {
            let mut data = evhost_e2e::received("example.com", false);
            data["message_id"] = json!(id);
            let (status, body) = d
                .post_json(
                    "/v1/events?wait=true",
                    &json!({"type": "message.received", "data": data}),
                )
                .await;
            assert_eq!(status, 200, "{name}: {body}");
        }
        for r in [&rx, &nul_rx] {
            let got = r.wait_for(3, Duration::from_secs(20)).await;
            let delivered: HashSet<String> = got
                .iter()
                .map(|r| r.json()["data"]["message_id"].as_str().unwrap().to_string())
                .collect();
            assert_eq!(delivered.len(), 3, "{name}");
        }
        for id in ids {
            let query = format!("resource_type=message&resource_id={}", urlencoding(id));
            let rows = d.audit_rows(&query, 10, None).await;
            assert_eq!(rows.len(), 1, "{name}: {id:.40}");
            assert_eq!(
                rows[0]["details"]["message_id"], id,
                "{name}: the full value is kept"
            );
        }
        let (status, report) = d.get_json("/v1/audit/verify").await;
        assert_eq!(
            (status, report["ok"].clone()),
            (200, json!(true)),
            "{name}: {report}"
        );
        // The recorder took the NUL receiver's answers: the deliveries say succeeded.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let (_, deliveries) = d
                .get_json(&format!("/v1/webhooks/{nul_id}/deliveries"))
                .await;
            let rows = deliveries["deliveries"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            if rows.len() == 3 && rows.iter().all(|r| r["status"] == "succeeded") {
                break;
            }
            assert!(Instant::now() < deadline, "{name}: {deliveries}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Percent-encodes a query value.
fn urlencoding(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// PostgreSQL connections cut under load: this daemon's connections (named after
/// its node in `pg_stat_activity`) are terminated every 200 ms for 8 s while 16
/// publishers send. A commit whose acknowledgement is lost is recognised (the writer
/// reads where its chain ends before trying again). Afterwards every id answered
/// 202 is in the log exactly once and delivered, and the chains verify.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_cut_every_200_ms_under_load_lose_nothing() {
    use sqlx::Connection;
    use std::sync::atomic::{AtomicBool, Ordering};
    let Some(backend) = Backend::postgres() else {
        return; // Backend::all() said SKIPPING
    };
    let Backend::Postgres { url, .. } = &backend else {
        unreachable!()
    };
    let rx = Receiver::start().await;
    let d = Daemon::start_with(Options::default().webhooks_local().backend(&backend)).await;
    d.add_webhook(&json!({"name": "cut", "url": rx.url("/"), "events": ["cut.*"]}))
        .await;
    let node = std::fs::read_to_string(d.dir.path().join("data/audit-chain-id")).unwrap();
    let application = format!("evhost {}", node.trim());
    let url = url.clone();
    let cutter = tokio::spawn(async move {
        let mut admin = sqlx::PgConnection::connect(&url).await.unwrap();
        let mut cut = 0;
        for _ in 0..40 {
            let done: Vec<(bool,)> = sqlx::query_as(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1",
            )
            .bind(&application)
            .fetch_all(&mut admin)
            .await
            .unwrap();
            cut += done.len();
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        cut
    });
    let stop = Arc::new(AtomicBool::new(false));
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let publishers: Vec<_> = (0..16)
        .map(|task| {
            let (client, url, stop) = (client.clone(), d.url("/v1/events"), stop.clone());
            tokio::spawn(async move {
                let (mut ok, mut refused) = (Vec::new(), 0);
                for n in 0.. {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let id = format!("cut-{task}-{n}");
                    let body = json!({"type": "cut.test", "id": id, "data": {"n": n}});
                    match client.post(&url).json(&body).send().await {
                        Ok(r) if r.status() == 202 => ok.push(id),
                        Ok(r) if r.status() == 503 => {
                            refused += 1;
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                        Ok(r) => panic!("answered {}", r.status()),
                        Err(_) => {}
                    }
                }
                (ok, refused)
            })
        })
        .collect();
    let cut = cutter.await.unwrap();
    stop.store(true, Ordering::Relaxed);
    let mut acknowledged = HashSet::new();
    let mut refused = 0;
    for p in publishers {
        let (ok, r) = p.await.unwrap();
        acknowledged.extend(ok);
        refused += r;
    }
    assert!(cut > 0, "no connection was cut");
    assert!(!acknowledged.is_empty());
    rx.wait_arrivals(&acknowledged, Duration::from_secs(60), || {
        format!("log:\n{}", d.log())
    })
    .await;
    let counts = d.log_counts("types=cut.test").await;
    for id in &acknowledged {
        assert_eq!(
            counts.get(id),
            Some(&1),
            "{id} is in the log {:?} times",
            counts.get(id)
        );
    }
    let (status, report) = d.get_json("/v1/audit/verify").await;
    assert_eq!(
        (status, report["ok"].clone()),
        (200, json!(true)),
        "{report}"
    );
    eprintln!(
        "{cut} connections cut; {} events acknowledged, each in the log once and delivered; {refused} answers were 503",
        acknowledged.len()
    );
}
