//! JavaScript plugins: an `app.js` whose default export is the plugin class, on the
//! `plugins/sdk-js` SDK (an npm dependency by path). The build bundles it with the SDK
//! (esbuild) and makes the bundle a component with componentize-js; both come from the
//! npm registry into a folder of their own in the tools folder the first time.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

use super::{Lang, Project, run, tools_dir, write_wit};

/// The componentize-js and esbuild releases plugins are built with.
pub const COMPONENTIZE_JS: &str = "0.23.0";
const ESBUILD: &str = "0.28.2";

/// The entry the build bundles: connects the SDK to the component's host imports and
/// exports the plugin class as `subscriber`.
const ENTRY: &str = r#"import * as host from 'evhost:plugin/host@0.1.0';
import { useHost, subscriberFor } from 'evhost-plugin';
import Plugin from '../app.js';
useHost(host);
export const subscriber = subscriberFor(Plugin);
"#;

fn need_node() -> anyhow::Result<()> {
    for tool in ["node", "npm"] {
        match Command::new(tool).arg("--version").output() {
            Ok(out) if out.status.success() => {}
            _ => bail!(
                "JavaScript plugins are built with componentize-js, which needs Node.js 18 or newer with npm; {tool} was not found"
            ),
        }
    }
    Ok(())
}

fn npm_install(dir: &Path) -> anyhow::Result<()> {
    run(
        Command::new("npm")
            .args(["install", "--no-audit", "--no-fund", "--silent"])
            .current_dir(dir),
        &format!("npm install in {}", dir.display()),
    )
}

/// The folder with componentize-js and esbuild, installed on first use.
fn environment() -> anyhow::Result<PathBuf> {
    let dir = tools_dir()?.join(format!("componentize-js-{COMPONENTIZE_JS}"));
    if dir.join("node_modules/.bin/componentize-js").exists()
        && dir.join("node_modules/.bin/esbuild").exists()
    {
        return Ok(dir);
    }
    need_node()?;
    eprintln!(
        "installing componentize-js {COMPONENTIZE_JS} and esbuild {ESBUILD} into {} (once)…",
        dir.display()
    );
    std::fs::create_dir_all(&dir)?;
    let manifest = serde_json::json!({
        "private": true,
        "dependencies": {
            "@bytecodealliance/componentize-js": COMPONENTIZE_JS,
            "esbuild": ESBUILD,
        }
    });
    std::fs::write(dir.join("package.json"), manifest.to_string())?;
    npm_install(&dir)?;
    Ok(dir)
}

/// esbuild bundles the project with the SDK; componentize-js → `build/NAME.wasm`.
pub fn build(dir: &Path, project: &Project) -> anyhow::Result<()> {
    if !dir.join("app.js").exists() {
        bail!(
            "{} has no app.js (the module whose default export is the plugin class)",
            dir.display()
        );
    }
    project.sdk_dir(dir)?;
    let tools = environment()?;
    if !dir.join("node_modules/evhost-plugin").exists() {
        npm_install(dir)?;
    }
    let out_dir = dir.join("build");
    std::fs::create_dir_all(&out_dir)?;
    let entry = out_dir.join(".entry.js");
    let bundle = out_dir.join(".bundle.js");
    std::fs::write(&entry, ENTRY)?;
    let started = std::time::Instant::now();
    run(
        Command::new(tools.join("node_modules/.bin/esbuild"))
            .arg(&entry)
            .args([
                "--bundle",
                "--format=esm",
                "--platform=neutral",
                "--external:evhost:*",
                "--log-level=warning",
            ])
            .arg(format!("--outfile={}", bundle.display())),
        "esbuild",
    )?;
    let scratch = tempfile::tempdir()?;
    write_wit(scratch.path())?;
    let wasm = out_dir.join(format!("{}.wasm", project.name));
    run(
        Command::new(tools.join("node_modules/.bin/componentize-js"))
            .arg(&bundle)
            .arg("--wit")
            .arg(scratch.path())
            .args(["--world-name", "plugin"])
            // The host links WASI without HTTP; a plugin has no network anyway.
            .args(["--disable", "http", "--disable", "fetch-event"])
            .arg("--out")
            .arg(&wasm)
            .stdout(std::process::Stdio::null()),
        "componentize-js",
    )?;
    super::built("componentize-js", &project.name, &wasm, started)
}

