//! Multi-write: writes go to the primary cluster and are mirrored to extra resources
//! (clusters or standalone servers), as operators need while migrating between clusters.
//!
//! Each client connection that writes gets a feed: a task that takes its mirrored writes in
//! the order the client sent them and queues them on every mirror at once, in parallel with
//! the primary (so one client's writes keep their order on each mirror too). A write is
//! handed to the feed when slotgate sends it to the primary, so whether the client stays or
//! reads its replies changes nothing. Only writes whose replay would diverge are rewritten
//! (`effects`). The mode decides whom the client waits for; in `first_resource_only` each
//! resource's backlog (its writes handed over and not answered, over all clients) is
//! bounded, and a write beyond the bound is dropped for that resource alone (counted, its
//! key logged) or waits for room (`mirror.on_full`), so a slow or dead mirror neither
//! slows the client nor costs the other mirrors their writes.

pub mod consumer;
pub mod effects;
pub mod probe;
pub mod queue;
pub mod rules;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use dashmap::DashMap;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, warn};

use crate::command::{CmdSpec, Route, Shape, resolve};
use crate::config::{Config, MirrorResourceConfig, MultiWriteMode, OnFull, QueueConfig};
use crate::dispatch::{Cluster, ClusterAccess, SendOptions};
use crate::histogram::Histogram;
use crate::resp::Request;
use crate::resp::encode::error;
use queue::{StreamQueue, WriteQueue};
use rules::KeyRules;

/// One mirror resource at run time.
#[derive(Debug)]
pub struct Resource {
    pub name: String,
    /// Its connections and figures, kept by a reload that leaves its connection settings
    /// alone.
    pub link: Arc<Link>,
    pub rules: KeyRules,
    /// Compare replies with the primary's.
    pub compare: bool,
}

/// What a mirror resource keeps across reloads: its connections and its figures.
#[derive(Debug)]
pub struct Link {
    /// The resource's settings that its connections depend on (its entry without `keys`
    /// and `compare`): a reload that changes none of them keeps the link.
    settings: MirrorResourceConfig,
    pub cluster: Cluster,
    /// Mirror writes dropped because this resource's backlog (or the client's feed) was
    /// full.
    pub dropped: AtomicU64,
    /// Writes handed to this mirror and not answered yet, those still in the clients'
    /// feeds included (the backlog depth).
    pub backlog: AtomicU64,
    /// Woken when the backlog goes down from its bound (`on_full: block` waits on it).
    space: tokio::sync::Notify,
    /// The second of the last dropped-key log lines and how many were written in it.
    drop_log: AtomicU64,
    /// Replies that differed from the primary's, by command.
    pub mismatches: DashMap<&'static str, u64>,
    /// Differing keys logged so far (up to the configured limit).
    mismatch_logged: AtomicUsize,
    /// Double-write delay measured by the probe.
    pub delay: Histogram,
    pub last_delay_us: AtomicU64,
}

/// Every mirror and how clients wait for them: one configuration's, replaced whole by a
/// reload (`Shared::mirrors`).
#[derive(Debug)]
pub struct Mirrors {
    pub mode: MultiWriteMode,
    pub resources: Vec<Resource>,
    /// The durable queue of the async mode.
    pub queue: Option<Arc<dyn WriteQueue>>,
    /// The queue's settings, so that a reload that keeps them keeps the queue.
    queue_settings: Option<QueueConfig>,
    /// Capacity of a client's feed.
    backlog: usize,
    /// Most writes each resource may have waiting in first_resource_only.
    resource_backlog: u64,
    on_full: OnFull,
    compare_log_limit: usize,
}

/// Dropped writes whose key is logged, per resource and second; `dropped` counts them all.
const DROP_LOGS_PER_SECOND: u64 = 20;

/// A mirrored write's reply from one resource.
#[derive(Debug, Clone)]
pub struct MirrorReply {
    pub resource: usize,
    pub reply: Bytes,
}

/// What one job mirrors.
#[derive(Debug)]
enum Work {
    /// One command.
    Write {
        spec: &'static CmdSpec,
        req: Request,
    },
    /// The writes of a MULTI/EXEC, replayed on each mirror as one MULTI/EXEC once the
    /// primary's EXEC succeeded.
    Transaction(Vec<TxWrite>),
}

