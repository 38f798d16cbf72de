//! The audit log seen from outside, on SQLite and on PostgreSQL.

use std::collections::HashSet;
use std::time::Duration;

use evhost_e2e::*;
use reqwest::Method;

const SMTP: &str = "smtp-token-000000000001";
const IMAP: &str = "imap-token-000000000002";
const READER: &str = "reader-token-0000000003";

fn tokens_yaml() -> String {
    format!(
        "auth:\n  tokens:\n    - {{name: smtp, token: {SMTP}, scopes: [publish]}}\n    - {{name: imap, token: {IMAP}, scopes: [publish]}}\n    - {{name: ops, token: {READER}, scopes: [read]}}\n"
    )
}

fn login() -> Value {
    json!({"user_id": "0195f1d2-7a3b-7c4d-8e5f-a1b2c3d4e5f6", "email": "bob@example.com", "ip": "192.0.2.7",
           "user_agent": "x", "protocol": "imap", "success": true})
}

/// Every row matching `query`, read with the `read` token.
async fn all_rows(d: &Daemon, query: &str, limit: u32) -> Vec<Value> {
    d.audit_rows(query, limit, Some(READER)).await
}

#[tokio::test]
async fn two_publishers_in_two_processes_are_recorded_exactly() {
    for backend in Backend::all() {
        let d = Daemon::start_with(
            Options::default()
                .config_yaml(&tokens_yaml())
                .backend(&backend),
        )
        .await;
        let data = d.dir.path().join("received.json");
        let mut expected = Vec::new();
        for i in 0..3 {
            let mut payload = received("example.com", false);
            payload["message_id"] = json!(format!("m-{i}"));
            std::fs::write(&data, payload.to_string()).unwrap();
            let (code, out, err) = cli(
                &[
                    "publish",
                    "message.received",
                    "--data",
                    &format!("@{}", data.display()),
                    "--wait",
                ],
                &[("EVHOST_URL", &d.base), ("EVHOST_TOKEN", SMTP)],
            );
            assert_eq!(code, 0, "{err}");
            expected.push((out.trim().to_string(), "smtp", "message", format!("m-{i}")));
        }
        for _ in 0..2 {
            let (code, out, err) = cli(
                &[
                    "publish",
                    "user.login",
                    "--data",
                    &login().to_string(),
                    "--wait",
                ],
                &[("EVHOST_URL", &d.base), ("EVHOST_TOKEN", IMAP)],
            );
            assert_eq!(code, 0, "{err}");
            expected.push((
                out.trim().to_string(),
                "imap",
                "user",
                "0195f1d2-7a3b-7c4d-8e5f-a1b2c3d4e5f6".into(),
            ));
        }
        // A refused attempt is recorded as a management action.
        let r = d
            .client
            .post(d.url("/v1/events"))
            .bearer_auth("not-a-real-token-at-all")
            .json(&json!({}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401);

        // Handled means queued for the audit writer; give it a moment to commit.
        let mut rows = Vec::new();
        for _ in 0..100 {
            rows = all_rows(&d, "types=message.*,user.*", 2).await;
            if rows.len() >= 5 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(
            rows.len(),
            5,
            "{} rows on {}: {rows:?}",
            rows.len(),
            backend.name()
        );
        for (id, actor, resource_type, resource_id) in &expected {
            let row = rows
                .iter()
                .find(|r| r["event_id"] == **id)
                .unwrap_or_else(|| panic!("{id} missing"));
            assert_eq!(row["actor"], *actor);
            assert_eq!(row["actor_token"], *actor);
            assert_eq!(row["actor_ip"], "127.0.0.1");
            assert_eq!(row["resource_type"], *resource_type);
            assert_eq!(row["resource_id"], **resource_id);
        }
        let seqs: Vec<i64> = rows.iter().map(|r| r["seq"].as_i64().unwrap()).collect();
        assert!(
            seqs.windows(2).all(|w| w[0] > w[1]),
            "newest first: {seqs:?}"
        );

        assert_eq!(all_rows(&d, "actor=smtp", 100).await.len(), 3);
        assert_eq!(
            all_rows(&d, "resource_type=message&resource_id=m-1", 100)
                .await
                .len(),
            1
        );
        assert_eq!(
            all_rows(
                &d,
                "types=user.login&since=2000-01-01T00:00:00Z&until=2999-01-01T00:00:00Z",
                100
            )
            .await
            .len(),
            2
        );
        assert_eq!(
            all_rows(&d, "types=user.login&since=2999-01-01T00:00:00Z", 100)
                .await
                .len(),
            0
        );
        let mut refused = Vec::new();
        for _ in 0..100 {
            refused = all_rows(&d, "types=auth.refused", 100).await;
            if !refused.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(refused.len(), 1);
        assert_eq!(refused[0]["actor_ip"], "127.0.0.1");
        assert_eq!(refused[0]["details"]["status"], 401);

        let (status, report) = status_json(
            d.client
                .get(d.url("/v1/audit/verify"))
                .bearer_auth(READER)
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(status, 200);
        assert_eq!(report["ok"], true, "{report}");
        assert!(report["rows"].as_u64().unwrap() >= 7, "{report}");
    }
}

#[tokio::test]
async fn bad_audit_queries_get_a_clear_400() {
    let d = Daemon::start().await;
    for query in [
        "limit=0",
        "limit=100000",
        "limit=ten",
        "since=yesterday",
        "until=2026-13-01T00:00:00Z",
        "cursor=bm90LWEtY3Vyc29y",
        "cursor=-5",
        "types=Message.*",
        "colour=red",
    ] {
        let (status, body) = d.get_json(&format!("/v1/audit?{query}")).await;
        assert_eq!(status, 400, "{query}: {body}");
        assert_eq!(body["error"]["code"], "bad_query", "{query}");
        assert!(
            body["error"]["message"].as_str().unwrap().len() > 15,
            "{query}: {body}"
        );
    }
    // A window that holds no time is no error: it matches no row.
    let (status, body) = d
        .get_json("/v1/audit?since=2026-02-01T00:00:00Z&until=2026-01-01T00:00:00Z")
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["rows"], json!([]), "{body}");
}

/// SIGTERM during a burst; after a restart the audit log holds exactly the accepted
/// events: none lost, none twice. The checkpoint file verifies too.
#[tokio::test]
async fn after_sigterm_in_a_burst_the_log_holds_exactly_the_accepted_events() {
    for backend in Backend::all() {
        let mut d = Daemon::start_with(
            Options::default()
                .config_yaml(&tokens_yaml())
                .token(SMTP)
                .backend(&backend)
                .env("EVHOST_EVENTS__QUEUE_SIZE", 20000),
        )
        .await;
        let batch: Vec<_> = (0..100)
            .map(|i| json!({"type": "burst.test", "data": {"id": format!("n{i}")}}))
            .collect();
        let burst = d.burst(&json!(batch), 4, 25);
        d.wait_for_metric("evhost_events_accepted_total{family=\"custom\"}")
            .await;
        let status = d.terminate().await;
        assert!(status.success(), "{status:?}\n{}", d.log());
        let accepted: HashSet<String> = burst.await.unwrap().into_iter().collect();
        assert!(!accepted.is_empty(), "nothing accepted before SIGTERM");

        d.restart().await;
        let rows = all_rows(&d, "types=burst.test", 1000).await;
        let recorded: HashSet<String> = rows
            .iter()
            .map(|r| r["event_id"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(
            rows.len(),
            recorded.len(),
            "an event recorded twice on {}",
            backend.name()
        );
        assert_eq!(
            recorded,
            accepted,
            "recorded ≠ accepted on {} ({} vs {})",
            backend.name(),
            recorded.len(),
            accepted.len()
        );
        assert_eq!(all_rows(&d, "types=server.stopped", 100).await.len(), 1);
        d.terminate().await;

        // Offline verification with the signed checkpoints, as an operator would run it.
        let mut args = vec!["audit", "verify", "--checkpoint"];
        let checkpoints = d.dir.path().join("data").join("audit-checkpoints.jsonl");
        let checkpoints = checkpoints.display().to_string();
        args.push(&checkpoints);
        let data_dir = d.dir.path().join("data").display().to_string();
        let mut env = vec![("EVHOST_DATA_DIR", data_dir.as_str())];
        if let Backend::Postgres { url, schema } = &backend {
            env.push(("EVHOST_DATABASE__URL", url));
            env.push(("EVHOST_DATABASE__SCHEMA", schema));
        }
        let (code, out, err) = cli(&args, &env);
        assert_eq!(code, 0, "{out}{err}");
        let report: Value = serde_json::from_str(out.trim()).unwrap();
        assert_eq!(report["ok"], true);
        assert!(report["rows"].as_u64().unwrap() >= accepted.len() as u64);
    }
}

#[tokio::test]
async fn a_resent_id_is_recognised_after_a_restart() {
    for backend in Backend::all() {
        let mut d = Daemon::start_with(Options::default().backend(&backend)).await;
        let event =
            json!({"type": "billing.invoice_paid", "id": "inv-2026-0001", "data": {"amount": 12}});
        assert_eq!(d.post_json("/v1/events", &event).await.0, 202);
        let status = d.terminate().await;
        assert!(status.success(), "{status:?}; log:\n{}", d.log());
        d.restart().await;
        let r = d
            .request(Method::POST, "/v1/events")
            .json(&event)
            .send()
            .await
            .unwrap();
        assert_eq!(
            r.headers()
                .get("evhost-duplicate")
                .map(|v| v.to_str().unwrap()),
            Some("true"),
            "{}",
            backend.name()
        );
        assert_eq!(d.metric("evhost_events_duplicate_total").await, 1.0);
        tokio::time::sleep(Duration::from_millis(100)).await;
        let (_, page) = d.get_json("/v1/audit?types=billing.invoice_paid").await;
        assert_eq!(page["rows"].as_array().unwrap().len(), 1);
    }
}

#[tokio::test]
async fn cli_query_and_export_read_the_log() {
    // Room for both halves at once: a busy machine may not have drained the first
    // from the default 1,000-event queue when the second arrives (503 otherwise).
    let d = Daemon::start_with(Options::default().env("EVHOST_EVENTS__QUEUE_SIZE", 5000)).await;
    let batch: Vec<_> = (0..1500)
        .map(|i| json!({"type": "export.test", "data": {"id": format!("x{i}")}}))
        .collect();
    let batch = json!(batch);
    // Two requests: batches are capped at 1000 events by default.
    let halves = [
        json!(batch.as_array().unwrap()[..750]),
        json!(batch.as_array().unwrap()[750..]),
    ];
    for half in &halves {
        assert_eq!(d.post_json("/v1/events/batch", half).await.0, 202);
    }
    let mut rows = Vec::new();
    for _ in 0..100 {
        rows = d.audit_rows("types=export.test", 1000, None).await;
        if rows.len() == 1500 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(rows.len(), 1500);

    let env = [("EVHOST_URL", d.base.as_str())];
    let (code, out, err) = cli(&["audit", "export", "--types", "export.*"], &env);
    assert_eq!(code, 0, "{err}");
    let lines: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 1500, "export pages through everything");
    let ids: HashSet<_> = lines
        .iter()
        .map(|l| l["resource_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), 1500);

    let (code, out, err) = cli(
        &["audit", "query", "--types", "export.test", "--limit", "3"],
        &env,
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("TIME"), "{out}");
    assert_eq!(out.lines().count(), 4, "{out}");
    assert!(err.contains("more rows"), "{err}");
    let (code, out, _) = cli(&["audit", "query", "--resource-id", "x7", "--json"], &env);
    assert_eq!(code, 0);
    let row: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(row["details"]["id"], "x7");

    let (code, _, err) = cli(&["audit", "query", "--since", "soon"], &env);
    assert_eq!(code, 1);
    assert!(err.contains("400") && err.contains("since"), "{err}");
}

#[tokio::test]
async fn a_flood_of_refused_tokens_is_recorded_only_up_to_the_rate_limit() {
    let d = Daemon::start_with(
        Options::default()
            .config_yaml(&tokens_yaml())
            .env("EVHOST_AUDIT__REFUSALS_PER_MINUTE", 5),
    )
    .await;
    for _ in 0..40 {
        let r = d
            .client
            .get(d.url("/v1/event-types"))
            .bearer_auth("guessing-guessing-guessing")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401);
    }
    // A wrong scope is refused (403) and counts against the same address.
    let r = d
        .client
        .get(d.url("/v1/event-types"))
        .bearer_auth(SMTP)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let mut rows = Vec::new();
    for _ in 0..100 {
        rows = all_rows(&d, "types=auth.refused", 100).await;
        if rows.len() >= 5 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let rows = if rows.len() >= 5 {
        all_rows(&d, "types=auth.refused", 100).await
    } else {
        rows
    };
    assert_eq!(rows.len(), 5, "{rows:?}");
    assert!(
        rows.iter()
            .all(|r| r["actor_ip"] == "127.0.0.1" && r["resource_id"] == "/v1/event-types")
    );
    assert_eq!(
        d.metric("evhost_audit_refusals_suppressed_total").await,
        36.0
    );
}
