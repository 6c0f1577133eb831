//! The subscription confirmations a client is owed, in the order it asked, once its
//! subscriptions span several connections (keyspace notifications subscribe on every
//! master): each is written when every connection it went to has confirmed it, with the
//! subscription count a single server would have given.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::resp::Proto;
use crate::resp::encode::Encoder;

/// A connection a confirmation comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// The connection of classic channels and patterns (the pub/sub home master).
    Home,
    /// The keyspace-notification connection to this master.
    Master(Arc<str>),
}

/// One confirmation owed to the client.
#[derive(Debug)]
struct Owed {
    /// `subscribe`, `psubscribe`, `unsubscribe` or `punsubscribe`.
    kind: &'static str,
    /// The channel or pattern; none for an unsubscribe from nothing.
    name: Option<Bytes>,
    /// The client's channels and patterns once this one is applied.
    count: usize,
    /// Connections whose confirmation is still awaited.
    waiting: Vec<Source>,
    since: Instant,
}

/// The confirmations owed, oldest first.
#[derive(Debug, Default)]
pub struct Confirmations {
    queue: VecDeque<Owed>,
}

impl Confirmations {
    /// Owes a confirmation, written once each of `waiting` has confirmed it (at once when
    /// empty, after the ones owed before it).
    pub fn owe(
        &mut self,
        kind: &'static str,
        name: Option<Bytes>,
        count: usize,
        waiting: Vec<Source>,
    ) {
        self.queue.push_back(Owed {
            kind,
            name,
            count,
            waiting,
            since: Instant::now(),
        });
    }

    /// Whether confirmations are still owed (the client's next command waits for them, as
    /// one server would answer it after them).
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Stops waiting for connections that have not confirmed within `limit` (a stopped
    /// node): the subscription holds once it answers. True when something changed.
    pub fn expire(&mut self, limit: Duration) -> bool {
        let mut changed = false;
        for owed in &mut self.queue {
            if !owed.waiting.is_empty() && owed.since.elapsed() >= limit {
                owed.waiting.clear();
                changed = true;
            }
        }
        changed
    }

    /// A node's confirmation `kind name` arrived from `from`; false when none was owed
    /// (the frame is dropped).
    pub fn confirmed(&mut self, kind: &[u8], name: &[u8], from: &Source) -> bool {
        for owed in &mut self.queue {
            if owed.kind.as_bytes().eq_ignore_ascii_case(kind)
                && owed.name.as_deref() == Some(name)
                && let Some(i) = owed.waiting.iter().position(|s| s == from)
            {
                owed.waiting.swap_remove(i);
                return true;
            }
        }
        false
    }

    /// A connection is gone (closed, replaced, its node no longer a master): nothing owed
    /// waits for it any more (what it carried is subscribed again elsewhere).
    pub fn forget(&mut self, from: &Source) {
        for owed in &mut self.queue {
            owed.waiting.retain(|s| s != from);
        }
    }

    /// Whether something owed still waits for a keyspace connection to a master.
    pub fn waits_for_master(&self) -> bool {
        self.queue
            .iter()
            .any(|o| o.waiting.iter().any(|s| matches!(s, Source::Master(_))))
    }

    /// The frames of the confirmations complete at the head of the queue, in order.
    pub fn ready(&mut self, proto: Proto) -> Option<Bytes> {
        let mut e: Option<Encoder> = None;
        while self.queue.front().is_some_and(|o| o.waiting.is_empty()) {
            let owed = self.queue.pop_front()?;
            let e = e.get_or_insert_with(|| Encoder::new(proto));
            e.push(3);
            e.bulk(owed.kind.as_bytes());
            match &owed.name {
                Some(n) => e.bulk(n),
                None => e.null(),
            };
            e.integer(owed.count as i64);
        }
        e.map(Encoder::finish)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn master(a: &str) -> Source {
        Source::Master(Arc::from(a))
    }

    #[test]
    fn written_in_order_once_every_connection_confirmed() {
        let mut c = Confirmations::default();
        c.owe(
            "subscribe",
            Some(Bytes::from_static(b"__keyspace@0__:k")),
            1,
            vec![master("a"), master("b")],
        );
        c.owe(
            "subscribe",
            Some(Bytes::from_static(b"news")),
            2,
            vec![Source::Home],
        );
        assert!(c.confirmed(b"subscribe", b"news", &Source::Home));
        assert_eq!(c.ready(Proto::Resp2), None, "the first is still owed");
        assert!(c.confirmed(b"SUBSCRIBE", b"__keyspace@0__:k", &master("a")));
        assert!(!c.confirmed(b"subscribe", b"__keyspace@0__:k", &master("c")));
        assert_eq!(c.ready(Proto::Resp2), None);
        c.forget(&master("b"));
        assert_eq!(
            c.ready(Proto::Resp2).unwrap(),
            &b"*3\r\n$9\r\nsubscribe\r\n$16\r\n__keyspace@0__:k\r\n:1\r\n\
               *3\r\n$9\r\nsubscribe\r\n$4\r\nnews\r\n:2\r\n"[..]
        );
        assert!(!c.waits_for_master());
    }

    #[test]
    fn a_connection_that_never_confirms_is_not_waited_for_forever() {
        let mut c = Confirmations::default();
        c.owe(
            "psubscribe",
            Some(Bytes::from_static(b"p")),
            1,
            vec![master("a")],
        );
        assert!(!c.expire(Duration::from_secs(5)));
        assert!(c.ready(Proto::Resp2).is_none());
        assert!(c.expire(Duration::ZERO));
        assert!(c.ready(Proto::Resp2).is_some());
        assert!(c.is_empty());
    }

    #[test]
    fn an_unsubscribe_from_nothing_is_a_null_channel_push() {
        let mut c = Confirmations::default();
        c.owe("unsubscribe", None, 0, Vec::new());
        assert_eq!(
            c.ready(Proto::Resp3).unwrap(),
            &b">3\r\n$11\r\nunsubscribe\r\n_\r\n:0\r\n"[..]
        );
    }
}