/// A write queued in a transaction.
#[derive(Debug, Clone)]
pub struct TxWrite {
    /// Its place among the transaction's queued commands (its reply's place in EXEC's).
    pub position: usize,
    pub spec: &'static CmdSpec,
    pub req: Request,
}

/// One write handed to a client's feed.
#[derive(Debug)]
pub struct Job {
    work: Work,
    /// Its place in the backlog of the mirrors that take it, released however it ends.
    backlog: BacklogShare,
    /// The primary's reply, sent by the client's reply path.
    primary: oneshot::Receiver<Bytes>,
    /// Where the mirrors' replies go when the client waits for them.
    done: Option<oneshot::Sender<Vec<MirrorReply>>>,
}

/// The client side of a mirrored write: hand over the primary's reply, and wait for the
/// mirrors as the mode says.
#[derive(Debug)]
pub struct Ticket {
    mode: MultiWriteMode,
    primary: oneshot::Sender<Bytes>,
    done: Option<oneshot::Receiver<Vec<MirrorReply>>>,
    mirrors: Arc<Mirrors>,
}

/// One client connection's feed: the task that mirrors its writes in order, opened on its
/// first mirrored write.
#[derive(Debug, Default)]
pub struct Feed {
    tx: Option<mpsc::Sender<Job>>,
    /// Completes (with an error: its sender is dropped) when the last feed opened has
    /// finished every job handed to it.
    finished: Option<oneshot::Receiver<()>>,
}

impl Feed {
    /// Closes the feed, because the mirrors changed (a reload): the jobs handed over still
    /// complete, and the feed opened next (with the new mirrors) starts once they have, so
    /// this client's writes keep their order on a mirror both configurations have.
    pub fn retire(&mut self) {
        self.tx = None;
    }
}

/// Whether commands of this kind are mirrored: writes, and PUBLISH/SPUBLISH.
pub fn mirrored(spec: &CmdSpec) -> bool {
    spec.is_write() || spec.flags.contains(crate::command::Flags::MIRRORED)
}

impl Link {
    /// Connects to a resource (lazily, like any cluster).
    fn connect(r: MirrorResourceConfig, config: &Config) -> Result<Link, crate::error::TlsError> {
        let tls = crate::tls::BackendTls::for_cluster(r.tls_files(), &r.name)?;
        Ok(Link {
            cluster: Cluster::connect(
                ClusterAccess {
                    name: r.name.clone(),
                    seeds: match &r.standalone {
                        Some(a) => vec![a.clone()],
                        None => r.cluster.clone(),
                    },
                    standalone: r.standalone.is_some(),
                    username: r.username.clone(),
                    password: r.password.clone(),
                    tls,
                },
                config,
            ),
            settings: r,
            dropped: AtomicU64::new(0),
            backlog: AtomicU64::new(0),
            space: tokio::sync::Notify::new(),
            drop_log: AtomicU64::new(0),
            mismatches: DashMap::new(),
            mismatch_logged: AtomicUsize::new(0),
            delay: Histogram::default(),
            last_delay_us: AtomicU64::new(0),
        })
    }
}

