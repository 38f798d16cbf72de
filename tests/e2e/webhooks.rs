//! Webhooks, black-box: management, signed deliveries checked by a published
//! Standard Webhooks verifier, retries, timeouts, 410, Retry-After, isolation of a
//! slow endpoint, secret rotation, egress refusals, manual retry and replay.

use std::time::Duration;

use evhost_e2e::receiver::{Receiver, Reply};
use evhost_e2e::{Backend, Daemon, Options, json, received};

const ADMIN: &str = "admin-token-0123456789";
const PUBLISHER: &str = "publish-token-0123456789";

fn tokens() -> String {
    format!(
        "auth:\n  tokens:\n    - {{name: ops, token: {ADMIN}, scopes: [admin, read, publish]}}\n    - {{name: smtp, token: {PUBLISHER}, scopes: [publish]}}\n"
    )
}

async fn daemon(extra: &[(&str, &str)]) -> Daemon {
    daemon_on(&Backend::Sqlite, extra).await
}

async fn daemon_on(backend: &Backend, extra: &[(&str, &str)]) -> Daemon {
    let mut options = Options::default()
        .backend(backend)
        .webhooks_local()
        .config_yaml(&tokens())
        .token(ADMIN);
    for (k, v) in extra {
        options = options.env(k, v);
    }
    Daemon::start_with(options).await
}

