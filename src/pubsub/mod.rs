//! Pub/Sub through the proxy.
//!
//! A subscribing client gets connections of its own: one to any master for SUBSCRIBE and
//! PSUBSCRIBE (cluster pub/sub is broadcast, so every node sees every PUBLISH), and one per
//! node for SSUBSCRIBE (shard channels live on their slot's master). Every frame those
//! connections read is streamed to the client: RESP2 clients are in the classic subscriber
//! mode, RESP3 clients get push frames and may keep sending ordinary commands.
//!
//! slotgate remembers what the client subscribed to. When a subscriber connection is lost,
//! or a node drops a shard channel because its slot moved (Redis 7 sends `sunsubscribe`),
//! slotgate subscribes again on the node that now serves it, and swallows the confirmation,
//! so the client keeps receiving. A client that reads too slowly to keep its pending frames
//! under the configured limit is disconnected, as Redis does with its pub/sub output buffer.
//!
//! Keyspace notifications (channels that begin with `__keyspace@` or `__keyevent@`, and
//! patterns that can match such channels, as `__key*__:*` or `*` do) are published by the
//! master that holds the key only, so those are subscribed on every master that serves
//! slots, over one more connection per master, and the messages merged into the client's
//! stream (a pattern's messages on other channels, which every master hears, are taken
//! from one of them); the connections follow masters that are added, removed or fail
//! over. From a client's first keyspace subscription on, slotgate writes the subscription
//! confirmations itself (`confirmations`): one per channel, in the order asked, once every
//! connection it went to has confirmed it.

pub mod confirmations;
pub mod fanned;
pub mod pattern;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tracing::{Instrument, debug, info_span, warn};

use crate::backend::conn;
use crate::command::{Cmd, CmdSpec};
use crate::resp::encode::{Encoder, error};
use crate::resp::reply::bulk_body;
use crate::resp::reply::{elements, integer};
use crate::resp::{Proto, ReplyScanner, Request};
use crate::shared::Shared;
use crate::slot::slot_of;

/// Which subscriber connection a frame or command belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Link {
    /// SUBSCRIBE / PSUBSCRIBE.
    Global,
    /// SSUBSCRIBE on this node.
    Shard(Arc<str>),
    /// Keyspace-notification channels and patterns on this master.
    Keyspace(Arc<str>),
}

/// How long a confirmation waits for a node that does not answer (a stopped master) before
/// the client gets it anyway.
const CONFIRMATION_WAIT: Duration = Duration::from_secs(5);

/// Whether a channel or pattern names keyspace notifications, which every master publishes
/// for its own keys.
pub fn is_keyspace(name: &[u8]) -> bool {
    name.starts_with(b"__keyspace@") || name.starts_with(b"__keyevent@")
}

/// Whether a channel (`pattern` false) or a pattern is subscribed on every master.
fn fanned(name: &[u8], pattern: bool) -> bool {
    if pattern {
        pattern::may_match_prefixed(name, b"__keyspace@")
            || pattern::may_match_prefixed(name, b"__keyevent@")
    } else {
        is_keyspace(name)
    }
}

/// What a subscriber connection reports to the client task.
#[derive(Debug)]
pub enum Event {
    Frame {
        link_id: u64,
        frame: Bytes,
    },
    /// The connection ended (node down, connection lost).
    Lost {
        link_id: u64,
    },
    /// The client fell too far behind.
    Overflow,
    /// Confirmations may be complete (`Confirmations`).
    Owed,
}

/// A live subscriber connection.
#[derive(Debug)]
struct SubConn {
    /// Distinguishes this connection from an earlier one for the same link.
    id: u64,
    commands: mpsc::Sender<Bytes>,
    /// Confirmation frames still to swallow (resubscriptions made by slotgate itself).
    swallow: usize,
    /// The node it is connected to (the host of an empty-host MOVED).
    addr: Arc<str>,
}

