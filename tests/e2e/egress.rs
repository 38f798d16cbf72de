//! Where webhooks may go, black-box: `webhooks.require_https` and
//! `webhooks.allowed_ports` refuse URLs when they are stored, and hold for endpoints
//! stored before they were set (checked again before each send).

use std::time::Duration;

use evhost_e2e::receiver::Receiver;
use evhost_e2e::{Daemon, Options, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_and_ports_hold_when_stored_and_at_each_send() {
    let rx = Receiver::start().await;
    let mut d = Daemon::start_with(Options::default().webhooks_local()).await;
    let (id, _) = d
        .add_webhook(&json!({"name": "plain", "url": rx.url("/"), "events": ["egress.*"]}))
        .await;
    d.terminate().await;
    d.set_env("EVHOST_WEBHOOKS__REQUIRE_HTTPS", Some("true"));
    d.set_env("EVHOST_WEBHOOKS__ALLOWED_PORTS", Some("[443]"));
    d.restart().await;

    let (status, body) = d
        .post_json(
            "/v1/webhooks",
            &json!({"name": "new", "url": rx.url("/"), "events": ["egress.*"]}),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["code"], "url_not_allowed", "{body}");
    assert!(
        body["error"]["message"].as_str().unwrap().contains("https"),
        "{body}"
    );
    let (status, body) = d
        .post_json(
            "/v1/webhooks",
            &json!({"name": "port", "url": "https://127.0.0.1:9443/", "events": ["egress.*"]}),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["code"], "url_not_allowed", "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("port 9443"),
        "{body}"
    );

    d.publish("egress.test", &json!({})).await;
    let failed = d
        .wait_deliveries(&id, "failed", 1, Duration::from_secs(20))
        .await;
    assert!(
        failed[0]["last_error"]
            .as_str()
            .unwrap_or("")
            .contains("https"),
        "{failed:?}"
    );
    assert_eq!(rx.count(), 0, "nothing went to the plain http endpoint");
}
