//! Client-side caching through slotgate (`CLIENT TRACKING`).
//!
//! While any client tracks, one RESP3 connection per master serving slots runs
//! `CLIENT TRACKING ON BCAST` and hears every key modified on that master (`listener`).
//! slotgate keeps which client read which key (default mode; `client::ClientTracking` bounds
//! each client's share, invalidating its oldest key when full) and which prefixes each BCAST
//! client follows, and forwards each invalidation to exactly the clients that must hear it,
//! through a bounded inbox per client. A client writes an invalidation after the replies it
//! is still owed (a read answered before the write was announced reaches it before its
//! invalidation). When an invalidation connection (re)connects or slots change owner, every
//! tracking client gets a flush (a null invalidation): what was announced meanwhile may have
//! been missed.

pub mod client;
pub mod listener;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use arc_swap::ArcSwap;
use bytes::Bytes;
use dashmap::DashMap;
use tokio::sync::{Notify, mpsc};

/// Invalidations waiting for one client before it is disconnected as too slow.
pub const INBOX: usize = 1024;

/// With NOLOOP, the announcement of a key the client wrote that arrives within this time of
/// the write is not sent to it (one announcement per write; the client stays registered for
/// the key). Another client's write of the key announced separately still reaches it; one
/// the master announces in the same message as the client's own write does not.
const NOLOOP_GRACE: std::time::Duration = std::time::Duration::from_millis(500);

/// An invalidation on its way to a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// The keys; none means every key (a flush).
    pub keys: Option<Vec<Bytes>>,
    /// A flush's number (`Tracking::flushes` after it), so a client can skip the flushes
    /// made before it turned tracking on.
    pub flush: u64,
    /// For the client named in another client's `REDIRECT` (written as a message of
    /// `__redis__:invalidate`).
    pub redirected: bool,
}

/// Where one client receives invalidations.
#[derive(Debug)]
struct Sink {
    tx: mpsc::Sender<Delivery>,
    /// The client tracks (flushes reach it); otherwise it only receives redirected ones.
    tracking: bool,
}

/// A BCAST client and the prefixes it follows (none: every key).
#[derive(Debug, Clone)]
struct Broadcast {
    id: u64,
    prefixes: Arc<[Bytes]>,
}

/// Every client's tracking, shared by the client tasks and the invalidation connections.
#[derive(Debug, Default)]
pub struct Tracking {
    /// Keys read by default-mode clients, and the ids of the clients that read each.
    table: DashMap<Bytes, Vec<u64>>,
    /// Keys in `table` (kept beside it: DashMap's own count locks every shard).
    keys: std::sync::atomic::AtomicUsize,
    sinks: DashMap<u64, Sink>,
    bcast: ArcSwap<Vec<Broadcast>>,
    /// Keys NOLOOP clients wrote (client id, key), and when.
    own_writes: DashMap<(u64, Bytes), std::time::Instant>,
    /// Clients with tracking on; the invalidation connections run while there are any.
    pub clients: AtomicI64,
    /// Keys announced to clients (each key to each client counts once).
    pub invalidations: AtomicU64,
    /// Flushes sent to every tracking client (reconnects, slots changing owner).
    pub flushes: AtomicU64,
    /// Wakes the listener (the first client starts tracking, a connection is confirmed).
    wake: Notify,
    /// Whether every master serving slots has a confirmed invalidation connection.
    ready: tokio::sync::watch::Sender<bool>,
}

impl Tracking {
    /// Waits (at most `limit`) until every master serving slots announces its changes to
    /// slotgate: a client that turns tracking on hears of every change from its OK on.
    pub async fn wait_ready(&self, limit: std::time::Duration) {
        let mut rx = self.ready.subscribe();
        let _ = tokio::time::timeout(limit, rx.wait_for(|r| *r)).await;
    }

    /// Keys tracked for default-mode clients now.
    pub fn tracked_keys(&self) -> usize {
        self.keys.load(Ordering::Relaxed)
    }

    fn key_removed(&self) {
        let _ = self
            .keys
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
    }

    /// Registers where client `id` receives invalidations.
    fn open_sink(&self, id: u64, tracking: bool) -> Option<mpsc::Receiver<Delivery>> {
        if let Some(mut s) = self.sinks.get_mut(&id) {
            s.tracking = tracking;
            return None;
        }
        let (tx, rx) = mpsc::channel(INBOX);
        self.sinks.insert(id, Sink { tx, tracking });
        Some(rx)
    }

    fn set_tracking(&self, id: u64, tracking: bool) {
        if let Some(mut s) = self.sinks.get_mut(&id) {
            s.tracking = tracking;
        }
    }

    fn close_sink(&self, id: u64) {
        self.sinks.remove(&id);
    }