/// Subscription state of one client.
#[derive(Debug)]
pub struct Subscriptions {
    proto: Proto,
    /// Whom the subscriber connections are authenticated as (the client's user).
    user: crate::backend::users::UserId,
    /// Frames not yet written to the client, in bytes; bounded by `limit`.
    pending: Arc<AtomicUsize>,
    limit: usize,
    events_tx: mpsc::UnboundedSender<Event>,
    /// Events from every subscriber connection of this client.
    pub events: mpsc::UnboundedReceiver<Event>,
    links: HashMap<Link, SubConn>,
    next_id: u64,
    channels: HashSet<Bytes>,
    patterns: HashSet<Bytes>,
    /// Shard channels and the node they are subscribed on.
    shard_channels: HashMap<Bytes, Arc<str>>,
    /// Keyspace-notification channels and patterns, subscribed on every master.
    keyspace_channels: HashSet<Bytes>,
    keyspace_patterns: HashSet<Bytes>,
    /// Confirmations slotgate writes itself, from the first keyspace subscription on.
    owed: Option<confirmations::Confirmations>,
    /// The process-wide count of the keyspace subscriptions above.
    fanned: Arc<fanned::Fanned>,
}

impl Drop for Subscriptions {
    fn drop(&mut self) {
        for c in &self.keyspace_channels {
            self.fanned.remove(false, c);
        }
        for p in &self.keyspace_patterns {
            self.fanned.remove(true, p);
        }
    }
}

impl Subscriptions {
    pub fn new(
        proto: Proto,
        limit: usize,
        user: crate::backend::users::UserId,
        fanned: Arc<fanned::Fanned>,
    ) -> Self {
        let (events_tx, events) = mpsc::unbounded_channel();
        Subscriptions {
            proto,
            user,
            pending: Arc::new(AtomicUsize::new(0)),
            limit,
            events_tx,
            events,
            links: HashMap::new(),
            next_id: 0,
            channels: HashSet::new(),
            patterns: HashSet::new(),
            shard_channels: HashMap::new(),
            keyspace_channels: HashSet::new(),
            keyspace_patterns: HashSet::new(),
            owed: None,
            fanned,
        }
    }

    /// True while the client is subscribed to anything (RESP2 subscriber mode).
    pub fn active(&self) -> bool {
        !self.channels.is_empty()
            || !self.patterns.is_empty()
            || !self.shard_channels.is_empty()
            || !self.keyspace_channels.is_empty()
            || !self.keyspace_patterns.is_empty()
    }

    /// Channels and patterns, as the count of a (un)subscribe confirmation gives them.
    fn count(&self) -> usize {
        self.channels.len()
            + self.patterns.len()
            + self.keyspace_channels.len()
            + self.keyspace_patterns.len()
    }

    /// Whether subscription confirmations are still owed to the client (its next command
    /// waits for them).
    pub fn owes_confirmations(&self) -> bool {
        self.owed.as_ref().is_some_and(|o| !o.is_empty())
    }

    /// True while any subscriber connection may still send frames.
    pub fn has_links(&self) -> bool {
        !self.links.is_empty()
    }

    /// Counts written bytes off the pending total.
    pub fn written(&self, n: usize) {
        self.pending.fetch_sub(
            n.min(self.pending.load(Ordering::Relaxed)),
            Ordering::Relaxed,
        );
    }

