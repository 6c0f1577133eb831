//! One client connection: read requests, answer or dispatch each, and write the replies back
//! strictly in request order.
//!
//! Pipelined requests are all in flight at once (to different nodes concurrently); their
//! replies wait in a queue in request order and leave from its head. A plain forwarded
//! command is only a reply channel in that queue (no future, no allocation); commands that
//! need more (redirects, merges, mirrors) become a boxed future. Reading pauses when
//! `pipeline_window` requests are in flight. A protocol error is answered with
//! `-ERR Protocol error: ...` after the replies before it, then the connection closes.

use std::collections::VecDeque;
use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use futures::FutureExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tracing::{debug, warn};

use crate::backend::conn::ReplyResult;
use crate::batch::{BatchedCommand, Batcher, Resolved};
use crate::command::lookup;
use crate::dispatch::Flight;
use crate::local::ClientState;
use crate::multikey::{self, Merge};
use crate::plan::{Post, Step, complete, handle};
use crate::pubsub::{Event, Subscriptions, is_subscription_command};
use crate::resp::encode::error;
use crate::resp::{Proto, Request, RequestScanner};
use crate::shared::Shared;

/// Replies at least this large are written straight from their buffer, not copied.
const DIRECT_WRITE: usize = 16 * 1024;

/// Serves one client until it disconnects, sends QUIT, or breaks the protocol.
pub async fn serve(shared: Arc<Shared>, stream: TcpStream, id: u64) {
    let _ = stream.set_nodelay(true);
    let (mut rd, mut wr) = stream.into_split();
    let mut state = ClientState::new(id, shared.config.password.is_some());
    state.batch.enabled = true;
    let mut scanner = RequestScanner::new(shared.config.request_limits());
    let window = shared.config.limits.pipeline_window;
    let mut inbuf = BytesMut::with_capacity(16 * 1024);
    let mut outbuf = BytesMut::with_capacity(16 * 1024);
    let mut inflight = ReplyQueue::new();
    // Set once no more requests will be handled: QUIT or a protocol error.
    let mut closing = false;
    // Set at end of input (the client closed or half-closed its side): what was read is
    // still handled and answered, then the connection closes.
    let mut eof = false;
    // A request waiting for every reply before it to be written: its replies bypass the
    // queue (subscribe commands), it must follow acknowledged writes (WAIT), or the command
    // before it ran on another connection (EXEC, a blocking command; see `barrier`).
    let mut deferred: Option<Request> = None;
    // Made when the client subscribes to shard channels: checks whether their slots moved.
    let mut shard_check: Option<tokio::time::Interval> = None;
    let mut draining = shared.draining.subscribe();

    loop {
        let mut parsed = 0u64;
        while !closing && inflight.len() < window {
            let req = match deferred.take() {
                Some(req) => req,
                None => match scanner.next(&mut inbuf, state.authenticated) {
                    Ok(Some(req)) => {
                        parsed += 1;
                        req
                    }
                    Ok(None) => break,
                    Err(e) => {
                        debug!(error = %e, "protocol error from client");
                        let reply = error(&format!("ERR Protocol error: {e}"));
                        inflight.push(Slot::Ready(reply), 0);
                        closing = true;
                        break;
                    }
                },
            };
            if !inflight.is_empty()
                && (state.barrier
                    || streams_replies(&state, &req)
                    || changes_state(&req)
                    || inflight.must_wait_for_slot(&shared, &req))
            {
                deferred = Some(req);
                break;
            }
            state.barrier = false;
            state.blocking = false;
            let generation = shared.primary.topology.peek().generation;
            let (step, close) = handle(&shared, &mut state, req).await;
            inflight.push(Slot::new(&shared, step, state.proto), generation);
            closing = close;
        }
        if state.batch.has_open() {
            state.batch.flush(&shared).await;
        }
        if parsed > 0 {
            shared
                .stats
                .total_commands
                .fetch_add(parsed, Ordering::Relaxed);
        }
        if inflight.is_empty() && (closing || (eof && deferred.is_none())) {
            break;
        }
        let subscribed = state.subs.as_ref().is_some_and(|s| s.has_links());
        let shard_subscribed = state.subs.as_ref().is_some_and(|s| s.has_shard_channels());
        if shard_subscribed && shard_check.is_none() {
            shard_check = Some(tokio::time::interval(SHARD_CHECK));
        }
        tokio::select! {
            biased;
            _ = inflight.advance(&shared, &mut state.batch), if !inflight.is_empty() => {
                if write_replies(&shared, &mut wr, &mut outbuf, &mut inflight, &mut state.batch).await.is_err() {
                    break;
                }
            }
            event = next_event(&mut state.subs), if subscribed => {
                let Some(subs) = state.subs.as_mut() else { continue };
                match subs.on_event(&shared, event).await {
                    Ok(Some(frame)) => {
                        if wr.write_all(&frame).await.is_err() {
                            break;
                        }
                        subs.written(frame.len());
                    }
                    Ok(None) => {}
                    Err(()) => {
                        warn!("subscriber too slow: pub/sub output buffer limit reached, closing");
                        break;
                    }
                }
            }
            changed = draining.changed(), if !closing => {
                // Shutting down (or slotgate's state is gone): answer what was sent, then
                // close.
                if changed.is_err() || *draining.borrow() {
                    closing = true;
                }
            }
            _ = tick(&mut shard_check), if shard_subscribed => {
                if let Some(subs) = state.subs.as_mut() {
                    subs.follow_slot_moves(&shared).await;
                }
            }
            read = rd.read_buf(&mut inbuf), if !closing && !eof && deferred.is_none() && inflight.len() < window => {
                match read {
                    // End of input: answer everything read so far before closing (a client
                    // that half-closes after its last command still gets every reply).
                    Ok(0) => {
                        eof = true;
                        // A blocked command is abandoned (its connection closes and the
                        // node forgets it), as Redis does when a blocked client goes.
                        if state.blocking {
                            break;
                        }
                    }
                    Err(_) => break,
                    Ok(_) => {
                        if inbuf.capacity() - inbuf.len() < 4096 {
                            inbuf.reserve(16 * 1024);
                        }
                    }
                }
            }
        }
    }
    let _ = wr.shutdown().await;
}

