//! The daemon's plugin limits are a ceiling: a sidecar may lower them, and one that
//! asks for more loads with the ceiling and says so in `GET /v1/plugins`. Compiled
//! code is loaded from the cache only when its tag proves the daemon wrote it.

use evhost_e2e::{Daemon, Options, plugin_wasm, received};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sidecar_asking_above_the_ceiling_gets_the_ceiling_and_a_warning() {
    let d = Daemon::start_with(
        Options::default()
            .env("EVHOST_PLUGINS__MAX_MEMORY_MIB", 128)
            .env("EVHOST_PLUGINS__MAX_TIMEOUT", "50ms"),
    )
    .await;
    d.write_sidecar("greedy", Some("memory_mib = 4096\ntimeout = \"60s\"\n"));
    d.install_plugin("greedy", &plugin_wasm("spam_router"))
        .await;
    d.write_sidecar("modest", Some("memory_mib = 16\ntimeout = \"5ms\"\n"));
    d.install_plugin("modest", &plugin_wasm("spam_router"))
        .await;
    let (_, greedy) = d.get_json("/v1/plugins/greedy").await;
    assert_eq!(greedy["memory_mib"], 128, "{greedy}");
    assert_eq!(greedy["timeout_ms"], 50, "{greedy}");
    let warnings = greedy["warnings"].to_string();
    assert!(
        warnings.contains("plugins.max_memory_mib") && warnings.contains("plugins.max_timeout"),
        "{greedy}"
    );
    let (_, modest) = d.get_json("/v1/plugins/modest").await;
    assert_eq!(
        (modest["memory_mib"].as_u64(), modest["timeout_ms"].as_u64()),
        (Some(16), Some(5)),
        "{modest}"
    );
    assert!(modest.get("warnings").is_none(), "{modest}");
}

/// A compiled-plugin cache entry changed on disk is refused at the next start (the
/// daemon logs it), compiled afresh, and the plugin serves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tampered_compiled_plugin_is_refused_and_rebuilt() {
    let mut d = Daemon::start().await;
    d.write_sidecar("spam", Some("[config]\nthreshold = 5\n"));
    d.install_plugin("spam", &plugin_wasm("spam_router")).await;
    let cache = d.dir.path().join("data/plugin-cache");
    let entry = std::fs::read_dir(&cache)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "cwasm"))
        .expect("a compiled entry");
    d.terminate().await;
    let mut code = std::fs::read(&entry).unwrap();
    let middle = code.len() / 2;
    code[middle] ^= 0x01;
    std::fs::write(&entry, &code).unwrap();

    d.restart().await;
    d.wait_plugin("spam", |p| p["state"] == "serving").await;
    let log = d.log();
    assert!(
        log.contains("refused a compiled-plugin cache entry"),
        "{log}"
    );
    // It serves.
    d.publish("message.received", &received("example.com", true))
        .await;
    d.wait_for_metric("evhost_plugin_calls_total{plugin=\"spam\"}")
        .await;
    // The rebuilt entry carries a good tag again.
    assert_ne!(std::fs::read(&entry).unwrap(), code);
}
