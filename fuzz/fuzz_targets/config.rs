//! The config loader: YAML parsing, then validation.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(config) = slotgate::config::Config::from_yaml(text) {
        let _ = config.validate();
    }
});
