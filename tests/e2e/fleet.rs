//! Several daemons on one PostgreSQL, black-box: three nodes under a steady stream,
//! one killed with SIGKILL. Nothing it acknowledged is lost: another node takes it
//! over (its undispatched log rows are dispatched, its leased deliveries are due at
//! once) within 10 s, and no event is delivered under two `webhook-id`s.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use evhost_e2e::receiver::{Receiver, Reply};
use evhost_e2e::{Backend, Daemon, Options, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_in_a_fleet_of_three_is_taken_over_within_10_s() {
    let Some(backend) = Backend::postgres() else {
        return; // Backend::all() said SKIPPING
    };
    // A receiver slow enough that the killed node holds leased deliveries.
    let rx = Receiver::start_with(Reply::status(200).delay(Duration::from_millis(20))).await;
    let options = || Options::default().webhooks_local().backend(&backend);
    let a = Daemon::start_with(options()).await;
    a.add_webhook(&json!({"name": "fleet", "url": rx.url("/"), "events": ["fleet.*"]}))
        .await;
    let mut b = Daemon::start_with(options()).await;
    let c = Daemon::start_with(options()).await;
    let (_, nodes) = a.get_json("/v1/nodes").await;
    let running = nodes["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["state"] == "running")
        .count();
    assert_eq!(running, 3, "{nodes}");

    let stop = Arc::new(AtomicBool::new(false));
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let urls = [
        a.url("/v1/events"),
        b.url("/v1/events"),
        c.url("/v1/events"),
    ];
    let publishers: Vec<_> = (0..6)
        .map(|task| {
            let (client, url, stop) = (client.clone(), urls[task % 3].clone(), stop.clone());
            tokio::spawn(async move {
                let mut ok = Vec::new();
                for n in 0.. {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let id = format!("f-{task}-{n}");
                    let body = json!({"type": "fleet.test", "id": id, "data": {"n": n}});
                    match client.post(&url).json(&body).send().await {
                        Ok(r) if r.status() == 202 => ok.push(id),
                        Ok(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                        // The killed node's publishers go quiet.
                        Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                    }
                }
                ok
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let b_node = std::fs::read_to_string(b.dir.path().join("data/audit-chain-id")).unwrap();
    let b_node = b_node.trim().to_string();
    b.kill();
    let killed = Instant::now();
    // Watched from the moment of the kill, beside the stream.
    let watcher = {
        let (client, url, b_node) = (client.clone(), a.url("/v1/nodes"), b_node.clone());
        tokio::spawn(async move {
            loop {
                let nodes: serde_json::Value =
                    client.get(&url).send().await.unwrap().json().await.unwrap();
                let b_row = nodes["nodes"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|n| n["node"] == b_node.as_str())
                    .cloned()
                    .unwrap();
                if b_row["state"] == "taken_over" {
                    return killed.elapsed();
                }
                assert!(
                    killed.elapsed() < Duration::from_secs(10),
                    "not taken over within 10 s: {b_row}"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    let mut acknowledged = HashSet::new();
    for p in publishers {
        acknowledged.extend(p.await.unwrap());
    }
    let from_b: HashSet<&String> = acknowledged
        .iter()
        .filter(|id| id.starts_with("f-1-") || id.starts_with("f-4-"))
        .collect();
    assert!(!from_b.is_empty());

    let taken = watcher.await.unwrap();
    let arrivals = rx
        .wait_arrivals(&acknowledged, Duration::from_secs(30), String::new)
        .await;
    let delivered_all = killed.elapsed();
    let mut repeats = 0;
    for (id, webhook_ids) in &arrivals {
        let distinct: HashSet<&String> = webhook_ids.iter().collect();
        assert_eq!(
            distinct.len(),
            1,
            "{id} was delivered as different deliveries: {webhook_ids:?}"
        );
        repeats += webhook_ids.len() - 1;
    }
    eprintln!(
        "fleet of 3, one killed: taken over {taken:?} after the kill; every one of {} acknowledged events ({} through the killed node) delivered {delivered_all:?} after it; {repeats} repeated deliveries (same webhook-id)",
        acknowledged.len(),
        from_b.len()
    );
    drop((a, c));
}

/// A node that hangs (SIGSTOP: its connections stay open, its heartbeat stops) is
/// cut off once `cluster.node_timeout` passes and taken over; when it wakes it takes
/// its lock back and serves on. Nothing acknowledged is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_node_is_cut_off_after_the_node_timeout_and_taken_over() {
    use nix::sys::signal::Signal;
    let Some(backend) = Backend::postgres() else {
        return; // Backend::all() said SKIPPING
    };
    let rx = Receiver::start_with(Reply::status(200).delay(Duration::from_millis(20))).await;
    let options = || {
        Options::default()
            .webhooks_local()
            .backend(&backend)
            .env("EVHOST_CLUSTER__HEARTBEAT_INTERVAL", "500ms")
            .env("EVHOST_CLUSTER__NODE_TIMEOUT", "3s")
    };
    let a = Daemon::start_with(options()).await;
    a.add_webhook(&json!({"name": "hung", "url": rx.url("/"), "events": ["hung.*"]}))
        .await;
    let b = Daemon::start_with(options()).await;
    let b_node = std::fs::read_to_string(b.dir.path().join("data/audit-chain-id")).unwrap();
    let b_node = b_node.trim().to_string();
    let mut acknowledged = HashSet::new();
    for n in 0..300 {
        let id = format!("h{n}");
        let (status, _) = b
            .post_json(
                "/v1/events",
                &json!({"type": "hung.test", "id": id, "data": {}}),
            )
            .await;
        assert_eq!(status, 202);
        acknowledged.insert(id);
    }
    evhost_e2e::signal(b.pid(), Signal::SIGSTOP);
    let stopped = Instant::now();
    let taken = loop {
        let (_, nodes) = a.get_json("/v1/nodes").await;
        let row = nodes["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["node"] == b_node.as_str())
            .cloned()
            .unwrap();
        if row["state"] == "taken_over" {
            break stopped.elapsed();
        }
        assert!(
            stopped.elapsed() < Duration::from_secs(8),
            "not taken over: {row}; the other node's log:\n{}",
            a.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    rx.wait_arrivals(&acknowledged, Duration::from_secs(20), || {
        "while the node hung".to_string()
    })
    .await;
    evhost_e2e::signal(b.pid(), Signal::SIGCONT);
    let woke = Instant::now();
    loop {
        let (status, _) = b
            .post_json(
                "/v1/events",
                &json!({"type": "hung.test", "id": "after", "data": {}}),
            )
            .await;
        if status == 202 {
            break;
        }
        assert!(
            woke.elapsed() < Duration::from_secs(10),
            "the woken node does not serve again"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    rx.wait_for(acknowledged.len() + 1, Duration::from_secs(20))
        .await;
    eprintln!(
        "a node hung with {} events acknowledged: taken over {taken:?} after it stopped (node_timeout 3 s); it served again once woken",
        acknowledged.len()
    );
}
