//! Cluster topology: the published slot table and the task that keeps it current.
//!
//! One manager task refreshes the table from `CLUSTER NODES` (`CLUSTER SHARDS` where that
//! is refused or renamed) on a timer and whenever a
//! request asks for it (after a MOVED, a connection error, an unassigned slot). Requests for a
//! refresh are coalesced: a burst of MOVED replies leads to one refresh, asked first of the
//! node that sent the redirect. The table is published through `ArcSwap`, so readers never
//! take a lock.

pub mod nodes;
pub mod shards;
pub mod table;

use std::sync::Arc;
use std::time::Duration;

use arc_swap::{ArcSwap, ArcSwapOption};
use rand::seq::SliceRandom;
use tokio::sync::{mpsc, watch};
use tracing::{debug, info, warn};

use crate::backend::conn::split_addr;
use crate::backend::pool::Backends;
use crate::resp::Request;
use nodes::parse_nodes;
pub use table::{Master, SlotTable};

/// Settings of the topology manager.
#[derive(Debug, Clone)]
pub struct TopologySettings {
    /// Addresses to ask when no known node answers.
    pub seeds: Vec<Arc<str>>,
    /// A standalone server, not a cluster: every slot is served by the first seed and
    /// nothing is polled.
    pub standalone: bool,
    /// Period of the background refresh.
    pub refresh_interval: Duration,
    /// Shortest gap between two refreshes asked for by requests.
    pub min_refresh_gap: Duration,
    /// Deadline for one node's answer: the connect timeout.
    pub timeouts: Arc<crate::backend::timeouts::Timeouts>,
    /// Nodes are reached over TLS: `CLUSTER SHARDS` addresses use their `tls-port`.
    pub tls: bool,
}

/// The published topology and the way to ask for a refresh.
#[derive(Debug)]
pub struct Topology {
    table: ArcSwap<SlotTable>,
    /// Refresh requests, with the node to ask first. Capacity 1: extra requests while one is
    /// pending are dropped, which is the coalescing.
    trigger: mpsc::Sender<Option<Arc<str>>>,
    /// Counts completed refresh attempts, so a request can wait for the next one.
    refreshed: watch::Sender<u64>,
    /// `redis_version` reported by the cluster, for HELLO.
    redis_version: ArcSwapOption<String>,
    /// How long each refresh took (its count: the refreshes done).
    pub refresh_latency: crate::histogram::Histogram,
}

impl Topology {
    /// Creates the topology and starts its manager task. Topology queries go over `control`,
    /// connections of their own (never queued behind client traffic, deadline: the query
    /// timeout); `data` is the client traffic's pool, whose connections to nodes that left
    /// are dropped.
    pub fn start(
        settings: TopologySettings,
        control: Backends,
        data: Arc<Backends>,
    ) -> Arc<Topology> {
        let (trigger, rx) = mpsc::channel(1);
        let (refreshed, _) = watch::channel(0);
        let topo = Arc::new(Topology {
            table: ArcSwap::from_pointee(SlotTable::default()),
            trigger,
            refreshed,
            redis_version: ArcSwapOption::empty(),
            refresh_latency: Default::default(),
        });
        let pools = Pools { control, data };
        tokio::spawn(manage(Arc::downgrade(&topo), settings, pools, rx));
        topo
    }

    /// The current slot table.
    pub fn table(&self) -> Arc<SlotTable> {
        self.table.load_full()
    }

    /// The current slot table for a short look (no reference count touched); do not hold it
    /// across an await.
    pub fn peek(&self) -> arc_swap::Guard<Arc<SlotTable>> {
        self.table.load()
    }

    /// Asks for a refresh without waiting; `hint` is asked first.
    pub fn request_refresh(&self, hint: Option<Arc<str>>) {
        let _ = self.trigger.try_send(hint);
    }

    /// Asks for a refresh and waits until one has completed (or `timeout` passed).
    pub async fn refresh_and_wait(&self, hint: Option<Arc<str>>, timeout: Duration) {
        let mut rx = self.refreshed.subscribe();
        let seen = *rx.borrow_and_update();
        self.request_refresh(hint);
        let _ = tokio::time::timeout(timeout, rx.wait_for(|&n| n > seen)).await;
    }

