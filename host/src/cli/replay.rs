//! `evhost plugin replay`: a plugin file judged on events the log already holds,
//! read from a data directory's database or from a running daemon's `/v1/audit`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use reqwest::Method;

use super::ClientArgs;
use super::plugin::SidecarArgs;
use crate::audit::{Entry, Filter};
use crate::config::Config;
use crate::event::{Event, TypePattern};
use crate::plugins::Manifest;
use crate::plugins::offline::Runner;
use crate::plugins::replay::{Outcome, Replay, Report, Summary};

/// The most events one replay reads.
const MAX_EVENTS: u64 = 1_000_000;

/// Log rows read per page.
const PAGE: i64 = 1000;

#[derive(Args)]
pub struct ReplayArgs {
    /// The plugin file to try.
    file: PathBuf,
    #[command(flatten)]
    sidecar: SidecarArgs,
    /// Events from this long ago until now (30m, 1h, 7d).
    #[arg(long, required_unless_present = "from", conflicts_with = "from")]
    since: Option<String>,
    /// Events from this one (its id) on, it included.
    #[arg(long)]
    from: Option<String>,
    /// Only events of these types (patterns, comma-separated: message.*,user.login).
    #[arg(long)]
    types: Option<String>,
    /// Events to read, at most (up to 1,000,000).
    #[arg(long, default_value_t = 10_000)]
    limit: u64,
    /// Compare with the version serving now: a plugin's name (its file in the plugin
    /// folder, with its sidecar) or a .wasm file.
    #[arg(long)]
    against: Option<String>,
    /// Differences to show.
    #[arg(long, default_value_t = 10)]
    show: usize,
    /// Read the log of this data directory (its database) instead of a running daemon.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Read the log of the database this configuration names instead of a running
    /// daemon (also where `--against NAME` is looked for).
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// The report as JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    client: ClientArgs,
}

/// Where the events come from.
enum Source {
    Database(crate::store::Store),
    Daemon(ClientArgs),
}

pub async fn run(args: ReplayArgs) -> anyhow::Result<()> {
    if args.limit == 0 || args.limit > MAX_EVENTS {
        bail!("--limit is 1 to {MAX_EVENTS}");
    }
    let types = TypePattern::parse_list(args.types.as_deref().unwrap_or(""))
        .map_err(|e| anyhow::anyhow!("--types: {e}"))?;
    let since_us = args
        .since
        .as_deref()
        .map(|text| -> anyhow::Result<i64> {
            let ago =
                crate::config::duration::parse(text).map_err(|e| anyhow::anyhow!("--since {e}"))?;
            let ago = chrono::Duration::from_std(ago).context("--since is too long")?;
            Ok((chrono::Utc::now() - ago).timestamp_micros())
        })
        .transpose()?;
    let mut config = Config::load(args.config.as_deref()).context("loading the configuration")?;
    if let Some(dir) = &args.data_dir {
        config.data_dir = dir.clone();
    }
    let local = args.data_dir.is_some() || args.config.is_some();
    let manifest = args.sidecar.manifest(&args.file)?;
    let against = args
        .against
        .as_deref()
        .map(|name| serving_version(name, &config))
        .transpose()?;
    let file = args.file.clone();
    let show = args.show;
    let mut replay = tokio::task::spawn_blocking(move || -> anyhow::Result<Replay> {
        let candidate = Runner::open(&file, &manifest)
            .with_context(|| format!("loading {}", file.display()))?;
        let serving = against
            .map(|(path, manifest)| {
                Runner::open(&path, &manifest)
                    .with_context(|| format!("loading {}", path.display()))
            })
            .transpose()?;
        Ok(Replay::new(candidate, serving, show))
    })
    .await??;
    let source = if local {
        Source::Database(super::open_store(&config).await?)
    } else {
        Source::Daemon(args.client)
    };
    let mut filter = Filter {
        types,
        since_us,
        oldest_first: true,
        limit: PAGE,
        ..Filter::default()
    };
    if let Some(id) = &args.from {
        filter.after_seq = Some(source.seq_of(id).await? - 1);
    }
    let mut read = 0u64;
    let started = std::time::Instant::now();
    let mut last_progress = started;
    'pages: loop {
        let (events, last_seq) = source.page(&filter).await?;
        let Some(last_seq) = last_seq else { break };
        let take = events.len().min((args.limit - read) as usize);
        let batch: Vec<Arc<Event>> = events.into_iter().take(take).collect();
        read += batch.len() as u64;
        replay = tokio::task::spawn_blocking(move || -> anyhow::Result<Replay> {
            for event in &batch {
                replay.feed(event)?;
            }
            Ok(replay)
        })
        .await??;
        if !args.json && last_progress.elapsed() > Duration::from_secs(2) {
            eprintln!("replayed {read} events…");
            last_progress = std::time::Instant::now();
        }
        if read >= args.limit {
            break 'pages;
        }
        filter.after_seq = Some(last_seq);
    }
    if let Source::Database(store) = source {
        store.close().await;
    }
    let names = (
        label(replay.candidate().check()),
        replay.serving().map(|s| label(s.check())),
    );
    let report = replay.finish();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_report(&report, &names.0, names.1.as_deref(), started.elapsed());
    }
    Ok(())
}

