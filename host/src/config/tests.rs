use super::*;
use std::io::Write;

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn file(text: &str) -> tempfile::NamedTempFile {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    f.write_all(text.as_bytes()).unwrap();
    f
}

#[test]
fn defaults_work_without_a_file() {
    let c = Config::load_from(None, env(&[])).unwrap();
    assert_eq!(c.server.listen.to_string(), "127.0.0.1:8080");
    assert_eq!(c.events.workers, 4);
    assert_eq!(c.events.max_lag, 100_000);
    assert_eq!(c.events.max_lag_bytes, 256 * 1024 * 1024);
    assert_eq!(c.audit.retention_days, 90);
    assert_eq!(
        c.webhooks.retry_delays,
        [60, 300, 900, 3600, 14400].map(Duration::from_secs)
    );
    assert_eq!(c.plugins_dir(), PathBuf::from("./data/plugins"));
    assert_eq!(c.database_url(), "sqlite:./data/evhost.db");
}

#[test]
fn seed_file_with_nested_sections_loads() {
    let f = file(
        "events:\n  workers: 8\n  queue_size: 50\n  audit:\n    enabled: false\n    retention_days: 30\n  webhooks:\n    timeout: 250ms\n    retry_delays: [1s, 2m]\n",
    );
    let c = Config::load_from(Some(f.path()), env(&[])).unwrap();
    assert_eq!(c.events.workers, 8);
    assert_eq!(
        c.events.max_lag, 50,
        "the plan's queue_size is the lag limit"
    );
    assert!(!c.audit.enabled);
    assert_eq!(c.audit.retention_days, 30);
    assert_eq!(c.webhooks.timeout, Duration::from_millis(250));
    assert_eq!(
        c.webhooks.retry_delays,
        vec![Duration::from_secs(1), Duration::from_secs(120)]
    );
}

#[test]
fn environment_overrides_the_file() {
    let f = file("server:\n  listen: 127.0.0.1:9000\nevents:\n  workers: 2\n");
    let c = Config::load_from(
        Some(f.path()),
        env(&[
            ("EVHOST_SERVER__LISTEN", "127.0.0.1:9100"),
            ("EVHOST_EVENTS__WORKERS", "6"),
            ("EVHOST_WEBHOOKS__RETRY_DELAYS", "[10ms, 20ms]"),
            ("EVHOST_AUDIT__ENABLED", "false"),
            ("EVHOST_DATA_DIR", "/tmp/x"),
            ("EVHOST_URL", "http://ignored"),
        ]),
    )
    .unwrap();
    assert_eq!(c.server.listen.port(), 9100);
    assert_eq!(c.events.workers, 6);
    assert_eq!(c.webhooks.retry_delays.len(), 2);
    assert!(!c.audit.enabled);
    assert_eq!(c.data_dir, PathBuf::from("/tmp/x"));
}

#[test]
fn api_token_env_defines_an_all_scope_token() {
    let c = Config::load_from(None, env(&[("EVHOST_API_TOKEN", "0123456789abcdef")])).unwrap();
    assert_eq!(c.auth.tokens.len(), 1);
    assert_eq!(c.auth.tokens[0].scopes.len(), 3);
    assert!(!c.to_masked_yaml().contains("0123456789abcdef"));
}

#[test]
fn bad_values_name_the_key_and_the_value() {
    let err = Config::load_from(None, env(&[("EVHOST_EVENTS__WORKERS", "many")]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("events.workers"), "{err}");
    assert!(err.contains("many"), "{err}");

    let err = Config::load_from(None, env(&[("EVHOST_WEBHOOKS__TIMEOUT", "soon")]))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("webhooks.timeout") && err.contains("250ms"),
        "{err}"
    );

    let err = Config::load_from(None, env(&[("EVHOST_EVENTS__WORKERS", "0")]))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("events.workers") && err.contains("1 to 1024"),
        "{err}"
    );

    let err = Config::load_from(None, env(&[("EVHOST_AUDIT__WRITERS", "9")]))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("audit.writers") && err.contains("1 to 8"),
        "{err}"
    );
    let ok = Config::load_from(None, env(&[("EVHOST_AUDIT__WRITERS", "3")])).unwrap();
    assert_eq!(ok.audit.writers, Some(3));

    let err = Config::load_from(None, env(&[("EVHOST_EVENTS__MAX_LAG", "0")]))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("events.max_lag") && err.contains("1 to 10000000"),
        "{err}"
    );
    let err = Config::load_from(None, env(&[("EVHOST_EVENTS__MAX_LAG_BYTES", "1000")]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("events.max_lag_bytes"), "{err}");
    let ok = Config::load_from(None, env(&[("EVHOST_EVENTS__MAX_LAG", "5000")])).unwrap();
    assert_eq!(ok.events.max_lag, 5000);

    let err = Config::load_from(None, env(&[("EVHOST_AUDIT__BATCH_SIZE", "10001")]))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("audit.batch_size") && err.contains("1 to 10000"),
        "{err}"
    );
    let ok = Config::load_from(None, env(&[("EVHOST_AUDIT__BATCH_SIZE", "10000")])).unwrap();
    assert_eq!(ok.audit.batch_size, 10_000);

    let f = file("server:\n  lisen: 1.2.3.4:5\n");
    let err = Config::load_from(Some(f.path()), env(&[]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("lisen"), "{err}");
}

