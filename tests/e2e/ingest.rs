use evhost_e2e::*;
use reqwest::Method;
use std::time::Duration;

#[tokio::test]
async fn plain_event_is_accepted_with_a_uuid_v7() {
    let d = Daemon::start().await;
    let (status, body) = d
        .post_json(
            "/v1/events",
            &json!({"type": "message.received", "data": received("example.com", false)}),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let id = uuid::Uuid::parse_str(body["id"].as_str().unwrap()).unwrap();
    assert_eq!(id.get_version_num(), 7);
}

#[tokio::test]
async fn publisher_id_time_and_seed_timestamp_are_kept() {
    let d = Daemon::start().await;
    let mut sse = d
        .request(Method::GET, "/v1/events/stream?types=user.*")
        .send()
        .await
        .unwrap();
    let data = json!({"user_id": "0195f1d2-7a3b-7c4d-8e5f-a1b2c3d4e5f6", "email": "a@example.com", "domain": "example.com"});
    let (status, body) = d
        .post_json(
            "/v1/events",
            &json!({"type": "user.deleted", "id": "crm-42", "source": "/admin-api", "timestamp": "2026-01-02T03:04:05Z", "data": data}),
        )
        .await;
    assert_eq!((status, body["id"].as_str()), (202, Some("crm-42")));
    let event = next_sse_data(&mut sse).await;
    assert_eq!(event["id"], "crm-42");
    assert_eq!(event["source"], "/admin-api");
    assert_eq!(event["time"], "2026-01-02T03:04:05Z");
    assert_eq!(event["data"], data);
    assert_eq!(event["actor"]["ip"], "127.0.0.1");
}

#[tokio::test]
async fn wait_true_answers_once_handled() {
    let d = Daemon::start().await;
    let (status, body) = d
        .post_json(
            "/v1/events?wait=true",
            &json!({"type": "message.received", "data": received("example.com", false)}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["failures"], json!([]));
    // Handled means counted: the metric is already there.
    assert_eq!(
        d.metric("esp_messages_received_total{domain=\"example.com\",spam=\"false\"}")
            .await,
        1.0
    );
}

#[tokio::test]
async fn cloudevents_structured_and_binary() {
    let d = Daemon::start().await;
    let structured = json!({
        "specversion": "1.0", "id": "ce-1", "source": "/smtp/mx1", "type": "message.received",
        "time": "2026-03-04T05:06:07Z", "datacontenttype": "application/json",
        "data": received("example.com", false)
    });
    let r = d
        .request(Method::POST, "/v1/events")
        .header("content-type", "application/cloudevents+json")
        .body(structured.to_string())
        .send()
        .await
        .unwrap();
    let (status, body) = status_json(r).await;
    assert_eq!((status, body["id"].as_str()), (202, Some("ce-1")), "{body}");

    let r = d
        .request(Method::POST, "/v1/events")
        .header("ce-specversion", "1.0")
        .header("ce-id", "ce-2")
        .header("ce-source", "/imap")
        .header("ce-type", "user.login")
        .header("content-type", "application/json")
        .body(
            json!({"user_id": "0195f1d2-7a3b-7c4d-8e5f-a1b2c3d4e5f6", "email": "a@example.com", "ip": "192.0.2.1",
                   "user_agent": "Thunderbird", "protocol": "imap", "success": true})
            .to_string(),
        )
        .send()
        .await
        .unwrap();
    let (status, body) = status_json(r).await;
    assert_eq!((status, body["id"].as_str()), (202, Some("ce-2")), "{body}");

    // Binary mode with a schema error is still validated.
    let r = d
        .request(Method::POST, "/v1/events")
        .header("ce-specversion", "1.0")
        .header("ce-id", "ce-3")
        .header("ce-source", "/imap")
        .header("ce-type", "user.login")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
}

#[tokio::test]
async fn batches_plain_and_cloudevents() {
    let d = Daemon::start().await;
    let batch: Vec<_> = (0..3)
        .map(|_| json!({"type": "message.received", "data": received("example.com", false)}))
        .collect();
    let (status, body) = d.post_json("/v1/events/batch", &json!(batch)).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["ids"].as_array().unwrap().len(), 3);

    let ce_batch = json!([
        {"specversion": "1.0", "id": "b-1", "source": "/s", "type": "billing.invoice_paid", "data": {"amount": 3}},
        {"specversion": "1.0", "id": "b-2", "source": "/s", "type": "billing.invoice_paid", "data": {"amount": 4}}
    ]);
    let r = d
        .request(Method::POST, "/v1/events/batch")
        .header("content-type", "application/cloudevents-batch+json")
        .body(ce_batch.to_string())
        .send()
        .await
        .unwrap();
    let (status, body) = status_json(r).await;
    assert_eq!((status, body), (202, json!({"ids": ["b-1", "b-2"]})));
    // The platform counters count events as the bus dispatches them, just after the
    // answer: wait for them, then check they are exact.
    for (family, n) in [("message", 3.0), ("custom", 2.0)] {
        let sample = format!("evhost_events_accepted_total{{family=\"{family}\"}}");
        d.wait_metric_at_least(&sample, n, Duration::from_secs(10))
            .await;
    }
    assert_eq!(
        d.metric("evhost_events_accepted_total{family=\"message\"}")
            .await,
        3.0
    );
    assert_eq!(
        d.metric("evhost_events_accepted_total{family=\"custom\"}")
            .await,
        2.0
    );
}

#[tokio::test]
async fn a_batch_with_one_bad_event_accepts_none() {
    let d = Daemon::start().await;
    let mut bad = received("example.com", false);
    bad["size"] = json!("large");
    let batch = json!([
        {"type": "message.received", "data": received("example.com", false)},
        {"type": "message.received", "data": bad},
    ]);
    let (status, body) = d.post_json("/v1/events/batch", &batch).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["field"], "data.size");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("event [1]"),
        "{body}"
    );
    assert_eq!(
        d.metric("evhost_events_accepted_total{family=\"message\"}")
            .await,
        0.0
    );
}

