//! One client's pipeline: its requests in flight, in request order, each advancing on its
//! own as its reply arrives, and the rules that keep a pipeline's effects in order.
//!
//! Ordering rules (enforced here and in `client::serve`):
//! - replies leave in request order: only a complete head is taken (`pop_ready`);
//! - every entry progresses when its reply arrives, not when it reaches the head: nothing
//!   that must happen for correctness (a mirror hand-off, a redirect, a retry) waits for the
//!   replies before it to be written, so no shape of pipeline can deadlock;
//! - a client's commands to one slot apply in the order sent, across MOVED, ASK, TRYAGAIN,
//!   CLUSTERDOWN and connection retries: a redirect or retry waits while an earlier command
//!   to the same slot is being redirected or retried, and a new command to a slot that an
//!   earlier one may reach on another node (the table changed since it was routed, or it is
//!   being redirected) waits until every earlier reply is in (`must_wait_for_slot`);
//! - connection-state commands (RESET, HELLO, AUTH, SELECT, CLIENT ..., and MULTI, EXEC,
//!   DISCARD, WATCH through the transaction's own connection) run once every reply before
//!   them is in, so they act exactly between their neighbours;
//! - a command after a blocking command or EXEC runs after it, as on one Redis connection.

use std::collections::VecDeque;
use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;

use crate::backend::conn::ReplyResult;
use crate::batch::{BatchedCommand, Batcher, Resolved};
use crate::command::CmdSpec;
use crate::dispatch::Flight;
use crate::mirror::Ticket;
use crate::multikey::{self, Merge};
use crate::plan::{Post, Step, complete};
use crate::resp::{Proto, Request};
use crate::shared::Shared;

/// What the pipeline keeps of a request until its reply is written.
#[derive(Debug, Default)]
pub struct Meta {
    /// Its size in bytes (`limits.pipeline_window_bytes`).
    pub size: u32,
    /// Its reply is dropped instead of written (CLIENT REPLY OFF / SKIP).
    pub silent: bool,
    /// Its command-table index (`command_stats::index_of`).
    pub command: u16,
    /// When it was read (one clock reading per read from the client).
    pub started: Option<std::time::Instant>,
    /// The request itself, kept for the slow log.
    pub raw: Option<Bytes>,
}

/// A boxed future that produces one reply.
type ReplyFuture<'a> = Pin<Box<dyn Future<Output = Bytes> + Send + 'a>>;