impl Mirrors {
    /// Builds the mirrors configured in `config`, if any; fails on a TLS file that cannot be
    /// used. A resource or queue of `previous` whose connection settings are unchanged is
    /// kept (its connections and figures), with the new key rules and compare flag; the
    /// timeouts of kept resources take `config`'s.
    pub fn build(
        config: &Config,
        previous: Option<&Mirrors>,
    ) -> Result<Option<Arc<Mirrors>>, crate::error::TlsError> {
        let m = &config.mirror;
        if m.resources.is_empty() && m.mode != MultiWriteMode::Async {
            return Ok(None);
        }
        let mut resources = Vec::with_capacity(m.resources.len());
        for r in &m.resources {
            let settings = MirrorResourceConfig {
                keys: Vec::new(),
                compare: false,
                ..r.clone()
            };
            let kept = previous.and_then(|p| {
                p.resources
                    .iter()
                    .find(|old| old.link.settings == settings)
                    .map(|old| old.link.clone())
            });
            let link = match kept {
                Some(link) => {
                    link.cluster
                        .timeouts
                        .set(config.connect_timeout(), config.command_timeout());
                    link
                }
                None => Arc::new(Link::connect(settings, config)?),
            };
            resources.push(Resource {
                name: r.name.clone(),
                link,
                rules: KeyRules::new(&r.keys),
                compare: r.compare,
            });
        }
        let queue: Option<Arc<dyn WriteQueue>> = match (&m.mode, &m.queue) {
            (MultiWriteMode::Async, Some(q)) => match previous {
                Some(p) if p.queue_settings.as_ref() == Some(q) && p.queue.is_some() => {
                    p.queue.clone()
                }
                _ => Some(Arc::new(StreamQueue::connect(q, config))),
            },
            _ => None,
        };
        Ok(Some(Arc::new(Mirrors {
            mode: m.mode,
            resources,
            queue_settings: queue.as_ref().and(m.queue.clone()),
            queue,
            // In the modes where the client waits, the feed must hold a whole pipeline window,
            // or the client would wait on a full feed while the feed waits on its replies.
            backlog: m
                .backlog
                .unwrap_or(10_000)
                .max(config.limits.pipeline_window + 1),
            resource_backlog: m.backlog.unwrap_or(10_000) as u64,
            on_full: m.on_full,
            compare_log_limit: m.compare_log_limit.unwrap_or(20),
        })))
    }

    /// Hands a write to the client's feed (opening the feed on first use). `None` when the
    /// write is not mirrored, or was dropped because the feed is full (first_resource_only).
    pub async fn submit(
        self: &Arc<Self>,
        feed: &mut Feed,
        spec: &'static CmdSpec,
        req: &Request,
    ) -> Option<Ticket> {
        self.hand_over(
            feed,
            Work::Write {
                spec,
                req: req.clone(),
            },
        )
        .await
    }

    /// Hands the writes of a transaction to the client's feed: once the primary's EXEC
    /// succeeded, each mirror gets them as one MULTI/EXEC. `None` when none is mirrored.
    pub async fn submit_transaction(
        self: &Arc<Self>,
        feed: &mut Feed,
        writes: Vec<TxWrite>,
    ) -> Option<Ticket> {
        if writes.is_empty() {
            return None;
        }
        self.hand_over(feed, Work::Transaction(writes)).await
    }

    /// Queues `work` on the client's feed (opening it on first use), as the mode says.
    async fn hand_over(self: &Arc<Self>, feed: &mut Feed, work: Work) -> Option<Ticket> {
        let mut takers: Vec<usize> = (0..self.resources.len())
            .filter(|&i| self.resources[i].wants_work(&work))
            .collect();
        if self.mode == MultiWriteMode::FirstResourceOnly {
            // Each resource's backlog is bounded on its own: a full one drops (or waits)
            // for that resource, and the others still get the write.
            match self.on_full {
                OnFull::Drop => takers.retain(|&i| {
                    let room = self.resources[i].link.backlog.load(Ordering::Relaxed)
                        < self.resource_backlog;
                    if !room {
                        self.note_dropped(i, &work);
                    }
                    room
                }),
                OnFull::Block => {
                    for &i in &takers {
                        self.wait_for_room(i).await;
                    }
                }
            }
        }
        if self.mode != MultiWriteMode::Async && takers.is_empty() {
            return None;
        }
        let tx = match &feed.tx {
            Some(tx) => tx,
            None => {
                let (tx, rx) = mpsc::channel(self.backlog);
                let (finished_tx, finished_rx) = oneshot::channel();
                let previous = feed.finished.replace(finished_rx);
                tokio::spawn(run_feed(self.clone(), rx, previous, finished_tx));
                feed.tx.insert(tx)
            }
        };
        let (primary_tx, primary_rx) = oneshot::channel();
        let waits = self.mode != MultiWriteMode::FirstResourceOnly;
        let (done_tx, done_rx) = if waits {
            let (t, r) = oneshot::channel();
            (Some(t), Some(r))
        } else {
            (None, None)
        };
        let job = Job {
            work,
            backlog: BacklogShare::new(self, takers),
            primary: primary_rx,
            done: done_tx,
        };
        if waits || self.on_full == OnFull::Block {
            if tx.send(job).await.is_err() {
                return None;
            }
        } else if let Err(e) = tx.try_send(job) {
            if let mpsc::error::TrySendError::Full(job) = e {
                for &i in &job.backlog.takers {
                    self.note_dropped(i, &job.work);
                }
            }
            return None;
        }
        Some(Ticket {
            mode: self.mode,
            primary: primary_tx,
            done: done_rx,
            mirrors: self.clone(),
        })
    }
}

