//! The daemon's plugin limits are a ceiling: a sidecar may lower them, and one that
//! asks for more loads with the ceiling and says so in `GET /v1/plugins`. Compiled
//! code is loaded from the cache only when its tag proves the daemon wrote it.
//! Components built here from WAT that meet the contract but bomb the sandbox (many
//! memories, a table grown without end) are stopped at the ceiling.

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

/// A component meeting the plugin contract whose core module is `body` (WAT: fields
/// added to a module that answers `init` with `name`, subscribed to everything) and
/// whose `handle` runs `handle` (WAT instructions, ending in a trap).
fn bomb_component(name: &str, body: &str, handle: &str) -> Vec<u8> {
    assert!(name.len() < 16);
    // init's answer, result<info, string>, at 64: tag 0; name (0, len), version
    // (16, 3), subscriptions (32, 1); the one subscription, "*", is (24, 1).
    let wat = format!(
        r#"(module
          (memory (export "memory") 1)
          (global $heap (mut i32) (i32.const 1024))
          (func (export "cabi_realloc") (param i32 i32 i32 i32) (result i32)
            (local $at i32)
            (local.set $at (i32.and (i32.add (global.get $heap) (i32.const 7)) (i32.const -8)))
            (global.set $heap (i32.add (local.get $at) (local.get 3)))
            (if (i32.gt_u (global.get $heap) (i32.mul (memory.size) (i32.const 65536)))
              (then (if (i32.eq (memory.grow (i32.add (i32.shr_u (global.get $heap) (i32.const 16)) (i32.const 1))) (i32.const -1))
                (then unreachable))))
            (local.get $at))
          (data (i32.const 0) "{name}")
          (data (i32.const 16) "1.0")
          (data (i32.const 24) "*")
          (data (i32.const 32) "\18\00\00\00\01\00\00\00")
          (data (i32.const 64) "\00\00\00\00\00\00\00\00\{len:02x}\00\00\00\10\00\00\00\03\00\00\00\20\00\00\00\01\00\00\00")
          (func (export "evhost:plugin/subscriber@0.1.0#init") (param i32 i32) (result i32)
            (i32.const 64))
          (func (export "evhost:plugin/subscriber@0.1.0#handle") (param i32) (result i32)
            {handle})
          {body})"#,
        len = name.len(),
    );
    let mut module = wat::parse_str(&wat).expect("the bomb's WAT parses");
    let mut resolve = wit_parser::Resolve::default();
    let wit = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../wit");
    let (package, _) = resolve.push_path(&wit).expect("wit/plugin.wit parses");
    let world = resolve.select_world(&[package], Some("plugin")).unwrap();
    wit_component::embed_component_metadata(
        &mut module,
        &resolve,
        world,
        wit_component::StringEncoding::UTF8,
    )
    .unwrap();
    wit_component::ComponentEncoder::default()
        .module(&module)
        .unwrap()
        .validate(true)
        .encode()
        .expect("the bomb is a component of the plugin world")
}

/// Plugin bombs that meet the contract: one whose instance would hold 24 linear
/// memories (past the 16 any instance may have) is stopped when it is instantiated;
/// one that grows a table without end is stopped at its memory cap. Both are
/// reported, and the next event is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_and_table_bombs_are_stopped_at_the_ceiling() {
    let d = Daemon::start().await;
    let dir = d.dir.path().join("bombs");
    std::fs::create_dir_all(&dir).unwrap();

    let memories = bomb_component("memories", &"(memory 1) ".repeat(23), "unreachable");
    std::fs::write(dir.join("memories.wasm"), memories).unwrap();
    std::fs::copy(
        dir.join("memories.wasm"),
        d.plugins_dir().join("memories.wasm"),
    )
    .unwrap();
    let status = d.wait_plugin("memories", |p| p["state"] == "failed").await;
    let error = status["last_error"].as_str().unwrap_or_default();
    assert!(error.contains("memory count too high"), "{status}");

    // 65,536 slots (1 MiB counted) a step, until refused; then a trap.
    let table = bomb_component(
        "table",
        "(table $t 1 funcref)",
        "(loop $more
           (br_if $more (i32.ne (table.grow $t (ref.null func) (i32.const 65536)) (i32.const -1))))
         unreachable",
    );
    std::fs::write(dir.join("table.wasm"), &table).unwrap();
    // A deadline long enough that the cap, not the clock, stops it on a busy machine.
    d.write_sidecar("table", Some("memory_mib = 8\ntimeout = \"1s\"\n"));
    d.install_plugin("table", &dir.join("table.wasm")).await;
    d.publish("message.received", &received("example.com", false))
        .await;
    let status = d.wait_plugin("table", |p| p["errors"]["memory"] == 1).await;
    assert_eq!(status["state"], "serving", "{status}");
    assert!(
        status["last_error"]
            .as_str()
            .unwrap_or_default()
            .contains("memory cap of 8 MiB"),
        "{status}"
    );
    // The next event is served: the plugin is called again, and the event passes.
    let id = d
        .publish("message.received", &received("example.com", false))
        .await;
    let status = d.wait_plugin("table", |p| p["errors"]["memory"] == 2).await;
    assert_eq!(status["calls"], 2, "{status}");
    let (_, rows) = d.get_json("/v1/audit?types=message.received").await;
    assert!(rows.to_string().contains(&id), "{rows}");
}