    /// Runs a subscribe-family command, or PING while in RESP2 subscriber mode. Replies come
    /// as frames through `events`; an immediate reply (an error) is returned.
    pub async fn command(
        &mut self,
        shared: &Shared,
        spec: &CmdSpec,
        req: &Request,
    ) -> Option<Bytes> {
        let args: Vec<Bytes> = (1..req.len()).map(|i| req.arg_bytes(i)).collect();
        let name = spec.name;
        let classic = matches!(
            spec.cmd,
            Cmd::Subscribe | Cmd::Psubscribe | Cmd::Unsubscribe | Cmd::Punsubscribe
        );
        let pattern = matches!(spec.cmd, Cmd::Psubscribe | Cmd::Punsubscribe);
        if classic && (self.owed.is_some() || args.iter().any(|a| fanned(a, pattern))) {
            return self.fan_in_command(shared, spec, args).await;
        }
        match spec.cmd {
            Cmd::Subscribe | Cmd::Psubscribe => {
                if args.is_empty() {
                    return Some(wrong_args(name));
                }
                let set = if spec.cmd == Cmd::Subscribe {
                    &mut self.channels
                } else {
                    &mut self.patterns
                };
                set.extend(args.iter().cloned());
                self.send(shared, Link::Global, req.raw.clone()).await
            }
            Cmd::Unsubscribe | Cmd::Punsubscribe => {
                let set = if spec.cmd == Cmd::Unsubscribe {
                    &mut self.channels
                } else {
                    &mut self.patterns
                };
                if args.is_empty() {
                    set.clear();
                } else {
                    for a in &args {
                        set.remove(a);
                    }
                }
                if self.links.contains_key(&Link::Global) {
                    self.send(shared, Link::Global, req.raw.clone()).await
                } else {
                    Some(self.nothing_to_unsubscribe(name, &args))
                }
            }
            Cmd::Ssubscribe => {
                if args.is_empty() {
                    return Some(wrong_args(name));
                }
                let slot = slot_of(&args[0]);
                if args.iter().any(|a| slot_of(a) != slot) {
                    return Some(crate::replies::crossslot());
                }
                let Some(addr) = shared
                    .primary
                    .topology
                    .table()
                    .master_for(slot)
                    .map(|m| m.addr.clone())
                else {
                    return Some(crate::replies::slot_not_served());
                };
                for a in &args {
                    self.shard_channels.insert(a.clone(), addr.clone());
                }
                self.send(shared, Link::Shard(addr), req.raw.clone()).await
            }
            Cmd::Sunsubscribe => {
                let mut by_node: HashMap<Arc<str>, Vec<Bytes>> = HashMap::new();
                if args.is_empty() {
                    for (ch, addr) in self.shard_channels.drain() {
                        by_node.entry(addr).or_default().push(ch);
                    }
                } else {
                    for a in &args {
                        if let Some(addr) = self.shard_channels.remove(a) {
                            by_node.entry(addr).or_default().push(a.clone());
                        }
                    }
                }
                if by_node.is_empty() {
                    return Some(self.nothing_to_unsubscribe(name, &args));
                }
                for (addr, chans) in by_node {
                    let mut parts: Vec<&[u8]> = vec![b"SUNSUBSCRIBE"];
                    parts.extend(chans.iter().map(|c| &c[..]));
                    let raw = Request::from_args(&parts).raw;
                    if let Some(e) = self.send(shared, Link::Shard(addr), raw).await {
                        return Some(e);
                    }
                }
                None
            }
            // PING in RESP2 subscriber mode: the node answers in subscriber form, in order
            // with the stream.
            _ => {
                let link = if self.links.contains_key(&Link::Global) {
                    Link::Global
                } else {
                    self.links.keys().next()?.clone()
                };
                self.send(shared, link, req.raw.clone()).await
            }
        }
    }