impl Mirrors {
    /// Counts a write dropped for resource `i` and logs its key (at most
    /// `DROP_LOGS_PER_SECOND` keys per resource and second, so a long outage cannot flood
    /// the log; `dropped` in INFO counts every one).
    fn note_dropped(&self, i: usize, work: &Work) {
        let r = &self.resources[i];
        let n = r.link.dropped.fetch_add(1, Ordering::Relaxed) + 1;
        let second = crate::clock::now_ms() / 1000;
        let window = r.link.drop_log.load(Ordering::Relaxed);
        let log = if window >> 16 != second {
            r.link.drop_log.store(second << 16 | 1, Ordering::Relaxed);
            true
        } else if window & 0xFFFF < DROP_LOGS_PER_SECOND {
            r.link.drop_log.fetch_add(1, Ordering::Relaxed);
            true
        } else {
            false
        };
        if log {
            let (command, key) = work.first_key();
            warn!(
                mirror = %r.name,
                dropped = n,
                command,
                key = key.as_deref().unwrap_or(""),
                "mirror backlog full: mirror write dropped"
            );
        }
    }

    /// Waits until resource `i` has room in its backlog (`on_full: block`).
    async fn wait_for_room(&self, i: usize) {
        let link = &self.resources[i].link;
        loop {
            let notified = link.space.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if link.backlog.load(Ordering::Relaxed) < self.resource_backlog {
                return;
            }
            // Woken by a release; the timeout only covers a bound changed by a reload
            // between the releasing configuration and this one.
            let _ = tokio::time::timeout(Duration::from_millis(100), notified).await;
        }
    }

    /// Releases one write's place in resource `i`'s backlog.
    fn release(&self, i: usize) {
        let link = &self.resources[i].link;
        let before = link.backlog.fetch_sub(1, Ordering::Relaxed);
        if before >= self.resource_backlog {
            link.space.notify_waiters();
        }
    }
}

impl Work {
    /// The command and first key, for logs.
    fn first_key(&self) -> (&'static str, Option<String>) {
        let (spec, req) = match self {
            Work::Write { spec, req } => (*spec, req),
            Work::Transaction(writes) => match writes.first() {
                Some(w) => (w.spec, &w.req),
                None => return ("EXEC", None),
            },
        };
        let key = spec
            .key_indices(req)
            .next()
            .map(|i| String::from_utf8_lossy(req.arg(i)).into_owned());
        (spec.name, key)
    }
}

impl Resource {
    /// Whether this mirror receives (part of) a job.
    fn wants_work(&self, work: &Work) -> bool {
        match work {
            Work::Write { spec, req } => self.wants(spec, req),
            Work::Transaction(writes) => writes.iter().any(|w| self.wants(w.spec, &w.req)),
        }
    }

    /// Whether this mirror receives (part of) the write.
    fn wants(&self, spec: &CmdSpec, req: &Request) -> bool {
        self.rules.all()
            || spec
                .key_indices(req)
                .any(|i| self.rules.matches(req.arg(i)))
    }

    /// The write as this mirror receives it: keys outside its rules removed from the
    /// commands that can lose some (MSET, DEL, UNLINK), skipped when no key matches.
    fn filter(&self, spec: &CmdSpec, req: &Request) -> Option<Request> {
        if self.rules.all() {
            return Some(req.clone());
        }
        let keys: Vec<usize> = spec.key_indices(req).collect();
        let matching: Vec<usize> = keys
            .iter()
            .copied()
            .filter(|&i| self.rules.matches(req.arg(i)))
            .collect();
        if matching.is_empty() {
            return None;
        }
        let Route::Split(shape) = spec.route else {
            return Some(req.clone());
        };
        if matching.len() == keys.len() {
            return Some(req.clone());
        }
        let pairs = shape == Shape::Pairs;
        let mut parts: Vec<&[u8]> = vec![req.arg(0)];
        for i in matching {
            parts.push(req.arg(i));
            if pairs {
                parts.push(req.arg(i + 1));
            }
        }
        Some(Request::from_args(&parts))
    }

