//! Plugins per language: for a pass-through plugin and the spam-router in Rust,
//! Python and JavaScript, what one call adds to the bus, how long a copied file takes
//! to serve (compiled afresh, and from the compiled cache), and what one instance
//! holds in linear memory and tables (what its memory cap counts; every worker keeps
//! one instance per inline plugin, so a daemon holds about workers × plugins of them).
//!
//! The Rust builds come from `--plugins-dir`; the others from `evhost plugin build`
//! of `bench/passthrough/{python,js}` and `plugins/examples/spam-router/{python,js}`
//! under `--sources` (skipped, saying so, when not built).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::plugins::{baseline, inline_row, install, started_from};
use super::{BenchArgs, row};
use crate::config::PluginsConfig;
use crate::event::{Catalog, Event};
use crate::metrics::Metrics;
use crate::plugins::cache::Cache;
use crate::plugins::loader::Plugins;
use crate::plugins::runtime::{Instance, Limits, LogSink, PluginContext, Runtime};

struct Build {
    lang: &'static str,
    plugin: &'static str,
    wasm: PathBuf,
    sidecar: &'static str,
}

fn builds(args: &BenchArgs) -> Vec<Build> {
    let sources = &args.sources;
    let mut all = vec![
        Build {
            lang: "Rust",
            plugin: "pass-through",
            wasm: args.plugins_dir.join("hostile.wasm"),
            sidecar: "[config]\nbehave = \"pass\"\n",
        },
        Build {
            lang: "Rust",
            plugin: "spam-router",
            wasm: args.plugins_dir.join("spam_router.wasm"),
            sidecar: "[config]\nthreshold = 5\n",
        },
    ];
    for (lang, dir) in [("Python", "python"), ("JavaScript", "js")] {
        all.push(Build {
            lang,
            plugin: "pass-through",
            wasm: sources.join(format!("bench/passthrough/{dir}/build/passthrough.wasm")),
            sidecar: "",
        });
        all.push(Build {
            lang,
            plugin: "spam-router",
            wasm: sources.join(format!(
                "plugins/examples/spam-router/{dir}/build/spam-router.wasm"
            )),
            sidecar: "[config]\nthreshold = 5\n",
        });
    }
    all
}

pub async fn report(args: &BenchArgs) -> anyhow::Result<()> {
    let baseline = baseline(args).await?;
    for build in builds(args) {
        let label = format!("{} {}", build.lang, build.plugin);
        if !build.wasm.exists() {
            row(
                &label,
                format!(
                    "skipped: {} is missing (evhost plugin build, or cargo build --profile plugin)",
                    build.wasm.display()
                ),
                "".into(),
            );
            continue;
        }
        let size = std::fs::metadata(&build.wasm)?.len();
        let (first, cached) = load_times(&build.wasm, build.sidecar).await?;
        row(
            &format!("{label}: file copied → serving, first compile / from the cache"),
            format!(
                "{} ms / {} ms ({:.1} MB file; settle 100 ms included)",
                first.as_millis(),
                cached.as_millis(),
                size as f64 / 1e6
            ),
            "".into(),
        );
        let memory = instance_memory(&build.wasm, build.sidecar)?;
        row(
            &format!("{label}: one instance's linear memory and tables"),
            format!("{:.1} MiB", memory as f64 / (1 << 20) as f64),
            "".into(),
        );
        let scratch = tempfile::tempdir()?;
        let plugins = started_from(scratch.path(), &build.wasm, build.sidecar).await?;
        let events = per_language_events(args, build.lang);
        inline_row(
            args,
            &plugins,
            events,
            baseline,
            &format!("{label}: bus + it inline"),
        )
        .await?;
        plugins.stop();
    }
    Ok(())
}

/// Interpreted plugins are slower per call: fewer events keep each run short.
fn per_language_events(args: &BenchArgs, lang: &str) -> u64 {
    match lang {
        "Rust" => args.plugin_events,
        _ => (args.plugin_events / 20).max(1000),
    }
}

/// Copy → serving into a fresh folder and cache, then again into a second folder
/// sharing that cache.
async fn load_times(wasm: &Path, sidecar: &str) -> anyhow::Result<(Duration, Duration)> {
    let scratch = tempfile::tempdir()?;
    let cache_dir = scratch.path().join("cache");
    let key = scratch.path().join("cache.key");
    let mut times = Vec::new();
    for round in 0..2 {
        let dir = scratch.path().join(format!("plugins-{round}"));
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join("p.toml"), sidecar)?;
        let plugins = Plugins::start(
            PluginsConfig::default(),
            dir.clone(),
            Cache::open(cache_dir.clone(), &key)?,
            Metrics::new(10),
            Arc::new(Catalog::new(true, false)),
            None,
        )
        .await?;
        times.push(install(&plugins, &dir, wasm).await?);
        plugins.stop();
    }
    Ok((times[0], times[1]))
}

/// One instance, after `init` and one call with a `message.received`.
fn instance_memory(wasm: &Path, sidecar: &str) -> anyhow::Result<usize> {
    let options = PluginsConfig::default();
    let manifest = crate::plugins::Manifest::parse(sidecar, &options)
        .map_err(|e| anyhow::anyhow!("sidecar: {e}"))?;
    let runtime = Runtime::new(None)?;
    let compiled = runtime.compile(&std::fs::read(wasm)?, false)?;
    let context = PluginContext::new("p", &manifest.config, 100, LogSink::Tracing, None);
    let limits = Limits {
        memory_mib: manifest.memory_mib,
        timeout: Duration::from_secs(5),
        fuel: None,
    };
    let (mut instance, _) = Instance::start(&compiled, context, limits, &manifest.config)
        .map_err(|e| anyhow::anyhow!("init: {e}"))?;
    let event = Event::from_daemon(
        "message.received",
        &serde_json::from_str::<serde_json::Value>(super::PAYLOAD)?,
    )?;
    instance
        .handle(&event)
        .map_err(|e| anyhow::anyhow!("handle: {e}"))?;
    Ok(instance.memory_bytes())
}