    /// A (P)(UN)SUBSCRIBE once keyspace notifications are involved: keyspace names go to
    /// every master, the others to the home connection, and the confirmations are written
    /// by slotgate in the order asked (through `Event::Owed`).
    async fn fan_in_command(
        &mut self,
        shared: &Shared,
        spec: &CmdSpec,
        args: Vec<Bytes>,
    ) -> Option<Bytes> {
        let (kind, subscribe, pattern) = match spec.cmd {
            Cmd::Subscribe => ("subscribe", true, false),
            Cmd::Psubscribe => ("psubscribe", true, true),
            Cmd::Unsubscribe => ("unsubscribe", false, false),
            _ => ("punsubscribe", false, true),
        };
        if subscribe && args.is_empty() {
            return Some(wrong_args(spec.name));
        }
        // Every master has its connection, subscribed to what the client had before (and
        // one is opened for a first keyspace subscription).
        let opens = subscribe && args.iter().any(|a| fanned(a, pattern));
        self.keep_masters(shared, opens).await;
        let masters: Vec<confirmations::Source> = self
            .links
            .keys()
            .filter_map(|l| match l {
                Link::Keyspace(a) => Some(confirmations::Source::Master(a.clone())),
                _ => None,
            })
            .collect();
        let names: Vec<Bytes> = if args.is_empty() {
            let (classic, keyspace) = if pattern {
                (&self.patterns, &self.keyspace_patterns)
            } else {
                (&self.channels, &self.keyspace_channels)
            };
            classic.iter().chain(keyspace.iter()).cloned().collect()
        } else {
            args
        };
        let home_open = self.links.contains_key(&Link::Global);
        if self.owed.is_none() {
            self.owed = Some(Default::default());
        }
        if names.is_empty() {
            let count = self.count();
            if let Some(owed) = &mut self.owed {
                owed.owe(kind, None, count, Vec::new());
            }
            let _ = self.events_tx.send(Event::Owed);
            return None;
        }
        let (mut home, mut every_master) = (Vec::new(), Vec::new());
        for n in names {
            let keyspace = fanned(&n, pattern);
            let set = match (keyspace, pattern) {
                (false, false) => &mut self.channels,
                (false, true) => &mut self.patterns,
                (true, false) => &mut self.keyspace_channels,
                (true, true) => &mut self.keyspace_patterns,
            };
            let changed = if subscribe {
                set.insert(n.clone())
            } else {
                set.remove(&n)
            };
            match (changed && keyspace, subscribe) {
                (true, true) => self.fanned.add(pattern, &n),
                (true, false) => self.fanned.remove(pattern, &n),
                _ => {}
            }
            let waiting = match keyspace {
                true => masters.clone(),
                false if subscribe || home_open => vec![confirmations::Source::Home],
                false => Vec::new(),
            };
            let count = self.count();
            if let Some(owed) = &mut self.owed {
                owed.owe(kind, Some(n.clone()), count, waiting);
            }
            if keyspace {
                every_master.push(n);
            } else {
                home.push(n);
            }
        }
        let command = spec.name.as_bytes();
        let mut failed = None;
        if !home.is_empty() && (subscribe || home_open) {
            let mut parts: Vec<&[u8]> = vec![command];
            parts.extend(home.iter().map(|c| &c[..]));
            failed = self
                .send(shared, Link::Global, Request::from_args(&parts).raw)
                .await;
        }
        if !every_master.is_empty() {
            let mut parts: Vec<&[u8]> = vec![command];
            parts.extend(every_master.iter().map(|c| &c[..]));
            let raw = Request::from_args(&parts).raw;
            for m in &masters {
                if let confirmations::Source::Master(addr) = m
                    && let Some(conn) = self.links.get(&Link::Keyspace(addr.clone()))
                    && conn.commands.send(raw.clone()).await.is_err()
                {
                    // Lost: the loss event forgets it and the next check reconnects.
                    debug!(node = %addr, "keyspace connection lost while subscribing");
                }
            }
        }
        let _ = self.events_tx.send(Event::Owed);
        failed
    }

    /// Keeps one keyspace-notification connection per master that serves slots while the
    /// client has keyspace subscriptions: connections to nodes no longer masters are closed,
    /// new masters get one, subscribed to every keyspace channel and pattern (confirmations
    /// swallowed). None are kept once the client has no keyspace subscription left.
    pub async fn follow_masters(&mut self, shared: &Shared) {
        self.keep_masters(shared, false).await;
    }

    /// `follow_masters`; with `opening`, the connections are kept (opened) even before the
    /// client has a keyspace subscription (its first is being made).
    async fn keep_masters(&mut self, shared: &Shared, opening: bool) {
        if let Some(owed) = &mut self.owed
            && owed.expire(CONFIRMATION_WAIT)
        {
            warn!("a node did not confirm a subscription in time; confirmed to the client anyway");
            let _ = self.events_tx.send(Event::Owed);
        }
        let table = shared.primary.topology.table();
        let serving = table.serving_masters();
        let wanted =
            opening || !self.keyspace_channels.is_empty() || !self.keyspace_patterns.is_empty();
        let waiting = self.owed.as_ref().is_some_and(|o| o.waits_for_master());
        let stale: Vec<Arc<str>> = self
            .links
            .keys()
            .filter_map(|l| match l {
                Link::Keyspace(a) if (!wanted && !waiting) || !serving.contains(a) => {
                    Some(a.clone())
                }
                _ => None,
            })
            .collect();
        for addr in stale {
            self.links.remove(&Link::Keyspace(addr.clone()));
            if let Some(owed) = &mut self.owed {
                owed.forget(&confirmations::Source::Master(addr));
                let _ = self.events_tx.send(Event::Owed);
            }
        }
        if !wanted {
            return;
        }
        for addr in serving {
            let link = Link::Keyspace(addr.clone());
            if self.links.contains_key(&link) {
                continue;
            }
            self.open(shared, link.clone(), addr);
            let channels = self.keyspace_channels.iter().cloned().collect();
            let patterns = self.keyspace_patterns.iter().cloned().collect();
            self.subscribe_swallowing(shared, link, channels, patterns)
                .await;
        }
    }

