//! The keyspace subscriptions slotgate makes on every master, counted over all clients, so
//! that `PUBSUB NUMSUB` and `NUMPAT` summed over the masters count each of them once.

use bytes::Bytes;
use dashmap::DashMap;

/// Per fanned channel and pattern, how many clients hold it.
#[derive(Debug, Default)]
pub struct Fanned {
    channels: DashMap<Bytes, usize>,
    patterns: DashMap<Bytes, usize>,
}

impl Fanned {
    fn map(&self, pattern: bool) -> &DashMap<Bytes, usize> {
        if pattern {
            &self.patterns
        } else {
            &self.channels
        }
    }

    /// A client subscribed `name` on every master.
    pub fn add(&self, pattern: bool, name: &Bytes) {
        *self.map(pattern).entry(name.clone()).or_insert(0) += 1;
    }

    /// A client dropped `name`.
    pub fn remove(&self, pattern: bool, name: &[u8]) {
        self.map(pattern).remove_if_mut(name, |_, n| {
            *n = n.saturating_sub(1);
            *n == 0
        });
    }

    /// slotgate's clients subscribed to `channel` on every master.
    pub fn subscribers(&self, channel: &[u8]) -> usize {
        self.channels.get(channel).map_or(0, |n| *n)
    }

    /// Distinct patterns slotgate's clients hold on every master.
    pub fn patterns(&self) -> usize {
        self.patterns.len()
    }

    /// `PUBSUB NUMSUB`'s count for `channel` summed over `masters` masters, with each
    /// fanned subscription counted once.
    pub fn numsub(&self, channel: &[u8], summed: i64, masters: usize) -> i64 {
        let extra = self.subscribers(channel) * masters.saturating_sub(1);
        (summed - extra as i64).max(0)
    }

    /// `PUBSUB NUMPAT` summed over `masters` masters, with each fanned pattern counted once.
    pub fn numpat(&self, summed: i64, masters: usize) -> i64 {
        let extra = self.patterns() * masters.saturating_sub(1);
        (summed - extra as i64).max(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_fanned_subscription_counts_once() {
        let f = Fanned::default();
        let ch = Bytes::from_static(b"__keyevent@0__:set");
        let pat = Bytes::from_static(b"__keyspace@0__:*");
        f.add(false, &ch);
        f.add(false, &ch);
        f.add(true, &pat);
        f.add(true, &pat);
        // Two clients on three masters: 6 counted, 2 subscribers; plus one direct subscriber.
        assert_eq!(f.numsub(&ch, 7, 3), 3);
        assert_eq!(f.numsub(b"other", 4, 3), 4);
        // One pattern (held by two clients) counted by each of three masters, plus one more.
        assert_eq!(f.numpat(4, 3), 2);
        f.remove(true, &pat);
        assert_eq!(f.patterns(), 1);
        f.remove(true, &pat);
        assert_eq!(f.patterns(), 0);
        f.remove(false, &ch);
        assert_eq!(f.subscribers(&ch), 1);
        f.remove(false, b"never");
        assert_eq!(f.numsub(&ch, 0, 3), 0);
    }
}
