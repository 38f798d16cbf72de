//! The example plugins in every language, black-box: each build runs its example's
//! shared cases (`plugins/examples/NAME/cases.json`) through `evhost plugin run`,
//! and the Python spam-router serves live in a daemon.
//!
//! The Python and JavaScript builds come from `tests/run.sh` (componentize-py,
//! componentize-js), which sets `EVHOST_TEST_PYTHON_PLUGINS=1` and
//! `EVHOST_TEST_JS_PLUGINS=1`; without them those parts are skipped, saying so.

use std::path::{Path, PathBuf};
use std::time::Duration;

use evhost_e2e::receiver::Receiver;
use evhost_e2e::{Daemon, Options, Value, cli, json, plugin_wasm, received};

const EXAMPLES: [&str; 3] = ["spam-router", "pii-redactor", "vip-router"];

fn examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugins/examples")
}

/// The build of an example in `lang` (`python`, `js`), when `tests/run.sh` made them.
fn built_wasm(example: &str, lang: &str) -> Option<PathBuf> {
    let flag = format!("EVHOST_TEST_{}_PLUGINS", lang.to_uppercase());
    if std::env::var_os(&flag).is_none() {
        eprintln!(
            "SKIPPED: {lang} builds of the examples (set {flag}=1 after building them; tests/run.sh does)"
        );
        return None;
    }
    let path = examples_dir().join(format!("{example}/{lang}/build/{example}.wasm"));
    assert!(path.exists(), "{} is missing", path.display());
    Some(path)
}

fn python_wasm(example: &str) -> Option<PathBuf> {
    built_wasm(example, "python")
}

/// JSON has one kind of number: 5 and 5.0 are the same value (JavaScript cannot tell
/// them apart), so numbers are compared as numbers.
fn numbers_as_floats(value: &Value) -> Value {
    match value {
        Value::Number(n) => json!(n.as_f64()),
        Value::Array(items) => Value::Array(items.iter().map(numbers_as_floats).collect()),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), numbers_as_floats(v)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// Runs every case of `example` through `wasm`; each group of cases with one config
/// is one `plugin run`.
fn check_cases(example: &str, wasm: &Path) {
    let text =
        std::fs::read_to_string(examples_dir().join(format!("{example}/cases.json"))).unwrap();
    let cases: Value = serde_json::from_str(&text).unwrap();
    let cases = cases["cases"].as_array().unwrap();
    assert!(!cases.is_empty());
    let work = tempfile::tempdir().unwrap();
    let mut configs: Vec<&Value> = cases.iter().map(|c| &c["config"]).collect();
    configs.dedup();
    for (n, config) in configs.into_iter().enumerate() {
        let group: Vec<&Value> = cases.iter().filter(|c| &c["config"] == config).collect();
        let mut sidecar = String::from("timeout = \"5s\"\n[config]\n");
        for (key, value) in config.as_object().unwrap() {
            sidecar += &format!("{key} = {}\n", json!(value.as_str().unwrap()));
        }
        let sidecar_path = work.path().join(format!("{n}.toml"));
        std::fs::write(&sidecar_path, sidecar).unwrap();
        let events: Vec<&Value> = group.iter().map(|c| &c["event"]).collect();
        let events_path = work.path().join(format!("{n}.json"));
        std::fs::write(&events_path, serde_json::to_string(&events).unwrap()).unwrap();
        let (code, out, err) = cli(
            &[
                "plugin",
                "run",
                wasm.to_str().unwrap(),
                "--sidecar",
                sidecar_path.to_str().unwrap(),
                "--event",
                events_path.to_str().unwrap(),
                "--json",
            ],
            &[],
        );
        assert_eq!(code, 0, "{example} ({}):\n{out}\n{err}", wasm.display());
        let report: Value = serde_json::from_str(&out).unwrap();
        for (case, call) in group.iter().zip(report["calls"].as_array().unwrap()) {
            assert_eq!(
                numbers_as_floats(&call["actions"]),
                numbers_as_floats(&case["expect"]["actions"]),
                "{example} ({}), case {:?}: {call:#}",
                wasm.display(),
                case["name"]
            );
        }
    }
}

#[test]
fn every_build_of_every_example_passes_the_shared_cases() {
    for example in EXAMPLES {
        check_cases(example, &plugin_wasm(&example.replace('-', "_")));
        for lang in ["python", "js"] {
            if let Some(wasm) = built_wasm(example, lang) {
                check_cases(example, &wasm);
            }
        }
    }
}

#[tokio::test]
async fn the_python_spam_router_serves_live_traffic() {
    if let Some(wasm) = python_wasm("spam-router") {
        spam_router_serves_live_traffic(&wasm, "Python").await;
    }
}

#[tokio::test]
async fn the_javascript_spam_router_serves_live_traffic() {
    if let Some(wasm) = built_wasm("spam-router", "js") {
        spam_router_serves_live_traffic(&wasm, "JavaScript").await;
    }
}

async fn spam_router_serves_live_traffic(wasm: &Path, lang: &str) {
    let d = Daemon::start_with(
        Options::default()
            .webhooks_local()
            .env("EVHOST_PLUGINS__SETTLE", "20ms")
            .env("EVHOST_PLUGINS__TIMEOUT", "2s"),
    )
    .await;
    let rx = Receiver::start().await;
    d.add_webhook(
        &json!({"name": "all", "url": rx.url("/all"), "events": ["message.*", "spam.*"]}),
    )
    .await;
    d.write_sidecar("spam-router", Some("[config]\nthreshold = 5\n"));
    let hash = evhost_e2e::sha256_hex(&std::fs::read(wasm).unwrap());
    let started = std::time::Instant::now();
    std::fs::copy(wasm, d.plugins_dir().join("spam-router.wasm")).unwrap();
    d.wait_plugin_within("spam-router", Duration::from_secs(120), |p| {
        p["file_hash"] == hash.as_str() && p["state"] == "serving"
    })
    .await;
    let took = started.elapsed();
    eprintln!("the {lang} spam-router serves {took:?} after the copy (debug build, first load)");
    let status = d
        .wait_plugin("spam-router", |p| p["state"] == "serving")
        .await;
    assert_eq!(status["plugin_name"], "spam-router");
    let spam = d
        .publish("message.received", &received("example.com", true))
        .await;
    let clean = d
        .publish("message.received", &received("example.com", false))
        .await;
    let requests = rx.wait_for(2, Duration::from_secs(20)).await;
    let bodies: Vec<Value> = requests.iter().map(|r| r.json()).collect();
    let detected = bodies
        .iter()
        .find(|b| b["event"] == "spam.detected")
        .unwrap_or_else(|| panic!("no spam.detected: {bodies:?}"));
    assert_eq!(detected["data"]["score"], 9.5);
    let delivered: Vec<&Value> = bodies
        .iter()
        .filter(|b| b["event"] == "message.received")
        .collect();
    assert_eq!(delivered.len(), 1, "{bodies:?}");
    assert_eq!(delivered[0]["id"], clean.as_str());
    assert_ne!(delivered[0]["id"], spam.as_str());
    // Its counter, through the host, in the daemon's metrics.
    d.wait_for_metric("evhost_plugin_counter_total{plugin=\"spam-router\",name=\"spam_routed\"}")
        .await;
}

#[test]
fn a_new_python_plugin_passes_its_own_tests_and_builds_into_a_component() {
    if python_wasm("spam-router").is_none() {
        return;
    }
    let tools = PathBuf::from(
        std::env::var("EVHOST_TOOLS_DIR").expect("tests/run.sh sets EVHOST_TOOLS_DIR"),
    );
    let python = std::fs::read_dir(&tools)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("componentize-py-")
        })
        .expect("plugin build installed componentize-py")
        .join("bin/python");
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("hello");
    let (code, out, err) = cli(
        &[
            "plugin",
            "new",
            "hello",
            "--lang",
            "python",
            "--dir",
            dir.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("python3 -m pytest"), "{out}");
    let tests = std::process::Command::new(&python)
        .args(["-m", "pytest", "-q"])
        .current_dir(&dir)
        .output()
        .unwrap();
    assert!(
        tests.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&tests.stdout),
        String::from_utf8_lossy(&tests.stderr)
    );
    let (code, out, err) = cli(&["plugin", "build", dir.to_str().unwrap()], &[]);
    assert_eq!(code, 0, "{out}\n{err}");
    let wasm = PathBuf::from(out.trim());
    assert!(wasm.ends_with("build/hello.wasm"), "{out}");
    let (code, out, err) = cli(&["plugin", "check", wasm.to_str().unwrap()], &[]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("plugin        hello 0.1.0"), "{out}");
    // Not a project at all: a clear refusal.
    let (code, _, err) = cli(&["plugin", "build", work.path().to_str().unwrap()], &[]);
    assert_ne!(code, 0);
    assert!(err.contains("is not a plugin project"), "{err}");
}

