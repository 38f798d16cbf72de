//! Python plugins: an `app.py` on the `plugins/sdk-python` SDK, made a component by
//! componentize-py (from PyPI, installed into a virtual environment of its own in
//! the tools folder the first time it is needed).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

use super::{Lang, Project, run, tools_dir, write_wit};

/// The componentize-py release plugins are built with.
pub const COMPONENTIZE_PY: &str = "0.25.1";

/// The virtual environment with componentize-py (and pytest, for plugin tests),
/// made on first use.
pub fn environment() -> anyhow::Result<PathBuf> {
    let venv = tools_dir()?.join(format!("componentize-py-{COMPONENTIZE_PY}"));
    let tool = venv.join("bin/componentize-py");
    if tool.exists() {
        return Ok(venv);
    }
    let python = Command::new("python3").arg("--version").output();
    match python {
        Ok(out) if out.status.success() => {}
        _ => bail!(
            "Python plugins are built with componentize-py, which needs Python 3.10 or newer as python3; python3 was not found"
        ),
    }
    eprintln!(
        "installing componentize-py {COMPONENTIZE_PY} into {} (once)…",
        venv.display()
    );
    run(
        Command::new("python3").arg("-m").arg("venv").arg(&venv),
        "python3 -m venv",
    )?;
    run(
        Command::new(venv.join("bin/pip"))
            .args(["install", "--quiet", "--disable-pip-version-check"])
            .arg(format!("componentize-py=={COMPONENTIZE_PY}"))
            .arg("pytest"),
        "pip install componentize-py",
    )?;
    Ok(venv)
}

/// componentize-py over the project's `app.py` and the SDK → `build/NAME.wasm`.
pub fn build(dir: &Path, project: &Project) -> anyhow::Result<()> {
    if !dir.join("app.py").exists() {
        bail!(
            "{} has no app.py (the module that sets Subscriber = export(YourPlugin))",
            dir.display()
        );
    }
    let sdk = project.sdk_dir(dir)?;
    let venv = environment()?;
    let scratch = tempfile::tempdir()?;
    write_wit(scratch.path())?;
    let out_dir = dir.join("build");
    std::fs::create_dir_all(&out_dir)?;
    let wasm = out_dir.join(format!("{}.wasm", project.name));
    let started = std::time::Instant::now();
    run(
        Command::new(venv.join("bin/componentize-py"))
            .arg("--wit-path")
            .arg(scratch.path())
            .args(["--world", "plugin", "componentize", "app"])
            .arg("--python-path")
            .arg(dir)
            .arg("--python-path")
            .arg(&sdk)
            .arg("--output")
            .arg(&wasm)
            // Its own progress goes to stderr; the path printed last is the answer.
            .stdout(std::process::Stdio::null()),
        "componentize-py",
    )?;
    super::built("componentize-py", &project.name, &wasm, started)
}

/// Creates a Python plugin project for `name` in `dir`.
pub fn new(name: &str, dir: PathBuf, sdk: Option<PathBuf>) -> anyhow::Result<()> {
    let sdk = match sdk.or_else(|| super::sources_sdk("sdk-python", "evhost_plugin/__init__.py")) {
        Some(sdk) => sdk
            .canonicalize()
            .with_context(|| format!("no SDK at {}", sdk.display()))?,
        None => {
            bail!("where is the Python plugin SDK? pass --sdk PATH/TO/evhost/plugins/sdk-python")
        }
    };
    if !sdk.join("evhost_plugin/__init__.py").exists() {
        bail!(
            "{} is not the Python plugin SDK (no evhost_plugin/__init__.py)",
            sdk.display()
        );
    }
    std::fs::create_dir_all(&dir)?;
    Project {
        lang: Lang::Python,
        name: name.to_string(),
        sdk: sdk.clone(),
    }
    .write(&dir)?;
    let class = super::rust::type_name(name);
    let files = [
        (
            "app.py",
            APP.replace("{name}", name).replace("{class}", &class),
        ),
        ("test_app.py", TEST.replace("{class}", &class)),
        (
            "conftest.py",
            CONFTEST.replace("{sdk}", &sdk.display().to_string()),
        ),
        ("README.md", README.replace("{name}", name)),
        (".gitignore", "/build\n__pycache__/\n".to_string()),
    ];
    for (file, text) in files {
        std::fs::write(dir.join(file), text)?;
    }
    println!("created {} (Python plugin {name})", dir.display());
    println!(
        "  python3 -m pytest                   # the plugin's logic, with the SDK's test host"
    );
    println!(
        "  evhost plugin build {}   # → build/{name}.wasm",
        dir.display()
    );
    println!("  cp build/{name}.wasm <plugins.dir>/{name}.wasm   # live once compiled");
    Ok(())
}

const APP: &str = r#""""{name}: an evhost plugin. It drops `message.received` events whose subject
contains a word (config `word`, default `unsubscribe`)."""

from evhost_plugin import Config, Event, Info, Plugin, counter_add, drop, export
from evhost_plugin.types import MESSAGE_RECEIVED, MessageReceived


class {class}(Plugin):
    def __init__(self, config: Config):
        self.word = config.get("word", "unsubscribe").lower()
        self.info = Info("{name}", "0.1.0", [MESSAGE_RECEIVED])

    def handle(self, event: Event):
        message = event.payload(MessageReceived)
        if self.word in message.subject.lower():
            counter_add("dropped", 1)
            return [drop(f"subject mentions {self.word!r}")]
        return []


Subscriber = export({class})
"#;

const TEST: &str = r#"from evhost_plugin import Config, Event, testing
from evhost_plugin.types import MESSAGE_RECEIVED

from app import {class}


def received(subject):
    return Event(MESSAGE_RECEIVED, {
        "message_id": "m1", "from": "news@example.org", "to": ["alice@example.com"],
        "subject": subject, "size": 1, "domain": "example.com", "user": "alice",
        "mailbox": "INBOX", "is_spam": False,
    })


def test_drops_what_mentions_the_word_and_passes_the_rest():
    host = testing.reset()
    plugin = {class}(Config())
    [dropped] = plugin.handle(received("Click to UNSUBSCRIBE"))
    assert dropped.verb == "drop"
    assert plugin.handle(received("Lunch?")) == []
    assert host.counters == {"dropped": 1}
"#;

const CONFTEST: &str = r#"# Lets pytest import the evhost SDK (written by `evhost plugin new`).
import sys

sys.path.insert(0, "{sdk}")
"#;

const README: &str = r#"# {name}

An evhost plugin in Python. It drops `message.received` events whose subject contains
a word (config `word`, default `unsubscribe`).

    python3 -m pytest                       # test the logic with the SDK's test host
    evhost plugin build .                   # build/{name}.wasm, with componentize-py
    evhost plugin check build/{name}.wasm
    evhost plugin run build/{name}.wasm --event event.json

Install it by copying build/{name}.wasm into the daemon's plugin folder as
`{name}.wasm`, with an optional `{name}.toml` beside it:

    priority = 100
    on_error = "pass"
    [config]
    word = "unsubscribe"
"#;