    /// Redis's answer to an unsubscribe when nothing is subscribed: one frame per channel
    /// named (or one with a nil channel), with count 0.
    fn nothing_to_unsubscribe(&self, name: &str, args: &[Bytes]) -> Bytes {
        let kind = name.to_ascii_lowercase();
        let mut e = Encoder::new(self.proto);
        let frame = |e: &mut Encoder, ch: Option<&[u8]>| {
            e.push(3);
            e.bulk(kind.as_bytes());
            match ch {
                Some(c) => e.bulk(c),
                None => e.null(),
            };
            e.integer(0);
        };
        if args.is_empty() {
            frame(&mut e, None);
        } else {
            for a in args {
                frame(&mut e, Some(a));
            }
        }
        e.finish()
    }

    /// Sends a command on the link, opening its connection first when needed.
    async fn send(&mut self, shared: &Shared, link: Link, raw: Bytes) -> Option<Bytes> {
        if !self.links.contains_key(&link) {
            let addr = match &link {
                // Every client's classic subscriptions and every PUBLISH meet on one master,
                // so PUBLISH counts and PUBSUB NUMSUB match one server's.
                Link::Global => match shared.primary.topology.table().pubsub_home() {
                    Some(m) => m.addr.clone(),
                    None => return Some(crate::replies::cluster_down()),
                },
                Link::Shard(addr) | Link::Keyspace(addr) => addr.clone(),
            };
            self.open(shared, link.clone(), addr);
        }
        let conn = self.links.get(&link)?;
        if conn.commands.send(raw).await.is_err() {
            return Some(error("ERR slotgate: subscriber connection lost"));
        }
        None
    }

    fn open(&mut self, shared: &Shared, link: Link, addr: Arc<str>) {
        self.next_id += 1;
        let id = self.next_id;
        let (commands, inbox) = mpsc::channel(64);
        let settings = crate::backend::conn::ConnSettings {
            kind: crate::backend::node_stats::ConnKind::Subscriber,
            ..shared
                .primary
                .backends
                .conn_settings(&addr, self.proto, 64, self.user)
        };
        let span = info_span!("subscriber", backend = %addr);
        tokio::spawn(
            run_link(
                settings,
                id,
                inbox,
                self.events_tx.clone(),
                self.pending.clone(),
                self.limit,
            )
            .instrument(span),
        );
        self.links.insert(
            link,
            SubConn {
                id,
                commands,
                swallow: 0,
                addr,
            },
        );
    }

