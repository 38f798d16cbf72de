//! `evhost plugin replay`, black-box: a candidate version judged on the events a
//! daemon has logged, read from the running daemon and from its data directory
//! once stopped, and compared with the version serving.

use evhost_e2e::{Daemon, Options, Value, cli, json, plugin_wasm, received};

/// Published `message.received` events with these spam scores, in this order.
const SCORES: [f64; 5] = [1.0, 3.0, 4.0, 6.0, 9.0];

fn replay(args: &[&str]) -> Value {
    let mut all = vec!["plugin", "replay"];
    all.extend_from_slice(args);
    all.push("--json");
    let (code, out, err) = cli(&all, &[]);
    assert_eq!(code, 0, "replay {args:?} failed:\n{out}\n{err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}):\n{out}"))
}

#[tokio::test]
async fn a_candidate_is_judged_on_logged_events_against_the_serving_version() {
    let mut d = Daemon::start_with(Options::default().env("EVHOST_PLUGINS__SETTLE", "20ms")).await;
    // Serving: spam-router with its default threshold (5).
    d.install_plugin("spam-router", &plugin_wasm("spam_router"))
        .await;
    let mut ids = Vec::new();
    for score in SCORES {
        let mut data = received("a.example", false);
        data["spam_score"] = json!(score);
        ids.push(d.handled("message.received", &data).await);
    }
    d.handled(
        "user.login",
        &json!({"user_id": "7f8d1c3e-8a4b-4c1e-9f2a-1b2c3d4e5f60", "email": "bob@a.example", "ip": "192.0.2.1", "user_agent": "mutt", "protocol": "imap", "success": true}),
    )
    .await;

    // The candidate: the same code with a lower threshold (2.5).
    let work = tempfile::tempdir().unwrap();
    let candidate = work.path().join("candidate.wasm");
    std::fs::copy(plugin_wasm("spam_router"), &candidate).unwrap();
    std::fs::write(
        work.path().join("candidate.toml"),
        "[config]\nthreshold = 2.5\n",
    )
    .unwrap();
    let candidate = candidate.to_str().unwrap();
    let data_dir = d.plugins_dir().parent().unwrap().to_path_buf();
    let url = d.url("");

    // From the database of the running daemon, and from the daemon over its API.
    let report = replay(&[
        candidate,
        "--since",
        "1h",
        "--types",
        "message.*,user.*",
        "--against",
        "spam-router",
        "--data-dir",
        data_dir.to_str().unwrap(),
    ]);
    let from_daemon = replay(&[
        candidate,
        "--since",
        "1h",
        "--types",
        "message.*,user.*",
        "--against",
        d.plugins_dir().join("spam-router.wasm").to_str().unwrap(),
        "--url",
        &url,
    ]);
    for report in [&report, &from_daemon] {
        assert_eq!(report["events"], 6, "{report:#}");
        let c = &report["candidate"];
        assert_eq!(
            (
                &c["calls"],
                &c["passed"],
                &c["dropped"],
                &c["replaced"],
                &c["emitted"],
                &c["delivered"]
            ),
            (
                &json!(5),
                &json!(1),
                &json!(4),
                &json!(0),
                &json!(4),
                &json!(0)
            ),
            "{report:#}"
        );
        assert_eq!(c["failed"], json!({}));
        let s = &report["serving"];
        assert_eq!(
            (&s["calls"], &s["passed"], &s["dropped"], &s["emitted"]),
            (&json!(5), &json!(3), &json!(2), &json!(2)),
            "{report:#}"
        );
        // The login and score 1 agree. Both drop 6 and 9, but the spam.detected
        // they emit names each one's threshold, so those differ too, as do 3 and 4.
        assert_eq!(report["same"], 2, "{report:#}");
        assert_eq!(report["different"], 4, "{report:#}");
        let differing: Vec<&Value> = report["differences"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| &d["event_id"])
            .collect();
        let expected: Vec<Value> = ids[1..].iter().map(|id| json!(id)).collect();
        assert_eq!(differing, expected.iter().collect::<Vec<_>>());
        let first = &report["differences"][0];
        assert_eq!(first["serving"], json!({"actions": []}));
        assert!(
            first["candidate"]["actions"][1]["drop"]
                .as_str()
                .unwrap()
                .contains("over 2.5"),
            "{first}"
        );
        assert_eq!(report["first_event"], json!(ids[0]));
    }

    // From an event on, at most two of them.
    let report = replay(&[candidate, "--from", &ids[2], "--limit", "2", "--url", &url]);
    assert_eq!(report["events"], 2, "{report:#}");
    assert_eq!(report["first_event"], json!(ids[2]));
    assert_eq!(report["last_event"], json!(ids[3]));
    assert!(report.get("serving").is_none(), "{report:#}");

    // From the data directory of the stopped daemon.
    assert!(d.terminate().await.success());
    let offline = replay(&[
        candidate,
        "--since",
        "1h",
        "--types",
        "message.received",
        "--against",
        "spam-router",
        "--data-dir",
        data_dir.to_str().unwrap(),
    ]);
    assert_eq!(offline["events"], 5, "{offline:#}");
    assert_eq!(offline["different"], 4, "{offline:#}");
    assert_eq!(report_candidate(&offline), report_candidate(&from_daemon));

    // Bad input: a clear message, nothing run.
    let (code, _, err) = cli(
        &[
            "plugin",
            "replay",
            candidate,
            "--from",
            "no-such-event",
            "--data-dir",
            data_dir.to_str().unwrap(),
        ],
        &[],
    );
    assert_ne!(code, 0);
    assert!(err.contains("holds no event no-such-event"), "{err}");
    let (code, _, err) = cli(
        &[
            "plugin",
            "replay",
            candidate,
            "--since",
            "1h",
            "--against",
            "absent",
            "--data-dir",
            data_dir.to_str().unwrap(),
        ],
        &[],
    );
    assert_ne!(code, 0);
    assert!(err.contains("no plugin file"), "{err}");
}

/// The candidate's counts without its time, which differs between runs.
fn report_candidate(report: &Value) -> Value {
    let mut c = report["candidate"].clone();
    c["call_us"] = json!(null);
    c
}