    /// Whether client `id` has an inbox.
    #[cfg(test)]
    fn has_sink(&self, id: u64) -> bool {
        self.sinks.contains_key(&id)
    }

    /// Client `id` read `key`: it hears of its next change. True when it was not tracked
    /// for this client yet.
    fn track(&self, id: u64, key: &Bytes) -> bool {
        match self.table.entry(key.clone()) {
            dashmap::Entry::Occupied(mut ids) => {
                if ids.get().contains(&id) {
                    return false;
                }
                ids.get_mut().push(id);
            }
            dashmap::Entry::Vacant(v) => {
                v.insert(vec![id]);
                self.keys.fetch_add(1, Ordering::Relaxed);
            }
        }
        true
    }

    /// While the table holds more than `limit` keys (0: no limit), forgets some (whichever
    /// come first, as Redis evicts at random) and announces them to their clients as if
    /// modified (Redis's `tracking-table-max-keys`).
    fn evict_over(&self, limit: usize) {
        while limit > 0 && self.tracked_keys() > limit {
            let Some(key) = self.table.iter().next().map(|e| e.key().clone()) else {
                break;
            };
            if let Some((_, ids)) = self.table.remove(&key) {
                self.key_removed();
                for id in ids {
                    self.deliver(
                        id,
                        Delivery {
                            keys: Some(vec![key.clone()]),
                            flush: 0,
                            redirected: false,
                        },
                    );
                }
            }
        }
    }

    /// Stops tracking `key` for client `id`; true when it was tracked.
    fn untrack(&self, id: u64, key: &[u8]) -> bool {
        let mut found = false;
        let mut empty = false;
        if let Some(mut ids) = self.table.get_mut(key) {
            if let Some(i) = ids.iter().position(|&x| x == id) {
                ids.swap_remove(i);
                found = true;
            }
            empty = ids.is_empty();
        }
        if empty && self.table.remove_if(key, |_, ids| ids.is_empty()).is_some() {
            self.key_removed();
        }
        found
    }

    /// Sets (or with `None` removes) client `id`'s BCAST prefixes.
    fn set_broadcast(&self, id: u64, prefixes: Option<Arc<[Bytes]>>) {
        self.bcast.rcu(|list| {
            let mut next: Vec<Broadcast> = list.iter().filter(|b| b.id != id).cloned().collect();
            if let Some(p) = &prefixes {
                next.push(Broadcast {
                    id,
                    prefixes: p.clone(),
                });
            }
            next
        });
    }

    fn started_tracking(&self) {
        if self.clients.fetch_add(1, Ordering::Relaxed) == 0 {
            self.wake.notify_one();
        }
    }

    fn stopped_tracking(&self) {
        self.clients.fetch_sub(1, Ordering::Relaxed);
    }

    /// A NOLOOP client wrote `key`: the announcement that follows is not sent to it.
    fn wrote(&self, id: u64, key: Bytes) {
        let now = std::time::Instant::now();
        if self.own_writes.len() >= 65_536 {
            self.own_writes
                .retain(|_, at| now.duration_since(*at) < NOLOOP_GRACE);
        }
        self.own_writes.insert((id, key), now);
    }

    /// Whether the announcement of `key` follows client `id`'s own write (and is not sent
    /// to it); the write is matched once.
    fn own_write(&self, id: u64, key: &Bytes) -> bool {
        if self.own_writes.is_empty() {
            return false;
        }
        self.own_writes
            .remove(&(id, key.clone()))
            .is_some_and(|(_, at)| at.elapsed() < NOLOOP_GRACE)
    }

    /// Forgets client `id`'s own writes (it left or turned NOLOOP off).
    fn forget_own_writes(&self, id: u64) {
        if !self.own_writes.is_empty() {
            self.own_writes.retain(|(owner, _), _| *owner != id);
        }
    }

    /// Keys modified on a master: each goes to the default-mode clients that read it (and
    /// is forgotten for them) and to the BCAST clients whose prefixes match it, except to a
    /// NOLOOP client that wrote it itself (which stays registered for it).
    pub fn invalidate(&self, keys: &[Bytes]) {
        let bcast = self.bcast.load();
        let mut due: HashMap<u64, Vec<Bytes>> = HashMap::new();
        for key in keys {
            if let Some((_, ids)) = self.table.remove(key) {
                self.key_removed();
                let mut kept = Vec::new();
                for id in ids {
                    if self.own_write(id, key) {
                        kept.push(id);
                    } else {
                        due.entry(id).or_default().push(key.clone());
                    }
                }
                for id in kept {
                    self.track(id, key);
                }
            }
            for b in bcast.iter() {
                if (b.prefixes.is_empty() || b.prefixes.iter().any(|p| key.starts_with(p)))
                    && !self.own_write(b.id, key)
                {
                    due.entry(b.id).or_default().push(key.clone());
                }
            }
        }
        for (id, keys) in due {
            self.deliver(
                id,
                Delivery {
                    keys: Some(keys),
                    flush: 0,
                    redirected: false,
                },
            );
        }
    }