#[test]
fn a_new_javascript_plugin_passes_its_own_tests_and_builds_into_a_component() {
    if built_wasm("spam-router", "js").is_none() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("hello-js");
    let (code, out, err) = cli(
        &[
            "plugin",
            "new",
            "hello-js",
            "--lang",
            "js",
            "--dir",
            dir.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(code, 0, "{out}\n{err}");
    for args in [
        &["install", "--no-audit", "--no-fund", "--silent"][..],
        &["test"][..],
    ] {
        let out = std::process::Command::new("npm")
            .args(args)
            .current_dir(&dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "npm {args:?}:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let (code, out, err) = cli(&["plugin", "build", dir.to_str().unwrap()], &[]);
    assert_eq!(code, 0, "{out}\n{err}");
    let wasm = PathBuf::from(out.trim());
    assert!(wasm.ends_with("build/hello-js.wasm"), "{out}");
    let (code, out, err) = cli(&["plugin", "check", wasm.to_str().unwrap()], &[]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("plugin        hello-js 0.1.0"), "{out}");
}

#[test]
fn a_build_without_its_language_says_what_is_missing() {
    let tools = tempfile::tempdir().unwrap();
    let empty = tempfile::tempdir().unwrap();
    for (lang, missing) in [
        ("python", "python3 was not found"),
        ("js", "node was not found"),
    ] {
        let dir = examples_dir().join(format!("spam-router/{lang}"));
        let (code, _, err) = cli(
            &["plugin", "build", dir.to_str().unwrap()],
            &[
                ("PATH", empty.path().to_str().unwrap()),
                ("EVHOST_TOOLS_DIR", tools.path().to_str().unwrap()),
            ],
        );
        assert_ne!(code, 0, "{lang}");
        assert!(err.contains(missing), "{lang}: {err}");
    }
}
