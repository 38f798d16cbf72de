//! The plugin sandbox and runtime, with real components built from `plugins/` and
//! `tests/plugins/` (the hostile plugin misbehaves on purpose).

mod support;

use std::net::TcpListener;
use std::sync::Arc;
use std::time::{Duration, Instant};

use evhost::config::PluginsConfig;
use evhost::event::{Actor, Event};
use evhost::plugins::Manifest;
use evhost::plugins::cache::Cache;
use evhost::plugins::loader::PluginError;
use evhost::plugins::offline::{self, RunReport};
use evhost::plugins::runtime::{LoadError, Runtime};
use serde_json::{Value, json};
use support::plugin_wasm;

fn manifest(sidecar: &str) -> Manifest {
    Manifest::parse(sidecar, &PluginsConfig::default()).unwrap()
}

fn event(kind: &str, data: Value) -> Arc<Event> {
    Arc::new(Event {
        id: evhost::event::new_event_id(),
        kind: kind.into(),
        time: chrono::Utc::now(),
        source: "/test".into(),
        actor: Actor::default(),
        data: Arc::from(serde_json::value::RawValue::from_string(data.to_string()).unwrap()),
        hops: 0,
    })
}

fn hostile(sidecar: &str, events: &[Arc<Event>]) -> RunReport {
    offline::run(&plugin_wasm("hostile"), &manifest(sidecar), events).unwrap()
}

fn replaced_data(report: &RunReport, call: usize) -> Value {
    let call = &report.calls[call];
    assert!(call.error.is_none(), "call failed: {call:?}");
    call.actions[0]["replace"]["data"].clone()
}

#[test]
fn the_sandbox_has_no_files_environment_or_arguments() {
    // SAFETY: set before any thread of this test reads the environment.
    unsafe { std::env::set_var("EVHOST_TEST_SECRET", "must-not-leak") };
    let e = event("test.probe", json!({}));
    for behave in ["open-file", "read-env"] {
        let report = hostile(
            &format!("[config]\nbehave = \"{behave}\""),
            std::slice::from_ref(&e),
        );
        let data = replaced_data(&report, 0);
        assert_eq!(data["escaped"], false, "{behave}: {data}");
    }
}

#[test]
fn the_sandbox_has_no_network() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    let report = hostile(
        &format!("[config]\nbehave = \"open-socket\"\naddr = \"{addr}\""),
        &[event("test.probe", json!({}))],
    );
    let data = replaced_data(&report, 0);
    assert_eq!(data["escaped"], false, "{data}");
    assert!(
        listener.accept().is_err(),
        "the plugin reached the listener"
    );
}

#[test]
fn an_endless_loop_is_cut_at_the_deadline_and_the_next_event_is_served() {
    let events = [
        event("test.probe", json!({"do": "loop"})),
        event("test.probe", json!({"do": "pass"})),
    ];
    let started = Instant::now();
    let report = hostile(
        "timeout = \"20ms\"\n[config]\nbehave = \"by-event\"",
        &events,
    );
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(
        report.calls[0].error_kind,
        Some("timeout"),
        "{:?}",
        report.calls[0]
    );
    assert!(
        report.calls[0].duration_us >= 15_000,
        "{:?}",
        report.calls[0]
    );
    assert!(
        report.calls[0].duration_us < 1_000_000,
        "{:?}",
        report.calls[0]
    );
    assert!(report.calls[1].error.is_none(), "{:?}", report.calls[1]);
}

#[test]
fn a_memory_bomb_hits_the_cap_and_the_next_event_is_served() {
    let events = [
        event("test.probe", json!({"do": "memory-bomb"})),
        event("test.probe", json!({"do": "pass"})),
    ];
    let report = hostile(
        "memory_mib = 16\ntimeout = \"5s\"\n[config]\nbehave = \"by-event\"",
        &events,
    );
    assert_eq!(
        report.calls[0].error_kind,
        Some("memory"),
        "{:?}",
        report.calls[0]
    );
    assert!(
        report.calls[0].error.as_deref().unwrap().contains("16 MiB"),
        "{:?}",
        report.calls[0]
    );
    assert!(report.calls[1].error.is_none(), "{:?}", report.calls[1]);
}

