//! Webhook durability, black-box: `kill -9` with thousands of deliveries pending
//! loses none (on SQLite and PostgreSQL), and two daemons on one PostgreSQL share
//! the outbox without sending anything twice. Also the `evhost webhooks` CLI.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use evhost_e2e::receiver::{Receiver, Reply};
use evhost_e2e::{Backend, Daemon, Options, cli, json};

const EVENTS: usize = 10_000;
const CONCURRENCY: usize = 8;
const BATCH: usize = 100;

async fn wait_all(
    rx: &Receiver,
    want: &HashSet<String>,
    limit: Duration,
    log: impl Fn() -> String,
) {
    let deadline = Instant::now() + limit;
    loop {
        let got: HashSet<String> = rx.arrivals().into_keys().collect();
        if want.is_subset(&got) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {} events arrived within {limit:?}; log:\n{}",
            want.intersection(&got).count(),
            want.len(),
            log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_pending_delivery_arrives_after_kill_9() {
    for backend in Backend::all() {
        let rx = Receiver::start_with(Reply::status(200).delay(Duration::from_millis(4))).await;
        let mut d = Daemon::start_with(
            Options::default()
                .webhooks_local()
                .backend(&backend)
                .env("EVHOST_WEBHOOKS__CONCURRENCY", CONCURRENCY)
                .env("EVHOST_WEBHOOKS__BATCH_SIZE", BATCH)
                .env("EVHOST_EVENTS__QUEUE_SIZE", 20_000),
        )
        .await;
        d.add_webhook(&json!({"name": "crm", "url": rx.url("/"), "events": ["burst.*"]}))
            .await;
        let batch: Vec<_> = (0..100)
            .map(|i| json!({"type": "burst.test", "data": {"id": format!("n{i}")}}))
            .collect();
        let accepted: HashSet<String> = d
            .burst(&json!(batch), 4, EVENTS / 400)
            .await
            .unwrap()
            .into_iter()
            .collect();
        assert_eq!(accepted.len(), EVENTS);
        // Accepted events reach the outbox a moment later (an event still in the
        // bus's memory is lost to kill -9; a committed delivery is not): wait until
        // every delivery is committed, then kill mid-delivery.
        d.wait_metric_at_least(
            "evhost_webhook_deliveries_enqueued_total",
            EVENTS as f64,
            Duration::from_secs(60),
        )
        .await;
        rx.wait_for(1500, Duration::from_secs(30)).await;
        d.kill();
        let before = rx.count();
        assert!(
            before < EVENTS,
            "{}: all delivered before the kill; nothing was pending",
            backend.name()
        );
        d.restart().await;
        wait_all(&rx, &accepted, Duration::from_secs(120), || d.log()).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let seen = rx.arrivals();
        assert_eq!(
            seen.len(),
            EVENTS,
            "{}: only the accepted events",
            backend.name()
        );
        let mut duplicates = 0;
        for (event, ids) in &seen {
            assert!(
                ids.iter().all(|i| i == &ids[0]),
                "{event} arrived under several webhook-ids: {ids:?}"
            );
            duplicates += ids.len() - 1;
        }
        // Sent again: only what was in flight (attempts under way, and results sent
        // but not yet recorded: at most one recorder batch per lane slot).
        assert!(
            duplicates <= CONCURRENCY + 4 * BATCH,
            "{}: {duplicates} duplicates",
            backend.name()
        );
        eprintln!(
            "{}: {before} delivered before kill -9, {duplicates} sent twice",
            backend.name()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_daemons_on_one_postgres_share_the_outbox() {
    let Some(backend) = Backend::postgres() else {
        return; // Backend::all() said SKIPPING
    };
    const N: usize = 2000;
    let rx = Receiver::start_with(Reply::status(200).delay(Duration::from_millis(10))).await;
    let options = Options::default()
        .webhooks_local()
        .backend(&backend)
        .env("EVHOST_WEBHOOKS__CONCURRENCY", 4)
        .env("EVHOST_EVENTS__QUEUE_SIZE", 20_000);
    let a = Daemon::start_with(options.clone()).await;
    let b = Daemon::start_with(options).await;
    a.add_webhook(&json!({"name": "shared", "url": rx.url("/"), "events": ["burst.*"]}))
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await; // b loads the endpoint
    let batch: Vec<_> = (0..100)
        .map(|i| json!({"type": "burst.test", "data": {"id": format!("n{i}")}}))
        .collect();
    let accepted: HashSet<String> = a
        .burst(&json!(batch), 2, N / 200)
        .await
        .unwrap()
        .into_iter()
        .collect();
    assert_eq!(accepted.len(), N);
    wait_all(&rx, &accepted, Duration::from_secs(60), || a.log()).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        rx.count(),
        N,
        "every delivery sent once, none by both daemons"
    );
    let sample = "evhost_webhook_attempts_total{outcome=\"success\"}";
    let (by_a, by_b) = (a.metric(sample).await, b.metric(sample).await);
    assert_eq!(by_a + by_b, N as f64);
    assert!(
        by_b > 0.0,
        "the second daemon took part (a {by_a}, b {by_b})"
    );
}

// Multi-threaded: the receiver must answer while the test thread waits for the CLI.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_manages_endpoints_and_shows_deliveries() {
    let d = Daemon::start_with(Options::default().webhooks_local()).await;
    let rx = Receiver::start().await;
    let env = [("EVHOST_URL", d.base.as_str())];
    let url = rx.url("/hook");
    let (code, out, err) = cli(
        &[
            "webhooks",
            "add",
            &url,
            "--name",
            "crm",
            "--events",
            "message.*,user.login",
        ],
        &env,
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(err.contains("not shown again"), "{err}");
    let id = out
        .lines()
        .next()
        .unwrap()
        .rsplit(' ')
        .next()
        .unwrap()
        .to_string();
    assert!(out.contains("secret: whsec_"), "{out}");

    let (code, out, _) = cli(&["webhooks", "list"], &env);
    assert_eq!(code, 0);
    assert!(
        out.contains(&id) && out.contains("message.*,user.login") && !out.contains("whsec_"),
        "{out}"
    );
    let (code, out, err) = cli(
        &[
            "webhooks",
            "update",
            &id,
            "--name",
            "crm2",
            "--domain",
            "example.org",
        ],
        &env,
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("\"crm2\"") && out.contains("example.org"),
        "{out}"
    );
    let (code, out, _) = cli(&["webhooks", "disable", &id], &env);
    assert_eq!(
        (code, out.trim()),
        (0, format!("webhook {id} is disabled").as_str())
    );
    let (code, _, _) = cli(&["webhooks", "enable", &id], &env);
    assert_eq!(code, 0);
    let (code, out, _) = cli(&["webhooks", "rotate-secret", &id], &env);
    assert_eq!(code, 0);
    assert!(out.contains("secret: whsec_"), "{out}");

    let (code, out, err) = cli(&["webhooks", "test", &id], &env);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.starts_with("delivered: 200"), "{out}");
    let (code, out, _) = cli(&["webhooks", "deliveries", &id], &env);
    assert_eq!(code, 0);
    assert!(
        out.contains("webhook.test") && out.contains("succeeded"),
        "{out}"
    );
    let delivery = out
        .lines()
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    let (code, out, _) = cli(&["webhooks", "delivery", &delivery], &env);
    assert_eq!(code, 0);
    assert!(out.contains("\"attempt_log\""), "{out}");
    let (code, out, err) = cli(&["webhooks", "retry", &delivery], &env);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("due again"), "{out}");
    let (code, out, err) = cli(
        &["webhooks", "replay", &id, "--since", "2026-01-01T00:00:00Z"],
        &env,
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("0 failed deliveries"), "{out}");

    // Errors quote the daemon's message and exit 1.
    let (code, _, err) = cli(
        &[
            "webhooks",
            "add",
            "http://10.0.0.1/",
            "--name",
            "x",
            "--events",
            "message.*",
        ],
        &env,
    );
    assert_eq!(code, 1);
    assert!(
        err.contains("refused_address") && err.contains("private"),
        "{err}"
    );
    let (code, _, err) = cli(&["webhooks", "show", "wh_nope"], &env);
    assert_eq!(code, 1);
    assert!(err.contains("404"), "{err}");

    // A dead receiver: the test ping fails with exit 1 and says why.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let dead = format!("http://{closed}/");
    let (code, _, err) = cli(&["webhooks", "update", &id, "--endpoint-url", &dead], &env);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = cli(&["webhooks", "test", &id], &env);
    assert_eq!(code, 1);
    assert!(err.contains("test ping failed"), "{err}");

    let (code, out, _) = cli(&["webhooks", "rm", &id], &env);
    assert_eq!(code, 0);
    assert!(out.contains("removed"));
    let (_, out, _) = cli(&["webhooks", "list", "--json"], &env);
    assert_eq!(out.trim(), "");
}