/// How often a subscriber's shard channels are checked against the slot table.
const SHARD_CHECK: std::time::Duration = std::time::Duration::from_millis(500);

async fn tick(interval: &mut Option<tokio::time::Interval>) {
    match interval {
        Some(i) => {
            i.tick().await;
        }
        None => std::future::pending().await,
    }
}

/// The next event from the client's subscriber connections.
async fn next_event(subs: &mut Option<Subscriptions>) -> Event {
    match subs {
        Some(s) => s.events.recv().await.unwrap_or(Event::Overflow),
        None => std::future::pending().await,
    }
}

/// Whether the replies before this request must be written first: its replies bypass the
/// ordered reply queue (subscribe-family commands, PING in RESP2 subscriber mode), or it must
/// see every earlier write acknowledged (WAIT, WAITAOF).
fn streams_replies(state: &ClientState, req: &Request) -> bool {
    let Some(spec) = lookup(req.arg(0)) else {
        return false;
    };
    is_subscription_command(spec.name)
        || matches!(spec.name, "WAIT" | "WAITAOF")
        || (spec.name == "PING"
            && state.proto == Proto::Resp2
            && state.subs.as_ref().is_some_and(|s| s.active()))
}

/// Whether the request changes this connection's state (RESET, HELLO, AUTH, SELECT,
/// CLIENT ...): it runs once every reply before it was written, so it takes effect exactly
/// between its neighbours (the commands after it may go out on other backend connections).
fn changes_state(req: &Request) -> bool {
    lookup(req.arg(0)).is_some_and(|spec| spec.changes_connection_state())
}

/// Writes every reply complete at the head of the queue, in order, in one write when they
/// are small (large replies are written from their own buffer).
async fn write_replies<'a>(
    shared: &'a Shared,
    wr: &mut tokio::net::tcp::OwnedWriteHalf,
    outbuf: &mut BytesMut,
    queue: &mut ReplyQueue<'a>,
    batch: &mut Batcher,
) -> std::io::Result<()> {
    loop {
        while let Some(reply) = queue.pop_ready() {
            if reply.len() >= DIRECT_WRITE {
                if !outbuf.is_empty() {
                    wr.write_all(outbuf).await?;
                    outbuf.clear();
                }
                wr.write_all(&reply).await?;
            } else {
                outbuf.extend_from_slice(&reply);
            }
        }
        // Replies that arrived meanwhile go out in the same write.
        if queue.is_empty() || queue.advance_now(shared, batch).is_none() {
            break;
        }
    }
    if !outbuf.is_empty() {
        wr.write_all(outbuf).await?;
        outbuf.clear();
    }
    Ok(())
}