#[test]
fn a_trap_and_an_error_are_told_apart_and_the_instance_recovers() {
    let events = [
        event("test.probe", json!({"do": "trap"})),
        event("test.probe", json!({"do": "error"})),
        event("test.probe", json!({"do": "pass"})),
    ];
    let report = hostile("[config]\nbehave = \"by-event\"", &events);
    assert_eq!(report.calls[0].error_kind, Some("trap"));
    assert_eq!(report.calls[1].error_kind, Some("error"));
    assert!(
        report.calls[1]
            .error
            .as_deref()
            .unwrap()
            .contains("failing, as configured")
    );
    assert!(report.calls[2].error.is_none());
}

#[test]
fn fuel_limits_a_call_when_set() {
    let report = hostile(
        "fuel = 100000\ntimeout = \"5s\"\n[config]\nbehave = \"loop\"",
        &[event("test.probe", json!({}))],
    );
    assert_eq!(report.calls[0].error_kind, Some("timeout"));
    assert!(
        report.calls[0].error.as_deref().unwrap().contains("fuel"),
        "{:?}",
        report.calls[0]
    );
}

#[test]
fn a_failing_init_is_reported() {
    let err = offline::check(
        &plugin_wasm("hostile"),
        &manifest("[config]\nbehave = \"init-fail\""),
    )
    .unwrap_err();
    assert!(matches!(err, PluginError::Init(_)), "{err}");
    assert!(err.to_string().contains("refusing to start"), "{err}");
}

#[test]
fn files_that_are_not_plugins_are_refused_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = Runtime::new(None).unwrap();
    // Garbage, a truncated component, and a core module (not a component).
    let plugin = std::fs::read(plugin_wasm("hostile")).unwrap();
    for bytes in [
        b"not wasm at all".to_vec(),
        plugin[..plugin.len() / 2].to_vec(),
        b"\0asm\x01\0\0\0".to_vec(),
    ] {
        let err = runtime.compile(&bytes, false).err().expect("refused");
        assert!(matches!(err, LoadError::Compile(_)), "{err}");
    }
    drop(dir);
}

#[test]
fn check_reports_the_contract_exports_and_limits() {
    let report = offline::check(
        &plugin_wasm("spam_router"),
        &manifest("memory_mib = 32\ntimeout = \"15ms\"\n[config]\nthreshold = 7"),
    )
    .unwrap();
    assert_eq!(report.contract, "evhost:plugin@0.1.0");
    assert_eq!(report.name, "spam-router");
    assert_eq!(report.subscriptions, ["message.received"]);
    assert!(
        report
            .exports
            .iter()
            .any(|e| e == "evhost:plugin/subscriber@0.1.0")
    );
    assert_eq!((report.memory_mib, report.timeout_ms), (32, 15));
    // Nothing that reaches out: no filesystem preopens or sockets are imported.
    assert!(
        !report.imports.iter().any(|i| i.starts_with("wasi:sockets")),
        "{:?}",
        report.imports
    );
}

