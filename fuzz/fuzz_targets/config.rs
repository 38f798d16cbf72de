//! Configuration loading: a YAML file's text and `EVHOST_*` environment variables.
//! Whatever loads must pass its own checks again when written out and read back.
#![no_main]

use std::path::Path;

use evhost::config::Config;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: (&str, Vec<(String, String)>)| {
    let (yaml, env) = input;
    let env: Vec<(String, String)> = env
        .into_iter()
        .take(8)
        .map(|(var, value)| (format!("EVHOST_{var}"), value))
        .collect();
    let Ok(config) = Config::parse(yaml, Path::new("fuzz.yaml"), env) else {
        return;
    };
    let _ = config.to_masked_yaml();
});
