use evhost_e2e::*;
use sqlx::Connection;

/// SIGTERM in the middle of a 10,000-event burst: the daemon stops taking events
/// (503 `stopping` or a closed connection), finishes what it accepted, and exits 0.
#[tokio::test]
async fn sigterm_during_a_burst_exits_cleanly() {
    let mut d =
        Daemon::start_with(Options::default().env("EVHOST_EVENTS__QUEUE_SIZE", 20000)).await;
    let batch: Vec<_> = (0..100)
        .map(|_| json!({"type": "message.received", "data": received("example.com", false)}))
        .collect();
    let burst = d.burst(&json!(batch), 4, 25);
    // Signal once the burst is under way (not on a fixed delay, which a slow machine would miss).
    d.wait_for_metric("evhost_events_accepted_total{family=\"message\"}")
        .await;
    let status = d.terminate().await;
    let accepted = burst.await.unwrap().len();
    assert!(
        status.success(),
        "exit status {status:?}; log:\n{}",
        d.log()
    );
    let log = d.log();
    assert!(log.contains("stopping: refusing new events"), "{log}");
    assert!(log.contains("every accepted event was dispatched"), "{log}");
    assert!(accepted > 0, "nothing was accepted before the signal");
}

/// SIGTERM while the database does not answer (PostgreSQL, the log's table locked by
/// the test): the daemon exits 0 within `server.shutdown_timeout`, and at the next
/// start every event it had acknowledged is there and delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_the_database_hung_exits_in_time_and_keeps_what_it_acknowledged() {
    let Some(backend) = Backend::postgres() else {
        return; // Backend::all() said SKIPPING
    };
    let Backend::Postgres { url, schema } = &backend else {
        unreachable!()
    };
    let rx = receiver::Receiver::start().await;
    let mut d = Daemon::start_with(
        Options::default()
            .webhooks_local()
            .backend(&backend)
            .env("EVHOST_SERVER__SHUTDOWN_TIMEOUT", "3s"),
    )
    .await;
    d.add_webhook(&json!({"name": "all", "url": rx.url("/"), "events": ["hung.*"]}))
        .await;
    let batch: Vec<_> = (0..50)
        .map(|i| json!({"type": "hung.test", "data": {"i": i}}))
        .collect();
    let mut acknowledged = Vec::new();
    for _ in 0..4 {
        let (status, body) = d.post_json("/v1/events/batch", &json!(batch)).await;
        assert_eq!(status, 202, "{body}");
        acknowledged.extend(body["ids"].as_array().unwrap().iter().cloned());
    }

    // The log's table locked: appends wait, and so do the publishers.
    let mut lock = sqlx::PgConnection::connect(url).await.unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "SET search_path TO \"{schema}\"; BEGIN; LOCK TABLE audit_log IN ACCESS EXCLUSIVE MODE;"
    )))
    .execute(&mut lock)
    .await
    .unwrap();
    let waiting = {
        let (client, url) = (reqwest::Client::new(), d.url("/v1/events/batch"));
        let body = json!(batch);
        tokio::spawn(async move { client.post(url).json(&body).send().await })
    };
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let started = std::time::Instant::now();
    let status = d.terminate().await;
    let took = started.elapsed();
    assert!(
        status.success(),
        "exit status {status:?}; log:\n{}",
        d.log()
    );
    assert!(
        took < std::time::Duration::from_secs(6),
        "exited {took:?} after SIGTERM with a 3 s shutdown timeout"
    );
    assert!(
        d.log().contains("stopped at the shutdown timeout"),
        "{}",
        d.log()
    );
    // The request that waited on the lock was never answered 202.
    if let Ok(Ok(response)) = waiting.await {
        assert_ne!(response.status(), 202);
    }
    sqlx::raw_sql("ROLLBACK").execute(&mut lock).await.unwrap();
    drop(lock);

    d.restart().await;
    rx.wait_for(acknowledged.len(), std::time::Duration::from_secs(30))
        .await;
    let delivered: std::collections::HashSet<String> = rx
        .requests()
        .iter()
        .map(|r| r.json()["id"].as_str().unwrap().to_string())
        .collect();
    for id in &acknowledged {
        assert!(
            delivered.contains(id.as_str().unwrap()),
            "{id} was not delivered"
        );
    }
    let rows = d.audit_rows("types=hung.test", 1000, None).await;
    let logged: std::collections::HashSet<&str> = rows
        .iter()
        .map(|r| r["event_id"].as_str().unwrap())
        .collect();
    for id in &acknowledged {
        assert!(
            logged.contains(id.as_str().unwrap()),
            "{id} is not in the log"
        );
    }
}

/// One daemon per data folder: a second `evhost serve` on the same `data_dir` refuses
/// to start (exit code 2) and names the pid of the one that has it; once that one
/// has stopped, the folder is free again.
#[tokio::test]
async fn a_second_daemon_on_the_same_data_dir_refuses_to_start() {
    let mut d = Daemon::start().await;
    let data_dir = d.dir.path().join("data");
    let data_dir = data_dir.to_str().unwrap();
    let listen = format!("127.0.0.1:{}", free_port());
    let env = [
        ("EVHOST_DATA_DIR", data_dir),
        ("EVHOST_SERVER__LISTEN", listen.as_str()),
    ];
    let (code, _, err) = cli(&["serve"], &env);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains(&format!("pid {}", d.pid())) && err.contains("data_dir"),
        "{err}"
    );
    assert!(d.terminate().await.success());
    d.restart().await;
    let (status, _) = d.get_json("/readyz").await;
    assert_eq!(status, 200);
}
