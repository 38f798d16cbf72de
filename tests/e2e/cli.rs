use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use evhost_e2e::*;

#[tokio::test]
async fn publish_prints_the_id_and_reports_errors() {
    let d = Daemon::start().await;
    let file = d.dir.path().join("event.json");
    std::fs::write(&file, received("example.com", false).to_string()).unwrap();
    let url = d.base.clone();
    let data_arg = format!("@{}", file.display());

    let (code, out, err) = cli(
        &["publish", "message.received", "--data", &data_arg, "--wait"],
        &[("EVHOST_URL", &url)],
    );
    assert_eq!(code, 0, "{err}");
    uuid::Uuid::parse_str(out.trim()).expect("prints the event id");

    let (code, _, err) = cli(
        &[
            "publish",
            "message.received",
            "--data",
            r#"{"size": 1}"#,
            "--url",
            &url,
        ],
        &[],
    );
    assert_eq!(code, 1);
    assert!(
        err.contains("400") && err.contains("invalid_event") && err.contains("data."),
        "{err}"
    );

    let (code, _, err) = cli(
        &["publish", "a.b", "--data", "not json", "--url", &url],
        &[],
    );
    assert_eq!(code, 1);
    assert!(err.contains("--data is not valid JSON"), "{err}");

    let closed = format!("http://127.0.0.1:{}", free_port());
    let (code, _, err) = cli(&["publish", "a.b", "--data", "{}", "--url", &closed], &[]);
    assert_eq!(code, 1);
    assert!(err.contains("cannot reach the daemon"), "{err}");
}

#[tokio::test]
async fn tail_prints_matching_events() {
    let d = Daemon::start().await;
    let mut tail = Command::new(evhost_bin())
        .args(["tail", "message.*", "--json", "--url", &d.base])
        .env_remove("EVHOST_API_TOKEN")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = tail.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).unwrap();
        line
    });
    // The tail connects asynchronously; publish until it has seen one (bounded).
    let mut published = Vec::new();
    for _ in 0..50 {
        let (_, body) = d
            .post_json(
                "/v1/events",
                &json!({"type": "message.received", "data": received("example.com", false)}),
            )
            .await;
        published.push(body["id"].clone());
        if reader.is_finished() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let line = reader.join().unwrap();
    tail.kill().unwrap();
    tail.wait().unwrap();
    let event: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(event["type"], "message.received");
    assert!(published.contains(&event["id"]));
}

#[test]
fn config_print_masks_secrets_and_bad_config_exits_2() {
    let (code, out, err) = cli(
        &["config", "print"],
        &[
            ("EVHOST_API_TOKEN", "very-secret-token-123"),
            ("EVHOST_EVENTS__WORKERS", "7"),
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("workers: 7"), "{out}");
    assert!(
        !out.contains("very-secret-token-123") && out.contains("very****"),
        "{out}"
    );
    assert!(out.contains("retry_delays"), "{out}");

    let (code, _, err) = cli(
        &["config", "print"],
        &[("EVHOST_EVENTS__QUEUE_SIZE", "lots")],
    );
    assert_eq!(code, 2);
    assert!(
        err.contains("events.queue_size") && err.contains("lots"),
        "{err}"
    );

    let (code, _, err) = cli(
        &["serve"],
        &[("EVHOST_WEBHOOKS__RETRY_DELAYS", "[1m, soon]")],
    );
    assert_eq!(code, 2);
    assert!(
        err.contains("webhooks.retry_delays") && err.contains("soon"),
        "{err}"
    );

    let (code, _, err) = cli(&["serve", "--config", "/nonexistent/evhost.yaml"], &[]);
    assert_eq!(code, 2);
    assert!(err.contains("/nonexistent/evhost.yaml"), "{err}");
}

#[test]
fn help_lists_the_commands() {
    let (code, out, _) = cli(&["--help"], &[]);
    assert_eq!(code, 0);
    for command in ["serve", "publish", "tail", "config", "bench"] {
        assert!(out.contains(command), "{out}");
    }
}
