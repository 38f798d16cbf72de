//! `evhost simulate`, black-box: a repeatable run against a daemon publishes the
//! documented mix of types, every event accepted and valid for its type.

use std::collections::BTreeMap;

use evhost_e2e::{Daemon, Value, cli};

#[tokio::test]
async fn a_seeded_run_publishes_the_documented_mix_and_every_event_is_accepted() {
    let d = Daemon::start().await;
    let url = d.url("");
    let out = tokio::task::spawn_blocking(move || {
        cli(
            &[
                "simulate",
                "--seed",
                "7",
                "--duration",
                "10s",
                "--rate",
                "60",
                "--json",
                "--url",
                &url,
            ],
            &[],
        )
    })
    .await
    .unwrap();
    let (code, out, err) = out;
    assert_eq!(code, 0, "{out}\n{err}");
    let summary: Value = serde_json::from_str(&out).unwrap();
    let accepted = summary["accepted"].as_u64().unwrap();
    assert_eq!(accepted, 600, "{summary:#}");
    let by_type = summary["by_type"].as_object().unwrap();
    // Each type's share is within 5 % (relative) of the documented one, or one event.
    for (kind, share) in summary["mix"].as_object().unwrap() {
        let share = share.as_f64().unwrap();
        let count = by_type.get(kind).and_then(Value::as_u64).unwrap_or(0) as f64;
        let expected = share * accepted as f64;
        assert!(
            (count - expected).abs() <= (expected * 0.05).max(1.0),
            "{kind}: {count} of {accepted}, documented {share}"
        );
    }
    // The daemon took every one (the log holds them, by type).
    let mut logged: BTreeMap<String, u64> = BTreeMap::new();
    for row in d.audit_rows("", 1000, None).await {
        if row["source"] == "/simulate" {
            *logged
                .entry(row["event_type"].as_str().unwrap().to_string())
                .or_default() += 1;
        }
    }
    let expected: BTreeMap<String, u64> = by_type
        .iter()
        .map(|(k, v)| (k.clone(), v.as_u64().unwrap()))
        .collect();
    assert_eq!(logged, expected);

    // The same seed gives the same events (dry run: nothing published).
    let run = || {
        cli(
            &[
                "simulate",
                "--seed",
                "7",
                "--duration",
                "2s",
                "--rate",
                "50",
                "--dry-run",
            ],
            &[],
        )
    };
    let (a, b) = (run(), run());
    assert_eq!(a.0, 0, "{}", a.2);
    assert_eq!(a.1.lines().count(), 100);
    let strip = |text: &str| -> Vec<Value> {
        text.lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .filter(|e| e["type"] != "queue.stuck")
            .collect()
    };
    assert_eq!(strip(&a.1), strip(&b.1));
    let (code, _, err) = cli(&["simulate", "--rate", "0", "--dry-run"], &[]);
    assert_ne!(code, 0);
    assert!(err.contains("--rate"), "{err}");
}