/// The file (and manifest) of `--against`: a .wasm path, or a plugin's name in the
/// plugin folder.
fn serving_version(name: &str, config: &Config) -> anyhow::Result<(PathBuf, Manifest)> {
    let path = if name.ends_with(".wasm") {
        PathBuf::from(name)
    } else {
        if !crate::plugins::loader::valid_name(name) {
            bail!("--against {name:?} is neither a plugin name nor a .wasm file");
        }
        config.plugins_dir().join(format!("{name}.wasm"))
    };
    if !path.exists() {
        bail!(
            "--against: no plugin file {} (give the plugin folder with --data-dir or --config, or a .wasm path)",
            path.display()
        );
    }
    let manifest = Manifest::load(&path.with_extension("toml"), &config.plugins)?;
    Ok((path, manifest))
}

impl Source {
    /// The log position of the event `id`.
    async fn seq_of(&self, id: &str) -> anyhow::Result<i64> {
        let seq = match self {
            Source::Database(store) => {
                let filter = Filter {
                    event_id: Some(id.to_string()),
                    limit: 1,
                    ..Filter::default()
                };
                crate::audit::query(store, &filter)
                    .await?
                    .first()
                    .map(|r| r.seq)
            }
            Source::Daemon(client) => {
                let path = format!("/v1/audit?limit=1&event_id={}", super::urlencode(id));
                let page = client.call(Method::GET, &path, None).await?;
                page["rows"][0]["seq"].as_i64()
            }
        };
        seq.with_context(|| format!("--from: the log holds no event {id}"))
    }

    /// The events of one page (oldest first) and the position of its last row.
    async fn page(&self, filter: &Filter) -> anyhow::Result<(Vec<Arc<Event>>, Option<i64>)> {
        let entries: Vec<(i64, Entry)> = match self {
            Source::Database(store) => crate::audit::query(store, filter)
                .await
                .context("reading the event log")?
                .into_iter()
                .map(|r| (r.seq, r.entry))
                .collect(),
            Source::Daemon(client) => {
                let path = format!("/v1/audit?{}", daemon_query(filter));
                let page = client.call(Method::GET, &path, None).await?;
                let rows = page["rows"].as_array().cloned().unwrap_or_default();
                rows.iter()
                    .map(entry_of_row)
                    .collect::<anyhow::Result<_>>()?
            }
        };
        let last = entries.last().map(|(seq, _)| *seq);
        // Only accepted events (management actions and plugin decisions are rows too).
        let events = entries
            .iter()
            .filter_map(|(_, e)| crate::eventlog::event_of_entry(e))
            .map(Arc::new)
            .collect();
        Ok((events, last))
    }
}

