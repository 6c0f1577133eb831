//! The registry of backend connections, of two kinds.
//!
//! Shared connections: per worker thread, per node and per protocol, a few multiplexed
//! connections opened lazily and kept in a map only that worker uses. A client always uses
//! the same connection to a given node (chosen by client id), so its pipelined requests to
//! that node keep their order; the request path locks only its own worker's map and clones
//! a channel sender.
//!
//! Session connections (transactions, blocking commands, WAIT): leased one at a time, never
//! reconnecting, bounded per node (`max_blocking_per_node`), and pooled per worker when
//! handed back clean.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use dashmap::DashMap;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};

use crate::backend::conn::{self, BatchResult, ConnSettings, Pending, ReplyResult, ReplyTo};
use crate::backend::node_stats::{ConnKind, NodeStats};
use crate::backend::users::{UserId, Users};
use crate::error::BackendError;
use crate::resp::Proto;

/// Settings shared by every backend connection.
#[derive(Debug, Clone)]
pub struct PoolSettings {
    /// Shared connections per node and protocol.
    pub connections_per_node: usize,
    pub auth: Option<(Option<String>, crate::redact::Secret)>,
    /// Connect and command timeouts, changed live by a reload.
    pub timeouts: Arc<crate::backend::timeouts::Timeouts>,
    pub inbox_capacity: usize,
    /// Most dedicated connections (blocking commands) open to one node at once.
    pub blocking_per_node: usize,
    /// Send READONLY on every connection, so replicas serve reads.
    pub readonly: bool,
    /// Worker threads: each has connections of its own to every node (`worker::slot`).
    pub workers: usize,
    /// TLS for every connection (`cluster.tls`).
    pub tls: Option<crate::tls::BackendTls>,
    /// What the connections of this pool are for (shared and session, or control).
    pub kind: ConnKind,
}

/// The connections to one node.
#[derive(Debug)]
pub struct NodeConns {
    addr: Arc<str>,
    /// Per worker thread, plus one entry for every other thread: connections opened there
    /// serve that thread only, so a request and its reply never cross threads.
    per_worker: Box<[WorkerConns]>,
    /// Permits for dedicated connections to this node.
    blocking: Arc<Semaphore>,
}

/// One worker's idle session connections to one node.
#[derive(Debug, Default)]
struct WorkerConns {
    /// Clean session connections waiting to be leased again, per protocol (RESP2, RESP3):
    /// steady-state transactions, blocking commands and WAIT open no new TCP connection.
    idle: [Mutex<Vec<mpsc::Sender<Pending>>>; 2],
}

/// One worker's shared connections to every node it talks to. Only that worker's thread
/// locks it (the topology manager too, when nodes leave), so the request path touches no
/// cache line another core writes.
#[derive(Debug, Default)]
#[repr(align(64))]
struct WorkerShared {
    nodes: Mutex<HashMap<Arc<str>, SharedConns, crate::fasthash::FnvBuild>>,
}

/// The shared connections of one worker to one node, per protocol, opened on first use
/// (RESP3 ones are greeted with `HELLO 3`): slotgate's own, and those of the users clients
/// logged in as.
#[derive(Debug, Default)]
struct SharedConns {
    resp2: Option<Box<[mpsc::Sender<Pending>]>>,
    resp3: Option<Box<[mpsc::Sender<Pending>]>>,
    users: Vec<UserConns>,
}

/// One user's shared connections to one node, per protocol.
#[derive(Debug)]
struct UserConns {
    user: UserId,
    resp2: Option<Box<[mpsc::Sender<Pending>]>>,
    resp3: Option<Box<[mpsc::Sender<Pending>]>>,
}

/// Most clean session connections kept per node and protocol.
const MAX_IDLE_SESSIONS: usize = 8;

/// A session connection leased to one client for a transaction, a blocking command or a
/// WAIT. It never reconnects: if it breaks, every later request on it fails. `release`
/// hands it back for reuse once its server-side state is clean; dropping it closes it
/// (after the replies in flight, or at once if nobody waits for them).
#[derive(Debug)]
pub struct SessionConn {
    conn: mpsc::Sender<Pending>,
    node: Arc<NodeConns>,
    proto: Proto,
    /// Whom it is authenticated as; only slotgate's own go back to the idle pool.
    user: UserId,
    /// The worker slot whose idle pool it goes back to.
    worker: usize,
    /// Counts against the node's dedicated-connection limit while leased.
    _permit: OwnedSemaphorePermit,
}

impl SessionConn {
    /// Queues a request; a connection that has ended fails it as not sent.
    pub async fn send(&self, pending: Pending) {
        if let Err(mpsc::error::SendError(p)) = self.conn.send(pending).await {
            p.fail(BackendError::ConnectionLost {
                addr: self.node.addr.to_string(),
                sent: false,
            });
        }
    }

    /// Whether the connection has ended (broken, or closed by the node).
    pub fn is_closed(&self) -> bool {
        self.conn.is_closed()
    }