    /// Handles an event; returns bytes to write to the client, if any. `Err` means the
    /// client must be disconnected (output buffer overflow).
    pub async fn on_event(&mut self, shared: &Shared, event: Event) -> Result<Option<Bytes>, ()> {
        match event {
            Event::Overflow => Err(()),
            Event::Owed => Ok(self.owed_frames()),
            Event::Lost { link_id } => {
                if let Some(link) = self.link_of(link_id) {
                    self.links.remove(&link);
                    if let Some(owed) = &mut self.owed {
                        owed.forget(&source_of(&link));
                    }
                    self.resubscribe(shared, link).await;
                }
                Ok(self.owed_frames())
            }
            Event::Frame { link_id, frame } => {
                let Some(link) = self.link_of(link_id) else {
                    // From a connection already replaced.
                    self.written(frame.len());
                    return Ok(None);
                };
                let parts = elements(&frame);
                let kind = parts
                    .as_ref()
                    .and_then(|p| p.first())
                    .and_then(|k| bulk_body(k))
                    .map(|k| k.to_ascii_lowercase());
                let is_confirmation = matches!(
                    kind.as_deref(),
                    Some(
                        b"subscribe"
                            | b"psubscribe"
                            | b"ssubscribe"
                            | b"unsubscribe"
                            | b"punsubscribe"
                            | b"sunsubscribe"
                    )
                );
                if frame.first() == Some(&b'-')
                    && let Some(conn) = self.links.get_mut(&link)
                    && conn.swallow > 0
                {
                    // A resubscription slotgate made was refused; a MOVED says where the
                    // slot is now, and the next check of slot moves follows it.
                    conn.swallow -= 1;
                    let from = conn.addr.clone();
                    self.written(frame.len());
                    let text = String::from_utf8_lossy(&frame[1..]).trim_end().to_string();
                    let mut words = text.split(' ');
                    if words.next() == Some("MOVED")
                        && let (Some(slot), Some(addr)) = (words.next(), words.next())
                        && let Ok(slot) = slot.parse::<u16>()
                    {
                        let addr = crate::redirect::redirect_addr(addr, &from);
                        shared.primary.topology.apply_moved(slot, &addr);
                    } else {
                        warn!(reply = %text, "resubscription refused");
                    }
                    shared.primary.topology.request_refresh(None);
                    return Ok(None);
                }
                if let Some(conn) = self.links.get_mut(&link)
                    && conn.swallow > 0
                    && is_confirmation
                {
                    conn.swallow -= 1;
                    self.written(frame.len());
                    return Ok(None);
                }
                if is_confirmation
                    && !matches!(link, Link::Shard(_))
                    && let Some(owed) = &mut self.owed
                {
                    // Written by slotgate, in the order asked, with its own count.
                    if let Some(name) = parts
                        .as_ref()
                        .and_then(|p| p.get(1))
                        .and_then(|c| bulk_body(c))
                        && let Some(kind) = &kind
                    {
                        owed.confirmed(kind, name, &source_of(&link));
                    }
                    self.written(frame.len());
                    let count = parts
                        .as_ref()
                        .and_then(|p| p.get(2))
                        .and_then(|c| integer(c));
                    if count == Some(0)
                        && matches!(kind.as_deref(), Some(b"unsubscribe" | b"punsubscribe"))
                        && self.link_unused(&link)
                    {
                        self.links.remove(&link);
                    }
                    return Ok(self.owed_frames());
                }
                if kind.as_deref() == Some(b"sunsubscribe")
                    && let Link::Shard(addr) = &link
                    && let Some(ch) = parts
                        .as_ref()
                        .and_then(|p| p.get(1))
                        .and_then(|c| bulk_body(c))
                    && self.shard_channels.get(ch) == Some(addr)
                {
                    // The node dropped the channel without being asked (its slot moved).
                    let ch = Bytes::copy_from_slice(ch);
                    self.written(frame.len());
                    self.follow_moved_channel(shared, ch).await;
                    return Ok(None);
                }
                if let Link::Keyspace(addr) = &link
                    && kind.as_deref() == Some(b"pmessage")
                    && parts
                        .as_ref()
                        .and_then(|p| p.get(2))
                        .and_then(|c| bulk_body(c))
                        .is_some_and(|ch| !is_keyspace(ch))
                    && !self.hears_broadcast(addr)
                {
                    // A pattern's message on an ordinary channel: every master hears it,
                    // one passes it on.
                    self.written(frame.len());
                    return Ok(None);
                }
                // The last unsubscribe on a link closes it (unless a subscription made since,
                // still to be confirmed, uses it).
                let count = parts
                    .as_ref()
                    .and_then(|p| p.get(2))
                    .and_then(|c| integer(c));
                if matches!(
                    kind.as_deref(),
                    Some(b"unsubscribe" | b"punsubscribe" | b"sunsubscribe")
                ) && count == Some(0)
                    && self.link_unused(&link)
                {
                    self.links.remove(&link);
                }
                Ok(Some(frame))
            }
        }
    }

    /// Whether the keyspace connection to `addr` passes on the messages every master hears
    /// (published ones matching a pattern subscribed on every master): the one to the
    /// lowest address.
    fn hears_broadcast(&self, addr: &Arc<str>) -> bool {
        self.links.keys().all(|l| match l {
            Link::Keyspace(other) => other >= addr,
            _ => true,
        })
    }

    /// Whether nothing the client is subscribed to goes over `link` (it may be closed).
    fn link_unused(&self, link: &Link) -> bool {
        match link {
            Link::Global => self.channels.is_empty() && self.patterns.is_empty(),
            Link::Shard(addr) => !self.shard_channels.values().any(|a| a == addr),
            // Kept or closed by `follow_masters`.
            Link::Keyspace(_) => false,
        }
    }