    /// Records a reply that differs from the primary's.
    fn compare(
        &self,
        name: &'static str,
        req: &Request,
        primary: &[u8],
        mine: &[u8],
        limit: usize,
    ) {
        if same_outcome(primary, mine) {
            return;
        }
        *self.link.mismatches.entry(name).or_insert(0) += 1;
        if self.link.mismatch_logged.fetch_add(1, Ordering::Relaxed) < limit {
            let key = (req.len() > 1).then(|| String::from_utf8_lossy(req.arg(1)).into_owned());
            warn!(
                mirror = %self.name,
                command = name,
                key = key.as_deref().unwrap_or(""),
                primary = %String::from_utf8_lossy(&primary[..primary.len().min(64)]).trim_end(),
                mirror_reply = %String::from_utf8_lossy(&mine[..mine.len().min(64)]).trim_end(),
                "mirror diverges from primary"
            );
        }
    }
}

/// Whether two replies say the same thing: same type, same integer, both OK or both errors.
pub fn same_outcome(a: &[u8], b: &[u8]) -> bool {
    match (a.first(), b.first()) {
        (Some(b':'), Some(b':')) => a == b,
        (Some(b'-'), Some(b'-')) => true,
        (Some(b'+'), Some(b'+')) => a == b,
        (Some(x), Some(y)) => x == y,
        _ => false,
    }
}

impl Ticket {
    /// Gives the mirrors the primary's reply and returns what the client gets.
    pub async fn settle(self, reply: Bytes) -> Bytes {
        let _ = self.primary.send(reply.clone());
        let Some(done) = self.done else {
            return reply;
        };
        let Ok(replies) = done.await else {
            return match self.mode {
                MultiWriteMode::AllResourcesNoCheck => reply,
                _ => error("ERR slotgate: the mirror write was lost (connection closing)"),
            };
        };
        match self.mode {
            MultiWriteMode::AllResourcesNoCheck | MultiWriteMode::FirstResourceOnly => reply,
            MultiWriteMode::AllResourcesCheckError | MultiWriteMode::Async => {
                if reply.first() == Some(&b'-') {
                    return reply;
                }
                for r in &replies {
                    if r.reply.first() == Some(&b'-') {
                        let name = self
                            .mirrors
                            .resources
                            .get(r.resource)
                            .map_or("queue", |res| res.name.as_str());
                        let text = String::from_utf8_lossy(&r.reply[1..])
                            .trim_end()
                            .to_string();
                        return error(&format!(
                            "ERR slotgate: the write succeeded on the primary but failed on \
                             mirror '{name}': {text}"
                        ));
                    }
                }
                reply
            }
        }
    }
}

/// Most mirror writes of one client awaiting their replies at once.
const FEED_INFLIGHT: usize = 1024;

/// A client's feed: mirrors its writes in order, once the feed before it (`previous`) has
/// finished; drops `finished` when done.
async fn run_feed(
    mirrors: Arc<Mirrors>,
    mut rx: mpsc::Receiver<Job>,
    previous: Option<oneshot::Receiver<()>>,
    finished: oneshot::Sender<()>,
) {
    if let Some(previous) = previous {
        let _ = previous.await;
    }
    let mut inflight = FuturesUnordered::new();
    loop {
        tokio::select! {
            Some(()) = inflight.next(), if !inflight.is_empty() => {}
            job = rx.recv(), if inflight.len() < FEED_INFLIGHT => match job {
                Some(job) => {
                    if let Some(fut) = dispatch(&mirrors, job).await {
                        inflight.push(fut);
                    }
                }
                None => break,
            },
        }
    }
    while inflight.next().await.is_some() {}
    drop(finished);
}