    /// Returns the connection to the node's idle pool: call only when no MULTI, WATCH or
    /// blocked command is left on it. Requests already queued on it are answered first,
    /// since the connection keeps their order.
    pub fn release(self) {
        if self.conn.is_closed() || !self.user.is_service() {
            return;
        }
        let mut idle = lock(&self.node.per_worker[self.worker].idle[proto_index(self.proto)]);
        if idle.len() < MAX_IDLE_SESSIONS {
            idle.push(self.conn);
        }
    }
}

fn proto_index(proto: Proto) -> usize {
    match proto {
        Proto::Resp2 => 0,
        Proto::Resp3 => 1,
    }
}

/// Locks a mutex that is only ever held for a push or a pop (a poisoned one is still
/// consistent).
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// All nodes slotgate talks to.
#[derive(Debug)]
pub struct Backends {
    settings: PoolSettings,
    /// Per node: session connection limits and idle pools.
    nodes: DashMap<Arc<str>, Arc<NodeConns>, crate::fasthash::FnvBuild>,
    /// Per worker thread (plus one entry for every other thread): shared connections.
    shared: Box<[WorkerShared]>,
    /// The users clients logged in as, whose connections are opened with their credentials.
    users: Arc<Users>,
    /// Per node: its figures, shared by every connection to it.
    stats: DashMap<Arc<str>, Arc<NodeStats>, crate::fasthash::FnvBuild>,
}

impl Backends {
    pub fn new(settings: PoolSettings) -> Self {
        Backends {
            shared: (0..=settings.workers)
                .map(|_| WorkerShared::default())
                .collect(),
            settings,
            nodes: DashMap::default(),
            users: Arc::default(),
            stats: DashMap::default(),
        }
    }

    /// The figures of `addr` (made on first use).
    fn stats_of(&self, addr: &Arc<str>) -> Arc<NodeStats> {
        if let Some(s) = self.stats.get(addr) {
            return s.clone();
        }
        self.stats.entry(addr.clone()).or_default().clone()
    }

    /// Every node's figures, by address.
    pub fn node_stats(&self) -> Vec<(Arc<str>, Arc<NodeStats>)> {
        self.stats
            .iter()
            .map(|e| (e.key().clone(), e.value().clone()))
            .collect()
    }

    /// The users clients logged in as on this cluster.
    pub fn users(&self) -> &Arc<Users> {
        &self.users
    }

    /// Closes the connections of users nobody used for `idle` (their tasks end once the
    /// replies in flight are delivered).
    pub fn close_idle_users(&self, idle: Duration) {
        let gone = self.users.take_idle(idle);
        if gone.is_empty() {
            return;
        }
        for worker in &self.shared {
            for conns in lock(&worker.nodes).values_mut() {
                conns.users.retain(|u| !gone.contains(&u.user));
            }
        }
    }

    fn node(&self, addr: &Arc<str>) -> Arc<NodeConns> {
        if let Some(n) = self.nodes.get(addr) {
            return n.clone();
        }
        self.nodes
            .entry(addr.clone())
            .or_insert_with(|| {
                Arc::new(NodeConns {
                    addr: addr.clone(),
                    per_worker: (0..=self.settings.workers)
                        .map(|_| WorkerConns::default())
                        .collect(),
                    blocking: Arc::new(Semaphore::new(self.settings.blocking_per_node)),
                })
            })
            .clone()
    }

    /// Settings for a new connection to `addr`, authenticated as `user`.
    pub fn conn_settings(
        &self,
        addr: &Arc<str>,
        proto: Proto,
        inbox_capacity: usize,
        user: UserId,
    ) -> ConnSettings {
        let auth = if user.is_service() {
            self.settings.auth.clone()
        } else {
            // A user forgotten meanwhile has no connection to open: an AUTH that fails
            // makes the requests fail rather than run as slotgate's own account.
            Some(
                self.users
                    .credentials(user)
                    .map(|(name, pass)| (Some(name), pass))
                    .unwrap_or_else(|| (Some("-".into()), crate::redact::Secret::new("-"))),
            )
        };
        ConnSettings {
            addr: addr.clone(),
            proto,
            auth,
            timeouts: self.settings.timeouts.clone(),
            inbox_capacity,
            readonly: self.settings.readonly,
            reconnect: true,
            tls: self.settings.tls.clone(),
            stats: self.stats_of(addr),
            kind: self.settings.kind,
        }
    }

    /// Leases a session connection to `addr` (a clean idle one when there is one, else a
    /// new one). Fails with the limit when the node's dedicated connections are all in use.
    pub fn session(
        &self,
        addr: &Arc<str>,
        proto: Proto,
        user: UserId,
    ) -> Result<SessionConn, usize> {
        let node = self.node(addr);
        let permit = node
            .blocking
            .clone()
            .try_acquire_owned()
            .map_err(|_| self.settings.blocking_per_node)?;
        let worker = crate::worker::slot(self.settings.workers);
        let reused = if !user.is_service() {
            None
        } else {
            let mut idle = lock(&node.per_worker[worker].idle[proto_index(proto)]);
            let mut found = None;
            while let Some(conn) = idle.pop() {
                if !conn.is_closed() {
                    found = Some(conn);
                    break;
                }
            }
            found
        };
        let conn = reused.unwrap_or_else(|| {
            conn::spawn(ConnSettings {
                reconnect: false,
                kind: ConnKind::Session,
                ..self.conn_settings(addr, proto, 4, user)
            })
        });
        Ok(SessionConn {
            conn,
            node,
            proto,
            user,
            worker,
            _permit: permit,
        })
    }

