//! Plugin figures: the bus with one inline plugin (three kinds of work) against the
//! same bus without plugins, in one run; and how long a file dropped into the plugin
//! folder takes to serve, compiled afresh and from the cache.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use super::{BenchArgs, bus_rate_with, row, thousands};
use crate::config::PluginsConfig;
use crate::event::Catalog;
use crate::metrics::Metrics;
use crate::plugins::loader::Plugins;

pub async fn report(args: &BenchArgs) -> anyhow::Result<()> {
    let dir = &args.plugins_dir;
    for name in ["hostile", "spam_router", "pii_redactor"] {
        if !dir.join(format!("{name}.wasm")).exists() {
            row(
                "plugins",
                format!(
                    "skipped: {}/{name}.wasm is missing (cargo build --profile plugin --target wasm32-wasip2 -p spam-router -p pii-redactor -p vip-router -p hostile, or --plugins-dir)",
                    dir.display()
                ),
                "".into(),
            );
            return Ok(());
        }
    }
    let events = args.plugin_events;
    // The baseline runs longer: without plugins the bus is fast, and short runs of it
    // are noisy.
    let baseline = bus_rate_with(args, 1, None, args.bus_events).await?;
    row(
        &format!(
            "bus, 1 no-op subscriber, no plugins, {} workers (baseline)",
            args.workers
        ),
        format!("{} events/s", thousands(baseline)),
        "1.00".into(),
    );
    let cases = [
        (
            "hostile",
            "[config]\nbehave = \"pass\"\n",
            "hostile in pass mode (no actions)",
        ),
        (
            "spam_router",
            "[config]\nthreshold = 5\n",
            "spam-router: parses the payload, passes",
        ),
        (
            "pii_redactor",
            "",
            "pii-redactor: replaces the payload (schema-checked)",
        ),
    ];
    for (file, sidecar, what) in cases {
        let scratch = tempfile::tempdir()?;
        let plugins = started_with(scratch.path(), dir, file, sidecar).await?;
        let rate = bus_rate_with(args, 1, Some(plugins.pipeline()), events).await?;
        plugins.stop();
        let per_event_us = (1.0 / rate - 1.0 / baseline) * 1e6;
        row(
            &format!("bus + 1 inline plugin: {what}"),
            format!(
                "{} events/s (+{per_event_us:.2} µs per event)",
                thousands(rate)
            ),
            format!("{:.2}", rate / baseline),
        );
    }

    // Hot load: copy → serving, as the daemon's folder watcher sees it.
    let scratch = tempfile::tempdir()?;
    let plugins_dir = scratch.path().join("plugins");
    let cache = scratch.path().join("cache");
    let plugins = Plugins::start(
        PluginsConfig::default(),
        plugins_dir.clone(),
        cache,
        Metrics::new(10),
        Arc::new(Catalog::new(true, false)),
    )
    .await?;
    let mut cold = Vec::new();
    let mut cached = Vec::new();
    let files = ["spam_router", "pii_redactor"];
    for round in 0..6 {
        let file = files[round % 2];
        let took = install(&plugins, &plugins_dir, &dir.join(format!("{file}.wasm"))).await?;
        if round < 2 { &mut cold } else { &mut cached }.push(took);
    }
    plugins.stop();
    row(
        "plugin file copied → serving, first compile (default settle 100 ms included)",
        format!("{} ms (each of 2)", list_ms(&cold)),
        "".into(),
    );
    row(
        "plugin file copied → serving, compiled code from the cache (settle included)",
        format!("{} ms (each of 4)", list_ms(&cached)),
        "".into(),
    );
    Ok(())
}

fn list_ms(times: &[Duration]) -> String {
    times
        .iter()
        .map(|t| format!("{:.0}", t.as_secs_f64() * 1000.0))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A plugin folder holding `file` as `p.wasm` with `sidecar`, loaded.
async fn started_with(
    scratch: &Path,
    built: &Path,
    file: &str,
    sidecar: &str,
) -> anyhow::Result<Plugins> {
    let dir = scratch.join("plugins");
    std::fs::create_dir_all(&dir)?;
    std::fs::copy(built.join(format!("{file}.wasm")), dir.join("p.wasm"))?;
    std::fs::write(dir.join("p.toml"), sidecar)?;
    let plugins = Plugins::start(
        PluginsConfig::default(),
        dir,
        scratch.join("cache"),
        Metrics::new(10),
        Arc::new(Catalog::new(true, false)),
    )
    .await?;
    match plugins.status("p") {
        Some(s) if s.state == "serving" => Ok(plugins),
        other => bail!("{file} did not load: {other:?}"),
    }
}

/// Copies `wasm` in as `p.wasm` and waits until that file serves.
async fn install(plugins: &Plugins, dir: &Path, wasm: &Path) -> anyhow::Result<Duration> {
    let hash = crate::plugins::runtime::file_hash(&std::fs::read(wasm)?);
    let started = Instant::now();
    std::fs::copy(wasm, dir.join("p.wasm")).context("copy")?;
    loop {
        if plugins
            .status("p")
            .is_some_and(|s| s.file_hash.as_deref() == Some(hash.as_str()))
        {
            return Ok(started.elapsed());
        }
        if started.elapsed() > Duration::from_secs(30) {
            bail!("{} did not serve within 30 s", wasm.display());
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}