/// Creates a JavaScript plugin project for `name` in `dir`.
pub fn new(name: &str, dir: PathBuf, sdk: Option<PathBuf>) -> anyhow::Result<()> {
    let sdk = match sdk.or_else(|| super::sources_sdk("sdk-js", "index.js")) {
        Some(sdk) => sdk
            .canonicalize()
            .with_context(|| format!("no SDK at {}", sdk.display()))?,
        None => {
            bail!("where is the JavaScript plugin SDK? pass --sdk PATH/TO/evhost/plugins/sdk-js")
        }
    };
    if !sdk.join("index.js").exists() || !sdk.join("package.json").exists() {
        bail!(
            "{} is not the JavaScript plugin SDK (no index.js and package.json)",
            sdk.display()
        );
    }
    std::fs::create_dir_all(&dir)?;
    Project {
        lang: Lang::Js,
        name: name.to_string(),
        sdk: sdk.clone(),
    }
    .write(&dir)?;
    let class = super::rust::type_name(name);
    let package = serde_json::json!({
        "name": name,
        "version": "0.1.0",
        "type": "module",
        "private": true,
        "main": "app.js",
        "scripts": { "test": "node --test" },
        "dependencies": { "evhost-plugin": format!("file:{}", sdk.display()) },
    });
    let files = [
        (
            "package.json",
            serde_json::to_string_pretty(&package)? + "\n",
        ),
        (
            "app.js",
            APP.replace("{name}", name).replace("{class}", &class),
        ),
        ("app.test.js", TEST.replace("{class}", &class)),
        ("README.md", README.replace("{name}", name)),
        (".gitignore", "/build\n/node_modules\n".to_string()),
    ];
    for (file, text) in files {
        std::fs::write(dir.join(file), text)?;
    }
    println!("created {} (JavaScript plugin {name})", dir.display());
    println!(
        "  npm install && npm test             # the plugin's logic, with the SDK's test host"
    );
    println!(
        "  evhost plugin build {}   # → build/{name}.wasm",
        dir.display()
    );
    println!("  cp build/{name}.wasm <plugins.dir>/{name}.wasm   # live once compiled");
    Ok(())
}

const APP: &str = r#"// {name}: an evhost plugin. It drops `message.received` events whose subject
// contains a word (config `word`, default `unsubscribe`).

import { Info, Plugin, counterAdd, drop } from 'evhost-plugin';
import { MESSAGE_RECEIVED } from 'evhost-plugin/types';

export default class {class} extends Plugin {
  constructor(config) {
    super(config);
    this.word = config.get('word', 'unsubscribe').toLowerCase();
    this.info = new Info('{name}', '0.1.0', [MESSAGE_RECEIVED]);
  }

  handle(event) {
    const message = event.payload();
    if (message.subject.toLowerCase().includes(this.word)) {
      counterAdd('dropped', 1);
      return [drop(`subject mentions ${JSON.stringify(this.word)}`)];
    }
    return [];
  }
}
"#;

const TEST: &str = r#"import { test } from 'node:test';
import assert from 'node:assert/strict';

import { Config, Event } from 'evhost-plugin';
import * as testing from 'evhost-plugin/testing';
import { MESSAGE_RECEIVED } from 'evhost-plugin/types';
import {class} from './app.js';

const received = (subject) => new Event(MESSAGE_RECEIVED, {
  message_id: 'm1', from: 'news@example.org', to: ['alice@example.com'], subject,
  size: 1, domain: 'example.com', user: 'alice', mailbox: 'INBOX', is_spam: false,
});

test('drops what mentions the word and passes the rest', () => {
  const host = testing.reset();
  const plugin = new {class}(new Config());
  const [dropped] = plugin.handle(received('Click to UNSUBSCRIBE'));
  assert.equal(dropped.verb, 'drop');
  assert.deepEqual(plugin.handle(received('Lunch?')), []);
  assert.deepEqual(host.counters, { dropped: 1 });
});
"#;

const README: &str = r#"# {name}

An evhost plugin in JavaScript. It drops `message.received` events whose subject
contains a word (config `word`, default `unsubscribe`).

    npm install && npm test                 # test the logic with the SDK's test host
    evhost plugin build .                   # build/{name}.wasm, with componentize-js
    evhost plugin check build/{name}.wasm
    evhost plugin run build/{name}.wasm --event event.json

Install it by copying build/{name}.wasm into the daemon's plugin folder as
`{name}.wasm`, with an optional `{name}.toml` beside it:

    priority = 100
    on_error = "pass"
    [config]
    word = "unsubscribe"
"#;