/// One reply due to the client, in request order.
pub enum Entry<'a> {
    Ready(Bytes),
    /// A forwarded command whose reply is passed on as it is, unless it turns out to be a
    /// redirect or a failure (then it is followed up).
    Waiting(Flight),
    /// A command sent in its node's batch for this read.
    Batched(BatchedCommand),
    /// A split multi-key command: its parts, each resolved in any order, then merged.
    Split(Vec<Part<'a>>, Merge),
    /// A command being redirected or retried, or waiting to be.
    FollowUp(FollowUp<'a>),
    /// A mirrored write: the primary's part advances as any entry does; its reply then
    /// settles the mirrors' ticket (which may wait for the mirrors, as the mode says).
    Mirrored(Box<Mirrored<'a>>),
    /// Anything else (transactions, merges with post-processing).
    Boxed(ReplyFuture<'a>),
}

/// A mirrored write in flight.
pub struct Mirrored<'a> {
    /// The primary's part.
    primary: Entry<'a>,
    /// Taken when the primary's reply is in.
    ticket: Option<Ticket>,
    /// What the client gets, once the mirrors were handed the primary's reply.
    settling: Option<ReplyFuture<'a>>,
}

impl<'a> Entry<'a> {
    pub fn new(shared: &'a Shared, step: Step, proto: Proto) -> Entry<'a> {
        match step {
            Step::Ready(reply) => Entry::Ready(reply),
            // A blocking command is followed from the start (`Cluster::finish`): it may have
            // to move to a new master while it waits.
            Step::Remote {
                flight,
                post: Post::None,
            } if !flight.blocks() => Entry::Waiting(flight),
            Step::Batched(cmd) => Entry::Batched(cmd),
            Step::BatchedSplit { parts, merge } => {
                Entry::Split(parts.into_iter().map(Part::Batched).collect(), merge)
            }
            Step::Mirrored { inner, ticket } => Entry::Mirrored(Box::new(Mirrored {
                primary: Entry::new(shared, *inner, proto),
                ticket: Some(ticket),
                settling: None,
            })),
            other => Entry::Boxed(Box::pin(complete(shared, other, proto))),
        }
    }

    /// Whether this entry may be sending to `slot` (or to any slot: unknown) on another
    /// node than the current table says, or is being redirected: a later command to that
    /// slot must then wait for it.
    fn may_touch(&self, slot: u16) -> bool {
        match self {
            Entry::Ready(_) => false,
            Entry::Waiting(f) => f.slot().is_none_or(|s| s == slot),
            Entry::Batched(c) => c.slot().is_none_or(|s| s == slot),
            Entry::FollowUp(f) => f.slot().is_none_or(|s| s == slot),
            Entry::Mirrored(m) => m.primary.may_touch(slot),
            Entry::Split(..) | Entry::Boxed(_) => true,
        }
    }

    /// Advances the entry as far as it goes without waiting; `busy` holds the slots of the
    /// earlier entries being redirected or retried (this entry's follow-up waits for them).
    fn advance(
        &mut self,
        cx: &mut Context<'_>,
        shared: &'a Shared,
        batch: &mut Batcher,
        busy: &mut BusySlots,
    ) {
        loop {
            let next = match self {
                Entry::Ready(_) => return,
                Entry::Batched(cmd) => match batch.poll_reply(cx, shared, cmd) {
                    Resolved::Pending => return,
                    Resolved::Reply(reply) => Entry::Ready(reply),
                    Resolved::FollowUp(flight, first) => {
                        Entry::FollowUp(FollowUp::Held(Box::new((flight, first))))
                    }
                },
                Entry::Waiting(flight) => {
                    let first = match flight.poll_first(cx) {
                        Poll::Pending => return,
                        Poll::Ready(first) => first,
                    };
                    match shared.primary.settle_first(flight, first) {
                        Ok(reply) => Entry::Ready(reply),
                        Err(first) => {
                            let Entry::Waiting(flight) =
                                std::mem::replace(self, Entry::Ready(Bytes::new()))
                            else {
                                unreachable!("matched a waiting entry");
                            };
                            Entry::FollowUp(FollowUp::Held(Box::new((flight, first))))
                        }
                    }
                }
                Entry::FollowUp(f) => match f.poll(cx, shared, busy) {
                    Some(reply) => Entry::Ready(reply),
                    None => return,
                },
                Entry::Split(parts, merge) => {
                    let mut all_done = true;
                    for part in parts.iter_mut() {
                        all_done &= part.poll(cx, shared, batch, busy);
                    }
                    if !all_done {
                        return;
                    }
                    let replies: Vec<Bytes> = parts
                        .iter_mut()
                        .map(|p| match p {
                            Part::Done(reply) => std::mem::take(reply),
                            _ => Bytes::new(),
                        })
                        .collect();
                    Entry::Ready(multikey::merge(merge, &replies))
                }
                Entry::Mirrored(m) => {
                    if m.settling.is_none() {
                        m.primary.advance(cx, shared, batch, busy);
                        let Entry::Ready(reply) = &m.primary else {
                            return;
                        };
                        let Some(ticket) = m.ticket.take() else {
                            return;
                        };
                        m.settling = Some(Box::pin(ticket.settle(reply.clone())));
                    }
                    match m.settling.as_mut().map(|f| f.as_mut().poll(cx)) {
                        Some(Poll::Ready(reply)) => Entry::Ready(reply),
                        _ => return,
                    }
                }
                Entry::Boxed(fut) => match fut.as_mut().poll(cx) {
                    Poll::Pending => return,
                    Poll::Ready(reply) => Entry::Ready(reply),
                },
            };
            *self = next;
        }
    }
}

/// Slots with a redirect or retry in progress, met so far in one pass over the queue.
/// Past its capacity it holds every slot, which only makes later follow-ups wait longer.
#[derive(Default)]
struct BusySlots {
    slots: [u16; 8],
    len: usize,
    /// A follow-up whose slot is unknown (or too many slots): every later one waits.
    all: bool,
}

impl BusySlots {
    fn blocks(&self, slot: Option<u16>) -> bool {
        self.all
            || match slot {
                Some(s) => self.slots[..self.len].contains(&s),
                None => self.len > 0,
            }
    }

    fn add(&mut self, slot: Option<u16>) {
        match slot {
            Some(s) if self.len < self.slots.len() => {
                if !self.slots[..self.len].contains(&s) {
                    self.slots[self.len] = s;
                    self.len += 1;
                }
            }
            _ => self.all = true,
        }
    }

    fn any(&self) -> bool {
        self.all || self.len > 0
    }
}

/// One part of a split command.
pub enum Part<'a> {
    Batched(BatchedCommand),
    FollowUp(FollowUp<'a>),
    Done(Bytes),
}

impl<'a> Part<'a> {
    /// Advances the part; true once its reply is there.
    fn poll(
        &mut self,
        cx: &mut Context<'_>,
        shared: &'a Shared,
        batch: &mut Batcher,
        busy: &mut BusySlots,
    ) -> bool {
        loop {
            let next = match self {
                Part::Done(_) => return true,
                Part::Batched(cmd) => match batch.poll_reply(cx, shared, cmd) {
                    Resolved::Pending => return false,
                    Resolved::Reply(reply) => Part::Done(reply),
                    Resolved::FollowUp(flight, first) => {
                        Part::FollowUp(FollowUp::Held(Box::new((flight, first))))
                    }
                },
                Part::FollowUp(f) => match f.poll(cx, shared, busy) {
                    Some(reply) => Part::Done(reply),
                    None => return false,
                },
            };
            *self = next;
        }
    }
}

/// A command (or part) whose first reply was a redirect, a retry or a failure.
pub enum FollowUp<'a> {
    /// Waiting while an earlier command to the same slot is being followed up (boxed:
    /// follow-ups are rare, entries are many).
    Held(Box<(Flight, Option<ReplyResult>)>),
    /// Being redirected or retried (`Cluster::finish_with`), to this slot.
    Following(Option<u16>, ReplyFuture<'a>),
}

impl<'a> FollowUp<'a> {
    fn slot(&self) -> Option<u16> {
        match self {
            FollowUp::Held(held) => held.0.slot(),
            FollowUp::Following(slot, _) => *slot,
        }
    }

    /// Starts the follow-up once no earlier one to its slot is in progress (`busy`), and
    /// advances it; the final reply when there is one. A pending follow-up marks its slot
    /// busy for the entries after it.
    fn poll(
        &mut self,
        cx: &mut Context<'_>,
        shared: &'a Shared,
        busy: &mut BusySlots,
    ) -> Option<Bytes> {
        let slot = self.slot();
        if let FollowUp::Held(..) = self {
            if busy.blocks(slot) {
                busy.add(slot);
                return None;
            }
            let placeholder = FollowUp::Following(slot, Box::pin(std::future::pending()));
            let FollowUp::Held(held) = std::mem::replace(self, placeholder) else {
                unreachable!("matched a held follow-up");
            };
            let (flight, first) = *held;
            *self = FollowUp::Following(slot, Box::pin(shared.primary.finish_with(flight, first)));
        }
        let FollowUp::Following(_, fut) = self else {
            unreachable!("started above");
        };
        match fut.as_mut().poll(cx) {
            Poll::Ready(reply) => Some(reply),
            Poll::Pending => {
                busy.add(slot);
                None
            }
        }
    }
}

/// The client's in-flight requests, in request order (see the module's ordering rules).
pub struct ReplyQueue<'a> {
    entries: VecDeque<Entry<'a>>,
    /// What is known of each entry's request, in the same order.
    meta: VecDeque<Meta>,
    /// Bytes of the requests in flight (`limits.pipeline_window_bytes`).
    bytes: usize,
    /// Table generation when the oldest entry in flight was routed: while the table keeps
    /// it, every entry was routed by the current table.
    generation: Option<u64>,
    /// Set by the last pass when some entry was being redirected or retried.
    following: bool,
    /// Bytes of the replies complete and not yet taken (behind an incomplete head).
    done_bytes: usize,
    /// A pass past this many `done_bytes` ends the wait for the head (`advance`).
    done_limit: usize,
}

impl<'a> ReplyQueue<'a> {
    pub fn new() -> Self {
        ReplyQueue {
            entries: VecDeque::new(),
            meta: VecDeque::new(),
            bytes: 0,
            generation: None,
            following: false,
            done_bytes: 0,
            done_limit: usize::MAX,
        }
    }

    /// Requests in flight.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Bytes of the requests in flight.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Bytes of the replies complete but not yet taken, as of the last pass.
    pub fn done_bytes(&self) -> usize {
        self.done_bytes
    }

    /// Makes `advance` return once the complete replies pass `limit` bytes, head complete
    /// or not (the client's output limit counts them: a stalled head must not let the
    /// replies behind it pile up without bound).
    pub fn set_done_limit(&mut self, limit: usize) {
        self.done_limit = limit;
    }

    /// Adds the entry of a request, routed with table `generation`.
    pub fn push(&mut self, entry: Entry<'a>, generation: u64, meta: Meta) {
        if self.entries.is_empty() {
            self.generation = Some(generation);
        }
        self.bytes += meta.size as usize;
        self.meta.push_back(meta);
        self.entries.push_back(entry);
    }

    /// The reply at the head, if complete, with what is known of its request (a `silent`
    /// one is not written).
    pub fn pop_ready(&mut self) -> Option<(Bytes, Meta)> {
        let Some(Entry::Ready(_)) = self.entries.front() else {
            return None;
        };
        let Some(Entry::Ready(reply)) = self.entries.pop_front() else {
            return None;
        };
        let meta = self.meta.pop_front().unwrap_or_default();
        self.bytes -= meta.size as usize;
        self.done_bytes = self.done_bytes.saturating_sub(reply.len());
        if self.entries.is_empty() {
            self.generation = None;
            self.following = false;
        }
        Some((reply, meta))
    }

    /// Advances every entry; ready when the head is complete.
    fn poll_advance(
        &mut self,
        cx: &mut Context<'_>,
        shared: &'a Shared,
        batch: &mut Batcher,
    ) -> Poll<()> {
        let mut busy = BusySlots::default();
        batch.begin_pass();
        let mut done = 0;
        for entry in self.entries.iter_mut() {
            entry.advance(cx, shared, batch, &mut busy);
            if let Entry::Ready(reply) = entry {
                done += reply.len();
            }
        }
        self.following = busy.any();
        self.done_bytes = done;
        match self.entries.front() {
            Some(Entry::Ready(_)) => Poll::Ready(()),
            _ if done > self.done_limit => Poll::Ready(()),
            _ => Poll::Pending,
        }
    }

    /// Waits until the head is complete, or the complete replies pass the done limit.
    pub async fn advance(&mut self, shared: &'a Shared, batch: &mut Batcher) {
        poll_fn(|cx| self.poll_advance(cx, shared, batch)).await
    }

    /// Advances without waiting; true when the head is complete (or the replies pass the
    /// done limit).
    pub fn advance_now(&mut self, shared: &'a Shared, batch: &mut Batcher) -> bool {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        self.poll_advance(&mut cx, shared, batch).is_ready()
    }

    /// Whether `req` must wait for every reply before it: it goes to a slot that an entry in
    /// flight may reach on another node or is being redirected. Free while the table (now at
    /// `generation`) is the one every entry was routed by and nothing is being redirected.
    pub fn must_wait_for_slot(
        &self,
        generation: u64,
        spec: Option<&CmdSpec>,
        req: &Request,
    ) -> bool {
        if self.entries.is_empty() {
            return false;
        }
        if self.generation == Some(generation) && !self.following {
            return false;
        }
        let Some(spec) = spec else {
            return false;
        };
        match spec.slot(req) {
            Ok(Some(slot)) => self.entries.iter().any(|e| e.may_touch(slot)),
            Ok(None) => false,
            // Split per slot: any of its slots may be in question.
            Err(_) => true,
        }
    }
}