type Completion = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// Queues one job on the mirrors (or the durable queue); returns the future that collects
/// the replies. In the direct modes the write goes out at once, in parallel with the
/// primary, unless it needs the primary's reply (`effects::plan`); the async mode always
/// records the primary's effect.
async fn dispatch(mirrors: &Arc<Mirrors>, job: Job) -> Option<Completion> {
    let Job {
        work,
        backlog,
        mut primary,
        done,
    } = job;
    let (spec, req) = match work {
        Work::Write { spec, req } => (spec, req),
        Work::Transaction(writes) => {
            return dispatch_transaction(mirrors, writes, primary, done, backlog).await;
        }
    };
    let opts = SendOptions::internal();
    let plan = if mirrors.mode == MultiWriteMode::Async {
        effects::Plan::AfterReply
    } else {
        effects::plan(spec, &req, crate::clock::now_ms())
    };
    // Whether this write waited for the primary's reply (then the mirror ran its effect).
    let mut waited = false;
    let commands = match plan {
        effects::Plan::Verbatim => vec![req.clone()],
        effects::Plan::Rewritten(r) => vec![r],
        effects::Plan::AfterReply => {
            // The effect is known only from the primary's reply; later writes of this
            // client wait behind it, so they keep their order on the mirrors.
            let Ok(reply) = (&mut primary).await else {
                debug!("the primary's reply never came; mirror write skipped");
                return None;
            };
            let commands = effects::effect(spec.cmd, &req, &reply, crate::clock::now_ms());
            if let Some(queue) = &mirrors.queue {
                enqueue(queue.as_ref(), &commands, done).await;
                return None;
            }
            waited = true;
            commands
        }
    };
    let mut started = Vec::new();
    let takers = backlog.takers.clone();
    for &i in &takers {
        let r = &mirrors.resources[i];
        for c in &commands {
            let Some(spec) = resolve(c) else {
                continue;
            };
            if let Some(filtered) = r.filter(spec, c) {
                started.push((i, r.link.cluster.submit(spec, &filtered, opts).await));
            }
        }
    }
    let mirrors = mirrors.clone();
    let limit = mirrors.compare_log_limit;
    Some(Box::pin(async move {
        let mut backlog = backlog;
        let mut left = vec![0usize; mirrors.resources.len()];
        for (i, _) in &started {
            left[*i] += 1;
        }
        let mut replies: Vec<Option<MirrorReply>> = vec![None; started.len()];
        // Every resource's replies are taken as they come: a slow mirror does not hold a
        // fast one's place in its backlog.
        let resources = &mirrors.resources;
        let mut waiting: FuturesUnordered<_> = started
            .into_iter()
            .enumerate()
            .map(|(at, (i, s))| async move { (at, i, resources[i].link.cluster.wait(s).await) })
            .collect();
        while let Some((at, i, reply)) = waiting.next().await {
            left[i] -= 1;
            if left[i] == 0 {
                backlog.release(i);
            }
            replies[at] = Some(MirrorReply { resource: i, reply });
        }
        drop(waiting);
        drop(backlog);
        let replies: Vec<MirrorReply> = replies.into_iter().flatten().collect();
        // Compared only where the mirror ran the client's command (verbatim, or with its
        // expiry made absolute): an effect's reply (SREM for SPOP) says something else.
        if !waited
            && replies
                .iter()
                .any(|r| mirrors.resources[r.resource].compare)
        {
            let primary = tokio::time::timeout(Duration::from_secs(30), primary)
                .await
                .ok()
                .and_then(Result::ok);
            if let Some(primary) = primary {
                for r in &replies {
                    let res = &mirrors.resources[r.resource];
                    if res.compare {
                        res.compare(spec.name, &req, &primary, &r.reply, limit);
                    }
                }
            }
        }
        if let Some(done) = done {
            let _ = done.send(replies);
        }
    }))
}

