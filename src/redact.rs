//! Secrets kept out of sight: `CONFIG GET` answered from a master with its secrets redacted
//! (a client of slotgate never reads the password slotgate uses with the cluster, nor any
//! other secret), and `Secret`, a password that debug output and logs show as redacted.

use bytes::Bytes;

use crate::resp::reply::{bulk_body, pair_elements};
use crate::resp::{Encoder, Proto};

/// What a redacted value reads as.
pub const REDACTED: &[u8] = b"<redacted>";

/// A password: `{:?}` shows `<redacted>`, so a struct holding one can be logged.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: &str) -> Secret {
        Secret(s.to_string())
    }

    /// The password itself, for the one place that sends it (AUTH on a backend connection).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

impl From<String> for Secret {
    fn from(s: String) -> Secret {
        Secret(s)
    }
}

/// Whether a configuration parameter holds a secret: the ones Redis and Valkey name, and
/// any parameter whose name contains `pass`.
pub fn is_secret(name: &[u8]) -> bool {
    const SECRETS: &[&[u8]] = &[
        b"requirepass",
        b"masterauth",
        b"masteruser",
        b"primaryauth",
        b"primaryuser",
        b"tls-key-file-pass",
        b"tls-client-key-file-pass",
    ];
    let lower = name.to_ascii_lowercase();
    SECRETS.contains(&&lower[..]) || lower.windows(4).any(|w| w == b"pass")
}

/// A `CONFIG GET` reply (a flat array of name/value pairs, or a RESP3 map) with the values
/// of secret parameters replaced. A reply that is not such a list (an error) passes.
pub fn config_get(reply: Bytes, proto: Proto) -> Bytes {
    let Some(items) = pair_elements(&reply) else {
        return reply;
    };
    if !items
        .chunks(2)
        .any(|p| bulk_body(p[0]).is_some_and(is_secret))
    {
        return reply;
    }
    let mut e = Encoder::new(proto);
    e.map(items.len() / 2);
    for p in items.chunks(2) {
        e.raw(p[0]);
        if bulk_body(p[0]).is_some_and(is_secret) {
            e.bulk(REDACTED);
        } else {
            e.raw(p[1]);
        }
    }
    e.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_redacted_in_both_protocols() {
        let r2 = Bytes::from_static(
            b"*6\r\n$10\r\nmasterauth\r\n$6\r\nsecret\r\n$9\r\nmaxmemory\r\n$1\r\n0\r\n$17\r\ntls-key-file-pass\r\n$1\r\nx\r\n",
        );
        let out = config_get(r2, Proto::Resp2);
        assert!(!out.windows(6).any(|w| w == b"secret"));
        assert_eq!(
            &out[..],
            &b"*6\r\n$10\r\nmasterauth\r\n$10\r\n<redacted>\r\n$9\r\nmaxmemory\r\n$1\r\n0\r\n$17\r\ntls-key-file-pass\r\n$10\r\n<redacted>\r\n"[..]
        );
        let r3 = Bytes::from_static(b"%1\r\n$11\r\nrequirepass\r\n$2\r\npw\r\n");
        assert_eq!(
            &config_get(r3, Proto::Resp3)[..],
            b"%1\r\n$11\r\nrequirepass\r\n$10\r\n<redacted>\r\n"
        );
        let plain = Bytes::from_static(b"*2\r\n$4\r\nsave\r\n$0\r\n\r\n");
        assert_eq!(config_get(plain.clone(), Proto::Resp2), plain);
        assert!(is_secret(b"MASTERAUTH") && is_secret(b"my-password") && !is_secret(b"port"));
    }
}
