//! Sending one command to a cluster: route by slot, queue on the node's connection, then
//! follow redirects and retries until there is a reply for the client. A `Cluster` is one
//! resource (the primary, or a mirror) with its own topology, connections and counters.
//!
//! `start` queues the first attempt and returns at once, so a client's pipelined commands are
//! queued in the order it sent them; `finish` awaits the reply and handles MOVED, ASK,
//! TRYAGAIN, CLUSTERDOWN and connection errors as `redirect::decide` says.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::oneshot;
use tracing::{debug, warn};

use crate::backend::conn::{Deadline, Pending, ReplyResult};
use crate::backend::pool::{Backends, PoolSettings, SessionConn};
use crate::backend::users::UserId;
use crate::command::{CmdSpec, Route, RouteError};
use crate::config::{Config, ReadFrom};
use crate::counter::Counter;
use crate::error::BackendError;
use crate::histogram::Histogram;
use crate::multikey::{self, Merge};
use crate::redirect::{Attempts, Decision, Outcome, RetryPolicy, decide};
use crate::resp::Proto;
use crate::resp::Request;
use crate::resp::encode::error;
use crate::topology::{Topology, TopologySettings};

/// Counters of one cluster, shown in INFO.
#[derive(Debug, Default)]
pub struct ClusterCounters {
    /// Commands finished (each part of a split command counts).
    pub requests: Counter,
    /// Commands that ended in an error reply or a failure.
    pub errors: Counter,
    pub redirects_moved: Counter,
    pub redirects_ask: Counter,
    pub retries: Counter,
    /// Time from queuing to the final reply.
    pub latency: Histogram,
}

/// One cluster (or standalone node) slotgate sends commands to.
#[derive(Debug)]
pub struct Cluster {
    /// `primary`, or the mirror's name.
    pub name: Arc<str>,
    pub topology: Arc<Topology>,
    pub backends: Arc<Backends>,
    pub policy: RetryPolicy,
    /// Connect and command timeouts of every connection to the cluster (the connect timeout
    /// also bounds the refresh a retry waits for).
    pub timeouts: Arc<crate::backend::timeouts::Timeouts>,
    pub counters: ClusterCounters,
}

/// One command in this many has its latency measured.
const LATENCY_SAMPLE: u32 = 8;

/// The current time for one command in `LATENCY_SAMPLE`, counted per thread.
pub(crate) fn sample_clock() -> Option<Instant> {
    thread_local! {
        static COUNT: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
    }
    COUNT.with(|c| {
        let n = c.get().wrapping_add(1);
        c.set(n);
        n.is_multiple_of(LATENCY_SAMPLE).then(Instant::now)
    })
}

/// A command queued on a cluster: one flight, several whose replies merge, or an answer
/// known at once (CROSSSLOT).
#[derive(Debug)]
pub enum Submitted {
    One(Flight),
    Many(Vec<Flight>, Merge),
    Done(Bytes),
}

/// Where a command goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// The master of this slot.
    Slot(u16),
    /// Any master (commands without keys).
    Any,
    /// This node (commands sent to every master, SCAN of one master).
    Node(Arc<str>),
}

impl Target {
    /// The slot, when the command goes to one slot.
    pub fn slot(&self) -> Option<u16> {
        match self {
            Target::Slot(s) => Some(*s),
            _ => None,
        }
    }
}

/// How a command is sent.
#[derive(Debug, Clone, Copy)]
pub struct SendOptions {
    pub proto: Proto,
    /// Client id: picks the shared connection, so one client's commands to a node stay
    /// in order.
    pub session: u64,
    /// Safe to send again after a connection failure (read-only commands).
    pub idempotent: bool,
    /// Run on a connection of its own (blocking commands).
    pub dedicated: bool,
    /// Where a read of a slot goes (`read_from`); writes always go to the master.
    pub read_from: ReadFrom,
    /// How long the node may take to answer (blocking commands: how long they may block).
    pub deadline: Deadline,
    /// Whom the connection is authenticated as: the client's user, or slotgate's account.
    pub user: UserId,
}