/// Replays a transaction's writes on each mirror as one MULTI/EXEC, once the primary's EXEC
/// succeeded (a discarded, aborted or WATCH-failed transaction mirrors nothing). Effects
/// that need the primary's reply take it from the EXEC reply. The async mode records each
/// write's effect in the queue.
async fn dispatch_transaction(
    mirrors: &Arc<Mirrors>,
    writes: Vec<TxWrite>,
    primary: oneshot::Receiver<Bytes>,
    done: Option<oneshot::Sender<Vec<MirrorReply>>>,
    backlog: BacklogShare,
) -> Option<Completion> {
    let Ok(reply) = primary.await else {
        debug!("the primary's EXEC reply never came; transaction not mirrored");
        return None;
    };
    // EXEC's replies, one per queued command; anything else (nil, an error) applied nothing.
    let Some(results) = crate::resp::reply::elements(&reply) else {
        if let Some(done) = done {
            let _ = done.send(Vec::new());
        }
        return None;
    };
    let now = crate::clock::now_ms();
    let effect_of = |w: &TxWrite, req: &Request| -> Vec<Request> {
        let plan = if mirrors.mode == MultiWriteMode::Async {
            effects::Plan::AfterReply
        } else {
            effects::plan(w.spec, req, now)
        };
        match plan {
            effects::Plan::Verbatim => vec![req.clone()],
            effects::Plan::Rewritten(c) => vec![c],
            effects::Plan::AfterReply => match results.get(w.position) {
                Some(r) => effects::effect(w.spec.cmd, req, r, now),
                None => Vec::new(),
            },
        }
    };
    if let Some(queue) = &mirrors.queue {
        let commands: Vec<Request> = writes.iter().flat_map(|w| effect_of(w, &w.req)).collect();
        enqueue(queue.as_ref(), &commands, done).await;
        return None;
    }
    let mut started = Vec::new();
    let takers = backlog.takers.clone();
    for &i in &takers {
        let r = &mirrors.resources[i];
        let mut commands = Vec::new();
        for w in &writes {
            if let Some(filtered) = r.filter(w.spec, &w.req) {
                commands.extend(effect_of(w, &filtered));
            }
        }
        // Every key of a transaction is in one slot: the mirror's master of that slot runs it.
        let slot = commands
            .iter()
            .find_map(|c| resolve(c)?.slot(c).ok().flatten());
        if commands.is_empty() {
            continue;
        }
        let mut raw = bytes::BytesMut::new();
        raw.extend_from_slice(&Request::from_args(&["MULTI"]).raw);
        for c in &commands {
            raw.extend_from_slice(&c.raw);
        }
        raw.extend_from_slice(&Request::from_args(&["EXEC"]).raw);
        let block = r
            .link
            .cluster
            .send_block(slot, raw.freeze(), commands.len() + 2)
            .await;
        started.push((i, block));
    }
    let mirrors = mirrors.clone();
    Some(Box::pin(async move {
        let mut backlog = backlog;
        let mut replies: Vec<Option<MirrorReply>> = vec![None; started.len()];
        let mut waiting: FuturesUnordered<_> = started
            .into_iter()
            .enumerate()
            .map(|(at, (i, block))| async move { (at, i, block.await) })
            .collect();
        while let Some((at, i, result)) = waiting.next().await {
            let reply = match result {
                // EXEC's reply is the last one.
                Ok(mut all) => all.pop().unwrap_or_else(|| error("ERR no reply")),
                Err(e) => error(&format!("ERR {e}")),
            };
            let counters = &mirrors.resources[i].link.cluster.counters;
            counters.requests.add(1);
            if reply.first() == Some(&b'-') {
                counters.errors.add(1);
            }
            backlog.release(i);
            replies[at] = Some(MirrorReply { resource: i, reply });
        }
        drop(backlog);
        let replies: Vec<MirrorReply> = replies.into_iter().flatten().collect();
        if let Some(done) = done {
            let _ = done.send(replies);
        }
    }))
}

/// Records the async mode's commands in the durable queue and reports the outcome (an
/// error naming the queue when it refused one) to a client that waits for it.
async fn enqueue(
    queue: &dyn WriteQueue,
    commands: &[Request],
    done: Option<oneshot::Sender<Vec<MirrorReply>>>,
) {
    let mut outcome = MirrorReply {
        resource: usize::MAX,
        reply: crate::resp::encode::OK,
    };
    for c in commands {
        if let Err(e) = queue.push(slot_of_command(c), c.raw.clone()).await {
            outcome.reply = error(&format!("ERR queue: {e}"));
        }
    }
    if let Some(done) = done {
        let _ = done.send(vec![outcome]);
    }
}

/// The hash slot of a command's keys, for the queue's partitions.
fn slot_of_command(c: &Request) -> Option<u16> {
    resolve(c)?.slot(c).ok().flatten()
}

