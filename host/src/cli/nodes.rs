//! `evhost nodes`: the daemons sharing the database, over the API.

use clap::Args;

use super::{ClientArgs, print_rows};

#[derive(Args)]
pub struct NodesArgs {
    /// One JSON object per line.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    client: ClientArgs,
}

pub async fn run(args: NodesArgs) -> anyhow::Result<()> {
    let list = args
        .client
        .call(reqwest::Method::GET, "/v1/nodes", None)
        .await?;
    let nodes = list["nodes"].as_array().cloned().unwrap_or_default();
    let header = format!(
        "{:<36} {:<11} {:<20} {:<8} {:<27} {:>12} {:>8}",
        "NODE", "STATE", "HOST", "PID", "LAST HEARTBEAT", "UNDISPATCHED", "LEASED"
    );
    print_rows(&nodes, args.json, &header, |n| {
        let mut state = n["state"].as_str().unwrap_or("-").to_string();
        if let Some(by) = n["taken_over_by"].as_str() {
            state = format!("{state} by {by}");
        }
        format!(
            "{:<36} {:<11} {:<20} {:<8} {:<27} {:>12} {:>8}",
            n["node"].as_str().unwrap_or("-"),
            state,
            n["hostname"].as_str().unwrap_or("-"),
            n["pid"],
            n["last_heartbeat"].as_str().unwrap_or("-"),
            n["undispatched_rows"],
            n["leased_deliveries"]
        )
    })
}
