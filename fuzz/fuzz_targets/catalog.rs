//! Catalog validation of arbitrary payloads against every known type and against
//! arbitrary type names. Allowing unknown fields only ever accepts more.
#![no_main]

use evhost::event::Catalog;
use libfuzzer_sys::fuzz_target;
use serde_json::value::RawValue;

fuzz_target!(|input: (u8, &str, &str)| {
    let (pick, name, data) = input;
    let Ok(data) = serde_json::from_str::<Box<RawValue>>(data) else {
        return;
    };
    let strict = Catalog::new(false, false);
    let lenient = Catalog::new(true, true);
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
});
