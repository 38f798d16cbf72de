use std::time::Duration;

use evhost_e2e::*;
use reqwest::Method;

/// SIGTERM in the middle of a 10,000-event burst: the daemon stops taking events
/// (503 `stopping` or a closed connection), finishes what it accepted, and exits 0.
#[tokio::test]
async fn sigterm_during_a_burst_exits_cleanly() {
    let mut d =
        Daemon::start_with(Options::default().env("EVHOST_EVENTS__QUEUE_SIZE", 20000)).await;
    let batch: Vec<_> = (0..100)
        .map(|_| json!({"type": "message.received", "data": received("example.com", false)}))
        .collect();
    let body = json!(batch).to_string();
    let mut senders = Vec::new();
    for _ in 0..4 {
        let (client, url, body) = (d.client.clone(), d.url("/v1/events/batch"), body.clone());
        senders.push(tokio::spawn(async move {
            let (mut accepted, mut stopping, mut closed) = (0u32, 0u32, 0u32);
            for _ in 0..25 {
                match client
                    .request(Method::POST, &url)
                    .header("content-type", "application/json")
                    .body(body.clone())
                    .send()
                    .await
                {
                    Ok(r) if r.status() == 202 => accepted += 100,
                    Ok(r) => {
                        assert_eq!(r.status(), 503);
                        let (_, json) = status_json(r).await;
                        assert_eq!(json["error"]["code"], "stopping");
                        stopping += 1;
                    }
                    Err(_) => closed += 1,
                }
            }
            (accepted, stopping, closed)
        }));
    }
    tokio::time::sleep(Duration::from_millis(30)).await;
    let status = d.terminate().await;
    let mut accepted = 0;
    for sender in senders {
        accepted += sender.await.unwrap().0;
    }
    assert!(
        status.success(),
        "exit status {status:?}; log:\n{}",
        d.log()
    );
    let log = d.log();
    assert!(log.contains("stopping: refusing new events"), "{log}");
    assert!(log.contains("every accepted event was dispatched"), "{log}");
    assert!(accepted > 0, "nothing was accepted before the signal");
}