    /// A receiver that sees each completed refresh.
    pub fn refreshes(&self) -> watch::Receiver<u64> {
        self.refreshed.subscribe()
    }

    /// Applies a MOVED redirect at once: `slot` now lives on `addr`.
    pub fn apply_moved(&self, slot: u16, addr: &str) {
        self.table.rcu(|t| {
            if t.master_for(slot).is_some_and(|m| &*m.addr == addr) {
                Arc::clone(t)
            } else {
                Arc::new(t.with_moved(slot, addr))
            }
        });
    }

    /// Follows a MOVED: applies it at once and asks for a refresh that asks `addr` first.
    pub fn moved(&self, slot: u16, addr: Arc<str>) {
        self.apply_moved(slot, &addr);
        self.request_refresh(Some(addr));
    }

    /// `redis_version` of the cluster's nodes, once known.
    pub fn redis_version(&self) -> Option<Arc<String>> {
        self.redis_version.load_full()
    }
}

/// The connection pools the manager uses and maintains.
struct Pools {
    /// Topology queries only.
    control: Backends,
    /// Client traffic.
    data: Arc<Backends>,
}

/// The manager loop; ends when the `Topology` is dropped.
async fn manage(
    topo: std::sync::Weak<Topology>,
    settings: TopologySettings,
    pools: Pools,
    mut trigger: mpsc::Receiver<Option<Arc<str>>>,
) {
    let mut ticker = tokio::time::interval(settings.refresh_interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let hint = tokio::select! {
            _ = ticker.tick() => None,
            h = trigger.recv() => match h {
                Some(h) => h,
                None => return,
            },
        };
        let Some(topo) = topo.upgrade() else { return };
        let started = std::time::Instant::now();
        refresh(&topo, &settings, &pools, hint).await;
        topo.refresh_latency.record(started.elapsed());
        topo.refreshed.send_modify(|n| *n += 1);
        // Users whose clients all left close their connections after a grace period.
        pools
            .data
            .close_idle_users(crate::backend::users::USER_IDLE);
        drop(topo);
        // Requests that arrived during the refresh are answered by the next one, after a
        // short gap so a storm of MOVED cannot turn into a storm of refreshes.
        tokio::time::sleep(settings.min_refresh_gap).await;
    }
}

/// Asks nodes in turn (hint, known masters and replicas shuffled, then seeds) until one
/// gives a usable view, then publishes the merged table.
async fn refresh(
    topo: &Topology,
    settings: &TopologySettings,
    pools: &Pools,
    hint: Option<Arc<str>>,
) {
    let backends = &pools.control;
    let current = topo.table();
    if settings.standalone {
        if current.masters.is_empty()
            && let Some(addr) = settings.seeds.first()
        {
            topo.table.store(Arc::new(SlotTable::single(addr)));
        }
        return;
    }
    let mut candidates = current.known_addrs();
    candidates.shuffle(&mut rand::thread_rng());
    let mut seeds = settings.seeds.clone();
    seeds.shuffle(&mut rand::thread_rng());
    candidates.extend(seeds);
    if let Some(h) = hint {
        candidates.insert(0, h);
    }
    let mut seen = Vec::with_capacity(candidates.len());
    let query = Request::from_args(&["CLUSTER", "NODES"]).raw;
    for addr in candidates {
        if seen.contains(&addr) {
            continue;
        }
        seen.push(addr.clone());
        let reply = match backends
            .request(&addr, query.clone(), settings.timeouts.connect())
            .await
        {
            Ok(r) => r,
            Err(e) => {
                debug!(node = %addr, error = %e, "topology query failed");
                continue;
            }
        };
        let dialled = split_addr(&addr).map_or("127.0.0.1", |(h, _)| h);
        let view = match bulk_text(&reply) {
            Some(text) => {
                let (view, errors) = parse_nodes(&text, dialled);
                for e in &errors {
                    warn!(node = %addr, error = %e, "unreadable CLUSTER NODES line");
                }
                view
            }
            // Refused or renamed (managed services do): CLUSTER SHARDS tells the same.
            None => {
                debug!(node = %addr, reply = %String::from_utf8_lossy(&reply).trim_end(), "CLUSTER NODES refused; asking CLUSTER SHARDS");
                let shards = Request::from_args(&["CLUSTER", "SHARDS"]).raw;
                let reply = match backends
                    .request(&addr, shards, settings.timeouts.connect())
                    .await
                {
                    Ok(r) => r,
                    Err(e) => {
                        debug!(node = %addr, error = %e, "topology query failed");
                        continue;
                    }
                };
                match shards::parse_shards(&reply, dialled, settings.tls) {
                    Ok(view) => view,
                    Err(e) => {
                        debug!(node = %addr, error = %e, "CLUSTER SHARDS refused too");
                        continue;
                    }
                }
            }
        };
        if !view.iter().any(|n| n.flags.master && !n.slots.is_empty()) {
            debug!(node = %addr, "view without any slot owner; asking another node");
            continue;
        }
        let next = current.merge_view(&view);
        if !next.same_routing(&current) {
            info!(
                generation = next.generation,
                masters = next.masters.len(),
                assigned_slots = next.assigned_slots(),
                source = %addr,
                "slot table updated"
            );
            let keep: Vec<Arc<str>> = next
                .known_addrs()
                .into_iter()
                .chain(settings.seeds.iter().cloned())
                .collect();
            topo.table.store(Arc::new(next));
            backends.retain(&keep);
            pools.data.retain(&keep);
        }
        learn_version(topo, backends, &addr, settings.timeouts.connect()).await;
        return;
    }
    warn!("no node answered CLUSTER NODES; keeping the current slot table");
}