#[test]
fn short_token_is_refused() {
    let f = file("auth:\n  tokens:\n    - name: a\n      token: short\n      scopes: [read]\n");
    let err = Config::load_from(Some(f.path()), env(&[]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("auth.tokens[0].token"), "{err}");
}

#[test]
fn masked_yaml_hides_secrets() {
    let f = file(
        "database:\n  url: postgres://u:hunter2@db/x\nauth:\n  tokens:\n    - name: a\n      token: supersecretvalue123\n      scopes: [read, publish]\n",
    );
    let c = Config::load_from(Some(f.path()), env(&[])).unwrap();
    let yaml = c.to_masked_yaml();
    assert!(!yaml.contains("hunter2"), "{yaml}");
    assert!(!yaml.contains("supersecretvalue123"), "{yaml}");
    assert!(yaml.contains("supe****"), "{yaml}");
}

#[test]
fn cluster_timings_are_checked() {
    let c = Config::load_from(None, env(&[("EVHOST_CLUSTER__NODE_TIMEOUT", "30s")])).unwrap();
    assert_eq!(c.cluster.node_timeout, Duration::from_secs(30));
    assert_eq!(c.cluster.heartbeat_interval, Duration::from_secs(1));
    let e = Config::load_from(
        None,
        env(&[
            ("EVHOST_CLUSTER__HEARTBEAT_INTERVAL", "2s"),
            ("EVHOST_CLUSTER__NODE_TIMEOUT", "3s"),
        ]),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("cluster.node_timeout"), "{e}");
}

#[test]
fn server_limits_and_token_rates_are_checked() {
    for (var, value, key) in [
        (
            "EVHOST_SERVER__HEADER_TIMEOUT",
            "0s",
            "server.header_timeout",
        ),
        ("EVHOST_SERVER__BODY_TIMEOUT", "10ms", "server.body_timeout"),
        ("EVHOST_SERVER__IDLE_TIMEOUT", "0s", "server.idle_timeout"),
        (
            "EVHOST_SERVER__MAX_CONNECTIONS",
            "3",
            "server.max_connections",
        ),
    ] {
        let err = Config::load_from(None, env(&[(var, value)]))
            .unwrap_err()
            .to_string();
        assert!(err.contains(key), "{err}");
    }
    let token = |extra: &str| {
        file(&format!(
            "auth:\n  tokens:\n    - name: a\n      token: a-long-enough-token\n      scopes: [publish]\n{extra}"
        ))
    };
    for (extra, key) in [
        (
            "      rate_per_second: 0\n",
            "auth.tokens[0].rate_per_second",
        ),
        (
            "      rate_per_second: .nan\n",
            "auth.tokens[0].rate_per_second",
        ),
        (
            "      rate_per_second: 5\n      burst: 0\n",
            "auth.tokens[0].burst",
        ),
        ("      burst: 10\n", "auth.tokens[0].burst"),
    ] {
        let f = token(extra);
        let err = Config::load_from(Some(f.path()), env(&[]))
            .unwrap_err()
            .to_string();
        assert!(err.contains(key), "{extra}: {err}");
    }
    let f = token("      rate_per_second: 0.5\n      burst: 3\n");
    let ok = Config::load_from(Some(f.path()), env(&[])).unwrap();
    assert_eq!(ok.auth.tokens[0].rate_per_second, Some(0.5));
}

#[test]
fn https_only_is_read_by_its_name_and_by_its_earlier_name() {
    assert!(
        !Config::load_from(None, env(&[]))
            .unwrap()
            .webhooks
            .https_only
    );
    let c = Config::load_from(None, env(&[("EVHOST_WEBHOOKS__HTTPS_ONLY", "true")])).unwrap();
    assert!(c.webhooks.https_only);
    let f = file("webhooks:\n  https_only: true\n  allowed_ports: [443]\n");
    let c = Config::load_from(Some(f.path()), env(&[])).unwrap();
    assert!(c.webhooks.https_only);
    assert_eq!(c.webhooks.allowed_ports, [443]);
    let f = file("webhooks:\n  require_https: true\n");
    let c = Config::load_from(Some(f.path()), env(&[])).unwrap();
    assert!(c.webhooks.https_only, "require_https is the earlier name");
}
