//! Shadow plugins, black-box: a new version runs beside the serving one on live
//! events, is compared and applies nothing; promoting it under a stream of events
//! swaps it in without losing or repeating one.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use evhost_e2e::receiver::Receiver;
use evhost_e2e::{Daemon, Options, Value, cli, json, plugin_wasm, received};

const ADMIN: &str = "admin-token-0123456789";

/// A clean message (score 0.1), or one with no spam score at all.
fn message(score: Option<f64>) -> Value {
    let mut data = received("a.example", false);
    data["spam_score"] = json!(score);
    data
}

/// Waits until the shadow report satisfies `ready`.
async fn shadow_report(d: &Daemon, name: &str, ready: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, report) = d.get_json(&format!("/v1/plugins/{name}/shadow")).await;
        if status == 200 && ready(&report) {
            return report;
        }
        assert!(
            Instant::now() < deadline,
            "shadow report not as expected: {status} {report}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_shadow_is_compared_on_live_events_applies_nothing_and_is_promoted_cleanly() {
    let d = Daemon::start_with(
        Options::default()
            .webhooks_local()
            .env("EVHOST_PLUGINS__SETTLE", "20ms")
            .env("EVHOST_PLUGINS__TIMEOUT", "2s")
            .config_yaml(&format!(
                "auth:\n  tokens:\n    - {{name: ops, token: {ADMIN}, scopes: [admin, read, publish]}}\n"
            ))
            .token(ADMIN),
    )
    .await;
    let rx = Receiver::start().await;
    d.add_webhook(
        &json!({"name": "all", "url": rx.url("/all"), "events": ["message.*", "spam.*"]}),
    )
    .await;
    // Serving: spam-router, threshold 5. Shadow: the same code with threshold 0, so
    // it drops every message with a score above 0 that the serving version passes.
    d.write_sidecar(
        "spam-router",
        Some("priority = 10\n[config]\nthreshold = 5\n"),
    );
    d.install_plugin("spam-router", &plugin_wasm("spam_router"))
        .await;
    d.write_sidecar(
        "spam-next",
        Some("mode = \"shadow\"\nshadow_of = \"spam-router\"\n[config]\nthreshold = 0\n"),
    );
    std::fs::copy(
        plugin_wasm("spam_router"),
        d.plugins_dir().join("spam-next.wasm"),
    )
    .unwrap();
    let status = d.wait_plugin("spam-next", |p| p["state"] == "shadow").await;
    assert_eq!(status["shadow_of"], "spam-router", "{status}");
    assert_eq!(status["mode"], "shadow");

    let mut ids = Vec::new();
    for score in [Some(0.1), None, Some(0.1), Some(0.1), None, Some(0.1)] {
        ids.push(d.handled("message.received", &message(score)).await);
    }
    let report = shadow_report(&d, "spam-router", |r| r["events"] == 6).await;
    assert_eq!(report["name"], "spam-next", "{report:#}");
    assert_eq!(report["shadow_of"], "spam-router");
    assert_eq!(
        (&report["same"], &report["different"]),
        (&json!(2), &json!(4)),
        "{report:#}"
    );
    assert_eq!(report["errors"], json!({}));
    assert_eq!(report["skipped"], 0);
    let latest = report["latest_differences"].as_array().unwrap();
    assert_eq!(latest.len(), 4);
    assert_eq!(latest[0]["event_id"], ids[5].as_str(), "newest first");
    assert_eq!(latest[0]["serving"], json!({"actions": []}));
    assert_eq!(
        latest[0]["shadow"]["actions"][1]["drop"],
        "spam score 0.1 over 0"
    );
    // Nothing the shadow did was applied: every event reached the receiver.
    rx.wait_arrivals(&ids, Duration::from_secs(10), || d.log())
        .await;
    assert_eq!(rx.count(), 6, "no spam.detected from the shadow");
    // The same report by the shadow's own name, and from the CLI.
    let (status, by_name) = d.get_json("/v1/plugins/spam-next/shadow").await;
    assert_eq!((status, &by_name["events"]), (200, &json!(6)));
    let url = d.url("");
    let (code, out, err) = cli(
        &[
            "plugin",
            "shadow",
            "spam-router",
            "--url",
            &url,
            "--token",
            ADMIN,
        ],
        &[],
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("events     6: 2 same (33.3 %), 4 different (66.7 %)"),
        "{out}"
    );
    let (status, _) = d.get_json("/v1/plugins/no-such/shadow").await;
    assert_eq!(status, 404);

    // Promote in the middle of a stream of handled events.
    let stream: Vec<Value> = (0..120).map(|_| message(Some(0.1))).collect();
    let message_ids: Vec<String> = stream
        .iter()
        .map(|m| m["message_id"].as_str().unwrap().to_string())
        .collect();
    let publisher = {
        let d_url = d.url("/v1/events?wait=true");
        let client = d.fresh_client();
        tokio::spawn(async move {
            for data in stream {
                let answer = client
                    .post(&d_url)
                    .bearer_auth(ADMIN)
                    .json(&json!({"type": "message.received", "data": data}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(answer.status(), 200);
            }
        })
    };
    rx.wait_for(6 + 40, Duration::from_secs(30)).await;
    let (code, out, err) = cli(
        &[
            "plugin",
            "promote",
            "spam-next",
            "--url",
            &url,
            "--token",
            ADMIN,
        ],
        &[],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("spam-router serves version"), "{out}");
    publisher.await.unwrap();

    // Each message arrived exactly once: delivered as it was (before the swap) or
    // as spam.detected (after it), never both, never twice, and the swap is one cut.
    let deadline = Instant::now() + Duration::from_secs(30);
    let arrived = loop {
        let mut arrived: HashMap<String, Vec<(String, String)>> = HashMap::new();
        for r in rx.requests() {
            let body = r.json();
            let kind = body["event"].as_str().unwrap().to_string();
            if let Some(m) = body["data"]["message_id"].as_str() {
                arrived
                    .entry(m.to_string())
                    .or_default()
                    .push((kind, r.webhook_id()));
            }
        }
        if message_ids.iter().all(|m| arrived.contains_key(m)) || Instant::now() > deadline {
            break arrived;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let kinds: Vec<&str> = message_ids
        .iter()
        .map(|m| {
            let got = arrived
                .get(m)
                .unwrap_or_else(|| panic!("{m} never arrived"));
            assert_eq!(got.len(), 1, "{m} arrived more than once: {got:?}");
            got[0].0.as_str()
        })
        .collect();
    let cut = kinds
        .iter()
        .position(|k| *k == "spam.detected")
        .expect("the new version served");
    assert!(
        cut >= 40,
        "promoted after 40 events were delivered, cut at {cut}"
    );
    assert!(
        kinds[..cut].iter().all(|k| *k == "message.received")
            && kinds[cut..].iter().all(|k| *k == "spam.detected"),
        "{kinds:?}"
    );

    // The shadow is gone; the plugin serves the promoted code and sidecar, from files.
    let status = d
        .wait_plugin("spam-router", |p| p["state"] == "serving")
        .await;
    assert_eq!(
        status["priority"], 10,
        "the serving sidecar's keys stay: {status}"
    );
    let (status, _) = d.get_json("/v1/plugins/spam-next").await;
    assert_eq!(status, 404);
    assert!(!d.plugins_dir().join("spam-next.wasm").exists());
    let sidecar = std::fs::read_to_string(d.plugins_dir().join("spam-router.toml")).unwrap();
    assert!(
        sidecar.contains("threshold = 0") && !sidecar.contains("shadow"),
        "{sidecar}"
    );
    let rows = d.audit_rows("types=plugin.promote", 10, Some(ADMIN)).await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["actor"], "ops");
    let (status, answer) = d
        .post_json("/v1/plugins/spam-next/promote", &json!({}))
        .await;
    assert_eq!(status, 404, "{answer}");
}
