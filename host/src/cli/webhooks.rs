//! `evhost webhooks …`: endpoint management and delivery history over the API.

use std::io::Write;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use serde_json::{Value, json};

use super::{ClientArgs, print_rows};

#[derive(Subcommand)]
pub enum WebhooksCommand {
    /// Add an endpoint; prints its id and secret (shown only now).
    Add(AddArgs),
    /// List the endpoints.
    List {
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Show one endpoint as JSON.
    Show(IdArgs),
    /// Change an endpoint's fields.
    Update(UpdateArgs),
    /// Remove an endpoint and its delivery history.
    Rm(IdArgs),
    /// Enable an endpoint (clears its failure run).
    Enable(IdArgs),
    /// Disable an endpoint; its pending deliveries wait.
    Disable(IdArgs),
    /// Replace the signing secret; the old one signs too for webhooks.secret_overlap.
    RotateSecret(IdArgs),
    /// Send a signed test ping now and show the result (exit 1 if it failed).
    Test(IdArgs),
    /// List an endpoint's deliveries, newest first.
    Deliveries(DeliveriesArgs),
    /// Show one delivery with every attempt.
    Delivery(IdArgs),
    /// Send a finished delivery once more, now.
    Retry(IdArgs),
    /// Replace the key that seals endpoint secrets in the database
    /// (webhooks.secret_key_file): re-seals every secret under a new key in one
    /// transaction and keeps the old key as <file>.previous. Works against the
    /// database directly; running daemons pick the new key up by themselves.
    RotateKey {
        #[command(flatten)]
        config: super::ConfigArg,
    },
    /// Send an endpoint's failed deliveries again, from a time on.
    Replay {
        /// The endpoint id.
        id: String,
        /// RFC 3339 time, e.g. 2026-11-27T10:00:00Z.
        #[arg(long)]
        since: String,
        #[command(flatten)]
        client: ClientArgs,
    },
}

#[derive(Args)]
pub struct IdArgs {
    /// The endpoint (or delivery) id.
    id: String,
    #[command(flatten)]
    client: ClientArgs,
}

#[derive(Args)]
pub struct AddArgs {
    /// Where to POST, http:// or https://.
    #[arg(id = "endpoint_url", value_name = "URL")]
    url: String,
    #[arg(long)]
    name: String,
    /// Type patterns, comma-separated: message.received,user.*
    #[arg(long, value_delimiter = ',', required = true)]
    events: Vec<String>,
    /// Only events of this mail domain.
    #[arg(long)]
    domain: Option<String>,
    /// Body format: esp or cloudevents.
    #[arg(long)]
    format: Option<String>,
    /// Create it disabled.
    #[arg(long)]
    disabled: bool,
    /// Also sign with Ed25519 (Standard Webhooks `v1a`); prints the public key.
    #[arg(long)]
    asymmetric: bool,
    #[command(flatten)]
    client: ClientArgs,
}

#[derive(Args)]
pub struct UpdateArgs {
    id: String,
    #[arg(long)]
    name: Option<String>,
    /// The new URL to POST to.
    #[arg(long = "endpoint-url", id = "endpoint_url", value_name = "URL")]
    url: Option<String>,
    #[arg(long, value_delimiter = ',')]
    events: Option<Vec<String>>,
    #[arg(long, conflicts_with = "no_domain")]
    domain: Option<String>,
    /// Remove the domain scope.
    #[arg(long)]
    no_domain: bool,
    #[arg(long)]
    format: Option<String>,
    /// Turn Ed25519 (`v1a`) signatures on (true) or off (false).
    #[arg(long)]
    asymmetric: Option<bool>,
    #[command(flatten)]
    client: ClientArgs,
}

#[derive(Args)]
pub struct DeliveriesArgs {
    /// The endpoint id.
    id: String,
    /// pending, succeeded or failed.
    #[arg(long)]
    status: Option<String>,
    #[arg(long, default_value_t = 50)]
    limit: u32,
    /// One JSON object per line.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    client: ClientArgs,
}

fn print_json(value: &Value) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}", serde_json::to_string_pretty(value)?)?;
    Ok(())
}

