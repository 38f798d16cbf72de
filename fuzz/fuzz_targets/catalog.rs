//! Catalog validation of arbitrary payloads against every known type and against
//! arbitrary type names. Allowing unknown fields only ever accepts more; a payload
//! the catalog fixes (`276.0` for an integer) keeps the same numbers.
#![no_main]

use evhost::event::Catalog;
use libfuzzer_sys::fuzz_target;
use serde_json::value::RawValue;

fuzz_target!(|input: (u8, &str, &str)| {
    let (pick, name, data) = input;
    let Ok(data) = serde_json::from_str::<Box<RawValue>>(data) else {
        return;
    };
    // Made once: making a catalog builds every type's JSON Schema.
    static CATALOGS: std::sync::OnceLock<(Catalog, Catalog)> = std::sync::OnceLock::new();
    let (strict, lenient) =
        CATALOGS.get_or_init(|| (Catalog::new(false, false), Catalog::new(true, true)));
    let types = strict.types();
    let kind = match types.get(usize::from(pick)) {
        Some(info) => info.name.to_string(),
        None => name.to_string(),
    };
    if strict.validate(&kind, &data).is_ok() {
        assert!(
            lenient.validate(&kind, &data).is_ok(),
            "{kind}: accepted strictly, refused leniently: {}",
            data.get()
        );
    }
    if let Err(error) = lenient.validate(&kind, &data) {
        let _ = (error.to_string(), error.field());
    }
    // A payload fixed (integers written as floats) is one the catalog accepts, and
    // the same JSON numbers.
    if let Ok(Some(fixed)) = strict.validate_or_fix(&kind, &data) {
        assert!(strict.validate(&kind, &fixed).is_ok());
        let before: serde_json::Value = serde_json::from_str(data.get()).unwrap();
        let after: serde_json::Value = serde_json::from_str(fixed.get()).unwrap();
        assert_eq!(
            same_numbers(&before),
            same_numbers(&after),
            "{}",
            data.get()
        );
    }
});

/// Every number in `value` as an f64, in document order.
fn same_numbers(value: &serde_json::Value) -> Vec<f64> {
    match value {
        serde_json::Value::Number(n) => vec![n.as_f64().unwrap_or(f64::NAN)],
        serde_json::Value::Array(items) => items.iter().flat_map(same_numbers).collect(),
        serde_json::Value::Object(map) => map.values().flat_map(same_numbers).collect(),
        _ => Vec::new(),
    }
}