/// Reads the server version from `INFO server` of `addr` (the node that just answered the
/// topology query); a version not seen before has its commands learned from that node.
async fn learn_version(topo: &Topology, backends: &Backends, addr: &Arc<str>, timeout: Duration) {
    let query = Request::from_args(&["INFO", "server"]).raw;
    let Ok(reply) = backends.request(addr, query, timeout).await else {
        return;
    };
    let Some(text) = bulk_text(&reply) else {
        return;
    };
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.trim().to_string())
    };
    let Some(version) = field("redis_version:") else {
        return;
    };
    // Valkey reports its own version beside the Redis-compatible one.
    let server = match field("valkey_version:") {
        Some(v) => format!("valkey {v}"),
        None => format!("redis {version}"),
    };
    if topo.redis_version().is_none() {
        topo.redis_version.store(Some(Arc::new(version)));
    }
    if !crate::command::learned::knows_version(&server) {
        learn_commands(backends, addr, &server, timeout).await;
    }
}

/// Reads `COMMAND INFO` from `addr` in RESP2 and RESP3 and adds what it describes to the
/// command model.
async fn learn_commands(backends: &Backends, addr: &Arc<str>, server: &str, timeout: Duration) {
    let query = Request::from_args(&["COMMAND", "INFO"]).raw;
    // A full description is a few hundred KB: give it more than a topology query's time.
    let timeout = timeout.max(Duration::from_secs(5));
    let resp2 = match backends.request(addr, query.clone(), timeout).await {
        Ok(r) if r.first() == Some(&b'*') => r,
        Ok(r) => {
            warn!(node = %addr, reply = %String::from_utf8_lossy(&r[..r.len().min(200)]).trim_end(), "COMMAND INFO refused; only built-in commands are routed");
            return;
        }
        Err(e) => {
            debug!(node = %addr, error = %e, "COMMAND INFO failed");
            return;
        }
    };
    let resp3 = backends
        .request_in(addr, crate::resp::Proto::Resp3, query, timeout)
        .await
        .ok()
        .filter(|r| r.first() == Some(&b'*'));
    match crate::command::learned::install(server, &resp2, resp3.as_deref()) {
        Ok(added) => {
            info!(node = %addr, server, learned = added, "commands learned from COMMAND INFO")
        }
        Err(e) => warn!(node = %addr, error = %e, "unreadable COMMAND INFO"),
    }
}

/// The text of a bulk-string (or verbatim) reply.
pub fn bulk_text(reply: &[u8]) -> Option<String> {
    let body = crate::resp::reply::bulk_body(reply)?;
    Some(String::from_utf8_lossy(body).into_owned())
}
