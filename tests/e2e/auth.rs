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

/// A request that carries a body is refused for its token before the body is read:
/// the headers announce a 1 MB body that never comes, and the answer (401 without a
/// token, 403 without the route's scope) arrives at once.
#[tokio::test]
async fn the_token_is_checked_before_the_body_is_read() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let d = daemon_with_tokens().await;
    let address = d.base.trim_start_matches("http://").to_string();
    for (path, token, expected) in [
        ("/v1/events", None, "401"),
        ("/v1/events/batch", Some(READER), "403"),
        ("/v1/webhooks", Some(PUBLISHER), "403"),
    ] {
        let mut stream = tokio::net::TcpStream::connect(&address).await.unwrap();
        let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/json\r\n{auth}Content-Length: 1000000\r\n\r\n"
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        stream.write_all(b"{\"type\":").await.unwrap();
        let mut answer = vec![0u8; 512];
        let n = tokio::time::timeout(std::time::Duration::from_secs(3), stream.read(&mut answer))
            .await
            .unwrap_or_else(|_| panic!("{path}: no answer while the body is still coming"))
            .unwrap();
        let answer = String::from_utf8_lossy(&answer[..n]);
        assert!(
            answer.starts_with(&format!("HTTP/1.1 {expected}")),
            "{path}: {answer}"
        );
    }
}

/// A token over its `rate_per_second` gets 429 `rate_limited` with `Retry-After`,
/// counted under its name; another token publishing at the same time is not slowed.
#[tokio::test]
async fn a_token_over_its_rate_gets_429_and_the_others_do_not() {
    const LIMITED: &str = "limited-token-00000004";
    let yaml = format!(
        "auth:\n  tokens:\n    - {{name: smtp, token: {PUBLISHER}, scopes: [publish]}}\n    - {{name: bulk-importer, token: {LIMITED}, scopes: [publish], rate_per_second: 5, burst: 5}}\n"
    );
    let d = Daemon::start_with(Options::default().config_yaml(&yaml)).await;
    let event = json!({"type": "message.received", "data": received("example.com", false)});
    let send = |token: &'static str| {
        let request = d
            .client
            .post(d.url("/v1/events"))
            .bearer_auth(token)
            .json(&event);
        async move { request.send().await.unwrap() }
    };
    let started = std::time::Instant::now();
    let (limited, free) = tokio::join!(
        futures_util::future::join_all((0..40).map(|_| send(LIMITED))),
        futures_util::future::join_all((0..40).map(|_| send(PUBLISHER))),
    );
    let elapsed = started.elapsed().as_secs_f64();
    assert!(
        free.iter().all(|r| r.status() == 202),
        "the other token was slowed"
    );
    let accepted = limited.iter().filter(|r| r.status() == 202).count();
    let refused: Vec<_> = limited.into_iter().filter(|r| r.status() == 429).collect();
    assert_eq!(accepted + refused.len(), 40);
    // The burst, plus what the rate refilled while the requests ran.
    let allowed = 5 + (5.0 * elapsed).ceil() as usize;
    assert!(
        (5..=allowed).contains(&accepted),
        "{accepted} accepted in {elapsed:.2}s"
    );
    for response in refused.into_iter().take(3) {
        let retry_after: u32 = response.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((1..=2).contains(&retry_after), "Retry-After {retry_after}");
        let (_, body) = status_json(response).await;
        assert_eq!(body["error"]["code"], "rate_limited");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("bulk-importer")
        );
    }
    let metrics = d.metrics().await;
    assert_eq!(
        metric_value(
            &metrics,
            "evhost_rate_limited_total{token=\"bulk-importer\"}"
        ),
        (40 - accepted) as f64
    );
    assert_eq!(
        metric_value(&metrics, "evhost_rate_limited_total{token=\"smtp\"}"),
        0.0
    );

    // A batch larger than the burst can never pass; it is told so.
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    let batch: Vec<Value> = (0..6).map(|_| event.clone()).collect();
    let response = d
        .client
        .post(d.url("/v1/events/batch"))
        .bearer_auth(LIMITED)
        .json(&batch)
        .send()
        .await
        .unwrap();
    let (status, body) = status_json(response).await;
    assert_eq!(status, 429, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("burst 5"),
        "{body}"
    );
    // Within the burst it passes.
    let response = d
        .client
        .post(d.url("/v1/events/batch"))
        .bearer_auth(LIMITED)
        .json(&batch[..3])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
}
