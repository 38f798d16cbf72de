//! A plugin's sidecar (`<name>.toml`): whatever it asks, the limits it loads with
//! stay within the daemon's ceilings.
#![no_main]

use evhost::config::PluginsConfig;
use evhost::plugins::manifest::Manifest;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    let options = PluginsConfig::default();
    if let Ok(manifest) = Manifest::parse(text, &options) {
        assert!(manifest.memory_mib >= 1);
        assert!(manifest.memory_mib <= options.max_memory_mib.max(options.memory_mib));
        assert!(!manifest.timeout.is_zero());
        assert!(manifest.timeout <= options.max_timeout.max(options.timeout));
    }
});