fn daemon_query(filter: &Filter) -> String {
    let mut parts = vec![format!("order=oldest&limit={}", filter.limit)];
    let types: Vec<String> = filter.types.iter().map(|p| p.to_string()).collect();
    if !types.is_empty() {
        parts.push(format!("types={}", super::urlencode(&types.join(","))));
    }
    if let Some(since) = filter.since_us {
        parts.push(format!(
            "since={}",
            super::urlencode(&crate::api::rfc3339_us(since))
        ));
    }
    if let Some(after) = filter.after_seq {
        parts.push(format!("cursor={}", after.max(0)));
    }
    parts.join("&")
}

/// A row of `GET /v1/audit` as the log entry it shows.
fn entry_of_row(row: &serde_json::Value) -> anyhow::Result<(i64, Entry)> {
    let text = |name: &str| row[name].as_str().map(str::to_string);
    let seq = row["seq"].as_i64().context("an audit row without seq")?;
    let time = text("time").context("an audit row without time")?;
    let time_us = chrono::DateTime::parse_from_rfc3339(&time)
        .with_context(|| format!("an audit row's time {time:?}"))?
        .timestamp_micros();
    let entry = Entry {
        event_id: text("event_id").unwrap_or_default(),
        event_type: text("event_type").unwrap_or_default(),
        actor: text("actor"),
        actor_token: text("actor_token"),
        actor_ip: text("actor_ip"),
        resource_type: text("resource_type"),
        resource_id: text("resource_id"),
        details: row["details"].to_string(),
        time_us,
        source: text("source"),
    };
    Ok((seq, entry))
}

fn label(check: &crate::plugins::offline::CheckReport) -> String {
    format!("{} {} ({})", check.name, check.version, check.file)
}

fn print_report(report: &Report, candidate: &str, serving: Option<&str>, took: Duration) {
    println!(
        "replayed {} events from the log in {:.1} s",
        report.events,
        took.as_secs_f64()
    );
    if let (Some(first), Some(last)) = (&report.first_event, &report.last_event) {
        println!("  from {first} to {last}");
    }
    print_summary("candidate", candidate, &report.candidate);
    if let (Some(summary), Some(label)) = (&report.serving, serving) {
        print_summary("serving", label, summary);
        println!(
            "agreement: {} same, {} different{}",
            report.same,
            report.different,
            if report.different > report.differences.len() as u64 {
                format!(" (the first {} shown)", report.differences.len())
            } else {
                String::new()
            }
        );
        for d in &report.differences {
            println!("  {} ({})", d.event_id, d.event_type);
            println!("    candidate: {}", outcome_text(&d.candidate));
            println!("    serving:   {}", outcome_text(&d.serving));
        }
    }
}

fn print_summary(role: &str, label: &str, s: &Summary) {
    let failed: Vec<String> = s.failed.iter().map(|(k, n)| format!("{k} {n}")).collect();
    let per_call = s.call_us.checked_div(s.calls).unwrap_or(0);
    println!("{role}: {label}");
    println!(
        "  {} calls: {} passed, {} dropped, {} replaced; {} emitted, {} delivered; failed: {}; {} µs per call",
        s.calls,
        s.passed,
        s.dropped,
        s.replaced,
        s.emitted,
        s.delivered,
        if failed.is_empty() {
            "none".to_string()
        } else {
            failed.join(", ")
        },
        per_call,
    );
}

fn outcome_text(outcome: &Outcome) -> String {
    match outcome {
        Outcome::NotSubscribed => "not called (not subscribed)".into(),
        Outcome::Actions(actions) if actions.is_empty() => "pass".into(),
        Outcome::Actions(actions) => actions
            .iter()
            .map(|a| a.to_string())
            .collect::<Vec<_>>()
            .join(", "),
        Outcome::Failed { kind, error } => format!("failed ({kind}): {error}"),
    }
}
