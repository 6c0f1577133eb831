//! Test access to replies captured from real servers (`tests/fixtures/servers/`).

/// The bytes of one captured reply file.
pub fn server_reply(name: &str) -> Vec<u8> {
    let path = format!(
        "{}/tests/fixtures/servers/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}