/// A boxed future that produces one reply.
type ReplyFuture<'a> = Pin<Box<dyn Future<Output = Bytes> + Send + 'a>>;

/// One reply due to the client, in request order.
enum Slot<'a> {
    Ready(Bytes),
    /// A forwarded command whose reply is passed on as it is, unless it turns out to be a
    /// redirect or a failure (then it is followed up).
    Waiting(Flight),
    /// A command sent in its node's batch for this read.
    Batched(BatchedCommand),
    /// A split multi-key command: its parts, each resolved in any order, then merged.
    Split(Vec<Part<'a>>, Merge),
    /// A command to one slot being redirected or retried.
    Following(Option<u16>, ReplyFuture<'a>),
    /// A command whose redirect or retry waits for an earlier one to the same slot.
    Held(Flight, Option<ReplyResult>),
    /// Anything else (mirrored writes, transactions, merges with post-processing).
    Boxed(ReplyFuture<'a>),
}

impl<'a> Slot<'a> {
    fn new(shared: &'a Shared, step: Step, proto: Proto) -> Slot<'a> {
        match step {
            Step::Ready(reply) => Slot::Ready(reply),
            Step::Remote {
                flight,
                post: Post::None,
            } => Slot::Waiting(flight),
            Step::Batched(cmd) => Slot::Batched(cmd),
            Step::BatchedSplit { parts, merge } => {
                Slot::Split(parts.into_iter().map(Part::Batched).collect(), merge)
            }
            other => Slot::Boxed(Box::pin(complete(shared, other, proto))),
        }
    }

    /// Whether this entry may be sending to `slot` (or to any slot: unknown) on another
    /// node than the current table says, or is being redirected: a later command to that
    /// slot must then wait for it.
    fn may_touch(&self, slot: u16) -> bool {
        match self {
            Slot::Ready(_) => false,
            Slot::Waiting(f) => f.slot().is_none_or(|s| s == slot),
            Slot::Batched(c) => c.slot().is_none_or(|s| s == slot),
            Slot::Held(f, _) => f.slot().is_none_or(|s| s == slot),
            Slot::Following(s, _) => s.is_none_or(|s| s == slot),
            Slot::Split(..) | Slot::Boxed(_) => true,
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
                Slot::Ready(_) => return,
                Slot::Batched(cmd) => match batch.poll_reply(cx, shared, cmd) {
                    Resolved::Pending => return,
                    Resolved::Reply(reply) => Slot::Ready(reply),
                    Resolved::FollowUp(flight, first) => Slot::Held(flight, first),
                },
                Slot::Waiting(flight) => {
                    let first = match flight.poll_first(cx) {
                        Poll::Pending => return,
                        Poll::Ready(first) => first,
                    };
                    match shared.primary.settle_first(flight, first) {
                        Ok(reply) => Slot::Ready(reply),
                        Err(first) => {
                            let Slot::Waiting(flight) =
                                std::mem::replace(self, Slot::Ready(Bytes::new()))
                            else {
                                unreachable!("matched a waiting entry");
                            };
                            Slot::Held(flight, first)
                        }
                    }
                }
                Slot::Held(flight, _) => {
                    let slot = flight.slot();
                    if busy.blocks(slot) {
                        busy.add(slot);
                        return;
                    }
                    let Slot::Held(flight, first) =
                        std::mem::replace(self, Slot::Ready(Bytes::new()))
                    else {
                        unreachable!("matched a held entry");
                    };
                    Slot::Following(slot, Box::pin(shared.primary.finish_with(flight, first)))
                }
                Slot::Following(slot, fut) => match fut.as_mut().poll(cx) {
                    Poll::Pending => {
                        busy.add(*slot);
                        return;
                    }
                    Poll::Ready(reply) => Slot::Ready(reply),
                },
                Slot::Split(parts, merge) => {
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
                    Slot::Ready(multikey::merge(merge, &replies))
                }
                Slot::Boxed(fut) => match fut.as_mut().poll(cx) {
                    Poll::Pending => return,
                    Poll::Ready(reply) => Slot::Ready(reply),
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
enum Part<'a> {
    Batched(BatchedCommand),
    Held(Flight, Option<ReplyResult>),
    Following(Option<u16>, ReplyFuture<'a>),
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
                    Resolved::FollowUp(flight, first) => Part::Held(flight, first),
                },
                Part::Held(flight, _) => {
                    let slot = flight.slot();
                    if busy.blocks(slot) {
                        busy.add(slot);
                        return false;
                    }
                    let Part::Held(flight, first) =
                        std::mem::replace(self, Part::Done(Bytes::new()))
                    else {
                        unreachable!("matched a held part");
                    };
                    Part::Following(slot, Box::pin(shared.primary.finish_with(flight, first)))
                }
                Part::Following(slot, fut) => match fut.as_mut().poll(cx) {
                    Poll::Pending => {
                        busy.add(*slot);
                        return false;
                    }
                    Poll::Ready(reply) => Part::Done(reply),
                },
            };
            *self = next;
        }
    }
}

/// The client's in-flight requests, in request order. Every entry makes progress when its
/// reply arrives, not only the head: nothing that must happen for correctness (a mirror
/// hand-off, a redirect, a retry) waits for the replies before it to be written.
///
/// Ordering rules kept here and in `serve`:
/// - replies leave in request order (`pop_ready` takes only from the head);
/// - a redirect or retry of a command to a slot waits while an earlier command to the same
///   slot is being redirected or retried, so the node sees them in the order sent;
/// - a new command to a slot that an in-flight command may reach on another node (the slot
///   table changed since it was sent, or it is being redirected) waits until every earlier
///   reply is in (`must_wait_for_slot`).
struct ReplyQueue<'a> {
    entries: VecDeque<Slot<'a>>,
    /// Table generation when the oldest entry in flight was routed: while the table keeps
    /// it, every entry was routed by the current table.
    generation: Option<u64>,
    /// Set by the last pass when some entry was being redirected or retried.
    following: bool,
}

impl<'a> ReplyQueue<'a> {
    fn new() -> Self {
        ReplyQueue {
            entries: VecDeque::new(),
            generation: None,
            following: false,
        }
    }

    fn len(&self) -> usize {
        self.entries.len()
    }

    fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn push(&mut self, slot: Slot<'a>, generation: u64) {
        if self.entries.is_empty() {
            self.generation = Some(generation);
        }
        self.entries.push_back(slot);
    }

    /// The reply at the head, if complete.
    fn pop_ready(&mut self) -> Option<Bytes> {
        let Some(Slot::Ready(_)) = self.entries.front() else {
            return None;
        };
        let Some(Slot::Ready(reply)) = self.entries.pop_front() else {
            return None;
        };
        if self.entries.is_empty() {
            self.generation = None;
            self.following = false;
        }
        Some(reply)
    }

    /// Advances every entry; ready when the head is complete.
    fn poll_advance(
        &mut self,
        cx: &mut Context<'_>,
        shared: &'a Shared,
        batch: &mut Batcher,
    ) -> Poll<()> {
        let mut busy = BusySlots::default();
        for entry in self.entries.iter_mut() {
            entry.advance(cx, shared, batch, &mut busy);
        }
        self.following = busy.any();
        match self.entries.front() {
            Some(Slot::Ready(_)) => Poll::Ready(()),
            _ => Poll::Pending,
        }
    }

    /// Waits until the head is complete.
    async fn advance(&mut self, shared: &'a Shared, batch: &mut Batcher) {
        poll_fn(|cx| self.poll_advance(cx, shared, batch)).await
    }

    /// Advances without waiting; `Some` when the head is complete.
    fn advance_now(&mut self, shared: &'a Shared, batch: &mut Batcher) -> Option<()> {
        self.advance(shared, batch).now_or_never()
    }

    /// Whether `req` must wait for every reply before it: it goes to a slot that an entry in
    /// flight may reach on another node or is being redirected. Free while the table is
    /// the one every entry was routed by and nothing is being redirected.
    fn must_wait_for_slot(&self, shared: &Shared, req: &Request) -> bool {
        if self.entries.is_empty() {
            return false;
        }
        let current = shared.primary.topology.peek().generation;
        if self.generation == Some(current) && !self.following {
            return false;
        }
        let Some(spec) = lookup(req.arg(0)) else {
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
