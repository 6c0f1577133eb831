//! State shared by every client task: configuration, the primary cluster, mirrors, and
//! proxy-wide counters.

use std::sync::atomic::{AtomicI64, AtomicU64};
use std::time::Instant;

use bytes::Bytes;

use crate::config::Config;
use crate::dispatch::Cluster;

/// Proxy-wide counters shown in INFO's slotgate section.
#[derive(Debug, Default)]
pub struct Stats {
    pub connected_clients: AtomicI64,
    pub total_connections: AtomicU64,
    /// Counted per worker thread (every read adds its commands).
    pub total_commands: crate::counter::Counter,
    pub rejected_connections: AtomicU64,
    /// Clients closed by `limits.client_idle_timeout_s`.
    pub idle_timeouts: AtomicU64,
    /// Clients closed by `limits.request_read_timeout_ms` (a request sent too slowly).
    pub read_timeouts: AtomicU64,
    /// Clients closed for replies piling up past `limits.client_output_buffer` (or
    /// `limits.pubsub_output_buffer` for a subscriber).
    pub output_buffer_closes: AtomicU64,
    /// AUTH and HELLO AUTH attempts refused (wrong credentials).
    pub auth_failures: AtomicU64,
    /// AUTH attempts refused unchecked by `limits.auth_failures_per_minute`.
    pub auth_rate_limited: AtomicU64,
    /// TLS clients whose handshake failed or timed out.
    pub tls_handshake_failures: AtomicU64,
    /// Clients told `MOVING` at shutdown (maintenance notifications on).
    pub moving_sent: AtomicU64,
    /// Clients subscribed to at least one channel, pattern or shard channel now.
    pub subscribers: AtomicI64,
}

/// State shared by every client task.
#[derive(Debug)]
pub struct Shared {
    /// The configuration slotgate started with (fields that change live are read from
    /// `live()`).
    pub config: Config,
    /// The configuration in force: the start's, then each reload's (`reload`).
    pub live: arc_swap::ArcSwap<Config>,
    /// Bumped by every reload, so clients notice it with one load.
    pub live_generation: AtomicU64,
    /// The cluster clients read from and write to.
    pub primary: Cluster,
    /// Resources that receive the writes too (multi-write), if configured; replaced by a
    /// reload. A client takes them once per read (`ClientState::mirrors`).
    pub mirrors: arc_swap::ArcSwapOption<crate::mirror::Mirrors>,
    pub stats: Stats,
    pub started: Instant,
    /// What every client is told at once. Its value: whether slotgate shuts down (clients
    /// stop reading, finish what is in flight and close). A reload notifies without changing
    /// it: an idle client wakes to take the new configuration (`live_generation`) and lets
    /// go of mirrors the reload removed.
    pub notices: tokio::sync::watch::Sender<bool>,
    /// Script bodies loaded through slotgate (SCRIPT LOAD), by lower-case SHA1, so an
    /// EVALSHA answered NOSCRIPT by a master that lacks the script can load it there.
    pub scripts: dashmap::DashMap<Bytes, Bytes>,
    /// Failed logins per client address (`limits.auth_failures_per_minute`).
    pub auth_failures: crate::auth::AuthFailures,
    /// Calls, errors and latency per command.
    pub commands: crate::command_stats::CommandStats,
    /// SLOWLOG.
    pub slowlog: crate::slowlog::SlowLog,
    /// The hottest keys (sampled).
    pub hotkeys: crate::hotkeys::HotKeys,
    /// Connected clients, for CLIENT LIST.
    pub clients: crate::clients::Clients,
    /// Client-side caching: who tracks which keys, and their inboxes.
    pub tracking: std::sync::Arc<crate::tracking::Tracking>,
    /// Keyspace subscriptions made on every master, counted over all clients.
    pub fanned: std::sync::Arc<crate::pubsub::fanned::Fanned>,
}

impl Shared {
    /// The configuration in force.
    pub fn live(&self) -> std::sync::Arc<Config> {
        self.live.load_full()
    }

    /// The mirrors in force, if any.
    pub fn mirrors(&self) -> Option<std::sync::Arc<crate::mirror::Mirrors>> {
        self.mirrors.load_full()
    }

    /// Puts `config` in force (a reload).
    pub fn set_live(&self, config: Config) {
        self.live.store(std::sync::Arc::new(config));
        self.live_generation
            .fetch_add(1, std::sync::atomic::Ordering::Release);
        self.notices.send_modify(|_| ());
    }
}
