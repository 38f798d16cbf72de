//! A receiver's `Retry-After` header: seconds or an HTTP date. Digits alone are
//! always that many seconds; nothing panics.
#![no_main]

use evhost::webhooks::parse_retry_after;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: (&str, i64)| {
    let (value, now_s) = input;
    let Some(now) = chrono::DateTime::from_timestamp(now_s % 253_402_300_799, 0) else {
        return;
    };
    let wish = parse_retry_after(value, now);
    if let Ok(seconds) = value.trim().parse::<u64>() {
        assert_eq!(wish, Some(std::time::Duration::from_secs(seconds)));
    }
});
