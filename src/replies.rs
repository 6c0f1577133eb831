//! The error replies slotgate sends from more than one place, written once: the texts Redis
//! Cluster uses for keys across slots and for slots without a master, and Redis's arity
//! error.

use bytes::Bytes;

/// Keys of one request in different slots.
pub const CROSSSLOT: &str = "CROSSSLOT Keys in request don't hash to the same slot";
/// No master serves any slot.
pub const CLUSTER_DOWN: &str = "CLUSTERDOWN The cluster is down";
/// No master serves the request's slot.
pub const SLOT_NOT_SERVED: &str = "CLUSTERDOWN Hash slot not served";

/// `-CROSSSLOT ...`.
pub fn crossslot() -> Bytes {
    Bytes::from_static(b"-CROSSSLOT Keys in request don't hash to the same slot\r\n")
}

/// `-CLUSTERDOWN The cluster is down`.
pub fn cluster_down() -> Bytes {
    Bytes::from_static(b"-CLUSTERDOWN The cluster is down\r\n")
}

/// `-CLUSTERDOWN Hash slot not served`.
pub fn slot_not_served() -> Bytes {
    Bytes::from_static(b"-CLUSTERDOWN Hash slot not served\r\n")
}

/// Redis's arity error text for a command (`get`) or subcommand (`config|get`).
pub fn wrong_args_text(name: &str) -> String {
    format!(
        "ERR wrong number of arguments for '{}' command",
        name.to_ascii_lowercase()
    )
}

/// Redis's arity error.
pub fn wrong_args(name: &str) -> Bytes {
    crate::resp::encode::error(&wrong_args_text(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn static_replies_match_their_texts() {
        assert_eq!(crossslot(), crate::resp::encode::error(CROSSSLOT));
        assert_eq!(cluster_down(), crate::resp::encode::error(CLUSTER_DOWN));
        assert_eq!(
            slot_not_served(),
            crate::resp::encode::error(SLOT_NOT_SERVED)
        );
        assert_eq!(
            &wrong_args("CONFIG|GET")[..],
            b"-ERR wrong number of arguments for 'config|get' command\r\n"
        );
    }
}
