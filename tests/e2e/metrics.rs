use evhost_e2e::*;

fn login(protocol: &str, success: bool) -> Value {
    json!({"type": "user.login", "data": {"user_id": "0195f1d2-7a3b-7c4d-8e5f-a1b2c3d4e5f6", "email": "a@example.com",
           "ip": "192.0.2.1", "user_agent": "x", "protocol": protocol, "success": success}})
}

#[tokio::test]
async fn seed_counters_follow_the_events() {
    let d = Daemon::start_with(Options::default().env("EVHOST_METRICS__MAX_DOMAINS", 3)).await;
    let mut events = vec![
        json!({"type": "message.received", "data": received("example.com", false)}),
        json!({"type": "message.received", "data": received("example.com", false)}),
        json!({"type": "message.received", "data": received("example.com", true)}),
        json!({"type": "message.sent", "data": {"message_id": "m1", "from": "alice@X.org", "to": ["b@y.net"], "subject": "s",
               "size": 10, "queue_id": "q1", "destination": "mx.y.net"}}),
        json!({"type": "message.bounced", "data": {"message_id": "m2", "from": "alice@x.org", "to": "b@y.net", "queue_id": "q2",
               "error": "550 no such user", "attempts": 1, "permanent": true}}),
        login("imap", true),
        login("imap", true),
        login("smtp", false),
        login("gopher", true),
    ];
    // Past three distinct domains, further ones count as "other".
    for domain in ["d1.test", "d2.test"] {
        events.push(json!({"type": "message.received", "data": received(domain, false)}));
    }
    for event in &events {
        let (status, body) = d.post_json("/v1/events?wait=true", event).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["failures"], json!([]));
    }
    let m = d.metrics().await;
    let v = |sample: &str| metric_value(&m, sample);
    assert_eq!(
        v("esp_messages_received_total{domain=\"example.com\",spam=\"false\"}"),
        2.0,
        "{m}"
    );
    assert_eq!(
        v("esp_messages_received_total{domain=\"example.com\",spam=\"true\"}"),
        1.0
    );
    assert_eq!(v("esp_messages_sent_total{domain=\"x.org\"}"), 1.0);
    assert_eq!(
        v("esp_messages_bounced_total{domain=\"x.org\",permanent=\"true\"}"),
        1.0
    );
    assert_eq!(
        v("esp_user_logins_total{protocol=\"imap\",success=\"true\"}"),
        2.0
    );
    assert_eq!(
        v("esp_user_logins_total{protocol=\"smtp\",success=\"false\"}"),
        1.0
    );
    assert_eq!(
        v("esp_user_logins_total{protocol=\"other\",success=\"true\"}"),
        1.0
    );
    assert_eq!(
        v("esp_messages_received_total{domain=\"d1.test\",spam=\"false\"}"),
        1.0
    );
    assert_eq!(
        v("esp_messages_received_total{domain=\"other\",spam=\"false\"}"),
        1.0
    );
    assert_eq!(v("evhost_events_accepted_total{family=\"message\"}"), 7.0);
    assert_eq!(v("evhost_events_accepted_total{family=\"user\"}"), 4.0);
    assert_eq!(
        v("evhost_events_accepted_total{family=\"server\"}"),
        1.0,
        "server.started"
    );
    assert_eq!(v("evhost_bus_queue_capacity"), 100000.0, "events.max_lag");
    assert!(v("evhost_bus_dispatch_duration_seconds_count") >= 12.0);
    assert!(m.contains("evhost_bus_queue_depth"));
    assert!(
        !m.contains("evhost_subscriber_errors_total{"),
        "no subscriber failed: {m}"
    );
    assert!(m.trim_end().ends_with("# EOF"));
    assert_eq!(v("evhost_audit_backlog_capacity"), 100000.0);
    assert!(m.contains("evhost_audit_write_duration_seconds_count"));
    let (status, ready) = d.get_json("/readyz").await;
    assert_eq!(status, 200);
    assert_eq!(ready["audit"]["healthy"], true);
    assert_eq!(ready["audit"]["backlog_capacity"], 100000);
}
