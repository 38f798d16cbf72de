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

/// One sample of a scrape: its name, labels and value.
type Sample = (String, Vec<(String, String)>, f64);

/// Checks a scrape against the text exposition format, strictly: every line is a
/// `# HELP`/`# TYPE`/`# UNIT`/`# EOF` comment or a sample
/// `name{label="value",…} number`, where a label value holds no raw `"` or newline
/// and escapes only `\\`, `\"` and `\n`. Returns the samples, or the first bad line.
fn parse_exposition(text: &str) -> Result<Vec<Sample>, String> {
    fn name_ok(s: &str) -> bool {
        let mut b = s.bytes();
        matches!(b.next(), Some(c) if c.is_ascii_alphabetic() || c == b'_' || c == b':')
            && b.all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b':')
    }
    let mut samples = Vec::new();
    for line in text.lines() {
        if let Some(comment) = line.strip_prefix("# ") {
            let ok = comment == "EOF"
                || ["HELP ", "TYPE ", "UNIT "]
                    .iter()
                    .any(|k| comment.starts_with(k));
            if !ok {
                return Err(format!("bad comment: {line:?}"));
            }
            continue;
        }
        let (name, rest) = match line.find(['{', ' ']) {
            Some(i) => line.split_at(i),
            None => return Err(format!("no value: {line:?}")),
        };
        if !name_ok(name) {
            return Err(format!("bad name: {line:?}"));
        }
        let mut labels = Vec::new();
        let mut rest = rest;
        if let Some(mut inner) = rest.strip_prefix('{') {
            loop {
                if let Some(after) = inner.strip_prefix('}') {
                    rest = after;
                    break;
                }
                let eq = inner
                    .find("=\"")
                    .ok_or_else(|| format!("bad label: {line:?}"))?;
                let key = &inner[..eq];
                if !name_ok(key) {
                    return Err(format!("bad label name: {line:?}"));
                }
                let mut value = String::new();
                let mut chars = inner[eq + 2..].char_indices();
                let end = loop {
                    match chars.next() {
                        None => return Err(format!("unterminated label value: {line:?}")),
                        Some((i, '"')) => break eq + 2 + i + 1,
                        Some((_, '\\')) => match chars.next() {
                            Some((_, '\\')) => value.push('\\'),
                            Some((_, '"')) => value.push('"'),
                            Some((_, 'n')) => value.push('\n'),
                            _ => return Err(format!("bad escape: {line:?}")),
                        },
                        Some((_, c)) => value.push(c),
                    }
                };
                labels.push((key.to_string(), value));
                inner = &inner[end..];
                inner = inner.strip_prefix(',').unwrap_or(inner);
            }
        }
        let value = rest
            .strip_prefix(' ')
            .and_then(|v| v.split(' ').next())
            .ok_or_else(|| format!("no value: {line:?}"))?;
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v.parse().map_err(|_| format!("bad value: {line:?}"))?,
        };
        samples.push((name.to_string(), labels, value));
    }
    Ok(samples)
}

#[tokio::test]
async fn hostile_domains_leave_the_scrape_parseable_and_the_token_guards_it() {
    let d = Daemon::start_with(
        Options::default().env("EVHOST_METRICS__TOKEN", "metrics-secret-0123456789"),
    )
    .await;
    let hostile = [
        "quote\"d.com".to_string(),
        "new\nline.com".to_string(),
        "back\\slash.com".to_string(),
        "a".repeat(10_000),
        "bücher.example".to_string(),
        "Fine.Example.COM".to_string(),
    ];
    for domain in &hostile {
        let (status, body) = d
            .post_json(
                "/v1/events?wait=true",
                &json!({"type": "message.received", "data": received(domain, false)}),
            )
            .await;
        assert!(status == 200 || status == 400, "{status} {body}");
    }
    let open = d.client.get(d.url("/metrics")).send().await.unwrap();
    assert_eq!(open.status(), 401, "the metrics token guards /metrics");
    let text = d
        .client
        .get(d.url("/metrics"))
        .bearer_auth("metrics-secret-0123456789")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let samples = parse_exposition(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    let domains: std::collections::HashSet<String> = samples
        .iter()
        .filter(|(name, _, _)| name == "esp_messages_received_total")
        .flat_map(|(_, labels, _)| {
            labels
                .iter()
                .filter(|(k, _)| k == "domain")
                .map(|(_, v)| v.clone())
        })
        .collect();
    assert_eq!(
        domains,
        ["invalid".to_string(), "fine.example.com".to_string()]
            .into_iter()
            .collect(),
        "{text}"
    );
}