impl Flight {
    /// A command already sent to `addr` by other means (a batch), for `Cluster::finish_with`
    /// to follow up its reply.
    pub fn sent(raw: Bytes, target: Target, opts: SendOptions, addr: Arc<str>) -> Flight {
        Flight {
            raw,
            target,
            opts,
            addr: Some(addr),
            rx: None,
            lease: None,
            early_error: None,
            queued_at: None,
        }
    }

    /// The slot this command goes to, when it goes to one slot.
    pub fn slot(&self) -> Option<u16> {
        self.target.slot()
    }

    /// Whether this command blocks a connection of its own (BLPOP, XREAD BLOCK, ...).
    pub fn blocks(&self) -> bool {
        self.opts.dedicated
    }

    /// Polls the first attempt's result: `Ready(None)` when there was no route (or the
    /// attempt could not be queued), else the node's reply or the connection's failure.
    pub fn poll_first(&mut self, cx: &mut Context<'_>) -> Poll<Option<ReplyResult>> {
        if self.early_error.is_some() {
            return Poll::Ready(None);
        }
        let Some(rx) = self.rx.as_mut() else {
            return Poll::Ready(None);
        };
        match Pin::new(rx).poll(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(r) => {
                self.rx = None;
                Poll::Ready(Some(r.unwrap_or_else(|_| {
                    Err(BackendError::ConnectionLost {
                        addr: self.addr.as_deref().unwrap_or("?").to_string(),
                        sent: true,
                    })
                })))
            }
        }
    }
}

impl SendOptions {
    /// Options for commands slotgate sends on its own behalf (mirrors, queue, probes):
    /// RESP2, masters only, never retried after they may have been sent.
    pub fn internal() -> SendOptions {
        SendOptions {
            proto: Proto::Resp2,
            session: 0,
            idempotent: false,
            dedicated: false,
            read_from: ReadFrom::Master,
            deadline: Deadline::Default,
            user: UserId::SERVICE,
        }
    }
}

/// A command on its way: the current attempt and what is needed for the next.
#[derive(Debug)]
pub struct Flight {
    raw: Bytes,
    target: Target,
    opts: SendOptions,
    /// Node of the current attempt.
    addr: Option<Arc<str>>,
    /// Reply of the current attempt; `None` when no master serves the slot.
    rx: Option<oneshot::Receiver<ReplyResult>>,
    /// The session connection of a blocking command, held until its reply arrives.
    lease: Option<Box<SessionConn>>,
    /// Set when the first attempt could not even be queued.
    early_error: Option<Bytes>,
    /// When the command was queued, for the latency histogram; set on one command in
    /// `LATENCY_SAMPLE` (reading the clock twice per command showed in profiles).
    queued_at: Option<Instant>,
}

/// Where a cluster's nodes are and how to log in to them.
#[derive(Debug, Clone)]
pub struct ClusterAccess {
    /// `primary`, or a mirror's name.
    pub name: String,
    /// Seed nodes; for a standalone server, its one address.
    pub seeds: Vec<String>,
    /// A standalone Redis (no CLUSTER NODES): every slot is served by `seeds[0]`.
    pub standalone: bool,
    pub username: Option<String>,
    pub password: Option<String>,
    /// TLS on every connection to the cluster.
    pub tls: Option<crate::tls::BackendTls>,
}

