//! "Accepted means kept", black-box, on SQLite and PostgreSQL: a stream of single
//! POSTs and batches to two webhook endpoints, killed with `kill -9` at a random
//! moment and restarted, ten times over. Every event answered `202` is in the audit
//! log exactly once, the chains verify, and it reaches both endpoints, any repeat
//! under the same `webhook-id`. Also: a publisher id resent before and after a
//! restart, and to two daemons sharing one PostgreSQL, is kept once.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use evhost_e2e::receiver::Receiver;
use evhost_e2e::{Backend, Daemon, Options, json};

const ROUNDS: usize = 10;
/// Events each round offers (the kill may come before they are all sent).
const PER_ROUND: usize = 2_000;
const IN_FLIGHT: usize = 64;
const BATCH: usize = 10;

/// A random duration in `[low, high)` ms, from the clock (the tests need no
/// repeatable sequence, only kills at varying moments).
fn random_ms(low: u64, high: u64) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as u64;
    Duration::from_millis(low + nanos % (high - low))
}

/// Offers `PER_ROUND` events from `IN_FLIGHT` tasks (every third request a batch
/// of `BATCH`, the rest single POSTs), each event with its own id; returns the ids
/// answered 202. A task stops at the first request that fails (the daemon died).
async fn stream(d: &Daemon, round: usize) -> Vec<String> {
    let accepted = Arc::new(Mutex::new(Vec::new()));
    let offered = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let tasks: Vec<_> = (0..IN_FLIGHT)
        .map(|task| {
            let (client, accepted, offered) = (client.clone(), accepted.clone(), offered.clone());
            let (single, batch) = (d.url("/v1/events"), d.url("/v1/events/batch"));
            tokio::spawn(async move {
                for n in 0.. {
                    let size = if n % 3 == 2 { BATCH } else { 1 };
                    let at = offered.fetch_add(size, std::sync::atomic::Ordering::Relaxed);
                    if at >= PER_ROUND {
                        return;
                    }
                    let events: Vec<_> = (0..size)
                        .map(|k| {
                            json!({"type": "kill.test", "id": format!("r{round}-t{task}-n{n}-{k}"),
                                   "data": {"round": round, "n": n}})
                        })
                        .collect();
                    let request = if size == 1 {
                        client.post(&single).json(&events[0])
                    } else {
                        client.post(&batch).json(&events)
                    };
                    match request.send().await {
                        Ok(r) if r.status() == 202 => {
                            let ids = events.iter().map(|e| e["id"].as_str().unwrap().to_string());
                            accepted.lock().unwrap().extend(ids);
                        }
                        Ok(r) => panic!("answered {}: {}", r.status(), r.text().await.unwrap()),
                        Err(_) => return,
                    }
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    Arc::try_unwrap(accepted).unwrap().into_inner().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_event_survives_kill_9_ten_times() {
    for backend in Backend::all() {
        let name = backend.name();
        let rx = [Receiver::start().await, Receiver::start().await];
        let mut d = Daemon::start_with(Options::default().webhooks_local().backend(&backend)).await;
        for (i, r) in rx.iter().enumerate() {
            d.add_webhook(
                &json!({"name": format!("ep{i}"), "url": r.url("/"), "events": ["kill.*"]}),
            )
            .await;
        }
        let mut accepted: Vec<String> = Vec::new();
        let started = Instant::now();
        for round in 0..ROUNDS {
            let kill_after = random_ms(50, 600);
            let pid = d.pid();
            // If the stream ends first, the kill still comes, with whatever is still
            // being dispatched.
            let (ids, ()) = tokio::join!(stream(&d, round), async move {
                tokio::time::sleep(kill_after).await;
                evhost_e2e::signal(pid, nix::sys::signal::Signal::SIGKILL);
            });
            d.kill(); // reaps it
            accepted.extend(ids);
            d.restart().await;
        }
        let want: HashSet<String> = accepted.iter().cloned().collect();
        assert_eq!(want.len(), accepted.len(), "{name}: ids are unique");
        assert!(!want.is_empty(), "{name}: something was accepted");

        // Every acknowledged event reaches both endpoints.
        let deadline = Instant::now() + Duration::from_secs(120);
        for (i, r) in rx.iter().enumerate() {
            loop {
                let got: HashSet<String> = r.arrivals().into_keys().collect();
                let missing = want.difference(&got).count();
                if missing == 0 {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "{name}: endpoint {i}: {missing} of {} acknowledged events never arrived; log:\n{}",
                    want.len(),
                    d.log()
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        let mut repeats = 0;
        for r in &rx {
            for (event, ids) in r.arrivals() {
                assert!(
                    ids.iter().all(|i| i == &ids[0]),
                    "{name}: {event} arrived under several webhook-ids: {ids:?}"
                );
                repeats += ids.len() - 1;
            }
        }

        // Every acknowledged event is in the audit log exactly once; the chains verify.
        let counts = d.log_counts("types=kill.test").await;
        for id in &want {
            assert_eq!(
                counts.get(id),
                Some(&1),
                "{name}: {id} is in the audit log {:?} times",
                counts.get(id)
            );
        }
        let (status, report) = d.get_json("/v1/audit/verify").await;
        assert_eq!(status, 200, "{report}");
        assert_eq!(report["ok"], true, "{name}: {report}");
        eprintln!(
            "{name}: {} events acknowledged over {ROUNDS} kill -9s in {:.1?}; {} in the log \
             (the rest were committed but never answered); {repeats} deliveries repeated, \
             each under its first webhook-id",
            want.len(),
            started.elapsed(),
            counts.values().sum::<usize>()
        );
    }
}

/// The same publisher id, sent before and after a restart, is one audit row and one
/// delivery per endpoint; the resend is answered with the original id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resent_id_is_kept_once_across_a_restart() {
    for backend in Backend::all() {
        let rx = Receiver::start().await;
        let mut d = Daemon::start_with(Options::default().webhooks_local().backend(&backend)).await;
        d.add_webhook(&json!({"name": "one", "url": rx.url("/"), "events": ["resend.*"]}))
            .await;
        let event = json!({"type": "resend.test", "id": "resend-1", "data": {"n": 1}});
        let first = d
            .request(reqwest::Method::POST, "/v1/events")
            .json(&event)
            .send()
            .await
            .unwrap();
        assert_eq!(first.status(), 202);
        assert!(first.headers().get("evhost-duplicate").is_none());
        d.terminate().await;
        d.restart().await;
        let again = d
            .request(reqwest::Method::POST, "/v1/events")
            .json(&event)
            .send()
            .await
            .unwrap();
        assert_eq!(again.status(), 202);
        assert_eq!(again.headers()["evhost-duplicate"], "true");
        let (_, body) = evhost_e2e::status_json(again).await;
        assert_eq!(body["id"], "resend-1");
        rx.wait_for(1, Duration::from_secs(10)).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(rx.count(), 1, "{}: one delivery", backend.name());
        let rows = d.audit_rows("types=resend.*", 100, None).await;
        assert_eq!(rows.len(), 1, "{}: one row", backend.name());
    }
}

/// Two daemons sharing one PostgreSQL: the same publisher id sent to both is one
/// audit row and one delivery.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resent_id_is_kept_once_across_two_daemons() {
    let Some(backend) = Backend::postgres() else {
        return; // Backend::all() said SKIPPING
    };
    let rx = Receiver::start().await;
    let options = Options::default().webhooks_local().backend(&backend);
    let a = Daemon::start_with(options.clone()).await;
    let b = Daemon::start_with(options).await;
    a.add_webhook(&json!({"name": "shared", "url": rx.url("/"), "events": ["twice.*"]}))
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await; // b loads the endpoint
    let event = json!({"type": "twice.test", "id": "twice-1", "data": {}});
    let (sa, sb) = tokio::join!(
        a.post_json("/v1/events", &event),
        b.post_json("/v1/events", &event)
    );
    assert_eq!((sa.0, sb.0), (202, 202));
    assert_eq!(
        (sa.1["id"].as_str(), sb.1["id"].as_str()),
        (Some("twice-1"), Some("twice-1"))
    );
    rx.wait_for(1, Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(rx.count(), 1, "one delivery");
    assert_eq!(a.audit_rows("types=twice.*", 100, None).await.len(), 1);
}

/// A plugin that emits (spam-router: a spam message becomes `spam.detected`),
/// killed mid-stream three times: after each restart the log dispatches again what
/// it had not passed, the plugin emits again, and the log refuses the second copy
/// (an emitted event's id comes from its parent's): one `spam.detected` per spam
/// message, in the log and at the receiver.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_emitted_event_is_kept_once_across_kill_9() {
    for backend in Backend::all() {
        let name = backend.name();
        let rx = Receiver::start().await;
        let mut d = Daemon::start_with(
            Options::default()
                .webhooks_local()
                .backend(&backend)
                .env("EVHOST_PLUGINS__SETTLE", "20ms")
                .env("EVHOST_PLUGINS__TIMEOUT", "2s"),
        )
        .await;
        d.add_webhook(&json!({"name": "spam", "url": rx.url("/"), "events": ["spam.detected"]}))
            .await;
        d.install_plugin("spam-router", &evhost_e2e::plugin_wasm("spam_router"))
            .await;
        let mut sent: HashSet<String> = HashSet::new();
        for _ in 0..3 {
            let pid = d.pid();
            let kill_after = random_ms(100, 500);
            let client = reqwest::Client::new();
            let streams: Vec<_> = (0..16)
                .map(|_| {
                    let (client, url) = (client.clone(), d.url("/v1/events"));
                    tokio::spawn(async move {
                        let mut ok = Vec::new();
                        for _ in 0..200 {
                            let data = evhost_e2e::received("example.com", true);
                            let body = json!({"type": "message.received", "data": data});
                            match client.post(&url).json(&body).send().await {
                                Ok(r) if r.status() == 202 => {
                                    ok.push(data["message_id"].as_str().unwrap().to_string())
                                }
                                _ => break,
                            }
                        }
                        ok
                    })
                })
                .collect();
            tokio::time::sleep(kill_after).await;
            evhost_e2e::signal(pid, nix::sys::signal::Signal::SIGKILL);
            for s in streams {
                sent.extend(s.await.unwrap());
            }
            d.kill();
            d.restart().await;
        }
        assert!(!sent.is_empty());
        // Every acknowledged spam message's spam.detected arrives.
        let deadline = Instant::now() + Duration::from_secs(60);
        let detected = loop {
            let mut by_message: HashMap<String, HashSet<String>> = HashMap::new();
            let mut webhook_ids: HashMap<String, HashSet<String>> = HashMap::new();
            for r in rx.requests() {
                let body = r.json();
                let id = body["id"].as_str().unwrap().to_string();
                let message = body["data"]["message_id"].as_str().unwrap().to_string();
                by_message.entry(message).or_default().insert(id.clone());
                webhook_ids.entry(id).or_default().insert(r.webhook_id());
            }
            if sent.iter().all(|m| by_message.contains_key(m)) {
                for (id, hooks) in &webhook_ids {
                    assert_eq!(hooks.len(), 1, "{name}: {id} under {hooks:?}");
                }
                break by_message;
            }
            assert!(
                Instant::now() < deadline,
                "{name}: {} of {} spam messages reported; log:\n{}",
                sent.iter().filter(|m| by_message.contains_key(*m)).count(),
                sent.len(),
                d.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        for (message, ids) in &detected {
            assert_eq!(ids.len(), 1, "{name}: {message} was reported as {ids:?}");
        }
        let rows = d.audit_rows("types=spam.detected", 1000, None).await;
        let mut per_message: HashMap<String, usize> = HashMap::new();
        for row in &rows {
            let message = row["details"]["message_id"].as_str().unwrap().to_string();
            *per_message.entry(message).or_default() += 1;
        }
        for message in &sent {
            assert_eq!(
                per_message.get(message),
                Some(&1),
                "{name}: {message} has {:?} spam.detected rows",
                per_message.get(message)
            );
        }
        eprintln!(
            "{name}: {} spam messages acknowledged over 3 kill -9s, each reported once",
            sent.len()
        );
    }
}

/// A slow plugin (50 ms per event) does not slow the answers
/// while dispatch is less than `events.max_lag` behind; past it publishers get 503
/// with Retry-After and nothing is written; memory stays within the lag's bounds;
/// everything acknowledged is still delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_consumer_does_not_slow_the_answers_until_the_lag_is_full() {
    const MAX_LAG: u64 = 400;
    let rx = Receiver::start().await;
    let d = Daemon::start_with(
        Options::default()
            .webhooks_local()
            .env("EVHOST_PLUGINS__SETTLE", "20ms")
            .env("EVHOST_PLUGINS__TIMEOUT", "2s")
            .env("EVHOST_EVENTS__MAX_LAG", MAX_LAG)
            .env("EVHOST_EVENTS__WORKERS", 4),
    )
    .await;
    d.add_webhook(&json!({"name": "all", "url": rx.url("/"), "events": ["slow.*"]}))
        .await;
    d.write_sidecar(
        "slow",
        Some("[config]\nbehave = \"sleep\"\nms = \"50\"\nsubscribe = \"slow.*\"\n"),
    );
    d.install_plugin("slow", &evhost_e2e::plugin_wasm("hostile"))
        .await;
    let batch = |n: usize| -> serde_json::Value {
        json!(
            (0..n)
                .map(|i| json!({"type": "slow.test", "data": {"i": i}}))
                .collect::<Vec<_>>()
        )
    };
    // 300 events: dispatching them takes at least 300 × 50 ms / 4 workers = 3.75 s.
    let started = Instant::now();
    let mut accepted = 0;
    for _ in 0..30 {
        let (status, body) = d.post_json("/v1/events/batch", &batch(10)).await;
        assert_eq!(status, 202, "{body}");
        accepted += 10;
    }
    let answered = started.elapsed();
    assert!(
        answered < Duration::from_millis(2500),
        "300 events behind a 50 ms plugin were answered in {answered:?}: the answers waited for dispatch"
    );
    // Past the lag: 503 with Retry-After, and nothing written.
    let mut refused = None;
    for _ in 0..20 {
        let response = d
            .request(reqwest::Method::POST, "/v1/events/batch")
            .json(&batch(50))
            .send()
            .await
            .unwrap();
        match response.status().as_u16() {
            202 => accepted += 50,
            503 => {
                refused = Some(response);
                break;
            }
            other => panic!("answered {other}"),
        }
    }
    let refused = refused.expect("the lag filled and publishers were refused");
    assert_eq!(refused.headers()["retry-after"], "1");
    let (_, body) = evhost_e2e::status_json(refused).await;
    assert_eq!(body["error"]["code"], "queue_full", "{body}");
    let (_, ready) = d.get_json("/readyz").await;
    let lag = &ready["lag"];
    assert!(
        lag["events"].as_u64().unwrap() <= MAX_LAG
            && lag["bytes"].as_u64().unwrap() <= lag["max_bytes"].as_u64().unwrap(),
        "{ready}"
    );
    let rss_kib: u64 = std::fs::read_to_string(format!("/proc/{}/status", d.pid()))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    assert!(rss_kib < 512 * 1024, "RSS {rss_kib} KiB");
    eprintln!(
        "answered 300 in {answered:?}; refused past {} behind; RSS {} MiB",
        lag["events"],
        rss_kib / 1024
    );
    // Everything acknowledged is delivered, and only that.
    rx.wait_for(accepted, Duration::from_secs(60)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(rx.count(), accepted);
    let (_, plugin) = d.get_json("/v1/plugins/slow").await;
    assert_eq!(plugin["calls"].as_u64(), Some(accepted as u64), "{plugin}");
    assert_eq!(plugin["failures_in_a_row"], 0, "{plugin}");
}