#[tokio::test]
async fn endpoints_are_managed_with_admin_scope_and_every_change_is_audited() {
    let d = daemon(&[]).await;
    let rx = Receiver::start().await;

    // Create: 201, the secret once.
    let (status, created) = d
        .post_json(
            "/v1/webhooks",
            &json!({"name": "CRM", "url": rx.url("/hook"), "events": ["message.*", "user.login"], "domain": "Example.ORG"}),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().unwrap().to_string();
    let secret = created["secret"].as_str().unwrap().to_string();
    assert!(secret.starts_with("whsec_"), "{secret}");
    assert_eq!(created["domain"], "example.org");
    assert_eq!(created["format"], "esp");
    assert_eq!(created["enabled"], true);

    // Lists and reads never show it.
    let (status, list) = d.get_json("/v1/webhooks").await;
    assert_eq!(status, 200);
    assert_eq!(list["webhooks"].as_array().unwrap().len(), 1);
    assert!(!list.to_string().contains(&secret));
    let (_, one) = d.get_json(&format!("/v1/webhooks/{id}")).await;
    assert_eq!(one["name"], "CRM");
    assert!(one.get("secret").is_none());

    // Update.
    let r = d
        .request(reqwest::Method::PATCH, &format!("/v1/webhooks/{id}"))
        .json(&json!({"name": "CRM 2", "events": ["user.*"], "domain": null}))
        .send()
        .await
        .unwrap();
    let (status, updated) = evhost_e2e::status_json(r).await;
    assert_eq!(status, 200, "{updated}");
    assert_eq!(updated["name"], "CRM 2");
    assert_eq!(updated["events"], json!(["user.*"]));
    assert!(updated.get("domain").is_none());

    // Bad input: a clear 400 naming the field (422 for a well-formed value that
    // names nothing allowed); nothing stored.
    for (body, code, field) in [
        (
            json!({"name": "x", "url": "not a url", "events": ["message.*"]}),
            "invalid_url",
            "url",
        ),
        (
            json!({"name": "x", "url": rx.url("/"), "events": ["mesage.*"]}),
            "unknown_event_type",
            "events",
        ),
        (
            json!({"name": "x", "url": rx.url("/"), "events": []}),
            "invalid_webhook",
            "events",
        ),
        (
            json!({"name": "", "url": rx.url("/"), "events": ["message.*"]}),
            "invalid_webhook",
            "name",
        ),
        (
            json!({"name": "x", "url": "http://10.0.0.1/", "events": ["message.*"]}),
            "refused_address",
            "url",
        ),
        (
            json!({"name": "x", "url": rx.url("/"), "events": ["message.*"], "domain": "not a domain"}),
            "invalid_webhook",
            "domain",
        ),
    ] {
        let (status, answer) = d.post_json("/v1/webhooks", &body).await;
        let refused = ["unknown_event_type", "refused_address"].contains(&code);
        assert_eq!(
            status,
            if refused { 422 } else { 400 },
            "{body} -> {answer}"
        );
        assert_eq!(answer["error"]["code"], code, "{answer}");
        assert_eq!(answer["error"]["field"], field, "{answer}");
    }
    let (status, answer) = d
        .post_json(
            "/v1/webhooks",
            &json!({"name": "x", "url": rx.url("/"), "events": ["message.*"], "colour": "red"}),
        )
        .await;
    assert_eq!(status, 400);
    assert_eq!(answer["error"]["code"], "invalid_body", "{answer}");
    let (_, list) = d.get_json("/v1/webhooks").await;
    assert_eq!(list["webhooks"].as_array().unwrap().len(), 1);

    // A publish-only token may not manage webhooks.
    let r = d
        .client
        .get(d.url("/v1/webhooks"))
        .bearer_auth(PUBLISHER)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);

    // Disable, enable, rotate, delete.
    for action in ["disable", "enable", "rotate-secret"] {
        let r = d
            .request(
                reqwest::Method::POST,
                &format!("/v1/webhooks/{id}/{action}"),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{action}");
    }
    let r = d
        .request(reqwest::Method::DELETE, &format!("/v1/webhooks/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let (status, _) = d.get_json(&format!("/v1/webhooks/{id}")).await;
    assert_eq!(status, 404);

    // Every change is a webhook.* event in the audit log, by the admin token, with
    // no secret in it.
    let mut kinds = Vec::new();
    for _ in 0..100 {
        let rows = d.audit_rows("types=webhook.*", 100, Some(ADMIN)).await;
        kinds = rows
            .iter()
            .rev()
            .map(|r| r["event_type"].as_str().unwrap().to_string())
            .collect::<Vec<_>>();
        if kinds.len() >= 6 {
            assert!(
                rows.iter()
                    .all(|r| r["actor"] == "ops" && r["actor_ip"] == "127.0.0.1"),
                "{rows:?}"
            );
            assert!(
                rows.iter()
                    .all(|r| r["resource_type"] == "webhook" && r["resource_id"] == id.as_str())
            );
            assert!(!serde_json::to_string(&rows).unwrap().contains("whsec_"));
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        kinds,
        [
            "webhook.created",
            "webhook.updated",
            "webhook.disabled",
            "webhook.enabled",
            "webhook.secret_rotated",
            "webhook.deleted"
        ]
    );
}

#[tokio::test]
async fn deliveries_are_signed_for_both_kinds_of_receiver() {
    let d = daemon(&[]).await;
    let rx = Receiver::start().await;
    let (id, secret) = d
        .add_webhook(
            &json!({"name": "crm", "url": rx.url("/hook"), "events": ["message.received"]}),
        )
        .await;
    let (ce_id, ce_secret) = d
        .add_webhook(&json!({"name": "ce", "url": rx.url("/ce"), "events": ["message.*"], "format": "cloudevents"}))
        .await;
    let data = received("example.org", false);
    let event_id = d.publish("message.received", &data).await;
    d.publish("user.logout", &json!({"user_id": "5b0c2f0e-4a0f-4d7e-9b1e-3f1c2a9d8e7f", "email": "a@example.org", "ip": "192.0.2.1", "protocol": "imap"})).await;

    let requests = rx.wait_for(2, Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(rx.count(), 2, "user.logout matches neither endpoint");
    let plain = requests
        .iter()
        .find(|r| r.header("content-type") == "application/json")
        .unwrap();
    let body = plain.json();
    assert_eq!(body["id"], event_id.as_str());
    assert_eq!(body["event"], "message.received");
    assert_eq!(body["data"], data);
    assert!(body["timestamp"].as_str().unwrap().ends_with('Z'));
    assert_eq!(plain.header("x-esp-event"), "message.received");
    assert!(plain.header("user-agent").starts_with("evhost/"));
    assert_eq!(plain.header("x-esp-delivery"), plain.webhook_id());
    plain
        .verify_standard(&secret)
        .expect("Standard Webhooks signature");
    plain
        .verify_esp(&secret, "x-esp-signature")
        .expect("X-ESP-Signature");
    assert!(
        plain.verify_standard(&ce_secret).is_err(),
        "another endpoint's secret must not verify"
    );

    let ce = requests
        .iter()
        .find(|r| r.header("content-type") == "application/cloudevents+json")
        .unwrap();
    let body = ce.json();
    assert_eq!(body["specversion"], "1.0");
    assert_eq!(body["id"], event_id.as_str());
    assert_eq!(body["type"], "message.received");
    assert_eq!(body["data"], data);
    ce.verify_standard(&ce_secret)
        .expect("Standard Webhooks signature");

    // The history: succeeded after one attempt, with the response excerpt.
    let rows = d
        .wait_deliveries(&id, "succeeded", 1, Duration::from_secs(5))
        .await;
    assert_eq!(rows[0]["id"], plain.webhook_id().as_str());
    assert_eq!(rows[0]["event_id"], event_id.as_str());
    let (_, delivery) = d
        .get_json(&format!("/v1/deliveries/{}", plain.webhook_id()))
        .await;
    assert_eq!(delivery["status"], "succeeded");
    assert_eq!(delivery["attempts"], 1);
    assert_eq!(delivery["attempt_log"][0]["status_code"], 200);
    assert_eq!(delivery["attempt_log"][0]["response"], "answer 200");
    d.wait_deliveries(&ce_id, "succeeded", 1, Duration::from_secs(5))
        .await;

    // The endpoint shows when it last got one; the metrics count the attempts.
    let (_, endpoint) = d.get_json(&format!("/v1/webhooks/{id}")).await;
    assert!(endpoint["last_triggered_at"].is_string(), "{endpoint}");
    d.wait_for_metric("evhost_webhook_attempts_total{outcome=\"success\"}")
        .await;
    assert_eq!(
        d.metric("evhost_webhook_attempts_total{outcome=\"success\"}")
            .await,
        2.0
    );

    // The test ping: signed, recorded, answered with its attempt.
    let (status, ping) = d
        .post_json(&format!("/v1/webhooks/{id}/test"), &json!({}))
        .await;
    assert_eq!(status, 200, "{ping}");
    assert_eq!(ping["event_type"], "webhook.test");
    assert_eq!(ping["status"], "succeeded");
    assert_eq!(ping["attempt_log"][0]["status_code"], 200);
    let last = rx.requests().pop().unwrap();
    assert_eq!(last.json()["event"], "webhook.test");
    last.verify_standard(&secret).unwrap();
}

#[tokio::test]
async fn failed_attempts_are_retried_after_each_delay_in_order_with_one_webhook_id() {
    for backend in Backend::all() {
        let d = daemon_on(
            &backend,
            &[("EVHOST_WEBHOOKS__RETRY_DELAYS", "[200ms, 600ms]")],
        )
        .await;
        let rx = Receiver::start().await;
        rx.script(vec![Reply::status(500), Reply::status(500)]);
        let (id, secret) = d
            .add_webhook(&json!({"name": "flaky", "url": rx.url("/"), "events": ["message.*"]}))
            .await;
        d.publish("message.received", &received("example.org", false))
            .await;
        let requests = rx.wait_for(3, Duration::from_secs(10)).await;
        let gap1 = requests[1].at - requests[0].at;
        let gap2 = requests[2].at - requests[1].at;
        assert!(
            gap1 >= Duration::from_millis(200) && gap1 < Duration::from_millis(600),
            "{gap1:?}"
        );
        assert!(
            gap2 >= Duration::from_millis(600) && gap2 < Duration::from_millis(1500),
            "{gap2:?}"
        );
        let ids: Vec<String> = requests.iter().map(|r| r.webhook_id()).collect();
        assert!(ids.iter().all(|i| i == &ids[0]), "{ids:?}");
        for r in &requests {
            r.verify_standard(&secret).unwrap();
        }
        let rows = d
            .wait_deliveries(&id, "succeeded", 1, Duration::from_secs(5))
            .await;
        let (_, delivery) = d
            .get_json(&format!(
                "/v1/deliveries/{}",
                rows[0]["id"].as_str().unwrap()
            ))
            .await;
        assert_eq!(delivery["attempts"], 3);
        let codes: Vec<i64> = delivery["attempt_log"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["status_code"].as_i64().unwrap())
            .collect();
        assert_eq!(codes, [500, 500, 200]);
        assert_eq!(delivery["attempt_log"][0]["response"], "answer 500");
    }
}

#[tokio::test]
async fn timeouts_and_refused_connections_fail_after_the_last_retry() {
    let d = daemon(&[
        ("EVHOST_WEBHOOKS__TIMEOUT", "300ms"),
        ("EVHOST_WEBHOOKS__MAX_RETRIES", "1"),
        ("EVHOST_WEBHOOKS__RETRY_DELAYS", "[50ms]"),
    ])
    .await;
    let slow = Receiver::start_with(Reply::status(200).delay(Duration::from_secs(3))).await;
    let closed_port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let (slow_id, _) = d
        .add_webhook(&json!({"name": "slow", "url": slow.url("/"), "events": ["message.*"]}))
        .await;
    let (dead_id, _) = d
        .add_webhook(&json!({"name": "dead", "url": format!("http://127.0.0.1:{closed_port}/"), "events": ["message.*"]}))
        .await;
    d.publish("message.received", &received("example.org", false))
        .await;
    let failed = d
        .wait_deliveries(&slow_id, "failed", 1, Duration::from_secs(10))
        .await;
    assert_eq!(failed[0]["attempts"], 2);
    assert!(
        failed[0]["last_error"]
            .as_str()
            .unwrap()
            .contains("timeout"),
        "{failed:?}"
    );
    let failed = d
        .wait_deliveries(&dead_id, "failed", 1, Duration::from_secs(10))
        .await;
    assert_eq!(failed[0]["attempts"], 2);
    let (_, delivery) = d
        .get_json(&format!(
            "/v1/deliveries/{}",
            failed[0]["id"].as_str().unwrap()
        ))
        .await;
    let error = delivery["attempt_log"][1]["error"].as_str().unwrap();
    assert!(error.contains("onnect"), "{error}");
    assert!(delivery["attempt_log"][1].get("status_code").is_none());
    d.wait_for_metric("evhost_webhook_attempts_total{outcome=\"timeout\"}")
        .await;
    d.wait_for_metric("evhost_webhook_attempts_total{outcome=\"connect_error\"}")
        .await;
    d.wait_for_metric("evhost_webhook_deliveries_failed_total")
        .await;
}

#[tokio::test]
async fn gone_disables_at_once_and_a_failing_run_disables_too() {
    for backend in Backend::all() {
        let d = daemon_on(
            &backend,
            &[
                ("EVHOST_WEBHOOKS__MAX_RETRIES", "0"),
                ("EVHOST_WEBHOOKS__DISABLE_AFTER_FAILURES", "2"),
            ],
        )
        .await;
        let gone = Receiver::start_with(Reply::status(410)).await;
        let broken = Receiver::start_with(Reply::status(500)).await;
        let (gone_id, _) = d
            .add_webhook(&json!({"name": "gone", "url": gone.url("/"), "events": ["message.*"]}))
            .await;
        let (broken_id, _) = d
            .add_webhook(
                &json!({"name": "broken", "url": broken.url("/"), "events": ["message.*"]}),
            )
            .await;
        d.publish("message.received", &received("example.org", false))
            .await;
        gone.wait_for(1, Duration::from_secs(5)).await;
        broken.wait_for(1, Duration::from_secs(5)).await;
        d.wait_deliveries(&broken_id, "failed", 1, Duration::from_secs(5))
            .await;
        // One failure: still enabled. The second in a row disables it.
        let (_, e) = d.get_json(&format!("/v1/webhooks/{broken_id}")).await;
        assert_eq!(e["enabled"], true, "{e}");
        assert_eq!(e["failure_count"], 1);
        d.publish("message.received", &received("example.org", false))
            .await;
        broken.wait_for(2, Duration::from_secs(5)).await;
        for (id, reason) in [(&gone_id, "gone"), (&broken_id, "failing")] {
            let mut e = json!(null);
            for _ in 0..100 {
                e = d.get_json(&format!("/v1/webhooks/{id}")).await.1;
                if e["enabled"] == false {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            assert_eq!(e["enabled"], false, "{e}");
            assert_eq!(e["disabled_reason"], reason, "{e}");
        }
        // Nothing more goes to a disabled endpoint.
        d.publish("message.received", &received("example.org", false))
            .await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(gone.count(), 1);
        assert_eq!(broken.count(), 2);
        // Each disabling was announced (and so audited).
        let mut rows = Vec::new();
        for _ in 0..100 {
            rows = d
                .audit_rows("types=webhook.disabled", 100, Some(ADMIN))
                .await;
            if rows.len() == 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(rows.len(), 2, "{rows:?}");
        let reasons: Vec<&str> = rows
            .iter()
            .map(|r| r["details"]["reason"].as_str().unwrap())
            .collect();
        assert!(
            reasons.contains(&"gone") && reasons.contains(&"failing"),
            "{reasons:?}"
        );
        assert_eq!(d.metric("evhost_webhook_endpoints_disabled").await, 2.0);
        // Enabling clears the failure run.
        let (status, e) = d
            .post_json(&format!("/v1/webhooks/{broken_id}/enable"), &json!({}))
            .await;
        assert_eq!(status, 200);
        assert_eq!(e["failure_count"], 0);
        assert!(e.get("disabled_reason").is_none());
    }
}

#[tokio::test]
async fn retry_after_is_honoured() {
    let d = daemon(&[("EVHOST_WEBHOOKS__RETRY_DELAYS", "[50ms]")]).await;
    let rx = Receiver::start().await;
    rx.script(vec![Reply::status(503).retry_after("1")]);
    d.add_webhook(&json!({"name": "busy", "url": rx.url("/"), "events": ["message.*"]}))
        .await;
    d.publish("message.received", &received("example.org", false))
        .await;
    let requests = rx.wait_for(2, Duration::from_secs(10)).await;
    let gap = requests[1].at - requests[0].at;
    assert!(
        gap >= Duration::from_secs(1) && gap < Duration::from_secs(3),
        "{gap:?}"
    );
}

#[tokio::test]
async fn a_slow_endpoint_does_not_delay_a_fast_one() {
    let d = daemon(&[("EVHOST_WEBHOOKS__CONCURRENCY", "2")]).await;
    let slow = Receiver::start_with(Reply::status(200).delay(Duration::from_millis(1500))).await;
    let fast = Receiver::start().await;
    d.add_webhook(&json!({"name": "slow", "url": slow.url("/"), "events": ["message.*"]}))
        .await;
    d.add_webhook(&json!({"name": "fast", "url": fast.url("/"), "events": ["message.*"]}))
        .await;
    let started = std::time::Instant::now();
    let mut sent = Vec::new();
    for _ in 0..30 {
        sent.push(std::time::Instant::now());
        d.publish("message.received", &received("example.org", false))
            .await;
    }
    let got = fast.wait_for(30, Duration::from_secs(5)).await;
    let worst = got
        .iter()
        .zip(&sent)
        .map(|(r, s)| r.at.saturating_duration_since(*s))
        .max()
        .unwrap();
    // The slow endpoint has taken 2 of its 30 deliveries by now.
    assert!(slow.count() <= 4, "{}", slow.count());
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "{:?}",
        started.elapsed()
    );
    assert!(
        worst < Duration::from_millis(500),
        "fast endpoint waited {worst:?}"
    );
}

#[tokio::test]
async fn a_rotated_secret_signs_beside_the_new_one_during_the_overlap() {
    let d = daemon(&[("EVHOST_WEBHOOKS__SECRET_OVERLAP", "1500ms")]).await;
    let rx = Receiver::start().await;
    let (id, old) = d
        .add_webhook(&json!({"name": "rot", "url": rx.url("/"), "events": ["message.*"]}))
        .await;
    let (status, rotated) = d
        .post_json(&format!("/v1/webhooks/{id}/rotate-secret"), &json!({}))
        .await;
    assert_eq!(status, 200);
    let new = rotated["secret"].as_str().unwrap().to_string();
    assert_ne!(new, old);
    assert_eq!(rotated["rotating"], true);
    d.publish("message.received", &received("example.org", false))
        .await;
    let during = rx.wait_for(1, Duration::from_secs(5)).await.remove(0);
    assert_eq!(during.header("webhook-signature").split(' ').count(), 2);
    during
        .verify_standard(&new)
        .expect("the new secret verifies");
    during
        .verify_standard(&old)
        .expect("the old secret still verifies");
    during.verify_esp(&new, "x-esp-signature").unwrap();
    during.verify_esp(&old, "x-esp-signature-previous").unwrap();
    tokio::time::sleep(Duration::from_millis(1600)).await;
    d.publish("message.received", &received("example.org", false))
        .await;
    let after = rx.wait_for(2, Duration::from_secs(5)).await.remove(1);
    after
        .verify_standard(&new)
        .expect("the new secret verifies");
    assert!(
        after.verify_standard(&old).is_err(),
        "the old secret has expired"
    );
    assert_eq!(after.header("x-esp-signature-previous"), "");
}

#[tokio::test]
async fn private_and_metadata_addresses_are_refused_unless_allow_listed() {
    // No allow-list at all: even loopback names are refused.
    let strict = Daemon::start_with(Options::default().config_yaml(&tokens()).token(ADMIN)).await;
    for url in [
        "http://10.0.0.1/hook",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]:8080/",
        "http://[::ffff:127.0.0.1]:8080/",
        "http://localhost:8080/",
        "http://127.0.0.1:8080/",
        "http://0.0.0.0:8080/",
    ] {
        let (status, answer) = strict
            .post_json(
                "/v1/webhooks",
                &json!({"name": "x", "url": url, "events": ["message.*"]}),
            )
            .await;
        assert_eq!(status, 422, "{url}: {answer}");
        assert_eq!(
            answer["error"]["code"], "refused_address",
            "{url}: {answer}"
        );
        assert!(
            answer["error"]["message"]
                .as_str()
                .unwrap()
                .contains("allowed_networks"),
            "{answer}"
        );
    }
    // 127.0.0.0/8 allow-listed: loopback IPv4 and names resolving to it pass, the
    // IPv6 forms do not.
    let d = daemon(&[]).await;
    for (url, ok) in [
        ("http://127.0.0.1:9/", true),
        ("http://localhost:9/", true),
        ("http://[::1]:9/", false),
        ("http://[::ffff:127.0.0.1]:9/", false),
        ("http://169.254.169.254/", false),
    ] {
        let (status, answer) = d
            .post_json(
                "/v1/webhooks",
                &json!({"name": "x", "url": url, "events": ["message.*"]}),
            )
            .await;
        assert_eq!(status == 201, ok, "{url}: {answer}");
    }
}

#[tokio::test]
async fn failed_deliveries_can_be_retried_and_replayed() {
    for backend in Backend::all() {
        let d = daemon_on(&backend, &[("EVHOST_WEBHOOKS__MAX_RETRIES", "0")]).await;
        let rx = Receiver::start_with(Reply::status(500)).await;
        let (id, _) = d
            .add_webhook(&json!({"name": "r", "url": rx.url("/"), "events": ["message.*"]}))
            .await;
        let since = chrono_now();
        for _ in 0..3 {
            d.publish("message.received", &received("example.org", false))
                .await;
        }
        let failed = d
            .wait_deliveries(&id, "failed", 3, Duration::from_secs(5))
            .await;
        rx.set_default(Reply::status(200));
        // A pending delivery cannot be retried; a failed one can.
        let first = failed[0]["id"].as_str().unwrap();
        let r = d
            .request(
                reqwest::Method::POST,
                &format!("/v1/deliveries/{first}/retry"),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
        d.wait_deliveries(&id, "succeeded", 1, Duration::from_secs(5))
            .await;
        let (_, delivery) = d.get_json(&format!("/v1/deliveries/{first}")).await;
        assert_eq!(delivery["attempts"], 2);
        let (status, _) = d.post_json("/v1/deliveries/nope/retry", &json!({})).await;
        assert_eq!(status, 404);
        // Replay the rest.
        let (status, answer) = d
            .post_json(
                &format!("/v1/webhooks/{id}/replay?since={since}"),
                &json!({}),
            )
            .await;
        assert_eq!(status, 202, "{answer}");
        assert_eq!(answer["replayed"], 2);
        d.wait_deliveries(&id, "succeeded", 3, Duration::from_secs(5))
            .await;
        let (status, answer) = d
            .post_json(&format!("/v1/webhooks/{id}/replay"), &json!({}))
            .await;
        assert_eq!(status, 400, "{answer}");
        let (status, answer) = d
            .get_json(&format!("/v1/webhooks/{id}/deliveries?status=sent"))
            .await;
        assert_eq!(status, 400, "{answer}");
    }
}

fn chrono_now() -> String {
    (chrono::Utc::now() - chrono::Duration::seconds(5))
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

#[tokio::test]
async fn redirects_are_not_followed_and_answers_are_read_only_to_the_cap() {
    let d = daemon(&[("EVHOST_WEBHOOKS__MAX_RETRIES", "0")]).await;
    let elsewhere = Receiver::start().await;
    let redirecting =
        Receiver::start_with(Reply::status(307).header("location", &elsewhere.url("/stolen")))
            .await;
    let chatty = Receiver::start_with(Reply::status(200).body("x".repeat(1 << 20))).await;
    let (redirect_id, _) = d
        .add_webhook(&json!({"name": "r", "url": redirecting.url("/"), "events": ["message.*"]}))
        .await;
    let (chatty_id, _) = d
        .add_webhook(&json!({"name": "c", "url": chatty.url("/"), "events": ["message.*"]}))
        .await;
    d.publish("message.received", &received("example.org", false))
        .await;
    let failed = d
        .wait_deliveries(&redirect_id, "failed", 1, Duration::from_secs(5))
        .await;
    assert_eq!(failed[0]["last_status_code"], 307);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(elsewhere.count(), 0, "the redirect was followed");
    let ok = d
        .wait_deliveries(&chatty_id, "succeeded", 1, Duration::from_secs(5))
        .await;
    let (_, delivery) = d
        .get_json(&format!("/v1/deliveries/{}", ok[0]["id"].as_str().unwrap()))
        .await;
    let excerpt = delivery["attempt_log"][0]["response"].as_str().unwrap();
    assert_eq!(excerpt.len(), 1024, "only the first KiB is kept");
}

#[tokio::test]
async fn secrets_never_reach_the_log() {
    let d = daemon(&[]).await;
    let rx = Receiver::start().await;
    let (id, first) = d
        .add_webhook(&json!({"name": "s", "url": rx.url("/"), "events": ["message.*"]}))
        .await;
    let (_, rotated) = d
        .post_json(&format!("/v1/webhooks/{id}/rotate-secret"), &json!({}))
        .await;
    let second = rotated["secret"].as_str().unwrap().to_string();
    d.publish("message.received", &received("example.org", false))
        .await;
    rx.wait_for(1, Duration::from_secs(5)).await;
    d.post_json(&format!("/v1/webhooks/{id}/test"), &json!({}))
        .await;
    let log = d.log();
    assert!(
        log.contains(&id),
        "the log should name the endpoint at all: {log}"
    );
    for secret in [&first, &second] {
        let key = secret.trim_start_matches("whsec_");
        assert!(!log.contains(key), "a secret is in the log");
    }
}

#[tokio::test]
async fn the_outbox_gauges_show_what_waits() {
    let d = daemon(&[("EVHOST_WEBHOOKS__RETRY_DELAYS", "[50ms]")]).await;
    let rx = Receiver::start_with(Reply::status(500)).await;
    let (id, _) = d
        .add_webhook(&json!({"name": "g", "url": rx.url("/"), "events": ["message.*"]}))
        .await;
    d.publish("message.received", &received("example.org", false))
        .await;
    rx.wait_for(1, Duration::from_secs(5)).await;
    // Disabled after the first failure: the delivery stays pending, due and unclaimed.
    let (status, _) = d
        .post_json(&format!("/v1/webhooks/{id}/disable"), &json!({}))
        .await;
    assert_eq!(status, 200);
    d.wait_for_metric("evhost_webhook_outbox_oldest_due_seconds")
        .await;
    assert_eq!(d.metric("evhost_webhook_deliveries_pending").await, 1.0);
    assert_eq!(d.metric("evhost_webhook_endpoints_disabled").await, 1.0);
}

#[tokio::test]
async fn a_delivery_queued_behind_others_is_leased_for_their_rounds_too() {
    // One slot and a receiver slower than the publishing: the first delivery is in
    // flight for seconds while the rest wait in the lane's memory queue.
    const TIMEOUT_S: i64 = 5;
    const N: usize = 6;
    let d = daemon(&[
        ("EVHOST_WEBHOOKS__CONCURRENCY", "1"),
        ("EVHOST_WEBHOOKS__TIMEOUT", "5s"),
    ])
    .await;
    let rx = Receiver::start_with(Reply::status(200).delay(Duration::from_secs(3))).await;
    let (id, _) = d
        .add_webhook(&json!({"name": "queue", "url": rx.url("/"), "events": ["message.*"]}))
        .await;
    for _ in 0..N {
        d.publish("message.received", &received("example.org", false))
            .await;
    }
    let mut rows = d
        .wait_deliveries(&id, "pending", N, Duration::from_secs(5))
        .await;
    // Ids are time-ordered: the order the writer queued them in.
    rows.sort_by(|a, b| a["id"].as_str().cmp(&b["id"].as_str()));
    let at = |row: &serde_json::Value, field: &str| {
        chrono::DateTime::parse_from_rfc3339(row[field].as_str().unwrap())
            .unwrap()
            .timestamp_micros()
    };
    // A lease is (queued before it / slots, rounded up) + 5 rounds of the timeout,
    // plus 30 s, from the moment the row was written.
    let rounds: Vec<i64> = rows
        .iter()
        .map(|row| {
            let lease = at(row, "next_attempt_at") - at(row, "created_at");
            assert_eq!(
                (lease - 30_000_000) % (TIMEOUT_S * 1_000_000),
                0,
                "a whole number of rounds: {row}"
            );
            (lease - 30_000_000) / (TIMEOUT_S * 1_000_000)
        })
        .collect();
    assert_eq!(rounds[0], 5, "nothing before the first: {rounds:?}");
    assert!(
        rounds.windows(2).all(|w| w[0] <= w[1]),
        "a later place, a lease at least as long: {rounds:?}"
    );
    // Only the first can have left the queue (for the one slot) before the last
    // was queued.
    let last = rounds[N - 1];
    assert!(
        last >= (N as i64 - 2) + 5 && last <= (N as i64 - 1) + 5,
        "{rounds:?}"
    );
    assert!(
        rx.count() <= 1,
        "one slot: {} requests reached the receiver",
        rx.count()
    );
}

/// A lane whose memory queue (32 × concurrency) overflows keeps the order events came
/// in: what overflowed into the table is not overtaken by fresher deliveries, which
/// follow it there until the lane has claimed it empty. (One bus worker and one slot,
/// so the order events reach the outbox is the order they are sent.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_overflowing_lane_keeps_the_order_events_came_in() {
    const N: usize = 300;
    let rx = Receiver::start_with(Reply::status(200).delay(Duration::from_millis(3))).await;
    let d = Daemon::start_with(
        Options::default()
            .webhooks_local()
            .env("EVHOST_EVENTS__WORKERS", 1)
            .env("EVHOST_WEBHOOKS__CONCURRENCY", 1),
    )
    .await;
    d.add_webhook(&json!({"name": "one", "url": rx.url("/"), "events": ["order.*"]}))
        .await;
    let mut sent = Vec::with_capacity(N);
    for first in (0..N).step_by(25) {
        let batch: Vec<_> = (first..first + 25)
            .map(|n| json!({"type": "order.test", "data": {"n": n}}))
            .collect();
        let (status, body) = d.post_json("/v1/events/batch", &json!(batch)).await;
        assert_eq!(status, 202, "{body}");
        let ids = body["ids"].as_array().unwrap();
        sent.extend(ids.iter().map(|id| id.as_str().unwrap().to_string()));
        // A steady flow while the lane is behind, not one burst.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let behind = N - rx.count();
    assert!(
        behind > 64,
        "only {behind} deliveries were behind when the last event was answered: the lane never overflowed"
    );
    let got = rx.wait_for(N, Duration::from_secs(60)).await;
    let order: Vec<String> = got
        .iter()
        .map(|r| r.json()["id"].as_str().unwrap().to_string())
        .collect();
    let first_out_of_order = order.iter().zip(&sent).position(|(a, b)| a != b);
    assert_eq!(
        first_out_of_order, None,
        "deliveries arrived out of order ({behind} were behind at the end)"
    );
}