impl Cluster {
    /// Connects to a cluster (lazily) and starts its topology manager; connection settings
    /// (timeouts, pool sizes, retries) come from `config.cluster`.
    pub fn connect(access: ClusterAccess, config: &Config) -> Cluster {
        let c = &config.cluster;
        let auth = access
            .password
            .clone()
            .map(|p| (access.username.clone(), crate::redact::Secret::from(p)));
        let timeouts = crate::backend::timeouts::Timeouts::new(
            config.connect_timeout(),
            config.command_timeout(),
        );
        let pool = PoolSettings {
            connections_per_node: c.connections_per_node,
            auth,
            timeouts: timeouts.clone(),
            inbox_capacity: 1024,
            blocking_per_node: c.max_blocking_per_node,
            readonly: c.read_from != ReadFrom::Master,
            workers: config.worker_threads(),
            tls: access.tls.clone(),
            kind: crate::backend::node_stats::ConnKind::Shared,
        };
        // Topology queries: one connection per node of their own, with the query timeout as
        // deadline, so a stopped node cannot hold a refresh or queue it behind clients.
        let control = Backends::new(PoolSettings {
            connections_per_node: 1,
            inbox_capacity: 16,
            readonly: false,
            kind: crate::backend::node_stats::ConnKind::Control,
            ..pool.clone()
        });
        let backends = Arc::new(Backends::new(pool));
        let topology = Topology::start(
            TopologySettings {
                seeds: access.seeds.iter().map(|s| Arc::from(s.as_str())).collect(),
                standalone: access.standalone,
                refresh_interval: config.refresh_interval(),
                min_refresh_gap: Duration::from_millis(50),
                timeouts: timeouts.clone(),
                tls: access.tls.is_some(),
            },
            control,
            backends.clone(),
        );
        Cluster {
            name: Arc::from(access.name.as_str()),
            topology,
            backends,
            policy: RetryPolicy {
                max_redirects: c.max_redirects,
                max_retries: c.max_retries,
                backoff: Duration::from_millis(c.retry_backoff_ms),
            },
            timeouts,
            counters: ClusterCounters::default(),
        }
    }

    /// Queues the first attempt of a command.
    pub async fn start(&self, raw: Bytes, target: Target, opts: SendOptions) -> Flight {
        let mut flight = Flight {
            raw,
            target,
            opts,
            addr: None,
            rx: None,
            lease: None,
            early_error: None,
            queued_at: sample_clock(),
        };
        let addr = self.route(&flight.target, &opts);
        if let Some(addr) = addr
            && let Err(e) = self.send(&mut flight, addr, false).await
        {
            flight.early_error = Some(e);
        }
        flight
    }

    /// The node a command for `target` goes to now.
    pub fn route(&self, target: &Target, opts: &SendOptions) -> Option<Arc<str>> {
        self.route_with(target, opts, Arc::clone)
    }

    /// Calls `f` with the address of the node a command for `target` goes to now, without
    /// taking a reference to it: the hot path clones a node's address only when it opens a
    /// new batch for it, not per request (the count is shared by every worker's core).
    pub fn route_with<R>(
        &self,
        target: &Target,
        opts: &SendOptions,
        f: impl FnOnce(&Arc<str>) -> R,
    ) -> Option<R> {
        let table = self.topology.peek();
        let master = match target {
            Target::Slot(s) => table.master_for(*s),
            // Keyless requests are spread over the masters, request by request.
            Target::Any => table.any_master(next_keyless()),
            Target::Node(addr) => return Some(f(addr)),
        }?;
        if matches!(target, Target::Slot(_)) && opts.read_from != ReadFrom::Master {
            // The same replica for one client, so its reads do not go back in time.
            if !master.replicas.is_empty() {
                let i = (opts.session % master.replicas.len() as u64) as usize;
                return Some(f(&master.replicas[i]));
            }
            if opts.read_from == ReadFrom::Replica {
                return None;
            }
        }
        Some(f(&master.addr))
    }

