//! The daemon's whole shutdown path, in-process: events accepted over HTTP during a
//! burst are every one dispatched before `serve` returns, none twice.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use evhost::bus::{Handling, Subscriber};
use evhost::config::Config;
use evhost::event::{Event, TypePattern};
use tokio_util::sync::CancellationToken;

#[derive(Default)]
struct Seen(Mutex<Vec<String>>);

impl Subscriber for Seen {
    fn id(&self) -> &str {
        "test-counter"
    }
    fn handle<'a>(&'a self, event: &'a Arc<Event>) -> Handling<'a> {
        self.0
            .lock()
            .unwrap()
            .push(format!("{} {}", event.kind, event.id));
        Handling::ok()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_during_a_burst_dispatches_every_accepted_event_once() {
    let data_dir = tempfile::tempdir().unwrap();
    let config = Config::load_from(
        None,
        [
            ("EVHOST_SERVER__LISTEN", "127.0.0.1:0".to_string()),
            ("EVHOST_DATA_DIR", data_dir.path().display().to_string()),
            ("EVHOST_EVENTS__QUEUE_SIZE", "20000".to_string()),
        ]
        .map(|(k, v)| (k.to_string(), v)),
    )
    .unwrap();
    let seen = Arc::new(Seen::default());
    let stop = CancellationToken::new();
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let daemon = {
        let (seen, stop) = (seen.clone(), stop.clone());
        tokio::spawn(evhost::daemon::serve(
            config,
            stop.cancelled_owned(),
            move |running| {
                running.bus.subscribe(vec![TypePattern::All], seen).unwrap();
                let _ = ready_tx.send((running.addr, running.metrics.clone()));
            },
        ))
    };
    let (addr, metrics) = ready_rx.await.unwrap();
    let client = reqwest::Client::new();
    let batch: Vec<_> = (0..100)
        .map(|i| serde_json::json!({"type": "burst.test", "data": {"n": i}}))
        .collect();
    let body = serde_json::to_string(&batch).unwrap();
    let mut senders = Vec::new();
    for _ in 0..4 {
        let (client, body) = (client.clone(), body.clone());
        senders.push(tokio::spawn(async move {
            let mut accepted = Vec::new();
            for _ in 0..25 {
                let response = client
                    .post(format!("http://{addr}/v1/events/batch"))
                    .header("content-type", "application/json")
                    .body(body.clone())
                    .send()
                    .await;
                match response {
                    Ok(r) if r.status() == 202 => {
                        let answer: serde_json::Value = r.json().await.unwrap();
                        accepted.extend(
                            answer["ids"]
                                .as_array()
                                .unwrap()
                                .iter()
                                .map(|id| id.as_str().unwrap().to_string()),
                        );
                    }
                    Ok(r) => assert_eq!(r.status(), 503),
                    Err(_) => {} // connection closed by the shutdown
                }
            }
            accepted
        }));
    }
    // Stop once the burst is under way, however fast or slow this machine is.
    for _ in 0..500 {
        if !metrics
            .encode()
            .contains("evhost_events_accepted_total{family=\"custom\"} 0")
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(30), daemon)
        .await
        .unwrap()
        .unwrap()
        .unwrap();

    let mut accepted = HashSet::new();
    for sender in senders {
        accepted.extend(sender.await.unwrap());
    }
    let seen = seen.0.lock().unwrap();
    let burst: Vec<_> = seen
        .iter()
        .filter_map(|line| line.strip_prefix("burst.test "))
        .collect();
    assert!(burst.iter().all(|id| accepted.contains(*id)));
    assert!(!accepted.is_empty(), "nothing accepted before the stop");
    assert_eq!(
        burst.len(),
        accepted.len(),
        "every accepted event dispatched, none twice"
    );
    // server.stopped comes after the drain began and is dispatched too.
    assert_eq!(
        seen.iter()
            .filter(|l| l.starts_with("server.stopped "))
            .count(),
        1
    );
}
