//! Key to hash slot: CRC16-XMODEM of the key (or of its hash tag) modulo 16384, as the Redis
//! Cluster specification defines it.

/// Number of hash slots in a Redis Cluster.
pub const SLOT_COUNT: usize = 16384;

/// The part of `key` that is hashed: the content of the first `{...}` when it is non-empty,
/// otherwise the whole key.
pub fn hash_tag(key: &[u8]) -> &[u8] {
    if let Some(open) = key.iter().position(|&b| b == b'{')
        && let Some(len) = key[open + 1..].iter().position(|&b| b == b'}')
        && len > 0
    {
        return &key[open + 1..open + 1 + len];
    }
    key
}

/// The hash slot of `key`.
pub fn slot_of(key: &[u8]) -> u16 {
    crc16::State::<crc16::XMODEM>::calculate(hash_tag(key)) % SLOT_COUNT as u16
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc16_vector_from_the_cluster_spec() {
        assert_eq!(
            crc16::State::<crc16::XMODEM>::calculate(b"123456789"),
            0x31C3
        );
    }

    #[test]
    fn known_slots() {
        // Values as reported by `CLUSTER KEYSLOT`.
        assert_eq!(slot_of(b"foo"), 12182);
        assert_eq!(slot_of(b"bar"), 5061);
        assert_eq!(slot_of(b"hello"), 866);
        assert_eq!(slot_of(b""), 0);
    }

    #[test]
    fn hash_tags_follow_the_spec() {
        // Examples from the cluster specification.
        assert_eq!(hash_tag(b"{user1000}.following"), b"user1000");
        assert_eq!(hash_tag(b"foo{}{bar}"), b"foo{}{bar}");
        assert_eq!(hash_tag(b"foo{{bar}}zap"), b"{bar");
        assert_eq!(hash_tag(b"foo{bar}{zap}"), b"bar");
        assert_eq!(hash_tag(b"{}"), b"{}");
        assert_eq!(hash_tag(b"no-tag{"), b"no-tag{");
        assert_eq!(
            slot_of(b"{user1000}.following"),
            slot_of(b"{user1000}.followers")
        );
        assert_eq!(slot_of(b"{user1000}.following"), slot_of(b"user1000"));
    }
}