/// One write's place in the backlog of the mirrors that took it: counted when the write is
/// handed over, released on drop (answered, skipped or dropped).
#[derive(Debug)]
struct BacklogShare {
    mirrors: Arc<Mirrors>,
    takers: Vec<usize>,
}

impl BacklogShare {
    fn new(mirrors: &Arc<Mirrors>, takers: Vec<usize>) -> BacklogShare {
        for &i in &takers {
            mirrors.resources[i]
                .link
                .backlog
                .fetch_add(1, Ordering::Relaxed);
        }
        BacklogShare {
            mirrors: mirrors.clone(),
            takers,
        }
    }
}

impl BacklogShare {
    /// Releases resource `i`'s place once it has answered (the others keep theirs).
    fn release(&mut self, i: usize) {
        if let Some(p) = self.takers.iter().position(|&t| t == i) {
            self.takers.swap_remove(p);
            self.mirrors.release(i);
        }
    }
}

impl Drop for BacklogShare {
    fn drop(&mut self) {
        for &i in &self.takers {
            self.mirrors.release(i);
        }
    }
}

/// The `# Multiwrite` INFO section.
pub fn info_section(mirrors: &Mirrors, primary: &Cluster, lag: Option<queue::Lag>) -> String {
    use std::fmt::Write;
    let mut out = String::from("# Multiwrite\r\n");
    let mode = match mirrors.mode {
        MultiWriteMode::FirstResourceOnly => "first_resource_only",
        MultiWriteMode::AllResourcesNoCheck => "all_resources_no_check",
        MultiWriteMode::AllResourcesCheckError => "all_resources_check_error",
        MultiWriteMode::Async => "async",
    };
    let _ = write!(out, "mode:{mode}\r\n");
    let mut line = |name: &str, c: &Cluster, extra: String| {
        let k = &c.counters;
        let _ = write!(
            out,
            "resource_{name}:requests={},errors={},latency_p50_us={},latency_p99_us={},latency_max_us={}{extra}\r\n",
            k.requests.get(),
            k.errors.get(),
            k.latency.quantile_us(0.5),
            k.latency.quantile_us(0.99),
            k.latency.max_us(),
        );
    };
    line("primary", primary, String::new());
    for r in &mirrors.resources {
        let mismatches: u64 = r.link.mismatches.iter().map(|e| *e.value()).sum();
        let by_cmd: Vec<String> = r
            .link
            .mismatches
            .iter()
            .map(|e| format!("{}:{}", e.key(), e.value()))
            .collect();
        line(
            &r.name,
            &r.link.cluster,
            format!(
                ",dropped={},backlog={},mismatches={}{}{},delay_last_us={},delay_p50_us={},delay_max_us={},delay_probes={}",
                r.link.dropped.load(Ordering::Relaxed),
                r.link.backlog.load(Ordering::Relaxed),
                mismatches,
                if by_cmd.is_empty() {
                    ""
                } else {
                    ",mismatches_by_command="
                },
                by_cmd.join("/"),
                r.link.last_delay_us.load(Ordering::Relaxed),
                r.link.delay.quantile_us(0.5),
                r.link.delay.max_us(),
                r.link.delay.count(),
            ),
        );
    }
    if let Some(lag) = lag {
        let _ = write!(
            out,
            "queue_length:{}\r\nqueue_lag_entries:{}\r\nqueue_pending_entries:{}\r\nqueue_lag_seconds:{:.3}\r\n",
            lag.length, lag.undelivered, lag.pending, lag.seconds
        );
    }
    out
}

/// Milliseconds since `t`, as microseconds for the delay figures.
pub fn micros_since(t: Instant) -> u64 {
    u64::try_from(t.elapsed().as_micros()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes() {
        assert!(same_outcome(b"+OK\r\n", b"+OK\r\n"));
        assert!(same_outcome(b":1\r\n", b":1\r\n"));
        assert!(!same_outcome(b":1\r\n", b":0\r\n"));
        assert!(same_outcome(b"-ERR a\r\n", b"-WRONGTYPE b\r\n"));
        assert!(!same_outcome(b"+OK\r\n", b"-ERR x\r\n"));
        assert!(same_outcome(b"$1\r\na\r\n", b"$1\r\nb\r\n"));
    }
}
