//! `evhost dead-letters …`: rows the database refused for good, over the API.

use std::io::Write;

use clap::{Args, Subcommand};

use super::{ClientArgs, print_rows};

#[derive(Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct DeadLettersArgs {
    #[command(subcommand)]
    command: Option<DeadLettersCommand>,
    /// With no subcommand: list them.
    #[command(flatten)]
    list: ListArgs,
}

#[derive(Subcommand)]
enum DeadLettersCommand {
    /// List the dead letters, newest first (the default).
    List(ListArgs),
    /// Show one dead letter as JSON: the refused row and the database's error.
    Show(IdArgs),
    /// Write a dead letter's row again, once its cause is fixed (exit 1 if it is
    /// refused again).
    Retry(IdArgs),
    /// Give a dead letter's row up for good.
    Discard(IdArgs),
}

#[derive(Args)]
struct ListArgs {
    /// event, record or delivery.
    #[arg(long)]
    kind: Option<String>,
    #[arg(long, default_value_t = 50)]
    limit: u32,
    /// One JSON object per line.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    client: ClientArgs,
}

#[derive(Args)]
struct IdArgs {
    /// The dead letter's id.
    id: i64,
    #[command(flatten)]
    client: ClientArgs,
}

pub async fn run(args: DeadLettersArgs) -> anyhow::Result<()> {
    use reqwest::Method;
    match args.command.unwrap_or(DeadLettersCommand::List(args.list)) {
        DeadLettersCommand::List(a) => {
            let mut path = format!("/v1/dead-letters?limit={}", a.limit);
            if let Some(kind) = &a.kind {
                path.push_str(&format!("&kind={}", super::urlencode(kind)));
            }
            let page = a.client.call(Method::GET, &path, None).await?;
            let rows = page["dead_letters"].as_array().cloned().unwrap_or_default();
            if rows.is_empty() && !a.json {
                println!("no dead letters");
                return Ok(());
            }
            let header = format!(
                "{:<8} {:<7} {:<40} {:<8} {:<27} ERROR",
                "ID", "KIND", "KEY", "ATTEMPTS", "LAST"
            );
            print_rows(&rows, a.json, &header, |r| {
                format!(
                    "{:<8} {:<7} {:<40} {:<8} {:<27} {}",
                    r["id"],
                    r["kind"].as_str().unwrap_or("-"),
                    r["key"].as_str().unwrap_or("-"),
                    r["attempts"],
                    r["last_set_aside"].as_str().unwrap_or("-"),
                    r["error"].as_str().unwrap_or("-")
                )
            })
        }
        DeadLettersCommand::Show(a) => {
            let d = a
                .client
                .call(Method::GET, &format!("/v1/dead-letters/{}", a.id), None)
                .await?;
            let mut out = std::io::stdout().lock();
            writeln!(out, "{}", serde_json::to_string_pretty(&d)?)?;
            Ok(())
        }
        DeadLettersCommand::Retry(a) => {
            let path = format!("/v1/dead-letters/{}/retry", a.id);
            let r = a.client.call(Method::POST, &path, None).await?;
            match r["outcome"].as_str() {
                Some("stored") => println!(
                    "dead letter {}: its deliveries are stored and will be sent; the dead letter is gone",
                    a.id
                ),
                Some("already_in_log") => println!(
                    "dead letter {}: the log already had the event; the dead letter is gone",
                    a.id
                ),
                _ => println!(
                    "dead letter {}: written to the log; the dead letter is gone",
                    a.id
                ),
            }
            Ok(())
        }
        DeadLettersCommand::Discard(a) => {
            let path = format!("/v1/dead-letters/{}", a.id);
            a.client.call(Method::DELETE, &path, None).await?;
            println!("dead letter {} discarded", a.id);
            Ok(())
        }
    }
}
