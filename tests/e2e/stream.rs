use evhost_e2e::*;
use reqwest::Method;

use crate::ingest::next_sse_data;

#[tokio::test]
async fn tail_streams_only_matching_types() {
    let d = Daemon::start().await;
    let mut sse = d
        .request(Method::GET, "/v1/events/stream?types=message.*")
        .send()
        .await
        .unwrap();
    assert_eq!(sse.status(), 200);
    assert!(
        sse.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let login = json!({"user_id": "0195f1d2-7a3b-7c4d-8e5f-a1b2c3d4e5f6", "email": "a@example.com", "ip": "192.0.2.1",
                       "user_agent": "x", "protocol": "imap", "success": true});
    assert_eq!(
        d.post_json("/v1/events", &json!({"type": "user.login", "data": login}))
            .await
            .0,
        202
    );
    let (_, body) = d
        .post_json(
            "/v1/events",
            &json!({"type": "message.received", "data": received("example.com", false)}),
        )
        .await;
    let event = next_sse_data(&mut sse).await;
    assert_eq!(event["type"], "message.received");
    assert_eq!(event["id"], body["id"]);
}

#[tokio::test]
async fn tail_refuses_a_bad_pattern() {
    let d = Daemon::start().await;
    let (status, body) = d.get_json("/v1/events/stream?types=Message.*").await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["code"], "bad_pattern");
}

/// Past `server.max_tails` open tails a new one gets 429 with `Retry-After`; once
/// one closes, there is room again.
#[tokio::test]
async fn live_tails_are_limited() {
    let d = Daemon::start_with(Options::default().env("EVHOST_SERVER__MAX_TAILS", 2)).await;
    let open = || d.request(Method::GET, "/v1/events/stream").send();
    let first = open().await.unwrap();
    let second = open().await.unwrap();
    assert_eq!(
        (first.status().as_u16(), second.status().as_u16()),
        (200, 200)
    );
    let third = open().await.unwrap();
    assert_eq!(third.status(), 429);
    assert_eq!(third.headers()["retry-after"], "5");
    let (_, body) = status_json(third).await;
    assert_eq!(body["error"]["code"], "too_many_tails", "{body}");
    drop(first);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let again = open().await.unwrap();
        if again.status() == 200 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no room after a tail closed"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    drop(second);
}