fn print_secret(endpoint: &Value, verb: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{verb} webhook {}",
        endpoint["id"].as_str().unwrap_or("?")
    )?;
    writeln!(
        out,
        "secret: {}",
        endpoint["secret"].as_str().unwrap_or("?")
    )?;
    if let Some(key) = endpoint["public_key"].as_str() {
        writeln!(out, "public key: {key}")?;
    }
    eprintln!("Store the secret now: it is not shown again.");
    Ok(())
}

/// `evhost webhooks rotate-key`.
async fn rotate_key(config: Option<std::path::PathBuf>) -> anyhow::Result<()> {
    let config = crate::config::Config::load(config.as_deref())?;
    let store = crate::store::Store::connect(&config).await?;
    store.migrate().await?;
    let path = config.webhook_secret_key_file();
    let rotation = crate::webhooks::seal::rotate(&store, &path).await;
    store.close().await;
    let rotation = rotation.with_context(|| format!("rotating the key in {}", path.display()))?;
    println!(
        "rotated the webhook secret key {} -> {}: {} endpoint(s) re-sealed; the old key is kept in {}.previous",
        rotation.old_key,
        rotation.new_key,
        rotation.endpoints,
        path.display()
    );
    Ok(())
}

pub async fn run(command: WebhooksCommand) -> anyhow::Result<()> {
    use reqwest::Method;
    match command {
        WebhooksCommand::RotateKey { config } => rotate_key(config.config).await,
        WebhooksCommand::Add(a) => {
            let mut body = json!({ "name": a.name, "url": a.url, "events": a.events });
            if let Some(d) = a.domain {
                body["domain"] = d.into();
            }
            if let Some(f) = a.format {
                body["format"] = f.into();
            }
            if a.disabled {
                body["enabled"] = false.into();
            }
            if a.asymmetric {
                body["asymmetric"] = true.into();
            }
            let e = a
                .client
                .call(Method::POST, "/v1/webhooks", Some(&body))
                .await?;
            print_secret(&e, "added")
        }
        WebhooksCommand::List { json, client } => {
            let list = client.call(Method::GET, "/v1/webhooks", None).await?;
            let hooks = list["webhooks"].as_array().cloned().unwrap_or_default();
            let header = format!(
                "{:<35} {:<20} {:<9} {:<8} {:<40} EVENTS",
                "ID", "NAME", "ENABLED", "FAILURES", "URL"
            );
            print_rows(&hooks, json, &header, |h| {
                let events: Vec<&str> = h["events"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .collect();
                let enabled = match (h["enabled"].as_bool(), h["disabled_reason"].as_str()) {
                    (Some(true), _) => "yes".to_string(),
                    (_, Some(reason)) => format!("no:{reason}"),
                    _ => "no".to_string(),
                };
                format!(
                    "{:<35} {:<20} {:<9} {:<8} {:<40} {}",
                    h["id"].as_str().unwrap_or("-"),
                    h["name"].as_str().unwrap_or("-"),
                    enabled,
                    h["failure_count"],
                    h["url"].as_str().unwrap_or("-"),
                    events.join(",")
                )
            })
        }
        WebhooksCommand::Show(a) => {
            let path = format!("/v1/webhooks/{}", a.id);
            print_json(&a.client.call(Method::GET, &path, None).await?)
        }
        WebhooksCommand::Update(a) => {
            let mut body = json!({});
            if let Some(v) = a.name {
                body["name"] = v.into();
            }
            if let Some(v) = a.url {
                body["url"] = v.into();
            }
            if let Some(v) = a.events {
                body["events"] = v.into();
            }
            if let Some(v) = a.domain {
                body["domain"] = v.into();
            }
            if a.no_domain {
                body["domain"] = Value::Null;
            }
            if let Some(v) = a.format {
                body["format"] = v.into();
            }
            if let Some(v) = a.asymmetric {
                body["asymmetric"] = v.into();
            }
            if body.as_object().is_some_and(|o| o.is_empty()) {
                bail!(
                    "nothing to change: give --name, --endpoint-url, --events, --domain, --no-domain, --format or --asymmetric"
                );
            }
            let path = format!("/v1/webhooks/{}", a.id);
            print_json(&a.client.call(Method::PATCH, &path, Some(&body)).await?)
        }
        WebhooksCommand::Rm(a) => {
            let path = format!("/v1/webhooks/{}", a.id);
            a.client.call(Method::DELETE, &path, None).await?;
            println!("removed webhook {}", a.id);
            Ok(())
        }
        WebhooksCommand::Enable(a) => toggle(a, "enable").await,
        WebhooksCommand::Disable(a) => toggle(a, "disable").await,
        WebhooksCommand::RotateSecret(a) => {
            let path = format!("/v1/webhooks/{}/rotate-secret", a.id);
            let e = a.client.call(Method::POST, &path, None).await?;
            print_secret(&e, "rotated the secret of")
        }
        WebhooksCommand::Test(a) => {
            let path = format!("/v1/webhooks/{}/test", a.id);
            let d = a.client.call(Method::POST, &path, None).await?;
            let attempt = &d["attempt_log"][0];
            match attempt["status_code"].as_i64() {
                Some(code @ 200..=299) => {
                    println!(
                        "delivered: {code} in {:.1} ms (delivery {})",
                        attempt["latency_ms"].as_f64().unwrap_or(0.0),
                        d["id"].as_str().unwrap_or("?")
                    );
                    Ok(())
                }
                _ => bail!(
                    "the test ping failed: {} (delivery {})",
                    attempt["error"].as_str().unwrap_or("no answer"),
                    d["id"].as_str().unwrap_or("?")
                ),
            }
        }
        WebhooksCommand::Deliveries(a) => {
            let mut path = format!("/v1/webhooks/{}/deliveries?limit={}", a.id, a.limit);
            if let Some(s) = &a.status {
                path.push_str(&format!("&status={s}"));
            }
            let page = a.client.call(Method::GET, &path, None).await?;
            let rows = page["deliveries"].as_array().cloned().unwrap_or_default();
            let header = format!(
                "{:<36} {:<24} {:<9} {:<8} {:<6} {:<24} ERROR",
                "DELIVERY", "TYPE", "STATUS", "ATTEMPTS", "CODE", "CREATED"
            );
            print_rows(&rows, a.json, &header, |r| {
                format!(
                    "{:<36} {:<24} {:<9} {:<8} {:<6} {:<24} {}",
                    r["id"].as_str().unwrap_or("-"),
                    r["event_type"].as_str().unwrap_or("-"),
                    r["status"].as_str().unwrap_or("-"),
                    r["attempts"],
                    r["last_status_code"]
                        .as_i64()
                        .map_or("-".to_string(), |c| c.to_string()),
                    r["created_at"].as_str().unwrap_or("-"),
                    r["last_error"].as_str().unwrap_or("")
                )
            })
        }
        WebhooksCommand::Delivery(a) => {
            let path = format!("/v1/deliveries/{}", a.id);
            print_json(&a.client.call(Method::GET, &path, None).await?)
        }
        WebhooksCommand::Retry(a) => {
            let path = format!("/v1/deliveries/{}/retry", a.id);
            let d = a.client.call(Method::POST, &path, None).await?;
            println!(
                "delivery {} is due again ({})",
                a.id,
                d["next_attempt_at"].as_str().unwrap_or("now")
            );
            Ok(())
        }
        WebhooksCommand::Replay { id, since, client } => {
            let path = format!(
                "/v1/webhooks/{id}/replay?since={}",
                super::urlencode(&since)
            );
            let r = client.call(Method::POST, &path, None).await?;
            println!("{} failed deliveries are due again", r["replayed"]);
            Ok(())
        }
    }
}

async fn toggle(a: IdArgs, verb: &str) -> anyhow::Result<()> {
    let path = format!("/v1/webhooks/{}/{verb}", a.id);
    let e = a.client.call(reqwest::Method::POST, &path, None).await?;
    println!(
        "webhook {} is {}",
        a.id,
        if e["enabled"].as_bool() == Some(true) {
            "enabled"
        } else {
            "disabled"
        }
    );
    Ok(())
}