    fn sender(
        &self,
        addr: &Arc<str>,
        proto: Proto,
        session: u64,
        user: UserId,
    ) -> mpsc::Sender<Pending> {
        let mine = &self.shared[crate::worker::slot(self.settings.workers)];
        let mut nodes = lock(&mine.nodes);
        let node = match nodes.get_mut(addr) {
            Some(n) => n,
            None => nodes.entry(addr.clone()).or_default(),
        };
        let (resp2, resp3) = if user.is_service() {
            (&mut node.resp2, &mut node.resp3)
        } else {
            let i = match node.users.iter().position(|u| u.user == user) {
                Some(i) => i,
                None => {
                    node.users.push(UserConns {
                        user,
                        resp2: None,
                        resp3: None,
                    });
                    node.users.len() - 1
                }
            };
            let u = &mut node.users[i];
            (&mut u.resp2, &mut u.resp3)
        };
        let cell = match proto {
            Proto::Resp2 => resp2,
            Proto::Resp3 => resp3,
        };
        let conns = cell.get_or_insert_with(|| {
            (0..self.settings.connections_per_node.max(1))
                .map(|_| {
                    conn::spawn(self.conn_settings(addr, proto, self.settings.inbox_capacity, user))
                })
                .collect()
        });
        conns[(session % conns.len() as u64) as usize].clone()
    }

    /// Queues `raw` on the node's connection for `session`; the reply arrives on the
    /// returned receiver. Waits only when that connection's inbox is full.
    pub async fn send(
        &self,
        addr: &Arc<str>,
        proto: Proto,
        session: u64,
        user: UserId,
        raw: Bytes,
        asking: bool,
    ) -> oneshot::Receiver<ReplyResult> {
        let (tx, rx) = oneshot::channel();
        self.enqueue(addr, proto, session, user, Pending::one(raw, asking, tx))
            .await;
        rx
    }

    /// Puts `pending` in the inbox of the node's connection for `session`; if that
    /// connection is gone (the node was dropped), the request fails as not sent.
    async fn enqueue(
        &self,
        addr: &Arc<str>,
        proto: Proto,
        session: u64,
        user: UserId,
        pending: Pending,
    ) {
        if let Err(mpsc::error::SendError(p)) =
            self.sender(addr, proto, session, user).send(pending).await
        {
            p.fail(BackendError::ConnectionLost {
                addr: addr.to_string(),
                sent: false,
            });
        }
    }

    /// Queues several requests (`count`, back to back in `raw`) on the node's connection for
    /// `session`; their replies arrive together, in order, on the returned receiver.
    pub async fn send_many(
        &self,
        addr: &Arc<str>,
        proto: Proto,
        session: u64,
        user: UserId,
        raw: Bytes,
        count: usize,
    ) -> oneshot::Receiver<BatchResult> {
        let (tx, rx) = oneshot::channel();
        let pending = Pending {
            raw,
            asking: false,
            reply: ReplyTo::Many(count, tx),
            deadline: Default::default(),
        };
        self.enqueue(addr, proto, session, user, pending).await;
        rx
    }

    /// Sends one request and waits for its reply, with a deadline (control traffic such as
    /// topology queries).
    pub async fn request(&self, addr: &Arc<str>, raw: Bytes, timeout: Duration) -> ReplyResult {
        self.request_in(addr, Proto::Resp2, raw, timeout).await
    }

    /// As `request`, on the node's connection speaking `proto`.
    pub async fn request_in(
        &self,
        addr: &Arc<str>,
        proto: Proto,
        raw: Bytes,
        timeout: Duration,
    ) -> ReplyResult {
        let rx = self.send(addr, proto, 0, UserId::SERVICE, raw, false).await;
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(BackendError::ConnectionLost {
                addr: addr.to_string(),
                sent: true,
            }),
            Err(_) => Err(BackendError::Timeout {
                addr: addr.to_string(),
                sent: true,
            }),
        }
    }

    /// Drops the connections of nodes not in `keep`; their tasks end once the requests in
    /// flight are answered.
    pub fn retain(&self, keep: &[Arc<str>]) {
        self.nodes.retain(|addr, _| keep.contains(addr));
        // Figures of nodes that left go too (labels stay bounded), once nothing uses them.
        self.stats
            .retain(|addr, s| keep.contains(addr) || Arc::strong_count(s) > 1);
        for worker in &self.shared {
            lock(&worker.nodes).retain(|addr, _| keep.contains(addr));
        }
    }

    /// Session connections (transactions, blocking commands, WAIT) leased right now, over
    /// all nodes.
    pub fn blocking_in_use(&self) -> usize {
        self.nodes
            .iter()
            .map(|n| self.settings.blocking_per_node - n.blocking.available_permits())
            .sum()
    }
}
