//! Parts of the daemon that fail, black-box: a panic in a log writer, a panic in a
//! plugin call, a failed fsync. A missing part stops the daemon with a non-zero
//! exit (after `/readyz` has said which part); a plugin call's panic fails only
//! that call; a failed fsync is never retried. Nothing acknowledged is lost.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use evhost_e2e::{Daemon, Options, json, plugin_wasm, received};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_writer_that_panics_fails_readiness_and_the_daemon_exits_70() {
    let mut d = Daemon::start_with(Options::default().env("EVHOST_TEST_PANIC", "log-writer")).await;
    let (status, _) = d
        .post_json(
            "/v1/events",
            &json!({"type": "before.panic", "id": "kept", "data": {}}),
        )
        .await;
    assert_eq!(status, 202);
    let (status, body) = d
        .post_json(
            "/v1/events",
            &json!({"type": "test.panic", "id": "boom", "data": {}}),
        )
        .await;
    assert_eq!(
        status, 503,
        "work that did not happen is never a success: {body}"
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (status, ready) = d.get_json("/readyz").await;
        if status == 503 && ready["status"] == "task_failed" {
            assert_eq!(ready["failed_task"]["task"], "log writer", "{ready}");
            assert!(
                ready["failed_task"]["reason"]
                    .as_str()
                    .unwrap()
                    .contains("panicked"),
                "{ready}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "readyz: {status} {ready}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let exit = d.wait_exit(Duration::from_secs(15)).await;
    assert_eq!(exit.code(), Some(70), "log:\n{}", d.log());
    assert!(d.log().contains("the log writer failed"), "{}", d.log());

    d.set_env("EVHOST_TEST_PANIC", None);
    d.restart().await;
    let ids: HashSet<String> = d
        .audit_rows("types=before.panic", 10, None)
        .await
        .iter()
        .map(|r| r["event_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids, HashSet::from(["kept".to_string()]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_in_a_plugin_call_fails_that_event_per_on_error() {
    let d = Daemon::start_with(Options::default().env("EVHOST_TEST_PANIC", "plugin-call")).await;
    d.write_sidecar(
        "spam-router",
        Some("on_error = \"drop\"\n[config]\nthreshold = 5\n"),
    );
    d.install_plugin("spam-router", &plugin_wasm("spam_router"))
        .await;
    for n in 0..3 {
        let (status, body) = d
            .post_json(
                "/v1/events?wait=true",
                &json!({"type": "message.received", "id": format!("m{n}"), "data": received("example.com", false)}),
            )
            .await;
        assert_eq!(status, 200, "the worker carries on: {body}");
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let rows = d.audit_rows("types=plugin.decided", 10, None).await;
        if rows.len() == 3 {
            for row in &rows {
                let reason = row["details"]["dropped"]["reason"].as_str().unwrap();
                assert!(
                    reason.contains("on_error = drop") && reason.contains("panicked"),
                    "{row}"
                );
            }
            break;
        }
        assert!(Instant::now() < deadline, "{rows:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, _) = d.get_json("/readyz").await;
    assert_eq!(status, 200);
    let (_, plugin) = d.get_json("/v1/plugins/spam-router").await;
    assert!(plugin.to_string().contains("panic"), "{plugin}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_fsync_stops_the_daemon_and_is_never_retried() {
    // The daemon's own start-up takes a few durable writes; the events after it take
    // the rest, and the first write past 30 fails as a failed fsync would.
    let mut d =
        Daemon::start_with(Options::default().env("EVHOST_TEST_FSYNC_ERROR_AFTER", "30")).await;
    let mut acknowledged = Vec::new();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    for n in 0..200 {
        let id = format!("f{n}");
        let body = json!({"type": "fsync.test", "id": id, "data": {}});
        match client.post(d.url("/v1/events")).json(&body).send().await {
            Ok(r) if r.status() == 202 => acknowledged.push(id),
            _ => break,
        }
    }
    assert!(
        !acknowledged.is_empty() && acknowledged.len() < 200,
        "{}",
        acknowledged.len()
    );
    let exit = d.wait_exit(Duration::from_secs(10)).await;
    assert_eq!(exit.code(), Some(74), "log:\n{}", d.log());
    assert!(
        d.log().contains("the disk failed under a write"),
        "{}",
        d.log()
    );

    d.set_env("EVHOST_TEST_FSYNC_ERROR_AFTER", None);
    d.restart().await;
    let counts = d.log_counts("types=fsync.test").await;
    for id in &acknowledged {
        assert_eq!(counts.get(id), Some(&1), "{id}");
    }
    let (status, report) = d.get_json("/v1/audit/verify").await;
    assert_eq!(
        (status, report["ok"].clone()),
        (200, json!(true)),
        "{report}"
    );
}
