//! `evhost audit verify|query|export`: the hash chains checked in the database, and
//! rows read from a running daemon through `GET /v1/audit`.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;

use anyhow::{anyhow, bail};
use clap::{Args, Subcommand};

use super::{ClientArgs, ConfigArg, open_store, print_rows, urlencode};
use crate::config::Config;

#[derive(Subcommand)]
pub(super) enum AuditCommand {
    /// Check every hash chain in the database (and signed checkpoints, if given).
    Verify {
        #[command(flatten)]
        config: ConfigArg,
        /// A checkpoint file the daemon wrote (audit.checkpoint_file); detects a
        /// chain that was rewritten whole or cut short.
        #[arg(long)]
        checkpoint: Option<PathBuf>,
        /// The Ed25519 public key (hex) the checkpoints must be signed with.
        #[arg(long)]
        public_key: Option<String>,
    },
    /// Show audit rows from a running daemon, newest first.
    Query(AuditQueryArgs),
    /// Stream every matching row from a running daemon as NDJSON.
    Export(AuditExportArgs),
}

#[derive(Args, Clone)]
pub(super) struct AuditFilterArgs {
    /// Type patterns, comma-separated (message.*,user.login).
    #[arg(long)]
    types: Option<String>,
    #[arg(long)]
    actor: Option<String>,
    #[arg(long)]
    resource_type: Option<String>,
    #[arg(long)]
    resource_id: Option<String>,
    /// From this time (RFC 3339).
    #[arg(long)]
    since: Option<String>,
    /// Until this time (RFC 3339, exclusive).
    #[arg(long)]
    until: Option<String>,
}

impl AuditFilterArgs {
    fn query_string(&self, limit: u32, cursor: Option<&str>) -> String {
        let mut parts = vec![format!("limit={limit}")];
        let fields = [
            ("types", &self.types),
            ("actor", &self.actor),
            ("resource_type", &self.resource_type),
            ("resource_id", &self.resource_id),
            ("since", &self.since),
            ("until", &self.until),
        ];
        for (name, value) in fields {
            if let Some(v) = value {
                parts.push(format!("{name}={}", urlencode(v)));
            }
        }
        if let Some(c) = cursor {
            parts.push(format!("cursor={}", urlencode(c)));
        }
        parts.join("&")
    }
}

#[derive(Args)]
pub(super) struct AuditQueryArgs {
    #[command(flatten)]
    filter: AuditFilterArgs,
    /// Rows to show (1 to 1000).
    #[arg(long, default_value_t = 50)]
    limit: u32,
    /// Print rows as JSON lines instead of a table.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    client: ClientArgs,
}

#[derive(Args)]
pub(super) struct AuditExportArgs {
    #[command(flatten)]
    filter: AuditFilterArgs,
    #[command(flatten)]
    client: ClientArgs,
}

pub(super) async fn verify(
    config: Config,
    checkpoint: Option<PathBuf>,
    public_key: Option<String>,
) -> anyhow::Result<()> {
    let expected_key = public_key
        .map(|hex_key| {
            let bytes: [u8; 32] = hex::decode(hex_key.trim())
                .ok()
                .and_then(|b| b.try_into().ok())
                .ok_or_else(|| anyhow!("--public-key must be 32 bytes in hex"))?;
            ed25519_dalek::VerifyingKey::from_bytes(&bytes)
                .map_err(|e| anyhow!("--public-key: {e}"))
        })
        .transpose()?;
    let store = open_store(&config).await?;
    store.migrate().await?;
    let mut report = crate::audit::verify(&store).await?;
    if let Some(file) = &checkpoint
        && report.ok
    {
        let checkpoints = crate::audit::checkpoint::read_latest(file)?;
        crate::audit::checkpoint::verify_against(
            &store,
            &checkpoints,
            expected_key.as_ref(),
            &mut report,
        )
        .await?;
    }
    store.close().await;
    println!("{}", serde_json::to_string(&report)?);
    match &report.broken {
        None => Ok(()),
        Some(b) => bail!(
            "the audit log does not verify: chain {} at row {}{}: {}",
            b.chain,
            b.chain_seq,
            b.event_id
                .as_deref()
                .map(|id| format!(" (event {id})"))
                .unwrap_or_default(),
            b.reason
        ),
    }
}

async fn page(
    client: &ClientArgs,
    filter: &AuditFilterArgs,
    limit: u32,
    cursor: Option<&str>,
) -> anyhow::Result<serde_json::Value> {
    let path = format!("/v1/audit?{}", filter.query_string(limit, cursor));
    client.call(reqwest::Method::GET, &path, None).await
}

pub(super) async fn query(args: AuditQueryArgs) -> anyhow::Result<()> {
    let page = page(&args.client, &args.filter, args.limit, None).await?;
    let rows = page["rows"].as_array().cloned().unwrap_or_default();
    let header = format!(
        "{:<27} {:<24} {:<16} {:<15} {:<40} EVENT",
        "TIME", "TYPE", "ACTOR", "IP", "RESOURCE"
    );
    print_rows(&rows, args.json, &header, |row| {
        let text = |k: &str| row[k].as_str().unwrap_or("-").to_string();
        let resource = match (row["resource_type"].as_str(), row["resource_id"].as_str()) {
            (Some(t), Some(id)) => format!("{t}:{id}"),
            _ => "-".into(),
        };
        format!(
            "{:<27} {:<24} {:<16} {:<15} {:<40} {}",
            text("time"),
            text("event_type"),
            text("actor"),
            text("actor_ip"),
            resource,
            text("event_id")
        )
    })?;
    if page["next_cursor"].is_string() {
        eprintln!("(more rows: raise --limit, or use `evhost audit export`)");
    }
    Ok(())
}

pub(super) async fn export(args: AuditExportArgs) -> anyhow::Result<()> {
    let show_progress = std::io::stderr().is_terminal();
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut cursor: Option<String> = None;
    let mut exported = 0u64;
    loop {
        let page = page(&args.client, &args.filter, 1000, cursor.as_deref()).await?;
        for row in page["rows"].as_array().into_iter().flatten() {
            writeln!(out, "{row}")?;
            exported += 1;
        }
        if show_progress {
            eprint!("\rexported {exported} rows");
        }
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_string()),
            None => break,
        }
    }
    out.flush()?;
    if show_progress {
        eprintln!("\rexported {exported} rows, done");
    }
    Ok(())
}