    /// The confirmations complete now, counted as pending output like any frame.
    fn owed_frames(&mut self) -> Option<Bytes> {
        let frames = self.owed.as_mut()?.ready(self.proto)?;
        self.pending.fetch_add(frames.len(), Ordering::Relaxed);
        Some(frames)
    }

    fn link_of(&self, id: u64) -> Option<Link> {
        self.links
            .iter()
            .find(|(_, c)| c.id == id)
            .map(|(l, _)| l.clone())
    }

    /// Subscribes the channels and patterns again on a new link to the home master,
    /// swallowing the confirmations.
    async fn subscribe_global_again(&mut self, shared: &Shared) {
        let channels = self.channels.iter().cloned().collect();
        let patterns = self.patterns.iter().cloned().collect();
        self.subscribe_swallowing(shared, Link::Global, channels, patterns)
            .await;
    }

    /// SUBSCRIBEs `channels` and PSUBSCRIBEs `patterns` on `link` (opening it when needed),
    /// swallowing the confirmations.
    async fn subscribe_swallowing(
        &mut self,
        shared: &Shared,
        link: Link,
        channels: Vec<Bytes>,
        patterns: Vec<Bytes>,
    ) {
        for (cmd, names) in [("SUBSCRIBE", channels), ("PSUBSCRIBE", patterns)] {
            if names.is_empty() {
                continue;
            }
            let mut parts: Vec<&[u8]> = vec![cmd.as_bytes()];
            parts.extend(names.iter().map(|c| &c[..]));
            let raw = Request::from_args(&parts).raw;
            let _ = self
                .send_swallowing(shared, link.clone(), raw, names.len())
                .await;
        }
    }

    /// Subscribes again, on a node that serves them now, to what `link` carried.
    async fn resubscribe(&mut self, shared: &Shared, link: Link) {
        match link {
            Link::Global => {
                // The home master may have failed over: learn where slot 0 is now first.
                shared
                    .primary
                    .topology
                    .refresh_and_wait(None, Duration::from_secs(2))
                    .await;
                self.subscribe_global_again(shared).await;
            }
            // The next check of the masters connects again (to the master that serves its
            // slots then), not at once: a master that is down keeps refusing until it fails
            // over.
            Link::Keyspace(_) => {}
            Link::Shard(addr) => {
                let lost: Vec<Bytes> = self
                    .shard_channels
                    .iter()
                    .filter(|(_, a)| **a == addr)
                    .map(|(c, _)| c.clone())
                    .collect();
                shared
                    .primary
                    .topology
                    .refresh_and_wait(None, Duration::from_secs(2))
                    .await;
                for ch in lost {
                    self.follow_moved_channel(shared, ch).await;
                }
            }
        }
    }

    /// Moves the channel and pattern subscriptions to the pub/sub home master when the home
    /// changed (a failover of the master of slot 0, a resharding of slot 0): PUBLISH
    /// through slotgate goes to the home, and its count must include this subscriber.
    pub async fn follow_home(&mut self, shared: &Shared) {
        let Some(conn) = self.links.get(&Link::Global) else {
            return;
        };
        let home = shared
            .primary
            .topology
            .peek()
            .pubsub_home()
            .map(|m| m.addr.clone());
        if home.is_none_or(|h| h == conn.addr) {
            return;
        }
        debug!(from = %conn.addr, "pub/sub home moved; subscribing again there");
        // Dropping the link closes its connection, which unsubscribes on the old home.
        self.links.remove(&Link::Global);
        if let Some(owed) = &mut self.owed {
            owed.forget(&confirmations::Source::Home);
            let _ = self.events_tx.send(Event::Owed);
        }
        self.subscribe_global_again(shared).await;
    }

    /// Moves shard channels whose slot changed owner in the slot table to the new owner:
    /// unsubscribes on the old node (or closes it when nothing is left there) and subscribes
    /// on the new one, swallowing both confirmations.
    pub async fn follow_slot_moves(&mut self, shared: &Shared) {
        let table = shared.primary.topology.table();
        let moved: Vec<(Bytes, Arc<str>)> = self
            .shard_channels
            .iter()
            .filter(|(ch, addr)| {
                table
                    .master_for(slot_of(ch))
                    .is_some_and(|m| m.addr != **addr)
            })
            .map(|(ch, addr)| (ch.clone(), addr.clone()))
            .collect();
        for (ch, old) in moved {
            self.follow_moved_channel(shared, ch.clone()).await;
            let still_used = self.shard_channels.values().any(|a| *a == old);
            let old_link = Link::Shard(old);
            if !still_used {
                self.links.remove(&old_link);
            } else if self.links.contains_key(&old_link) {
                let raw = Request::from_args(&[&b"SUNSUBSCRIBE"[..], &ch]).raw;
                let _ = self.send_swallowing(shared, old_link, raw, 1).await;
            }
        }
    }