#[test]
fn compiled_code_is_cached_and_reused() {
    let dir = tempfile::tempdir().unwrap();
    let cache = || Cache::open(dir.path().join("cache"), &dir.path().join("key")).unwrap();
    let bytes = std::fs::read(plugin_wasm("vip_router")).unwrap();
    let first = Runtime::new(Some(cache()))
        .unwrap()
        .compile(&bytes, false)
        .unwrap();
    assert!(!first.from_cache);
    let cached: Vec<_> = std::fs::read_dir(dir.path().join("cache"))
        .unwrap()
        .collect();
    assert_eq!(cached.len(), 1, "one .cwasm file");
    // A new runtime (as after a restart) takes it from the cache.
    let second = Runtime::new(Some(cache()))
        .unwrap()
        .compile(&bytes, false)
        .unwrap();
    assert!(second.from_cache);
    assert_eq!(first.hash, second.hash);
    // A changed file is compiled afresh.
    let other = std::fs::read(plugin_wasm("spam_router")).unwrap();
    let third = Runtime::new(Some(cache()))
        .unwrap()
        .compile(&other, false)
        .unwrap();
    assert!(!third.from_cache);
    // A tampered entry is refused, and the plugin compiled (and cached) afresh.
    let entry = std::fs::read_dir(dir.path().join("cache"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .starts_with(&first.hash)
        })
        .unwrap();
    let mut code = std::fs::read(&entry).unwrap();
    let middle = code.len() / 2;
    code[middle] ^= 0x40;
    std::fs::write(&entry, &code).unwrap();
    let fourth = Runtime::new(Some(cache()))
        .unwrap()
        .compile(&bytes, false)
        .unwrap();
    assert!(!fourth.from_cache, "a tampered entry was loaded");
    let fifth = Runtime::new(Some(cache()))
        .unwrap()
        .compile(&bytes, false)
        .unwrap();
    assert!(fifth.from_cache, "the rebuilt entry is used again");
}

#[test]
fn log_lines_and_counters_are_captured_offline() {
    let report = offline::run(
        &plugin_wasm("spam_router"),
        &manifest("[config]\nthreshold = 5"),
        &[event(
            "message.received",
            json!({"message_id": "m1", "from": "x@spam.example", "to": ["a@example.com"],
                   "subject": "win", "size": 1, "domain": "example.com", "user": "a",
                   "mailbox": "INBOX", "spam_score": 9.0, "is_spam": false}),
        )],
    )
    .unwrap();
    let actions = &report.calls[0].actions;
    assert_eq!(actions[0]["emit"]["type"], "spam.detected");
    assert_eq!(actions[0]["emit"]["data"]["score"], 9.0);
    assert!(actions[1]["drop"].as_str().unwrap().contains("9"));
    assert_eq!(report.counters, [("spam_routed".to_string(), 1)]);
}

#[test]
fn offline_runs_apply_the_daemons_action_checks() {
    let events = [
        event("test.probe", json!({"do": "bad-replace"})),
        event("test.probe", json!({"do": "many-actions"})),
        event("test.probe", json!({"do": "stamp"})),
    ];
    let report = hostile(
        "timeout = \"5s\"\n[config]\nbehave = \"by-event\"\nstamp = \"s1\"",
        &events,
    );
    let bad = &report.calls[0];
    assert_eq!(bad.error_kind, Some("invalid_action"), "{bad:?}");
    assert!(
        bad.error.as_deref().unwrap().contains("message.received"),
        "{bad:?}"
    );
    assert_eq!(bad.actions.len(), 1, "the refused actions are still shown");
    let many = &report.calls[1];
    assert_eq!(many.error_kind, Some("invalid_action"), "{many:?}");
    assert!(
        many.error
            .as_deref()
            .unwrap()
            .contains("plugins.max_actions"),
        "{many:?}"
    );
    // A custom type's replacement passes.
    assert!(report.calls[2].error.is_none(), "{:?}", report.calls[2]);
    assert_eq!(report.calls[2].actions[0]["replace"]["data"]["stamp"], "s1");
}

#[test]
fn the_compile_cache_keeps_the_most_recently_used_entries() {
    use evhost::plugins::cache::prune_cache;
    let dir = tempfile::tempdir().unwrap();
    let base = std::time::SystemTime::now() - Duration::from_secs(3600);
    for n in 0..5u64 {
        let path = dir.path().join(format!("entry-{n}.cwasm"));
        std::fs::write(&path, b"x").unwrap();
        let file = std::fs::File::options().append(true).open(&path).unwrap();
        file.set_modified(base + Duration::from_secs(n * 60))
            .unwrap();
    }
    std::fs::write(dir.path().join("notes.txt"), b"not a cache entry").unwrap();
    assert_eq!(prune_cache(dir.path(), 2).unwrap(), 3);
    let mut left: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    left.sort();
    assert_eq!(left, ["entry-3.cwasm", "entry-4.cwasm", "notes.txt"]);
}