    /// Every tracking client forgets every key.
    pub fn flush(&self) {
        self.table.clear();
        self.keys.store(0, Ordering::Relaxed);
        let flush = self.flushes.fetch_add(1, Ordering::Relaxed) + 1;
        let ids: Vec<u64> = self
            .sinks
            .iter()
            .filter(|s| s.tracking)
            .map(|s| *s.key())
            .collect();
        for id in ids {
            self.deliver(
                id,
                Delivery {
                    keys: None,
                    flush,
                    redirected: false,
                },
            );
        }
    }

    /// Hands `delivery` to client `id`; false when it has no inbox. A client whose inbox is
    /// full loses it (and is disconnected: an invalidation must not be dropped silently).
    pub fn deliver(&self, id: u64, delivery: Delivery) -> bool {
        let n = delivery.keys.as_ref().map_or(0, Vec::len) as u64;
        let sent = match self.sinks.get(&id) {
            Some(sink) => sink.tx.try_send(delivery).map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => true,
                mpsc::error::TrySendError::Closed(_) => false,
            }),
            None => return false,
        };
        match sent {
            Ok(()) => {
                self.invalidations.fetch_add(n, Ordering::Relaxed);
                true
            }
            Err(full) => {
                if full {
                    tracing::warn!(
                        client = id,
                        "client too slow to take its invalidations: disconnecting it"
                    );
                }
                // Its task sees the inbox closed.
                self.close_sink(id);
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(k: &str) -> Bytes {
        Bytes::copy_from_slice(k.as_bytes())
    }

    #[tokio::test]
    async fn an_invalidation_reaches_the_readers_once_and_matching_broadcasts() {
        let t = Tracking::default();
        let mut a = t.open_sink(1, true).unwrap();
        let mut b = t.open_sink(2, true).unwrap();
        assert!(t.track(1, &key("k")));
        assert!(!t.track(1, &key("k")));
        t.set_broadcast(2, Some(Arc::from(vec![key("user:")])));
        t.invalidate(&[key("k"), key("user:1"), key("other")]);
        let got = a.recv().await.unwrap();
        assert_eq!(got.keys, Some(vec![key("k")]));
        let got = b.recv().await.unwrap();
        assert_eq!(got.keys, Some(vec![key("user:1")]));
        // Forgotten once announced.
        t.invalidate(&[key("k")]);
        assert!(a.try_recv().is_err());
        assert_eq!(t.tracked_keys(), 0);
        assert_eq!(t.invalidations.load(Ordering::Relaxed), 2);
    }

    #[tokio::test]
    async fn a_full_table_announces_and_forgets_keys_beyond_its_limit() {
        let t = Tracking::default();
        let mut a = t.open_sink(1, true).unwrap();
        for k in ["a", "b", "c"] {
            t.track(1, &key(k));
        }
        t.track(2, &key("a"));
        assert_eq!(t.tracked_keys(), 3);
        t.evict_over(2);
        assert_eq!(t.tracked_keys(), 2);
        let got = a.recv().await.unwrap().keys.unwrap();
        assert_eq!(got.len(), 1);
        assert!(!t.untrack(1, &got[0]), "the announced key is forgotten");
        t.evict_over(0);
        assert_eq!(t.tracked_keys(), 2, "0 is no limit");
    }

    #[tokio::test]
    async fn a_flush_reaches_tracking_clients_only_and_a_full_inbox_closes() {
        let t = Tracking::default();
        let mut a = t.open_sink(1, true).unwrap();
        let mut target = t.open_sink(2, false).unwrap();
        t.track(1, &key("k"));
        t.flush();
        assert_eq!(a.recv().await.unwrap().keys, None);
        assert!(target.try_recv().is_err());
        assert_eq!(t.tracked_keys(), 0);
        for _ in 0..INBOX {
            assert!(t.deliver(
                1,
                Delivery {
                    keys: None,
                    flush: 1,
                    redirected: false
                }
            ));
        }
        assert!(!t.deliver(
            1,
            Delivery {
                keys: None,
                flush: 1,
                redirected: false
            }
        ));
        assert!(!t.has_sink(1));
        for _ in 0..INBOX {
            a.recv().await.unwrap();
        }
        assert!(a.recv().await.is_none(), "the client sees its inbox closed");
    }
}
