//! Rust plugins: a crate on the `plugins/sdk` SDK, built with cargo for
//! wasm32-wasip2.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

/// `cargo build --release --target wasm32-wasip2` in the crate, then the .wasm path.
pub fn build(path: &Path) -> anyhow::Result<()> {
    let manifest = path.join("Cargo.toml");
    let text = std::fs::read_to_string(&manifest)
        .with_context(|| format!("{} is not a plugin crate", path.display()))?;
    let parsed: toml::Table = toml::from_str(&text)
        .with_context(|| format!("{} is not valid TOML", manifest.display()))?;
    let name = parsed
        .get("package")
        .and_then(|p| p.get("name"))
        .and_then(|n| n.as_str())
        .map(|n| n.replace('-', "_"))
        .with_context(|| format!("no [package] name in {}", manifest.display()))?;
    let status = std::process::Command::new("cargo")
        .args([
            "build",
            "--release",
            "--target",
            "wasm32-wasip2",
            "--manifest-path",
        ])
        .arg(&manifest)
        .status()
        .context("cannot run cargo")?;
    if !status.success() {
        bail!(
            "cargo build failed ({status}); is the target installed? rustup target add wasm32-wasip2"
        );
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| path.join("target"));
    let wasm = target.join(format!("wasm32-wasip2/release/{name}.wasm"));
    if !wasm.exists() {
        bail!("cargo succeeded but {} is missing", wasm.display());
    }
    println!("{}", wasm.display());
    Ok(())
}

/// Creates a crate for plugin `name` in `dir`.
pub fn new(name: &str, dir: PathBuf, sdk: Option<PathBuf>) -> anyhow::Result<()> {
    let sdk = match sdk.or_else(|| super::sources_sdk("sdk", "Cargo.toml")) {
        Some(sdk) => sdk
            .canonicalize()
            .with_context(|| format!("no SDK at {}", sdk.display()))?,
        None => bail!("where is the plugin SDK? pass --sdk PATH/TO/evhost/plugins/sdk"),
    };
    if !sdk.join("Cargo.toml").exists() {
        bail!("{} is not the plugin SDK (no Cargo.toml)", sdk.display());
    }
    let sdk_text = sdk.display().to_string();
    std::fs::create_dir_all(dir.join("src"))?;
    let files = [
        (
            "Cargo.toml",
            template::CARGO
                .replace("{name}", name)
                .replace("{sdk}", &sdk_text),
        ),
        (
            "src/lib.rs",
            template::LIB
                .replace("{name}", name)
                .replace("{type}", &type_name(name)),
        ),
        ("README.md", template::README.replace("{name}", name)),
        (".gitignore", "/target\n".to_string()),
    ];
    for (file, text) in files {
        std::fs::write(dir.join(file), text)?;
    }
    println!("created {} (plugin {name})", dir.display());
    println!("  cargo test                          # the plugin's logic, natively");
    println!(
        "  evhost plugin build {}   # → the .wasm file",
        dir.display()
    );
    println!("  cp <that file> <plugins.dir>/{name}.wasm   # live within a second");
    Ok(())
}

/// `my-plugin` → `MyPlugin`.
pub(super) fn type_name(name: &str) -> String {
    let camel = heck::ToUpperCamelCase::to_upper_camel_case(name);
    if camel.starts_with(|c: char| c.is_ascii_digit()) || camel.is_empty() {
        format!("P{camel}")
    } else {
        camel
    }
}

mod template {
    pub const CARGO: &str = r#"[package]
name = "{name}"
version = "0.1.0"
edition = "2024"
publish = false

[lib]
crate-type = ["cdylib", "rlib"]

[dependencies]
evhost-plugin-sdk = { path = "{sdk}" }

# Small plugins: no debug info, optimised for size.
[profile.release]
debug = false
strip = true
opt-level = "s"

# A crate of its own, not part of an enclosing workspace.
[workspace]
"#;

    pub const LIB: &str = r#"//! {name}: an evhost plugin.

use evhost_plugin::prelude::*;

pub struct {type} {
    /// Events whose subject contains this word are dropped.
    word: String,
}

impl Plugin for {type} {
    fn init(config: &Config) -> Result<(Info, Self), String> {
        let word = config.get("word").unwrap_or("unsubscribe").to_lowercase();
        let info = Info::new("{name}", env!("CARGO_PKG_VERSION"))
            .subscribe([evhost_plugin::types::MESSAGE_RECEIVED]);
        Ok((info, {type} { word }))
    }

    fn handle(&self, event: &Event) -> Result<Vec<Action>, String> {
        let message: MessageReceived = event.payload()?;
        if message.subject.to_lowercase().contains(&self.word) {
            evhost_plugin::counter_add("dropped", 1);
            return Ok(vec![Action::drop(format!("subject mentions {:?}", self.word))]);
        }
        Ok(pass())
    }
}

evhost_plugin::export_plugin!({type});

#[cfg(test)]
mod tests {
    use super::*;

    fn received(subject: &str) -> Event {
        Event::new(
            evhost_plugin::types::MESSAGE_RECEIVED,
            &MessageReceived {
                message_id: "m1".into(),
                from: "news@example.org".into(),
                to: vec!["alice@example.com".into()],
                subject: subject.into(),
                size: 1,
                domain: "example.com".into(),
                user: "alice".into(),
                mailbox: "INBOX".into(),
                spam_score: None,
                is_spam: false,
                filter_results: None,
            },
        )
    }

    #[test]
    fn drops_what_mentions_the_word_and_passes_the_rest() {
        let (_, plugin) = {type}::init(&Config::default()).unwrap();
        let dropped = plugin.handle(&received("Click to UNSUBSCRIBE")).unwrap();
        assert!(matches!(dropped.as_slice(), [Action::Drop { .. }]));
        assert!(plugin.handle(&received("Lunch?")).unwrap().is_empty());
        assert_eq!(evhost_plugin::testing::counter("dropped"), 1);
    }
}
"#;

    pub const README: &str = r#"# {name}

An evhost plugin. It drops `message.received` events whose subject contains a word
(config `word`, default `unsubscribe`).

    cargo test                                # test the logic natively
    evhost plugin build .                     # build target/wasm32-wasip2/release/{name}.wasm
    evhost plugin check target/wasm32-wasip2/release/{name}.wasm
    evhost plugin run target/wasm32-wasip2/release/{name}.wasm --event event.json

Install it by copying the .wasm file into the daemon's plugin folder as `{name}.wasm`,
with an optional `{name}.toml` beside it:

    priority = 100
    on_error = "pass"
    [config]
    word = "unsubscribe"
"#;
}

#[cfg(test)]
mod tests {
    use super::type_name;

    #[test]
    fn type_names_are_upper_camel_case_and_start_with_a_letter() {
        assert_eq!(type_name("spam-router"), "SpamRouter");
        assert_eq!(type_name("vip_router"), "VipRouter");
        assert_eq!(type_name("9lives"), "P9lives");
    }
}
