//! Plugin figures: the bus with one inline plugin (three kinds of work) against the
//! same bus without plugins, in one run; how long a file dropped into the plugin
//! folder takes to serve, compiled afresh and from the cache; and 100 swaps during a
//! 10,000 events/s stream to a webhook receiver that counts every id.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use super::{BenchArgs, bus_rate_with, row, thousands};
use crate::config::PluginsConfig;
use crate::event::Catalog;
use crate::metrics::Metrics;
use crate::plugins::cache::Cache;
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
    let baseline = baseline(args).await?;
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
        inline_row(
            args,
            &plugins,
            events,
            baseline,
            &format!("bus + 1 inline plugin: {what}"),
        )
        .await?;
        plugins.stop();
    }

    // Hot load: copy → serving, as the daemon's folder watcher sees it.
    let scratch = tempfile::tempdir()?;
    let plugins_dir = scratch.path().join("plugins");
    let cache = Cache::open(
        scratch.path().join("cache"),
        &scratch.path().join("cache.key"),
    )?;
    let plugins = Plugins::start(
        PluginsConfig::default(),
        plugins_dir.clone(),
        cache,
        Metrics::new(10),
        Arc::new(Catalog::new(true, false)),
        None,
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
    swaps_under_load(dir).await
}

/// 100 swaps of an inline plugin (two builds, alternately) in a running daemon while
/// a stream of 10,000 events/s goes through it to a webhook receiver, which counts
/// every id: none may be lost or arrive twice.
async fn swaps_under_load(built: &Path) -> anyhow::Result<()> {
    use super::webhooks::{Receiver, add_endpoints, batch_body, publish_batch};
    let receiver = Receiver::start(true).await?;
    let daemon = super::InProcess::start(
        &[
            ("EVHOST_AUDIT__ENABLED", "false".into()),
            ("EVHOST_SERVER__MAX_BATCH_EVENTS", "1000".into()),
            ("EVHOST_WEBHOOKS__ALLOWED_NETWORKS", "[127.0.0.0/8]".into()),
            ("EVHOST_WEBHOOKS__MAX_BACKLOG", "200000".into()),
            ("EVHOST_PLUGINS__SETTLE", "20ms".into()),
        ],
        None,
    )
    .await?;
    let client = reqwest::Client::new();
    add_endpoints(&client, daemon.addr, receiver.addr, 1).await?;
    let folder = daemon.scratch.dir.path().join("plugins");
    let builds = [built.join("pii_redactor.wasm"), built.join("hostile.wasm")];
    std::fs::write(folder.join("swap.toml"), "[config]\nbehave = \"pass\"\n")?;
    let hashes = [
        crate::plugins::runtime::file_hash(&std::fs::read(&builds[0])?),
        crate::plugins::runtime::file_hash(&std::fs::read(&builds[1])?),
    ];
    let serving = |hash: String| {
        let client = client.clone();
        let url = format!("http://{}/v1/plugins/swap", daemon.addr);
        async move {
            let started = Instant::now();
            loop {
                let status: serde_json::Value = match client.get(&url).send().await {
                    Ok(r) if r.status() == 200 => r.json().await?,
                    _ => serde_json::Value::Null,
                };
                if status["file_hash"] == hash.as_str() && status["state"] == "serving" {
                    return Ok::<(), anyhow::Error>(());
                }
                if started.elapsed() > Duration::from_secs(30) {
                    bail!("the swapped plugin did not serve within 30 s: {status}");
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
    };
    std::fs::copy(&builds[0], folder.join("swap.wasm"))?;
    serving(hashes[0].clone()).await?;

    // The stream: a batch of 100 every 10 ms.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let run = uuid::Uuid::now_v7().simple().to_string();
    let stream = {
        let (client, stop, addr, run) = (client.clone(), stop.clone(), daemon.addr, run.clone());
        tokio::spawn(async move {
            let mut published = 0usize;
            let mut tick = tokio::time::interval(Duration::from_millis(10));
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                tick.tick().await;
                let ids = (published..published + 100).map(|n| format!("swap-{run}-{n}"));
                publish_batch(&client, addr, batch_body(ids)).await?;
                published += 100;
            }
            Ok::<usize, anyhow::Error>(published)
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    for n in 1..=100 {
        std::fs::copy(&builds[n % 2], folder.join("swap.wasm"))?;
        serving(hashes[n % 2].clone()).await?;
    }
    let swapping = started.elapsed();
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let published = stream.await??;
    let wait = Instant::now();
    while (receiver.arrivals.lock().expect("not poisoned").len()) < published {
        if wait.elapsed() > Duration::from_secs(120) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let unique = receiver.arrivals.lock().expect("not poisoned").len();
    let total = receiver.count.load(std::sync::atomic::Ordering::Relaxed) as usize;
    let streamed = published as f64 / (swapping.as_secs_f64() + 0.4);
    daemon.stop().await?;
    row(
        "100 plugin swaps during a 10,000 events/s stream to a webhook receiver",
        format!(
            "{:.1} s for the swaps ({:.0} ms each), {} events/s offered and taken; {} published, {} lost, {} duplicated",
            swapping.as_secs_f64(),
            swapping.as_secs_f64() * 10.0,
            thousands(streamed),
            thousands(published as f64),
            published.saturating_sub(unique),
            total.saturating_sub(unique),
        ),
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
    started_from(scratch, &built.join(format!("{file}.wasm")), sidecar).await
}

/// The bus without plugins, printed as the baseline row. It runs longer than the
/// plugin runs: without plugins the bus is fast, and short runs of it are noisy.
pub(super) async fn baseline(args: &BenchArgs) -> anyhow::Result<f64> {
    let baseline = bus_rate_with(args, 1, None, args.bus_events).await?;
    row(
        &format!(
            "bus, 1 no-op subscriber, no plugins, {} workers (baseline)",
            args.workers
        ),
        format!("{} events/s", thousands(baseline)),
        "1.00".into(),
    );
    Ok(baseline)
}

/// The bus with `plugins`' pipeline inline, printed against `baseline` with what one
/// event costs more.
pub(super) async fn inline_row(
    args: &BenchArgs,
    plugins: &Plugins,
    events: u64,
    baseline: f64,
    label: &str,
) -> anyhow::Result<()> {
    let rate = bus_rate_with(args, 1, Some(plugins.pipeline()), events).await?;
    let per_event_us = (1.0 / rate - 1.0 / baseline) * 1e6;
    row(
        label,
        format!(
            "{} events/s (+{per_event_us:.2} µs per event)",
            thousands(rate)
        ),
        format!("{:.3}", rate / baseline),
    );
    Ok(())
}

/// A plugin registry in `scratch` serving `wasm` as `p` with `sidecar`.
pub(super) async fn started_from(
    scratch: &Path,
    wasm: &Path,
    sidecar: &str,
) -> anyhow::Result<Plugins> {
    let dir = scratch.join("plugins");
    std::fs::create_dir_all(&dir)?;
    std::fs::copy(wasm, dir.join("p.wasm"))?;
    std::fs::write(dir.join("p.toml"), sidecar)?;
    let plugins = Plugins::start(
        PluginsConfig::default(),
        dir,
        Cache::open(scratch.join("cache"), &scratch.join("cache.key"))?,
        Metrics::new(10),
        Arc::new(Catalog::new(true, false)),
        None,
    )
    .await?;
    match plugins.status("p") {
        Some(s) if s.state == "serving" => Ok(plugins),
        other => bail!("{} did not load: {other:?}", wasm.display()),
    }
}

/// Copies `wasm` in as `p.wasm` and waits until that file serves.
pub(super) async fn install(
    plugins: &Plugins,
    dir: &Path,
    wasm: &Path,
) -> anyhow::Result<Duration> {
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
