//! Plugins, black-box: the examples dropped into a running daemon's plugin folder
//! change what a real webhook receiver gets; swaps, corrupt files, failing inits and
//! deletions; hostile plugins only affect their own event; swaps under load.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use evhost_e2e::receiver::Receiver;
use evhost_e2e::{Daemon, Options, Value, json, plugin_wasm, received};

const ADMIN: &str = "admin-token-0123456789";

async fn daemon(extra: &[(&str, &str)]) -> Daemon {
    let mut options = Options::default()
        .webhooks_local()
        .env("EVHOST_PLUGINS__SETTLE", "20ms")
        // The 10 ms default deadline is wall-clock time: on a loaded 2-core CI machine
        // a well-behaved plugin can be preempted past it. Deadline tests set their own.
        .env("EVHOST_PLUGINS__TIMEOUT", "2s")
        .config_yaml(&format!(
            "auth:\n  tokens:\n    - {{name: ops, token: {ADMIN}, scopes: [admin, read, publish]}}\n"
        ))
        .token(ADMIN);
    for (k, v) in extra {
        options = options.env(k, v);
    }
    Daemon::start_with(options).await
}

/// The audit row of event `id` (waiting up to 5 s for the writer).
async fn audited(d: &Daemon, kind: &str, id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let rows = d
            .audit_rows(&format!("types={kind}"), 100, Some(ADMIN))
            .await;
        if let Some(row) = rows.into_iter().find(|r| r["event_id"] == id) {
            return row;
        }
        assert!(
            Instant::now() < deadline,
            "{id} not audited; log:\n{}",
            d.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The log's record of what plugins did to the event `id` (a row of its own that
/// refers to the event; the event's row stays as it was accepted).
async fn decided(d: &Daemon, id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let rows = d
            .audit_rows("types=plugin.decided&resource_type=event", 100, Some(ADMIN))
            .await;
        if let Some(row) = rows.into_iter().find(|r| r["resource_id"] == id) {
            return row;
        }
        assert!(
            Instant::now() < deadline,
            "no decision about {id} recorded; log:\n{}",
            d.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Bodies of the requests a receiver got, by event type.
fn by_type(rx: &Receiver) -> HashMap<String, Vec<Value>> {
    let mut map: HashMap<String, Vec<Value>> = HashMap::new();
    for r in rx.requests() {
        let body = r.json();
        map.entry(body["event"].as_str().unwrap().to_string())
            .or_default()
            .push(body);
    }
    map
}

/// A receiver behind an enabled endpoint named `all` for `pattern`.
async fn receive_all(d: &Daemon, pattern: &str) -> Receiver {
    let rx = Receiver::start().await;
    d.add_webhook(&json!({"name": "all", "url": rx.url("/all"), "events": [pattern]}))
        .await;
    rx
}

#[tokio::test]
async fn the_examples_filter_transform_and_route_live_events() {
    let d = daemon(&[]).await;
    let rx = Receiver::start().await;
    let vip = Receiver::start().await;
    d.add_webhook(
        &json!({"name": "all", "url": rx.url("/all"), "events": ["message.*", "spam.*"]}),
    )
    .await;
    // The VIP desk subscribes to nothing that is published here: only `deliver`
    // reaches it.
    d.add_webhook(&json!({"name": "vip", "url": vip.url("/vip"), "events": ["domain.deleted"]}))
        .await;

    // spam-router: spam becomes spam.detected and leaves normal delivery.
    d.write_sidecar(
        "spam-router",
        Some("priority = 10\n[config]\nthreshold = 5\n"),
    );
    let took = d
        .install_plugin("spam-router", &plugin_wasm("spam_router"))
        .await;
    eprintln!("spam-router serving {took:?} after the copy");
    // The release build serves within about 0.25 s (BENCHMARKS.md); this debug build
    // shares two cores with the rest of the suite, so the bound here is looser.
    assert!(
        took < Duration::from_secs(3),
        "{took:?} from the copy to serving"
    );
    let spam_id = d
        .publish("message.received", &received("example.com", true))
        .await;
    let clean_id = d
        .publish("message.received", &received("example.com", false))
        .await;
    let requests = rx.wait_for(2, Duration::from_secs(10)).await;
    let first_seen = requests[0].at;
    let types = by_type(&rx);
    assert_eq!(types["spam.detected"].len(), 1, "{types:?}");
    assert_eq!(types["spam.detected"][0]["data"]["score"], 9.5);
    assert_eq!(types["message.received"].len(), 1, "{types:?}");
    assert_eq!(types["message.received"][0]["id"], clean_id.as_str());
    let _ = first_seen;

    // The audit log still has the dropped event as accepted, and beside it who
    // dropped it and why.
    let accepted = audited(&d, "message.received", &spam_id).await;
    assert_eq!(accepted["details"]["spam_score"], 9.5, "{accepted}");
    let dropped = decided(&d, &spam_id).await;
    assert_eq!(
        dropped["details"]["dropped"]["plugin"], "spam-router",
        "{dropped}"
    );
    assert!(
        dropped["details"]["dropped"]["reason"]
            .as_str()
            .unwrap()
            .contains("9.5")
    );

    // pii-redactor after it: recipients and subjects are masked downstream.
    d.write_sidecar("pii-redactor", Some("priority = 20\n"));
    d.install_plugin("pii-redactor", &plugin_wasm("pii_redactor"))
        .await;
    let masked_id = d
        .publish("message.received", &received("example.com", false))
        .await;
    rx.wait_for(3, Duration::from_secs(10)).await;
    let last = rx.requests().last().unwrap().json();
    assert_eq!(last["id"], masked_id.as_str());
    assert_eq!(last["data"]["to"], json!(["b***@example.com"]));
    assert_eq!(last["data"]["subject"], "[redacted]");
    // The audit log keeps the event as accepted, and who changed it.
    let row = audited(&d, "message.received", &masked_id).await;
    assert_eq!(row["details"]["subject"], "Hello", "{row}");
    let row = decided(&d, &masked_id).await;
    assert_eq!(
        row["details"]["replaced_by"],
        json!(["pii-redactor"]),
        "{row}"
    );

    // vip-router last: VIP-domain events also go to the endpoint named "vip".
    d.write_sidecar(
        "vip-router",
        Some("priority = 30\n[config]\ndomains = \"vip.example\"\ntarget = \"vip\"\n"),
    );
    d.install_plugin("vip-router", &plugin_wasm("vip_router"))
        .await;
    let vip_id = d
        .publish("message.received", &received("vip.example", false))
        .await;
    d.publish("message.received", &received("example.com", false))
        .await;
    let got = vip.wait_for(1, Duration::from_secs(10)).await;
    let body = got[0].json();
    assert_eq!(body["id"], vip_id.as_str());
    // It left the pipeline masked (pii-redactor runs first).
    assert_eq!(body["data"]["subject"], "[redacted]");
    rx.wait_for(5, Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(vip.count(), 1, "only the VIP-domain event");

    // The API and metrics show all three at work.
    let (_, list) = d.get_json("/v1/plugins").await;
    let names: Vec<&str> = list["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["pii-redactor", "spam-router", "vip-router"]);
    let metrics = d.metrics().await;
    assert!(
        metrics
            .contains("evhost_plugin_counter_total{plugin=\"spam-router\",name=\"spam_routed\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("evhost_plugin_actions_total{plugin=\"vip-router\",action=\"deliver\"} 1")
    );
    // The platform's counters count accepted messages, the dropped spam included:
    // five message.received events were published.
    let received_total: f64 = metrics
        .lines()
        .filter(|l| l.starts_with("esp_messages_received_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(received_total, 5.0, "{metrics}");
}

#[tokio::test]
async fn swaps_corrupt_files_failing_inits_and_deletions() {
    let d = daemon(&[]).await;
    let rx = receive_all(&d, "message.*").await;
    let spam = received("example.com", true);
    let publish_spam = || d.publish("message.received", &spam);

    // Version 1 drops spam.
    d.write_sidecar("p", Some("[config]\nthreshold = 5\n"));
    d.install_plugin("p", &plugin_wasm("spam_router")).await;
    publish_spam().await;
    let marker = d
        .publish("message.received", &received("example.com", false))
        .await;
    rx.wait_for(1, Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(rx.count(), 1);
    assert_eq!(rx.requests()[0].json()["id"], marker.as_str());

    // A changed build takes over: now spam passes, masked.
    d.install_plugin("p", &plugin_wasm("pii_redactor")).await;
    let id = publish_spam().await;
    let got = rx.wait_for(2, Duration::from_secs(10)).await;
    assert_eq!(got[1].json()["id"], id.as_str());
    assert_eq!(got[1].json()["data"]["subject"], "[redacted]");

    // A corrupt file: the old version keeps serving and the API says why.
    std::fs::write(d.plugins_dir().join("p.wasm"), b"\0asm garbage").unwrap();
    let status = d
        .wait_plugin("p", |p| {
            p["last_error"]
                .as_str()
                .is_some_and(|e| e.contains("not a WebAssembly component"))
        })
        .await;
    assert_eq!(status["state"], "serving", "{status}");
    assert_eq!(status["plugin_name"], "pii-redactor", "{status}");
    let id = publish_spam().await;
    let got = rx.wait_for(3, Duration::from_secs(10)).await;
    assert_eq!(got[2].json()["id"], id.as_str());
    assert_eq!(got[2].json()["data"]["subject"], "[redacted]");
    let (code, answer) = d.post_json("/v1/plugins/p/reload", &json!({})).await;
    assert_eq!(code, 422, "{answer}");
    assert_eq!(answer["error"]["code"], "plugin_not_loaded");

    // A plugin whose init fails: the same.
    d.write_sidecar("p", Some("[config]\nbehave = \"init-fail\"\n"));
    std::fs::copy(plugin_wasm("hostile"), d.plugins_dir().join("p.wasm")).unwrap();
    let status = d
        .wait_plugin("p", |p| {
            p["last_error"]
                .as_str()
                .is_some_and(|e| e.contains("init failed"))
        })
        .await;
    assert_eq!(status["plugin_name"], "pii-redactor", "{status}");
    let metrics = d.metrics().await;
    assert!(
        evhost_e2e::metric_value(&metrics, "evhost_plugin_load_failures_total{plugin=\"p\"}")
            >= 2.0
    );

    // Deleting the file unloads it: events pass untouched.
    std::fs::remove_file(d.plugins_dir().join("p.wasm")).unwrap();
    d.write_sidecar("p", None);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (code, _) = d.get_json("/v1/plugins/p").await;
        if code == 404 {
            break;
        }
        assert!(Instant::now() < deadline, "not unloaded");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let id = publish_spam().await;
    let got = rx.wait_for(4, Duration::from_secs(10)).await;
    assert_eq!(got[3].json()["id"], id.as_str());
    assert_eq!(got[3].json()["data"]["subject"], "Hello");
    assert!(d.log().contains("plugin unloaded"));

    // Each load, failed load and the unload is in the audit log, as the daemon's own
    // action on the plugin.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let rows = d.audit_rows("types=plugin.*", 100, Some(ADMIN)).await;
        let kinds: Vec<&str> = rows
            .iter()
            .map(|r| r["event_type"].as_str().unwrap())
            .collect();
        let count = |k: &str| kinds.iter().filter(|x| **x == k).count();
        if count("plugin.unloaded") == 1 {
            assert_eq!(count("plugin.loaded"), 2, "{kinds:?}");
            assert!(count("plugin.load_failed") >= 2, "{kinds:?}");
            assert!(count("plugin.reload") == 1, "the API reload: {kinds:?}");
            let loaded = rows
                .iter()
                .find(|r| r["event_type"] == "plugin.loaded")
                .unwrap();
            assert_eq!(loaded["actor"], "evhost");
            assert_eq!(loaded["resource_type"], "plugin");
            assert_eq!(loaded["resource_id"], "p");
            break;
        }
        assert!(Instant::now() < deadline, "{kinds:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn hostile_plugins_only_affect_their_own_event() {
    let d = daemon(&[("EVHOST_PLUGINS__BREAKER_FAILURES", "100")]).await;
    let rx = Receiver::start().await;
    d.add_webhook(
        &json!({"name": "all", "url": rx.url("/all"), "events": ["test.*", "message.*"]}),
    )
    .await;
    d.write_sidecar(
        "hostile",
        Some("memory_mib = 200\ntimeout = \"1s\"\n[config]\nbehave = \"by-event\"\nsubscribe = \"test.*\"\n"),
    );
    d.install_plugin("hostile", &plugin_wasm("hostile")).await;

    let cases = [
        ("loop", "timeout"),
        ("memory-bomb", "memory"),
        ("trap", "trap"),
        ("error", "error"),
        ("huge-output", "invalid_action"),
        ("many-actions", "invalid_action"),
        ("bad-replace", "invalid_action"),
    ];
    let mut ids = Vec::new();
    for (what, _) in cases {
        ids.push(d.publish("test.hostile", &json!({"do": what})).await);
    }
    let fine = d.publish("test.hostile", &json!({"do": "pass"})).await;
    ids.push(fine);
    // on_error = pass: every event still reaches the receiver, unchanged.
    let got = rx.wait_for(ids.len(), Duration::from_secs(20)).await;
    let seen: Vec<String> = got
        .iter()
        .map(|r| r.json()["id"].as_str().unwrap().to_string())
        .collect();
    for id in &ids {
        assert!(seen.contains(id), "{id} not delivered");
    }
    for r in &got {
        assert!(
            r.json()["data"].get("do").is_some(),
            "delivered unchanged: {}",
            r.json()
        );
    }
    let status = d
        .wait_plugin("hostile", |p| p["errors"]["invalid_action"] == 3)
        .await;
    for (kind, n) in [("timeout", 1), ("memory", 1), ("trap", 1), ("error", 1)] {
        assert_eq!(status["errors"][kind], n, "{kind}: {status}");
    }
    assert_eq!(status["state"], "serving");
    let metrics = d.metrics().await;
    assert!(
        metrics.contains("evhost_plugin_errors_total{plugin=\"hostile\",kind=\"memory\"} 1"),
        "{metrics}"
    );

    // An emit loop is cut at the hop limit (3): the original and three generations.
    d.write_sidecar(
        "hostile",
        Some("[config]\nbehave = \"emit-loop\"\nsubscribe = \"test.loop\"\n"),
    );
    d.wait_plugin("hostile", |p| p["plugin_name"] == "hostile-emit-loop")
        .await;
    let before = rx.count();
    d.publish("test.loop", &json!({"n": 1})).await;
    rx.wait_for(before + 4, Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(rx.count(), before + 4, "exactly 4 test.loop events");
    assert!(
        evhost_e2e::metric_value(&d.metrics().await, "evhost_plugin_emits_refused_total") >= 1.0
    );
}

#[tokio::test]
async fn on_error_drop_and_the_circuit_breaker() {
    let d = daemon(&[
        ("EVHOST_PLUGINS__BREAKER_FAILURES", "3"),
        ("EVHOST_PLUGINS__BREAKER_COOLDOWN", "500ms"),
    ])
    .await;
    let rx = receive_all(&d, "test.*").await;
    d.write_sidecar(
        "strict",
        Some("on_error = \"drop\"\n[config]\nbehave = \"by-event\"\nsubscribe = \"test.*\"\n"),
    );
    d.install_plugin("strict", &plugin_wasm("hostile")).await;

    // A failed call drops the event; the audit log says who and why.
    let failed = d.handled("test.x", &json!({"do": "trap"})).await;
    let passed = d.handled("test.x", &json!({"do": "pass"})).await;
    let got = rx.wait_for(1, Duration::from_secs(10)).await;
    assert_eq!(got[0].json()["id"], passed.as_str());
    let row = decided(&d, &failed).await;
    assert_eq!(row["details"]["dropped"]["plugin"], "strict");
    assert!(
        row["details"]["dropped"]["reason"]
            .as_str()
            .unwrap()
            .contains("trapped")
    );

    // Three failures in a row open the breaker: the plugin is skipped, and with
    // on_error = drop so are the events, until a trial after the cooldown succeeds.
    for _ in 0..3 {
        d.handled("test.x", &json!({"do": "error"})).await;
    }
    let open = d
        .wait_plugin("strict", |p| p["state"] == "breaker_open")
        .await;
    assert_eq!(open["failures_in_a_row"], 3);
    d.handled("test.x", &json!({"do": "pass"})).await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    let trial = d.handled("test.x", &json!({"do": "pass"})).await;
    let got = rx.wait_for(2, Duration::from_secs(10)).await;
    assert_eq!(
        got.len(),
        2,
        "the event during the open breaker was dropped"
    );
    assert_eq!(got[1].json()["id"], trial.as_str());
    d.wait_plugin("strict", |p| {
        p["state"] == "serving" && p["failures_in_a_row"] == 0
    })
    .await;
    assert!(
        d.metrics()
            .await
            .contains("evhost_plugin_breaker_open{plugin=\"strict\"} 0")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_hundred_swaps_during_a_steady_stream_lose_and_duplicate_nothing() {
    let d = daemon(&[("EVHOST_EVENTS__QUEUE_SIZE", "100000")]).await;
    let rx = receive_all(&d, "message.*").await;
    d.write_sidecar("swap", Some("[config]\nbehave = \"pass\"\n"));
    let versions = [plugin_wasm("pii_redactor"), plugin_wasm("hostile")];
    d.install_plugin("swap", &versions[0]).await;
    d.install_plugin("swap", &versions[1]).await;

    // 5,000 events/s offered: four publishers, each a batch of 50 every 40 ms,
    // until told to stop. A batch the daemon refuses (503, queue full) counts as
    // not accepted; only accepted events are expected at the receiver.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let publishers: Vec<_> = (0..4)
        .map(|_| {
            let client = d.client.clone();
            let url = d.url("/v1/events/batch");
            let stop = stop.clone();
            tokio::spawn(async move {
                let (mut ids, mut refused) = (Vec::new(), 0usize);
                let mut tick = tokio::time::interval(Duration::from_millis(40));
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    tick.tick().await;
                    let batch: Vec<Value> = (0..50)
                        .map(|_| json!({"type": "message.received", "data": received("example.com", false)}))
                        .collect();
                    let r = client.post(&url).bearer_auth(ADMIN).json(&batch).send().await.unwrap();
                    let (status, body) = evhost_e2e::status_json(r).await;
                    match status {
                        202 => ids.extend(
                            body["ids"].as_array().unwrap().iter().map(|i| i.as_str().unwrap().to_string()),
                        ),
                        503 => refused += 50,
                        _ => panic!("{status} {body}"),
                    }
                }
                (ids, refused)
            })
        })
        .collect();
    let started = Instant::now();
    for n in 0..100 {
        d.install_plugin("swap", &versions[n % 2]).await;
    }
    let swapping = started.elapsed();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (mut ids, mut refused) = (Vec::new(), 0);
    for publisher in publishers {
        let (mine, theirs) = publisher.await.unwrap();
        ids.extend(mine);
        refused += theirs;
    }
    eprintln!(
        "100 swaps in {swapping:?} while {} events were accepted ({:.0}/s) and {refused} refused",
        ids.len(),
        ids.len() as f64 / swapping.as_secs_f64()
    );
    assert!(ids.len() >= 1000, "the stream ran during the swaps");

    // How many events the stream carried depends on how long the swaps took on this
    // machine; allow at least 4 ms per delivery (a debug build on a busy CI machine).
    let patience = Duration::from_secs(120).max(Duration::from_millis(4 * ids.len() as u64));
    let got = rx.wait_for(ids.len(), patience).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut seen: HashMap<String, usize> = HashMap::new();
    for r in rx.requests() {
        *seen
            .entry(r.json()["id"].as_str().unwrap().to_string())
            .or_default() += 1;
    }
    let duplicates: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        duplicates.is_empty(),
        "{} duplicated, e.g. {:?}",
        duplicates.len(),
        duplicates.first()
    );
    let missing = ids.iter().filter(|id| !seen.contains_key(*id)).count();
    assert_eq!(missing, 0, "{missing} of {} lost", ids.len());
    assert_eq!(got.len().max(rx.count()), ids.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_plugin_cli_checks_runs_and_lists() {
    let dir = tempfile::tempdir().unwrap();
    let spam = plugin_wasm("spam_router");
    let spam = spam.to_str().unwrap();

    let (code, out, err) = evhost_e2e::cli(&["plugin", "check", spam], &[]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("matches evhost:plugin@0.1.0"), "{out}");
    assert!(out.contains("spam-router 0.1.0"), "{out}");
    assert!(out.contains("memory 64 MiB, timeout 10 ms"), "{out}");

    let garbage = dir.path().join("garbage.wasm");
    std::fs::write(&garbage, b"\0asm\x01\0\0\0 nonsense").unwrap();
    let (code, _, err) = evhost_e2e::cli(&["plugin", "check", garbage.to_str().unwrap()], &[]);
    assert_eq!(code, 1);
    assert!(err.contains("not a WebAssembly component"), "{err}");

    // run: actions, counters; the sidecar's config applies.
    let event = dir.path().join("event.json");
    std::fs::write(
        &event,
        json!([
            {"type": "message.received", "data": received("example.com", true)},
            {"type": "message.received", "data": received("example.com", false)}
        ])
        .to_string(),
    )
    .unwrap();
    let sidecar = dir.path().join("spam.toml");
    // A deadline a busy CI machine cannot miss (the default is 10 ms of wall clock).
    std::fs::write(&sidecar, "timeout = \"2s\"\n[config]\nthreshold = 5\n").unwrap();
    let args = [
        "plugin",
        "run",
        spam,
        "--event",
        event.to_str().unwrap(),
        "--sidecar",
        sidecar.to_str().unwrap(),
    ];
    let (code, out, err) = evhost_e2e::cli(&args, &[]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("{\"emit\":{\"type\":\"spam.detected\""),
        "{out}"
    );
    assert!(out.contains("pass (no actions)"), "{out}");
    assert!(out.contains("counter spam_routed = 1"), "{out}");
    let (code, out, err) = evhost_e2e::cli(&[&args[..], &["--json"]].concat(), &[]);
    assert_eq!(code, 0, "{out}{err}");
    let report: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["calls"].as_array().unwrap().len(), 2);

    // A failing call: shown, and exit 1.
    std::fs::write(&sidecar, "[config]\nbehave = \"loop\"\n").unwrap();
    let hostile = plugin_wasm("hostile");
    let (code, out, err) = evhost_e2e::cli(
        &[
            "plugin",
            "run",
            hostile.to_str().unwrap(),
            "--event",
            event.to_str().unwrap(),
            "--sidecar",
            sidecar.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        out.contains("FAILED (timeout): ran past its deadline of 10ms"),
        "{out}"
    );

    // list and reload, against a running daemon.
    let d = daemon(&[]).await;
    d.install_plugin("spam-router", &plugin_wasm("spam_router"))
        .await;
    let env = [("EVHOST_URL", d.base.as_str()), ("EVHOST_TOKEN", ADMIN)];
    let (code, out, err) = evhost_e2e::cli(&["plugin", "list"], &env);
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("NAME"), "{out}");
    assert!(
        out.contains("spam-router") && out.contains("serving"),
        "{out}"
    );
    let (code, out, err) = evhost_e2e::cli(&["plugin", "reload", "spam-router"], &env);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("reloaded spam-router: version 0.1.0"), "{out}");
    let (code, _, err) = evhost_e2e::cli(&["plugin", "reload", "nope"], &env);
    assert_eq!(code, 1);
    assert!(err.contains("no plugin file"), "{err}");
}

#[test]
fn plugin_new_makes_a_crate_that_passes_its_test() {
    let dir = tempfile::tempdir().unwrap();
    let crate_dir = dir.path().join("no-newsletters");
    let new = [
        "plugin",
        "new",
        "no-newsletters",
        "--dir",
        crate_dir.to_str().unwrap(),
    ];
    let (code, out, err) = evhost_e2e::cli(&new, &[]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(crate_dir.join("src/lib.rs").exists());
    // Pin its dependencies to the workspace's, so the test needs no network and
    // reuses what is built.
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    std::fs::copy(root.join("Cargo.lock"), crate_dir.join("Cargo.lock")).unwrap();
    let target = std::env::current_exe()
        .unwrap()
        .ancestors()
        .nth(3)
        .unwrap()
        .to_path_buf();
    let test = std::process::Command::new(env!("CARGO"))
        .args(["test", "--offline", "--manifest-path"])
        .arg(crate_dir.join("Cargo.toml"))
        .env("CARGO_TARGET_DIR", &target)
        .output()
        .unwrap();
    let log =
        String::from_utf8_lossy(&test.stderr).into_owned() + &String::from_utf8_lossy(&test.stdout);
    assert!(test.status.success(), "{log}");
    assert!(log.contains("1 passed"), "{log}");
    // A second `new` into the same folder is refused.
    let (code, _, err) = evhost_e2e::cli(&new, &[]);
    assert_eq!(code, 1);
    assert!(err.contains("not empty"), "{err}");
}

#[tokio::test]
async fn tap_plugins_observe_without_holding_events() {
    let d = daemon(&[]).await;
    let rx = receive_all(&d, "test.*").await;
    // A tap that takes 400 ms per event (a loop cut at its deadline) and tries to
    // drop everything: neither holds nor drops anything. Held, the five events would
    // take at least 2 s; at 200 ms per event (before) the margin was too thin, and
    // one full-suite run on a loaded 2-core machine delivered them unheld in 1.17 s.
    d.write_sidecar(
        "watcher",
        Some("mode = \"tap\"\ntimeout = \"400ms\"\n[config]\nbehave = \"by-event\"\nsubscribe = \"test.*\"\n"),
    );
    d.install_plugin("watcher", &plugin_wasm("hostile")).await;
    let started = Instant::now();
    for _ in 0..5 {
        d.publish("test.slow", &json!({"do": "loop"})).await;
    }
    rx.wait_for(5, Duration::from_secs(10)).await;
    let delivered = started.elapsed();
    assert!(
        delivered < Duration::from_millis(1500),
        "5 events behind a 400 ms tap were delivered in {delivered:?}: the tap held them"
    );
    let status = d
        .wait_plugin("watcher", |p| p["errors"]["timeout"] == 5)
        .await;
    assert_eq!(status["mode"], "tap");
    assert_eq!(status["calls"], 5);
    d.publish("test.drop", &json!({"do": "bad-replace"})).await;
    rx.wait_for(6, Duration::from_secs(10)).await;
    assert_eq!(rx.requests()[5].json()["data"]["do"], "bad-replace");
}