    /// SSUBSCRIBEs `ch` on its slot's current master.
    async fn follow_moved_channel(&mut self, shared: &Shared, ch: Bytes) {
        let slot = slot_of(&ch);
        let mut owner = shared
            .primary
            .topology
            .table()
            .master_for(slot)
            .map(|m| m.addr.clone());
        if owner.as_ref() == self.shard_channels.get(&ch) {
            shared
                .primary
                .topology
                .refresh_and_wait(None, Duration::from_secs(2))
                .await;
            owner = shared
                .primary
                .topology
                .table()
                .master_for(slot)
                .map(|m| m.addr.clone());
        }
        let Some(addr) = owner else {
            warn!("shard channel's slot has no master; subscription dropped");
            self.shard_channels.remove(&ch);
            return;
        };
        debug!(node = %addr, "resubscribing shard channel on its new master");
        self.shard_channels.insert(ch.clone(), addr.clone());
        let raw = Request::from_args(&[&b"SSUBSCRIBE"[..], &ch]).raw;
        let _ = self
            .send_swallowing(shared, Link::Shard(addr), raw, 1)
            .await;
    }

    async fn send_swallowing(
        &mut self,
        shared: &Shared,
        link: Link,
        raw: Bytes,
        n: usize,
    ) -> Option<Bytes> {
        let r = self.send(shared, link.clone(), raw).await;
        if let Some(conn) = self.links.get_mut(&link) {
            conn.swallow += n;
        }
        r
    }
}

/// The confirmations source a link's frames count as.
fn source_of(link: &Link) -> confirmations::Source {
    match link {
        Link::Keyspace(addr) => confirmations::Source::Master(addr.clone()),
        _ => confirmations::Source::Home,
    }
}

fn wrong_args(name: &str) -> Bytes {
    crate::replies::wrong_args(name)
}

/// One subscriber connection: writes commands, streams every frame read to the client task.
async fn run_link(
    settings: conn::ConnSettings,
    id: u64,
    mut inbox: mpsc::Receiver<Bytes>,
    events: mpsc::UnboundedSender<Event>,
    pending: Arc<AtomicUsize>,
    limit: usize,
) {
    let stream = match conn::connect(&settings).await {
        Ok(s) => s,
        Err(reason) => {
            warn!(%reason, "cannot open subscriber connection");
            let _ = events.send(Event::Lost { link_id: id });
            return;
        }
    };
    let _up = crate::backend::node_stats::Connected::new(&settings.stats, settings.kind);
    let (mut rd, mut wr) = tokio::io::split(stream);
    let mut buf = BytesMut::with_capacity(8 * 1024);
    let mut scanner = ReplyScanner::new();
    loop {
        tokio::select! {
            cmd = inbox.recv() => match cmd {
                Some(raw) => {
                    if wr.write_all(&raw).await.is_err() || wr.flush().await.is_err() {
                        break;
                    }
                }
                // The client left or the link was replaced.
                None => return,
            },
            read = rd.read_buf(&mut buf) => {
                match read {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
                loop {
                    match scanner.next(&buf) {
                        Ok(Some(n)) => {
                            let frame = buf.split_to(n).freeze();
                            if pending.fetch_add(n, Ordering::Relaxed) + n > limit {
                                let _ = events.send(Event::Overflow);
                                return;
                            }
                            if events.send(Event::Frame { link_id: id, frame }).is_err() {
                                return;
                            }
                        }
                        Ok(None) => break,
                        Err(_) => {
                            let _ = events.send(Event::Lost { link_id: id });
                            return;
                        }
                    }
                }
                if buf.capacity() - buf.len() < 1024 {
                    buf.reserve(8 * 1024);
                }
            }
        }
    }
    let _ = events.send(Event::Lost { link_id: id });
}
