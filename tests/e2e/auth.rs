use evhost_e2e::*;
use reqwest::Method;

const PUBLISHER: &str = "publisher-token-000001";
const READER: &str = "reader-token-00000002";
const TRUSTED: &str = "trusted-token-0000003";

async fn daemon_with_tokens() -> Daemon {
    let yaml = format!(
        "auth:\n  tokens:\n    - {{name: smtp, token: {PUBLISHER}, scopes: [publish]}}\n    - {{name: dashboard, token: {READER}, scopes: [read]}}\n    - {{name: admin-api, token: {TRUSTED}, scopes: [publish, read], trusted: true}}\n"
    );
    Daemon::start_with(Options::default().config_yaml(&yaml)).await
}

async fn post(
    d: &Daemon,
    token: Option<&str>,
    body: &Value,
    extra: Option<(&str, &str)>,
) -> (u16, Value) {
    let mut r = d
        .client
        .request(Method::POST, d.url("/v1/events"))
        .json(body);
    if let Some(t) = token {
        r = r.bearer_auth(t);
    }
    if let Some((k, v)) = extra {
        r = r.header(k, v);
    }
    status_json(r.send().await.unwrap()).await
}

#[tokio::test]
async fn tokens_and_scopes_guard_every_route_but_health_and_metrics() {
    let d = daemon_with_tokens().await;
    let event = json!({"type": "message.received", "data": received("example.com", false)});

    let (status, body) = post(&d, None, &event, None).await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (401, &json!("unauthorized"))
    );
    assert_eq!(
        post(&d, Some("wrong-token-wrong-token"), &event, None)
            .await
            .0,
        401
    );
    let (status, body) = post(&d, Some(READER), &event, None).await;
    assert_eq!((status, &body["error"]["code"]), (403, &json!("forbidden")));
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("publish")
    );
    assert_eq!(post(&d, Some(PUBLISHER), &event, None).await.0, 202);

    for path in ["/v1/event-types", "/v1/events/stream"] {
        let r = d.client.get(d.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 401, "{path}");
        let r = d
            .client
            .get(d.url(path))
            .bearer_auth(PUBLISHER)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403, "{path}");
    }
    let r = d
        .client
        .get(d.url("/v1/event-types"))
        .bearer_auth(READER)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    for path in ["/healthz", "/readyz", "/metrics"] {
        assert_eq!(
            d.client.get(d.url(path)).send().await.unwrap().status(),
            200,
            "{path}"
        );
    }
    let metrics = d.metrics().await;
    assert_eq!(
        metric_value(
            &metrics,
            "evhost_events_rejected_total{reason=\"unauthorized\"}"
        ),
        2.0
    );
    assert_eq!(
        metric_value(
            &metrics,
            "evhost_events_rejected_total{reason=\"forbidden\"}"
        ),
        1.0
    );
    assert!(
        !d.log().contains(PUBLISHER) && !d.log().contains("wrong-token-wrong-token"),
        "a token reached the log"
    );
}

#[tokio::test]
async fn only_trusted_tokens_name_an_on_behalf_of_user() {
    let d = daemon_with_tokens().await;
    let mut sse = d
        .client
        .get(d.url("/v1/events/stream?types=message.received"))
        .bearer_auth(READER)
        .send()
        .await
        .unwrap();
    let event = json!({"type": "message.received", "data": received("example.com", false)});
    let header = Some(("x-esp-on-behalf-of", "carol@example.com"));
    let (status, body) = post(&d, Some(PUBLISHER), &event, header).await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (403, &json!("not_trusted"))
    );
    assert_eq!(post(&d, Some(TRUSTED), &event, header).await.0, 202);
    let seen = crate::ingest::next_sse_data(&mut sse).await;
    assert_eq!(seen["actor"]["token"], "admin-api");
    assert_eq!(seen["actor"]["on_behalf_of"], "carol@example.com");
    assert_eq!(seen["source"], "/publishers/admin-api");
}

#[tokio::test]
async fn an_open_api_refuses_to_listen_beyond_loopback() {
    let port = free_port();
    let (code, _, stderr) = cli(
        &["serve"],
        &[("EVHOST_SERVER__LISTEN", &format!("0.0.0.0:{port}"))],
    );
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("no API token configured") && stderr.contains("EVHOST_API_TOKEN"),
        "{stderr}"
    );
}
