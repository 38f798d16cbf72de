//! `evhost plugin …`: scaffold, build, check and run plugins offline, and list or
//! reload the plugins of a running daemon.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use reqwest::Method;

use super::{ClientArgs, print_rows, scaffold};
use crate::config::PluginsConfig;
use crate::event::{Actor, Catalog, Event, new_event_id, wire};
use crate::plugins::Manifest;
use crate::plugins::offline;

#[derive(Subcommand)]
pub enum PluginCommand {
    /// Create a plugin project that builds and passes its test out of the box.
    New {
        /// The plugin's name (a-z 0-9 - _), also the project's folder.
        name: String,
        /// The language it is written in.
        #[arg(long, value_enum, default_value = "rust")]
        lang: scaffold::Lang,
        /// Where to create it (default: ./NAME).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// The SDK of that language (plugins/sdk, sdk-python or sdk-js of the evhost
        /// sources; found there by default).
        #[arg(long, env = "EVHOST_PLUGIN_SDK")]
        sdk: Option<PathBuf>,
    },
    /// Build a plugin project (Rust, Python or JavaScript) into a component and print
    /// the .wasm file's path.
    Build {
        /// The project's folder (default: the current one).
        #[arg(default_value = ".")]
        path: PathBuf,
    },
    /// Check a .wasm file: the contract, its imports and exports, init, the limits.
    Check {
        file: PathBuf,
        #[command(flatten)]
        sidecar: SidecarArgs,
        /// The report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Run a .wasm file on events offline; prints its actions, log lines and counters.
    Run {
        file: PathBuf,
        /// A JSON file with one event ({"type", "data", …} as POST /v1/events takes)
        /// or an array of them.
        #[arg(long)]
        event: PathBuf,
        #[command(flatten)]
        sidecar: SidecarArgs,
        /// The report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Run a .wasm file offline over events the log already holds (a data
    /// directory's or a running daemon's) and compare it with the version serving.
    Replay(Box<super::replay::ReplayArgs>),
    /// List the plugins of a running daemon.
    List {
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Load a plugin of a running daemon again from its file.
    Reload {
        name: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// How a shadow compares with the version it runs beside (NAME: the shadow's
    /// or that plugin's).
    Shadow {
        name: String,
        /// The report as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Make a shadow the serving version of the plugin it runs beside.
    Promote {
        name: String,
        #[command(flatten)]
        client: ClientArgs,
    },
}

#[derive(Args)]
pub struct SidecarArgs {
    /// The sidecar (limits, config); default: FILE with .toml beside it, if present.
    #[arg(long)]
    sidecar: Option<PathBuf>,
}

impl SidecarArgs {
    pub(super) fn manifest(&self, wasm: &Path) -> anyhow::Result<Manifest> {
        let path = self
            .sidecar
            .clone()
            .unwrap_or_else(|| wasm.with_extension("toml"));
        if self.sidecar.is_some() && !path.exists() {
            bail!("no sidecar file {}", path.display());
        }
        Ok(Manifest::load(&path, &PluginsConfig::default())?)
    }
}

pub async fn run(command: PluginCommand) -> anyhow::Result<()> {
    match command {
        PluginCommand::New {
            name,
            lang,
            dir,
            sdk,
        } => scaffold::new(&name, lang, dir, sdk),
        PluginCommand::Build { path } => scaffold::build(&path),
        PluginCommand::Check {
            file,
            sidecar,
            json,
        } => {
            let manifest = sidecar.manifest(&file)?;
            let report =
                tokio::task::spawn_blocking(move || offline::check(&file, &manifest)).await??;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print_check(&report);
            }
            Ok(())
        }
        PluginCommand::Run {
            file,
            event,
            sidecar,
            json,
        } => {
            let manifest = sidecar.manifest(&file)?;
            let events = read_events(&event)?;
            let report =
                tokio::task::spawn_blocking(move || offline::run(&file, &manifest, &events))
                    .await??;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print_run(&report);
            }
            if report.calls.iter().any(|c| c.error.is_some()) {
                bail!("a call failed (see above)");
            }
            Ok(())
        }
        PluginCommand::Replay(args) => super::replay::run(*args).await,
        PluginCommand::Shadow { name, json, client } => {
            let path = format!("/v1/plugins/{}/shadow", super::urlencode(&name));
            let report = client.call(Method::GET, &path, None).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print_shadow(&report);
            }
            Ok(())
        }
        PluginCommand::Promote { name, client } => {
            let path = format!("/v1/plugins/{}/promote", super::urlencode(&name));
            let answer = client.call(Method::POST, &path, None).await?;
            println!(
                "promoted {name}: {} serves version {} ({})",
                answer["name"].as_str().unwrap_or("?"),
                answer["version"].as_str().unwrap_or("?"),
                answer["file_hash"]
                    .as_str()
                    .map_or("?", |h| &h[..12.min(h.len())])
            );
            Ok(())
        }
        PluginCommand::List { json, client } => {
            let answer = client.call(Method::GET, "/v1/plugins", None).await?;
            let rows = answer["plugins"].as_array().cloned().unwrap_or_default();
            let header = format!(
                "{:<24} {:<13} {:<10} {:<7} {:>5} {:>10} {:>7}  LAST ERROR",
                "NAME", "STATE", "VERSION", "MODE", "PRIO", "CALLS", "ERRORS"
            );
            print_rows(&rows, json, &header, |p| {
                let errors: u64 = p["errors"]
                    .as_object()
                    .map(|e| e.values().filter_map(|v| v.as_u64()).sum())
                    .unwrap_or(0);
                format!(
                    "{:<24} {:<13} {:<10} {:<7} {:>5} {:>10} {:>7}  {}",
                    p["name"].as_str().unwrap_or(""),
                    p["state"].as_str().unwrap_or(""),
                    p["version"].as_str().unwrap_or("-"),
                    p["mode"].as_str().unwrap_or("-"),
                    p["priority"].as_i64().map_or("-".into(), |n| n.to_string()),
                    p["calls"].as_u64().unwrap_or(0),
                    errors,
                    p["last_error"].as_str().unwrap_or(""),
                )
            })
        }
        PluginCommand::Reload { name, client } => {
            let answer = client
                .call(Method::POST, &format!("/v1/plugins/{name}/reload"), None)
                .await?;
            println!(
                "reloaded {name}: version {} ({})",
                answer["version"].as_str().unwrap_or("?"),
                answer["file_hash"]
                    .as_str()
                    .map_or("?", |h| &h[..12.min(h.len())])
            );
            Ok(())
        }
    }
}

fn print_shadow(r: &serde_json::Value) {
    let n = |key: &str| r[key].as_u64().unwrap_or(0);
    let events = n("events");
    let share = |part: u64| {
        if events == 0 {
            "-".to_string()
        } else {
            format!("{:.1} %", part as f64 * 100.0 / events as f64)
        }
    };
    println!(
        "shadow {} {} beside {} {}",
        r["name"].as_str().unwrap_or("?"),
        r["shadow_version"].as_str().unwrap_or("?"),
        r["shadow_of"].as_str().unwrap_or("?"),
        r["serving_version"].as_str().unwrap_or("(not loaded)"),
    );
    println!("  since      {}", r["since"].as_str().unwrap_or("?"));
    println!(
        "  events     {events}: {} same ({}), {} different ({})",
        n("same"),
        share(n("same")),
        n("different"),
        share(n("different"))
    );
    let errors: Vec<String> = r["errors"]
        .as_object()
        .map(|m| m.iter().map(|(k, v)| format!("{k} {v}")).collect())
        .unwrap_or_default();
    println!(
        "  errors     {}",
        if errors.is_empty() {
            "none".to_string()
        } else {
            errors.join(", ")
        }
    );
    println!("  skipped    {} (the shadow was behind)", n("skipped"));
    println!(
        "  per call   serving {} µs, shadow {} µs",
        n("serving_mean_us"),
        n("shadow_mean_us")
    );
    for d in r["latest_differences"].as_array().into_iter().flatten() {
        println!(
            "  {} {} ({})\n    serving: {}\n    shadow:  {}",
            d["at"].as_str().unwrap_or(""),
            d["event_id"].as_str().unwrap_or(""),
            d["event_type"].as_str().unwrap_or(""),
            d["serving"],
            d["shadow"]
        );
    }
}

fn print_check(r: &offline::CheckReport) {
    println!("ok: {} matches {}", r.file, r.contract);
    println!("  plugin        {} {}", r.name, r.version);
    println!("  subscriptions {}", r.subscriptions.join(", "));
    println!("  file          {} bytes, sha256 {}", r.size, r.hash);
    println!("  exports       {}", r.exports.join(", "));
    println!("  imports       {}", r.imports.join(", "));
    let fuel = r.fuel.map_or("none".to_string(), |f| f.to_string());
    println!(
        "  limits        memory {} MiB, timeout {} ms per call, fuel {fuel}",
        r.memory_mib, r.timeout_ms
    );
    println!("  compile       {} ms, init {} ms", r.compile_ms, r.init_ms);
}

fn print_run(r: &offline::RunReport) {
    println!(
        "{} {} on {} event(s)",
        r.check.name,
        r.check.version,
        r.calls.len()
    );
    for call in &r.calls {
        let outcome = match (&call.error, call.actions.is_empty()) {
            (Some(error), _) => format!("FAILED ({}): {error}", call.error_kind.unwrap_or("")),
            (None, true) => "pass (no actions)".to_string(),
            (None, false) => format!("{} action(s)", call.actions.len()),
        };
        println!(
            "event {} ({}) in {} µs: {outcome}",
            call.event_id, call.event_type, call.duration_us
        );
        for action in &call.actions {
            println!("  {action}");
        }
    }
    for line in &r.logs {
        println!("log {:<5} {}", line.level, line.message);
    }
    for (name, value) in &r.counters {
        println!("counter {name} = {value}");
    }
}

/// Reads one event or an array of events, validated against the catalog.
fn read_events(path: &Path) -> anyhow::Result<Vec<Arc<Event>>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let drafts = if text.trim_start().starts_with('[') {
        wire::parse_plain_batch(&text)
    } else {
        wire::parse_plain(&text).map(|d| vec![d])
    }
    .with_context(|| format!("{} is not an event", path.display()))?;
    let catalog = Catalog::new(true, false);
    drafts
        .into_iter()
        .map(|draft| {
            catalog
                .validate(&draft.kind, &draft.data)
                .with_context(|| format!("{}", path.display()))?;
            Ok(Arc::new(Event {
                id: draft.id.map(Into::into).unwrap_or_else(new_event_id),
                kind: draft.kind.into(),
                time: draft.time.unwrap_or_else(chrono::Utc::now),
                source: draft.source.unwrap_or_else(|| "/cli".into()).into(),
                actor: Actor {
                    on_behalf_of: draft.on_behalf_of,
                    ..Actor::default()
                },
                data: Arc::from(draft.data),
                hops: 0,
            }))
        })
        .collect()
}
