//! Where webhooks may go, black-box: `webhooks.https_only` and
//! `webhooks.allowed_ports` refuse URLs when they are stored, and hold for endpoints
//! stored before they were set (checked again before each send); a name rebound to
//! loopback after it was saved is refused when a delivery is sent.

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
    d.set_env("EVHOST_WEBHOOKS__HTTPS_ONLY", Some("true"));
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

/// DNS rebinding: a name that resolved to a public address when the endpoint was
/// saved and to 127.0.0.1 when a delivery is sent is refused at send time, and the
/// receiver on 127.0.0.1 hears nothing. The daemon reads a private /etc/hosts that
/// the test rewrites between the two.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_rebound_to_loopback_after_it_was_saved_is_refused_at_send() {
    if !evhost_e2e::private_hosts_supported() {
        eprintln!("SKIPPED: this machine gives no private /etc/hosts (unshare --mount)");
        return;
    }
    let rx = Receiver::start().await;
    let hosts = tempfile::NamedTempFile::new().unwrap();
    // 93.184.216.34 is public; nothing connects to it (the name moves first).
    std::fs::write(
        hosts.path(),
        "127.0.0.1 localhost\n93.184.216.34 rebind.evhost.test\n",
    )
    .unwrap();
    let d = Daemon::start_with(
        Options::default()
            .hosts_file(hosts.path())
            .env("EVHOST_WEBHOOKS__POLL_INTERVAL", "100ms")
            .env("EVHOST_WEBHOOKS__RETRY_DELAYS", "[100ms]")
            .env("EVHOST_WEBHOOKS__MAX_RETRIES", "1")
            .env("EVHOST_WEBHOOKS__TIMEOUT", "2s"),
    )
    .await;
    let url = rx.url("/hook").replace("127.0.0.1", "rebind.evhost.test");
    let (id, _) = d
        .add_webhook(&json!({"name": "rebind", "url": url, "events": ["rebind.*"]}))
        .await;

    // Written in place: the daemon's /etc/hosts is this file's inode.
    std::fs::write(
        hosts.path(),
        "127.0.0.1 localhost\n127.0.0.1 rebind.evhost.test\n",
    )
    .unwrap();
    d.publish("rebind.test", &json!({})).await;
    let failed = d
        .wait_deliveries(&id, "failed", 1, Duration::from_secs(20))
        .await;
    let error = failed[0]["last_error"].as_str().unwrap_or("");
    assert!(
        error.contains("loopback") && error.contains("allowed_networks"),
        "{failed:?}"
    );
    assert_eq!(rx.count(), 0, "nothing reached the receiver on 127.0.0.1");
}
