//! The `CLUSTER NODES` text parser and the `CLUSTER SHARDS` reply parser.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _ = slotgate::topology::nodes::parse_nodes(&text, "127.0.0.1");
    let _ = slotgate::topology::shards::parse_shards(data, "127.0.0.1", false);
    let _ = slotgate::topology::shards::parse_shards(data, "127.0.0.1", true);
});
