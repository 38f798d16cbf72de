//! `evhost plugin new` and `evhost plugin build`: a plugin project that builds and
//! passes its own tests out of the box, in Rust, Python or JavaScript, and its build
//! into a component.
//!
//! A Python or JavaScript project is marked by `evhost-plugin.toml` (its language,
//! name and SDK); a Rust one by its `Cargo.toml`. The language tools a build needs and
//! cannot assume (componentize-py, componentize-js, esbuild) are installed into a local
//! environment under the tools folder: `$EVHOST_TOOLS_DIR`, else
//! `~/.cache/evhost/tools`.

mod js;
mod python;
mod rust;

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::ValueEnum;
use serde::{Deserialize, Serialize};

/// The languages a plugin can be written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Lang {
    Rust,
    Python,
    Js,
}

/// `evhost-plugin.toml`: what `plugin build` needs to know about a non-Rust project.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Project {
    lang: Lang,
    /// The plugin's name: the built file is `build/NAME.wasm`.
    name: String,
    /// The SDK's folder, absolute or relative to the project.
    sdk: PathBuf,
}

const PROJECT_FILE: &str = "evhost-plugin.toml";

impl Project {
    fn read(dir: &Path) -> anyhow::Result<Option<Project>> {
        let path = dir.join(PROJECT_FILE);
        match std::fs::read_to_string(&path) {
            Ok(text) => Ok(Some(
                toml::from_str(&text).with_context(|| format!("{}", path.display()))?,
            )),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
        }
    }

    fn write(&self, dir: &Path) -> anyhow::Result<()> {
        std::fs::write(dir.join(PROJECT_FILE), toml::to_string(self)?)?;
        Ok(())
    }

    /// The SDK's folder, resolved against the project's.
    fn sdk_dir(&self, dir: &Path) -> anyhow::Result<PathBuf> {
        let sdk = dir.join(&self.sdk);
        sdk.canonicalize().with_context(|| {
            format!(
                "the SDK {} named in {} is not there",
                sdk.display(),
                dir.join(PROJECT_FILE).display()
            )
        })
    }
}

/// Builds the project in `path` (any language) and prints the .wasm file's path.
pub fn build(path: &Path) -> anyhow::Result<()> {
    if path.join("Cargo.toml").exists() {
        return rust::build(path);
    }
    match Project::read(path)? {
        Some(project) => match project.lang {
            Lang::Python => python::build(path, &project),
            Lang::Js => js::build(path, &project),
            Lang::Rust => rust::build(path),
        },
        None => bail!(
            "{} is not a plugin project (no Cargo.toml or {PROJECT_FILE}); `evhost plugin new NAME --lang rust|python|js` makes one",
            path.display()
        ),
    }
}

/// Creates a project for plugin `name` in `dir` (default ./NAME).
pub fn new(
    name: &str,
    lang: Lang,
    dir: Option<PathBuf>,
    sdk: Option<PathBuf>,
) -> anyhow::Result<()> {
    if !crate::plugins::loader::valid_name(name) {
        bail!("plugin names are 1 to 64 characters from a-z 0-9 - _ (got {name:?})");
    }
    let dir = dir.unwrap_or_else(|| PathBuf::from(name));
    if dir.exists() && std::fs::read_dir(&dir)?.next().is_some() {
        bail!("{} exists and is not empty", dir.display());
    }
    match lang {
        Lang::Rust => rust::new(name, dir, sdk),
        Lang::Python => python::new(name, dir, sdk),
        Lang::Js => js::new(name, dir, sdk),
    }
}

/// The SDK of the sources this binary was built from (`plugins/<folder>`), when they
/// are still there.
fn sources_sdk(folder: &str, marker: &str) -> Option<PathBuf> {
    let sdk = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../plugins")
        .join(folder);
    sdk.join(marker).exists().then(|| sdk.canonicalize().ok())?
}

/// Where language tools are installed: `$EVHOST_TOOLS_DIR`, else
/// `~/.cache/evhost/tools`.
fn tools_dir() -> anyhow::Result<PathBuf> {
    if let Some(dir) = std::env::var_os("EVHOST_TOOLS_DIR").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(dir));
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .context("set EVHOST_TOOLS_DIR (or HOME) for the plugin build tools")?;
    Ok(cache.join("evhost/tools"))
}

/// Writes the plugin contract (`wit/plugin.wit`, as this binary was built with) into
/// `dir`, for tools that generate bindings from it.
fn write_wit(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(
        dir.join("plugin.wit"),
        include_str!("../../../../wit/plugin.wit"),
    )?;
    Ok(())
}

/// Reports a component `tool` built: its size and build time on stderr, its path on
/// stdout (the answer a script reads).
fn built(tool: &str, name: &str, wasm: &Path, started: std::time::Instant) -> anyhow::Result<()> {
    let size = std::fs::metadata(wasm)
        .with_context(|| format!("{tool} succeeded but {} is missing", wasm.display()))?
        .len();
    eprintln!(
        "built {name} ({:.1} MB) in {:.1} s",
        size as f64 / 1e6,
        started.elapsed().as_secs_f64()
    );
    println!("{}", wasm.display());
    Ok(())
}

/// Runs `command`, failing with `what` and its exit status.
fn run(command: &mut std::process::Command, what: &str) -> anyhow::Result<()> {
    let status = command
        .status()
        .with_context(|| format!("cannot run {what}"))?;
    if !status.success() {
        bail!("{what} failed ({status})");
    }
    Ok(())
}
