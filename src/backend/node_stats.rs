//! Per-node figures for /metrics: replies, error replies, requests that timed out, sampled
//! latency, and connections by kind and state. Counters are per worker thread underneath
//! (connection tasks run on the workers); one `NodeStats` per node and cluster, shared by
//! every connection to that node.

use std::sync::atomic::{AtomicI64, Ordering};

use crate::counter::Counter;
use crate::histogram::Histogram;

/// What a backend connection is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ConnKind {
    /// Shared, multiplexed: plain commands of many clients.
    #[default]
    Shared,
    /// Leased to one client: a transaction, a blocking command, WAIT.
    Session,
    /// A client's subscriptions.
    Subscriber,
    /// Topology queries.
    Control,
    /// Invalidations of the keys modified on a master (client-side caching).
    Tracking,
}

impl ConnKind {
    pub const ALL: [ConnKind; 5] = [
        ConnKind::Shared,
        ConnKind::Session,
        ConnKind::Subscriber,
        ConnKind::Control,
        ConnKind::Tracking,
    ];

    pub fn label(self) -> &'static str {
        match self {
            ConnKind::Shared => "shared",
            ConnKind::Session => "session",
            ConnKind::Subscriber => "subscriber",
            ConnKind::Control => "control",
            ConnKind::Tracking => "tracking",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// The figures of one node.
#[derive(Debug, Default)]
pub struct NodeStats {
    /// Replies received (each request's, ASKING's included).
    pub replies: Counter,
    /// Error replies received.
    pub errors: Counter,
    /// Requests failed because the node missed their deadline.
    pub timeouts: Counter,
    /// Time from writing a request to its reply (one write in 8 sampled).
    pub latency: Histogram,
    connected: [AtomicI64; ConnKind::ALL.len()],
    down: [AtomicI64; ConnKind::ALL.len()],
}

/// Counts one connection of a kind as connected while it lives.
pub struct Connected {
    stats: std::sync::Arc<NodeStats>,
    kind: ConnKind,
}

impl Connected {
    pub fn new(stats: &std::sync::Arc<NodeStats>, kind: ConnKind) -> Connected {
        stats.connected[kind.index()].fetch_add(1, Ordering::Relaxed);
        Connected {
            stats: stats.clone(),
            kind,
        }
    }
}

impl Drop for Connected {
    fn drop(&mut self) {
        self.stats.connected[self.kind.index()].fetch_sub(1, Ordering::Relaxed);
    }
}

impl NodeStats {
    /// A connection of `kind` waits to reconnect (`true`), or stopped waiting (`false`).
    pub fn down(&self, kind: ConnKind, waiting: bool) {
        self.down[kind.index()].fetch_add(if waiting { 1 } else { -1 }, Ordering::Relaxed);
    }

    /// Connections of `kind`: (connected, waiting to reconnect).
    pub fn connections(&self, kind: ConnKind) -> (i64, i64) {
        (
            self.connected[kind.index()].load(Ordering::Relaxed),
            self.down[kind.index()].load(Ordering::Relaxed),
        )
    }
}