#[tokio::test]
async fn a_resent_id_gets_the_same_answer_and_is_processed_once() {
    let d = Daemon::start().await;
    let event = json!({"type": "message.received", "id": "mx1-0001", "data": received("example.com", false)});
    let first = d.post_json("/v1/events?wait=true", &event).await;
    let second = d.post_json("/v1/events", &event).await;
    assert_eq!(first.0, 200);
    assert_eq!(second, (202, json!({"id": "mx1-0001"})));
    // In a batch, the resent id is answered but not queued again.
    let (status, body) = d
        .post_json(
            "/v1/events/batch",
            &json!([event, {"type": "message.received", "data": received("example.com", false)}]),
        )
        .await;
    assert_eq!(status, 202);
    assert_eq!(body["ids"][0], "mx1-0001");
    assert_eq!(
        d.metric("evhost_events_accepted_total{family=\"message\"}")
            .await,
        2.0
    );
    assert_eq!(d.metric("evhost_events_duplicate_total").await, 2.0);
}

#[tokio::test]
async fn custom_types_follow_the_config() {
    let d =
        Daemon::start_with(Options::default().env("EVHOST_EVENTS__ALLOW_CUSTOM_TYPES", "false"))
            .await;
    let (status, body) = d
        .post_json("/v1/events", &json!({"type": "billing.paid", "data": {}}))
        .await;
    assert_eq!(status, 400);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("allow_custom_types"),
        "{body}"
    );

    let d =
        Daemon::start_with(Options::default().env("EVHOST_EVENTS__ALLOW_UNKNOWN_FIELDS", "true"))
            .await;
    let mut extra = received("example.com", false);
    extra["x_new_field"] = json!(1);
    let (status, _) = d
        .post_json(
            "/v1/events",
            &json!({"type": "message.received", "data": extra}),
        )
        .await;
    assert_eq!(status, 202);
}

#[tokio::test]
async fn event_types_health_and_openapi() {
    let d = Daemon::start().await;
    let (status, body) = d.get_json("/v1/event-types").await;
    assert_eq!(status, 200);
    let types = body["event_types"].as_array().unwrap();
    assert_eq!(types.len(), 33);
    let login = types.iter().find(|t| t["name"] == "user.login").unwrap();
    assert_eq!(login["schema"]["properties"]["protocol"]["type"], "string");

    assert_eq!(d.get_json("/healthz").await, (200, json!({"status": "ok"})));
    let (status, ready) = d.get_json("/readyz").await;
    assert_eq!((status, &ready["status"]), (200, &json!("ready")));

    let (status, doc) = d.get_json("/openapi.json").await;
    assert_eq!(status, 200);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    for path in [
        "/v1/events",
        "/v1/events/batch",
        "/v1/events/stream",
        "/v1/event-types",
        "/metrics",
    ] {
        assert!(doc["paths"].get(path).is_some(), "openapi lacks {path}");
    }
}

/// Reads SSE lines until a `data:` line of a non-keepalive event; returns it as JSON.
pub async fn next_sse_data(response: &mut reqwest::Response) -> Value {
    let mut buffer = String::new();
    let deadline = std::time::Duration::from_secs(10);
    loop {
        if let Some(pos) = buffer.find("\n\n") {
            let block: String = buffer.drain(..pos + 2).collect();
            if let Some(data) = block.lines().find_map(|l| l.strip_prefix("data:")) {
                return serde_json::from_str(data.trim()).unwrap();
            }
            continue;
        }
        let chunk = tokio::time::timeout(deadline, response.chunk())
            .await
            .expect("no SSE event within 10 s")
            .unwrap()
            .expect("stream ended");
        buffer.push_str(&String::from_utf8_lossy(&chunk));
    }
}
