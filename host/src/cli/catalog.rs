//! `evhost catalog`: the event types this build knows, with their JSON Schemas. The
//! plugin SDKs generate their typed payloads from `evhost catalog --json`.

use clap::Args;

use crate::event::Catalog;

#[derive(Args)]
pub struct CatalogArgs {
    /// Every type with its JSON Schema, as `GET /v1/event-types` answers.
    #[arg(long)]
    json: bool,
}

pub fn run(args: CatalogArgs) -> anyhow::Result<()> {
    let catalog = Catalog::new(false, false);
    let mut text = String::new();
    if args.json {
        let doc = serde_json::json!({ "event_types": catalog.types() });
        text = serde_json::to_string_pretty(&doc)? + "\n";
    } else {
        let width = catalog
            .types()
            .iter()
            .map(|t| t.name.len())
            .max()
            .unwrap_or(0);
        for t in catalog.types() {
            text += &format!("{:<width$}  {}\n", t.name, t.description);
        }
    }
    // A reader that stops early (`| head`) is not an error.
    match std::io::Write::write_all(&mut std::io::stdout().lock(), text.as_bytes()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}