    /// Queues `count` requests, back to back in `raw`, for the master of `slot` (any master
    /// without one), contiguously on one connection, as a MULTI/EXEC block must go; the
    /// returned future gives their replies together. No redirect is followed: a block that
    /// meets one fails whole.
    pub async fn send_block(
        &self,
        slot: Option<u16>,
        raw: Bytes,
        count: usize,
    ) -> impl std::future::Future<Output = Result<Vec<Bytes>, String>> + Send + 'static {
        let opts = SendOptions::internal();
        let target = slot.map_or(Target::Any, Target::Slot);
        let addr = self.route(&target, &opts);
        let rx = match &addr {
            Some(addr) => Some(
                self.backends
                    .send_many(addr, opts.proto, opts.session, opts.user, raw, count)
                    .await,
            ),
            None => None,
        };
        async move {
            let (Some(addr), Some(rx)) = (addr, rx) else {
                return Err(crate::replies::CLUSTER_DOWN.to_string());
            };
            match rx.await {
                Ok(Ok(replies)) => Ok(replies),
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Err(format!("connection to {addr} lost")),
            }
        }
    }

    /// Queues a command routed by its table entry: by the keys' slot (split per slot when
    /// the keys span slots and the command can be split), or to every master.
    pub async fn submit(&self, spec: &CmdSpec, req: &Request, opts: SendOptions) -> Submitted {
        if spec.route == Route::AllMasters {
            let flights = self.start_all(&req.raw, opts).await;
            if flights.is_empty() {
                return Submitted::Done(crate::replies::cluster_down());
            }
            return Submitted::Many(flights, Merge::by(spec.policy));
        }
        let target = match spec.slot(req) {
            Ok(Some(slot)) => Target::Slot(slot),
            Ok(None) => Target::Any,
            Err(RouteError::CrossSlot) => {
                let Some((parts, merge)) = multikey::split(spec, req) else {
                    return Submitted::Done(crate::replies::crossslot());
                };
                let mut flights = Vec::with_capacity(parts.len());
                for part in parts {
                    flights.push(self.start(part.raw, Target::Slot(part.slot), opts).await);
                }
                return Submitted::Many(flights, merge);
            }
        };
        Submitted::One(self.start(req.raw.clone(), target, opts).await)
    }

    /// The reply of a submitted command.
    pub async fn wait(&self, submitted: Submitted) -> Bytes {
        match submitted {
            Submitted::One(f) => self.finish(f).await,
            Submitted::Many(flights, merge) => {
                let replies =
                    futures::future::join_all(flights.into_iter().map(|f| self.finish(f))).await;
                multikey::merge(&merge, &replies)
            }
            Submitted::Done(b) => b,
        }
    }

    /// Addresses of the masters that serve slots, in a fixed (sorted) order.
    pub fn serving_masters(&self) -> Vec<Arc<str>> {
        let table = self.topology.table();
        let mut v: Vec<Arc<str>> = table
            .masters
            .iter()
            .zip(table.slots_per_master())
            .filter(|(_, n)| *n > 0)
            .map(|(m, _)| m.addr.clone())
            .collect();
        v.sort();
        v
    }

    /// Sends `raw` to every serving master; one flight per master, in `serving_masters`
    /// order.
    pub async fn start_all(&self, raw: &Bytes, opts: SendOptions) -> Vec<Flight> {
        let mut flights = Vec::new();
        for addr in self.serving_masters() {
            flights.push(self.start(raw.clone(), Target::Node(addr), opts).await);
        }
        flights
    }

    async fn send(&self, flight: &mut Flight, addr: Arc<str>, asking: bool) -> Result<(), Bytes> {
        let raw = flight.raw.clone();
        let rx = if flight.opts.dedicated {
            let session = self
                .backends
                .session(&addr, flight.opts.proto, flight.opts.user)
                .map_err(|limit| {
                    error(&format!(
                        "ERR slotgate: too many blocking commands in progress on {addr} \
                         (limit {limit}); try again later"
                    ))
                })?;
            let (reply_tx, rx) = oneshot::channel();
            session
                .send(Pending::one(raw, asking, reply_tx).with_deadline(flight.opts.deadline))
                .await;
            flight.lease = Some(Box::new(session));
            rx
        } else {
            self.backends
                .send(
                    &addr,
                    flight.opts.proto,
                    flight.opts.session,
                    flight.opts.user,
                    raw,
                    asking,
                )
                .await
        };
        flight.addr = Some(addr);
        flight.rx = Some(rx);
        Ok(())
    }

    /// Awaits the reply, following redirects and retrying as the policy allows.
    pub async fn finish(&self, flight: Flight) -> Bytes {
        let queued_at = flight.queued_at;
        let reply = self.follow(flight, None).await;
        self.record(queued_at, &reply);
        reply
    }

    /// Like `finish`, when the first attempt's result was already taken with
    /// `Flight::poll_first`.
    pub async fn finish_with(&self, flight: Flight, first: Option<ReplyResult>) -> Bytes {
        let queued_at = flight.queued_at;
        let reply = self.follow(flight, Some(first)).await;
        self.record(queued_at, &reply);
        reply
    }

    /// The fast path: when the first attempt's result is a reply to pass on as it is (no
    /// redirect, no retry), counts it and returns it; otherwise gives the result back for
    /// `finish_with`.
    pub fn settle_first(
        &self,
        flight: &mut Flight,
        first: Option<ReplyResult>,
    ) -> Result<Bytes, Option<ReplyResult>> {
        if flight.early_error.is_some() {
            return Err(first);
        }
        let plain = match &first {
            Some(Ok(reply)) => {
                reply.first() != Some(&b'-') || {
                    let from = flight.addr.as_deref().unwrap_or("");
                    let outcome = Outcome::Reply { reply, from };
                    decide(
                        outcome,
                        Attempts::default(),
                        self.policy,
                        flight.opts.idempotent,
                    ) == Decision::Return
                }
            }
            _ => false,
        };
        match first {
            Some(Ok(reply)) if plain => {
                if let Some(session) = flight.lease.take() {
                    session.release();
                }
                self.record(flight.queued_at, &reply);
                Ok(reply)
            }
            other => Err(other),
        }
    }

    /// Whether a first reply goes to the client as it is (no redirect or retry to follow).
    pub fn is_plain(&self, reply: &[u8], from: &str, idempotent: bool) -> bool {
        reply.first() != Some(&b'-') || {
            let outcome = Outcome::Reply { reply, from };
            decide(outcome, Attempts::default(), self.policy, idempotent) == Decision::Return
        }
    }

    /// Counts a reply delivered outside `finish` (batched requests).
    pub fn count_reply(&self, reply: &[u8]) {
        self.record(None, reply);
    }

    /// Records the latency of a batch of requests sent at `sent_at` (sampled).
    pub fn record_latency(&self, sent_at: Instant) {
        self.counters.latency.record(sent_at.elapsed());
    }

    fn record(&self, queued_at: Option<Instant>, reply: &[u8]) {
        let c = &self.counters;
        c.requests.add(1);
        if reply.first() == Some(&b'-') {
            c.errors.add(1);
        }
        if let Some(t) = queued_at {
            c.latency.record(t.elapsed());
        }
    }

    /// The result of a blocking command; `None` once its node no longer serves the
    /// command's slot (by the refreshed table) and has stayed silent for the command timeout
    /// since: a master that was failed over while stopped or hung. A live one would have
    /// answered by then (a demoted master unblocks its clients with `-UNBLOCKED`, one that
    /// lost the slot with `-MOVED`).
    async fn blocked(
        &self,
        flight: &Flight,
        mut rx: oneshot::Receiver<ReplyResult>,
    ) -> Option<ReplyResult> {
        let mut refreshes = self.topology.refreshes();
        let mut stranded_since: Option<tokio::time::Instant> = None;
        loop {
            let grace = async {
                match stranded_since {
                    Some(t) => tokio::time::sleep_until(t + self.timeouts.command()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                result = &mut rx => return Some(result.unwrap_or_else(|_| lost(flight))),
                changed = refreshes.changed() => {
                    if changed.is_err() {
                        // No more refreshes (shutting down): the reply or the connection's end.
                        return Some((&mut rx).await.unwrap_or_else(|_| lost(flight)));
                    }
                    // Another node serves the slot now; while none does (mid-failover),
                    // nothing changes.
                    match self.route(&flight.target, &flight.opts) {
                        Some(now) if flight.addr.as_ref() != Some(&now) => {
                            stranded_since.get_or_insert_with(tokio::time::Instant::now);
                        }
                        Some(_) => stranded_since = None,
                        None => {}
                    }
                }
                _ = grace => return None,
            }
        }
    }

    async fn follow(&self, mut flight: Flight, mut first: Option<Option<ReplyResult>>) -> Bytes {
        if let Some(e) = flight.early_error.take() {
            return e;
        }
        let mut attempts = Attempts::default();
        loop {
            let result = match first.take() {
                Some(result) => result,
                None => match flight.rx.take() {
                    Some(rx) if flight.lease.is_some() => match self.blocked(&flight, rx).await {
                        Some(result) => Some(result),
                        None => {
                            // Stranded on a master that was failed over while it stood
                            // still: its connection is closed (the node forgets the command
                            // when it comes back) and the command blocks on the new master.
                            attempts.retries += 1;
                            self.counters.retries.add(1);
                            let from = flight.addr.take().unwrap_or_else(|| Arc::from("?"));
                            flight.lease = None;
                            let Some(addr) = self.route(&flight.target, &flight.opts) else {
                                return crate::replies::cluster_down();
                            };
                            warn!(from = %from, to = %addr, "a blocked command's master was failed over while it did not answer: blocking on the new master");
                            if let Err(e) = self.send(&mut flight, addr, false).await {
                                return e;
                            }
                            continue;
                        }
                    },
                    Some(rx) => Some(rx.await.unwrap_or_else(|_| lost(&flight))),
                    None => None,
                },
            };
            // A blocking command that was answered leaves its connection clean for reuse; one
            // that failed leaves a connection that is closed, and so does one its master
            // unblocked when it turned into a replica (it closes the connection after that).
            if let Some(session) = flight.lease.take()
                && matches!(&result, Some(Ok(reply)) if !crate::redirect::unblocked_by_demotion(reply))
            {
                session.release();
            }
            let from = flight.addr.clone().unwrap_or_else(|| Arc::from(""));
            let outcome = match &result {
                Some(Ok(reply)) => Outcome::Reply { reply, from: &from },
                Some(Err(e)) => Outcome::Failed(e),
                None => Outcome::NoRoute,
            };
            match decide(outcome, attempts, self.policy, flight.opts.idempotent) {
                Decision::Return => {
                    return match result {
                        Some(Ok(reply)) => reply,
                        // `decide` returns only replies.
                        _ => error("ERR slotgate: internal routing error"),
                    };
                }
                Decision::Fail(e) => {
                    // A node that broke or missed a deadline may have failed over: look.
                    if matches!(result, Some(Err(_))) {
                        self.topology.request_refresh(None);
                    }
                    return e;
                }
                Decision::Redirect { slot, addr, asking } => {
                    attempts.redirects += 1;
                    let counter = if asking {
                        &self.counters.redirects_ask
                    } else {
                        &self.counters.redirects_moved
                    };
                    counter.add(1);
                    debug!(slot, %addr, asking, "following redirect");
                    let addr: Arc<str> = Arc::from(addr);
                    if !asking {
                        self.topology.moved(slot, addr.clone());
                    }
                    if let Err(e) = self.send(&mut flight, addr, asking).await {
                        return e;
                    }
                }
                Decision::Retry { wait, refresh } => {
                    attempts.retries += 1;
                    self.counters.retries.add(1);
                    debug!(retry = attempts.retries, ?wait, refresh, from = %from, "retrying");
                    if refresh {
                        let deadline = wait.max(Duration::from_millis(10));
                        let started = Instant::now();
                        self.topology
                            .refresh_and_wait(None, self.timeouts.connect())
                            .await;
                        if let Some(rest) = deadline.checked_sub(started.elapsed()) {
                            tokio::time::sleep(rest).await;
                        }
                    } else {
                        tokio::time::sleep(wait).await;
                    }
                    flight.addr = None;
                    flight.rx = None;
                    if let Some(addr) = self.route(&flight.target, &flight.opts)
                        && let Err(e) = self.send(&mut flight, addr, false).await
                    {
                        return e;
                    }
                }
            }
        }
    }
}

/// The failure of an attempt whose reply channel closed without a reply.
fn lost(flight: &Flight) -> ReplyResult {
    Err(BackendError::ConnectionLost {
        addr: flight.addr.as_deref().unwrap_or("?").to_string(),
        sent: true,
    })
}

thread_local! {
    /// Counts this thread's keyless requests, to spread them over the masters.
    static KEYLESS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// The next keyless request's spreading hint.
fn next_keyless() -> u64 {
    KEYLESS.with(|c| {
        let n = c.get().wrapping_add(1);
        c.set(n);
        n
    })
}
