//! Graceful restart: the `MOVING` push told to clients that turned maintenance notifications
//! on (`CLIENT MAINT_NOTIFICATIONS ON`, RESP3), so they reconnect on their own instead of
//! meeting a closed connection.

use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;

use crate::config::DrainConfig;
use crate::resp::Proto;
use crate::resp::encode::Encoder;

/// Sequence numbers of the pushes this process sends.
static SEQUENCE: AtomicU64 = AtomicU64::new(1);

/// `MOVING <seq> <ttl> <endpoint>` as a RESP3 push; the endpoint is null when none is
/// configured (the client reconnects to the address it used, after half the ttl).
pub fn moving_frame(config: &DrainConfig) -> Bytes {
    let seq = SEQUENCE.fetch_add(1, Ordering::Relaxed);
    let mut e = Encoder::new(Proto::Resp3);
    e.push(4)
        .bulk(b"MOVING")
        .integer(seq as i64)
        .integer(config.moving_ttl_s as i64);
    if config.moving_endpoint.is_empty() {
        e.null();
    } else {
        e.bulk(config.moving_endpoint.as_bytes());
    }
    e.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn moving_names_the_endpoint_or_null() {
        let mut c = DrainConfig::default();
        let f = moving_frame(&c);
        assert!(f.starts_with(b">4\r\n$6\r\nMOVING\r\n:"));
        assert!(f.ends_with(b":2\r\n_\r\n"), "{f:?}");
        c.moving_endpoint = "10.0.0.5:6380".into();
        let f = moving_frame(&c);
        assert!(f.ends_with(b"$13\r\n10.0.0.5:6380\r\n"), "{f:?}");
        assert_eq!(
            crate::resp::ReplyScanner::new().next(&f).unwrap(),
            Some(f.len())
        );
    }
}
