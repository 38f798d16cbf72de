//! Every bad input gets the right status and a JSON error, and nothing is accepted.

use evhost_e2e::*;
use reqwest::Method;

async fn raw(d: &Daemon, path: &str, content_type: Option<&str>, body: Vec<u8>) -> (u16, Value) {
    let mut r = d.request(Method::POST, path).body(body);
    if let Some(ct) = content_type {
        r = r.header("content-type", ct);
    }
    status_json(r.send().await.unwrap()).await
}

fn assert_error(answer: &(u16, Value), status: u16, code: &str) {
    assert_eq!(answer.0, status, "{}", answer.1);
    assert_eq!(answer.1["error"]["code"], code, "{}", answer.1);
    assert!(
        answer.1["error"]["message"]
            .as_str()
            .is_some_and(|m| m.len() > 10),
        "a message a person can act on: {}",
        answer.1
    );
}

#[tokio::test]
async fn bad_inputs_are_refused_and_nothing_is_accepted() {
    let d = Daemon::start_with(
        Options::default()
            .env("EVHOST_SERVER__MAX_BODY_BYTES", 4096)
            .env("EVHOST_SERVER__MAX_BATCH_EVENTS", 3),
    )
    .await;
    let json = Some("application/json");
    let good = json!({"type": "message.received", "data": received("example.com", false)});

    assert_error(
        &raw(&d, "/v1/events", json, b"{\"type\": ".to_vec()).await,
        400,
        "invalid_json",
    );
    assert_error(
        &raw(&d, "/v1/events", json, b"".to_vec()).await,
        400,
        "empty_body",
    );
    assert_error(
        &raw(&d, "/v1/events", json, b"  \n".to_vec()).await,
        400,
        "empty_body",
    );
    let mut not_utf8 = good.to_string().into_bytes();
    not_utf8.insert(30, 0xff);
    assert_error(
        &raw(&d, "/v1/events", json, not_utf8).await,
        400,
        "invalid_utf8",
    );

    // Deep nesting, in data (kept raw) and in the envelope itself.
    let deep_data = format!(
        r#"{{"type":"x.deep","data":{}1{}}}"#,
        "[".repeat(1000),
        "]".repeat(1000)
    );
    assert_error(
        &raw(&d, "/v1/events", json, deep_data.into_bytes()).await,
        400,
        "invalid_event",
    );
    let deep_envelope = format!("{}{}", "[".repeat(1000), "]".repeat(1000));
    assert_error(
        &raw(&d, "/v1/events/batch", json, deep_envelope.into_bytes()).await,
        400,
        "invalid_event",
    );
    // An ignored CloudEvents extension attribute, nested far past any sane depth.
    let deep_extension = format!(
        r#"{{"specversion":"1.0","id":"d1","source":"/s","type":"a.b","data":{{}},"ext":{}{}}}"#,
        "[".repeat(1000),
        "]".repeat(1000)
    );
    assert_error(
        &raw(
            &d,
            "/v1/events",
            Some("application/cloudevents+json"),
            deep_extension.into_bytes(),
        )
        .await,
        400,
        "invalid_event",
    );

    // Schema: wrong type, missing field, unknown field, each named.
    let mut wrong = good.clone();
    wrong["data"]["size"] = json!("big");
    let answer = d.post_json("/v1/events", &wrong).await;
    assert_error(&answer, 400, "invalid_event");
    assert_eq!(answer.1["error"]["field"], "data.size");
    let mut missing = good.clone();
    missing["data"].as_object_mut().unwrap().remove("mailbox");
    let answer = d.post_json("/v1/events", &missing).await;
    assert_eq!(answer.1["error"]["field"], "data.mailbox", "{}", answer.1);
    let mut unknown = good.clone();
    unknown["data"]["colour"] = json!("red");
    let answer = d.post_json("/v1/events", &unknown).await;
    assert_eq!(answer.1["error"]["field"], "data.colour", "{}", answer.1);
    for bad in [
        json!({"type": "Not A Type", "data": {}}),
        json!({"type": "a.b", "data": {}, "id": "has space"}),
        json!({"type": "a.b", "data": {}, "extra": 1}),
        json!({"type": "a.b", "data": {}, "time": "noon"}),
    ] {
        assert_error(&d.post_json("/v1/events", &bad).await, 400, "invalid_event");
    }
    // Found by the `wire` fuzz target: a number no reader can hold is refused, not kept.
    let answer = raw(
        &d,
        "/v1/events",
        Some("application/json"),
        br#"{"type": "a.b", "data": {"n": 3e506}}"#.to_vec(),
    )
    .await;
    assert_error(&answer, 400, "invalid_event");
    assert_eq!(answer.1["error"]["field"], "data", "{}", answer.1);

    // Size limits.
    let big = json!({"type": "a.b", "data": {"blob": "x".repeat(5000)}});
    assert_error(&d.post_json("/v1/events", &big).await, 413, "too_large");
    let four: Vec<_> = (0..4).map(|_| good.clone()).collect();
    assert_error(
        &d.post_json("/v1/events/batch", &json!(four)).await,
        413,
        "batch_too_large",
    );
    assert_error(
        &d.post_json("/v1/events/batch", &json!([])).await,
        400,
        "empty_batch",
    );

    // Content types.
    assert_error(
        &raw(
            &d,
            "/v1/events",
            Some("text/plain"),
            good.to_string().into_bytes(),
        )
        .await,
        415,
        "unsupported_media_type",
    );
    assert_error(
        &raw(
            &d,
            "/v1/events",
            Some("application/cloudevents-batch+json"),
            b"[]".to_vec(),
        )
        .await,
        415,
        "unsupported_media_type",
    );
    assert_error(
        &raw(
            &d,
            "/v1/events/batch",
            Some("application/cloudevents+json"),
            b"{}".to_vec(),
        )
        .await,
        415,
        "unsupported_media_type",
    );

    // Unknown routes and methods answer JSON too.
    assert_error(&d.get_json("/v1/nothing").await, 404, "not_found");
    let answer = status_json(
        d.request(Method::DELETE, "/v1/events")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_error(&answer, 405, "method_not_allowed");

    // Nothing got through; every refusal was counted.
    let metrics = d.metrics().await;
    assert_eq!(
        metric_value(&metrics, "evhost_events_accepted_total{family=\"message\"}"),
        0.0
    );
    assert_eq!(
        metric_value(&metrics, "evhost_events_accepted_total{family=\"custom\"}"),
        0.0
    );
    assert!(
        metric_value(&metrics, "evhost_events_rejected_total{reason=\"invalid\"}") >= 12.0,
        "{metrics}"
    );
    assert_eq!(
        metric_value(
            &metrics,
            "evhost_events_rejected_total{reason=\"too_large\"}"
        ),
        1.0 + 4.0
    );
    assert_eq!(
        metric_value(
            &metrics,
            "evhost_events_rejected_total{reason=\"unsupported_media_type\"}"
        ),
        3.0
    );
}

#[tokio::test]
async fn a_full_queue_answers_503_with_retry_after() {
    let d = Daemon::start_with(
        Options::default()
            .env("EVHOST_EVENTS__QUEUE_SIZE", 10)
            .env("EVHOST_EVENTS__WORKERS", 1),
    )
    .await;
    let batch: Vec<_> = (0..10)
        .map(|_| json!({"type": "message.received", "data": received("example.com", false)}))
        .collect();
    let body = json!(batch).to_string();
    let mut accepted = 0u64;
    let mut refused = 0u64;
    // Bounded: at most 20 rounds of 50 concurrent batches, each needing the whole queue.
    for _ in 0..20 {
        let requests: Vec<_> = (0..50)
            .map(|_| {
                d.request(Method::POST, "/v1/events/batch")
                    .header("content-type", "application/json")
                    .body(body.clone())
                    .send()
            })
            .collect();
        for response in futures_util::future::join_all(requests).await {
            let response = response.unwrap();
            match response.status().as_u16() {
                202 => accepted += 10,
                503 => {
                    assert_eq!(response.headers()["retry-after"], "1");
                    let (_, body) = status_json(response).await;
                    assert_eq!(body["error"]["code"], "queue_full");
                    refused += 10;
                }
                other => panic!("unexpected status {other}"),
            }
        }
        if refused > 0 {
            break;
        }
    }
    assert!(refused > 0, "the queue never filled");
    let metrics = d.metrics().await;
    assert_eq!(
        metric_value(&metrics, "evhost_events_accepted_total{family=\"message\"}"),
        accepted as f64
    );
    assert_eq!(
        metric_value(
            &metrics,
            "evhost_events_rejected_total{reason=\"queue_full\"}"
        ),
        refused as f64
    );
}
