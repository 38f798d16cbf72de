//! The ingest wire formats: evhost's JSON, CloudEvents structured and binary, and
//! both kinds of batch, then the checks a draft meets before it is logged (catalog,
//! event id). Nothing may panic; a batch of one agrees with the single form.
#![no_main]

use evhost::event::wire::{self, Draft};
use evhost::event::{Catalog, check_event_id};
use libfuzzer_sys::fuzz_target;

/// The four catalogs (custom types on or off, unknown fields on or off), made once:
/// making one builds every type's JSON Schema.
fn catalog(mode: u8) -> &'static Catalog {
    static CATALOGS: std::sync::OnceLock<[Catalog; 4]> = std::sync::OnceLock::new();
    let all = CATALOGS.get_or_init(|| {
        [(false, false), (false, true), (true, false), (true, true)]
            .map(|(custom, unknown)| Catalog::new(custom, unknown))
    });
    &all[usize::from((mode >> 4) & 3)]
}

fuzz_target!(|input: &[u8]| {
    let Some((&mode, rest)) = input.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    let catalog = catalog(mode);
    match mode % 3 {
        0 => {
            let single = wire::parse_plain(text);
            let batch = wire::parse_plain_batch(&format!("[{text}]"));
            agree(&single, &batch, text);
            single.iter().for_each(|d| admit(catalog, d));
        }
        1 => {
            let single = wire::parse_structured(text);
            let batch = wire::parse_structured_batch(&format!("[{text}]"));
            agree(&single, &batch, text);
            single.iter().for_each(|d| admit(catalog, d));
            for draft in wire::parse_plain_batch(text).iter().flatten() {
                admit(catalog, draft);
            }
        }
        _ => {
            // Header lines `name: value` up to an empty line, then the body.
            let (head, body) = text.split_once("\n\n").unwrap_or((text, ""));
            let mut headers = http::HeaderMap::new();
            for line in head.lines() {
                let Some((name, value)) = line.split_once(':') else {
                    continue;
                };
                let (Ok(name), Ok(value)) = (
                    http::HeaderName::from_bytes(name.trim().as_bytes()),
                    http::HeaderValue::from_bytes(value.trim().as_bytes()),
                ) else {
                    continue;
                };
                headers.append(name, value);
            }
            if wire::is_binary_mode(&headers)
                && let Ok(draft) = wire::parse_binary(&headers, body)
            {
                admit(catalog, &draft);
            }
            let _ = wire::is_json_media_type(head);
        }
    }
});

/// A text that is one event parses alone exactly when `[text]` parses as a batch.
/// (`[text]` may hold no event, or several, when the text is not one value.)
fn agree<E>(single: &Result<Draft, E>, batch: &Result<Vec<Draft>, E>, text: &str) {
    match batch {
        Ok(drafts) if drafts.len() != 1 => {}
        _ => assert_eq!(single.is_ok(), batch.is_ok(), "{text:?}"),
    }
}

/// The checks ingest makes before a draft is logged.
fn admit(catalog: &Catalog, draft: &Draft) {
    let _ = catalog.validate(&draft.kind, &draft.data);
    if let Some(id) = &draft.id {
        let _ = check_event_id(id);
    }
    // Data ingest keeps (as it came) is one JSON value any reader can read.
    if evhost::ingest::data_problem(draft.data.get()).is_none() {
        serde_json::from_str::<serde_json::Value>(draft.data.get()).expect("data is JSON");
    }
}
