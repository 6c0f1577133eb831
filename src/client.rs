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
use std::task::Poll;

use bytes::{Bytes, BytesMut};
use futures::FutureExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tracing::{debug, warn};

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
    let mut inflight: VecDeque<Slot<'_>> = VecDeque::new();
    // Set once no more requests will be read: QUIT, a protocol error, or end of input.
    let mut closing = false;
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
                None => match scanner.next(&mut inbuf) {
                    Ok(Some(req)) => {
                        parsed += 1;
                        req
                    }
                    Ok(None) => break,
                    Err(e) => {
                        debug!(error = %e, "protocol error from client");
                        let reply = error(&format!("ERR Protocol error: {e}"));
                        inflight.push_back(Slot::Ready(reply));
                        closing = true;
                        break;
                    }
                },
            };
            if !inflight.is_empty() && (state.barrier || streams_replies(&state, &req)) {
                deferred = Some(req);
                break;
            }
            state.barrier = false;
            let (step, close) = handle(&shared, &mut state, req).await;
            inflight.push_back(Slot::new(&shared, step, state.proto));
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
        if closing && inflight.is_empty() {
            break;
        }
        let subscribed = state.subs.as_ref().is_some_and(|s| s.has_links());
        let shard_subscribed = state.subs.as_ref().is_some_and(|s| s.has_shard_channels());
        if shard_subscribed && shard_check.is_none() {
            shard_check = Some(tokio::time::interval(SHARD_CHECK));
        }
        tokio::select! {
            biased;
            reply = next_reply(&shared, &mut inflight, &mut state.batch), if !inflight.is_empty() => {
                if write_replies(&shared, &mut wr, &mut outbuf, reply, &mut inflight, &mut state.batch).await.is_err() {
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
            read = rd.read_buf(&mut inbuf), if !closing && deferred.is_none() && inflight.len() < window => {
                match read {
                    Ok(0) | Err(_) => break,
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

/// Writes `first` and every other reply already complete, in one write when they are small.
async fn write_replies<'a>(
    shared: &'a Shared,
    wr: &mut tokio::net::tcp::OwnedWriteHalf,
    outbuf: &mut BytesMut,
    first: Bytes,
    inflight: &mut VecDeque<Slot<'a>>,
    batch: &mut Batcher,
) -> std::io::Result<()> {
    let mut next = Some(first);
    while let Some(reply) = next.take() {
        if reply.len() >= DIRECT_WRITE {
            if !outbuf.is_empty() {
                wr.write_all(outbuf).await?;
                outbuf.clear();
            }
            wr.write_all(&reply).await?;
        } else {
            outbuf.extend_from_slice(&reply);
        }
        if !inflight.is_empty() {
            next = next_reply(shared, inflight, batch).now_or_never();
        }
    }
    if !outbuf.is_empty() {
        wr.write_all(outbuf).await?;
        outbuf.clear();
    }
    Ok(())
}

/// One reply due to the client, in request order.
enum Slot<'a> {
    Ready(Bytes),
    /// A forwarded command whose reply is passed on as it is, unless it turns out to be a
    /// redirect or a failure (then it becomes `Boxed`).
    Waiting(Flight),
    /// A command sent in its node's batch for this read.
    Batched(BatchedCommand),
    /// A split multi-key command: its parts, each resolved in any order, then merged.
    Split(Vec<Part<'a>>, Merge),
    Boxed(Pin<Box<dyn Future<Output = Bytes> + Send + 'a>>),
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
}

/// One part of a split command.
enum Part<'a> {
    Batched(BatchedCommand),
    Following(Pin<Box<dyn Future<Output = Bytes> + Send + 'a>>),
    Done(Bytes),
}

impl<'a> Part<'a> {
    /// Advances the part; true once its reply is there.
    fn poll(
        &mut self,
        cx: &mut std::task::Context<'_>,
        shared: &'a Shared,
        batch: &mut Batcher,
    ) -> bool {
        if let Part::Batched(cmd) = self {
            match batch.poll_reply(cx, shared, cmd) {
                Resolved::Pending => return false,
                Resolved::Reply(reply) => *self = Part::Done(reply),
                Resolved::FollowUp(flight, first) => {
                    *self = Part::Following(Box::pin(shared.primary.finish_with(flight, first)));
                }
            }
        }
        if let Part::Following(fut) = self {
            match fut.as_mut().poll(cx) {
                Poll::Pending => return false,
                Poll::Ready(reply) => *self = Part::Done(reply),
            }
        }
        matches!(self, Part::Done(_))
    }
}

/// The reply at the head of the queue, once it is complete.
async fn next_reply<'a>(
    shared: &'a Shared,
    inflight: &mut VecDeque<Slot<'a>>,
    batch: &mut Batcher,
) -> Bytes {
    poll_fn(|cx| {
        let Some(head) = inflight.front_mut() else {
            return Poll::Pending;
        };
        if let Slot::Batched(cmd) = head {
            match batch.poll_reply(cx, shared, cmd) {
                Resolved::Pending => return Poll::Pending,
                Resolved::Reply(reply) => {
                    inflight.pop_front();
                    return Poll::Ready(reply);
                }
                Resolved::FollowUp(flight, first) => {
                    inflight.pop_front();
                    let fut = shared.primary.finish_with(flight, first);
                    inflight.push_front(Slot::Boxed(Box::pin(fut)));
                }
            }
        }
        let Some(head) = inflight.front_mut() else {
            return Poll::Pending;
        };
        if let Slot::Split(parts, merge) = head {
            let mut all_done = true;
            for part in parts.iter_mut() {
                all_done &= part.poll(cx, shared, batch);
            }
            if !all_done {
                return Poll::Pending;
            }
            let replies: Vec<Bytes> = parts
                .iter_mut()
                .map(|p| match p {
                    Part::Done(reply) => std::mem::take(reply),
                    _ => Bytes::new(),
                })
                .collect();
            let reply = multikey::merge(merge, &replies);
            inflight.pop_front();
            return Poll::Ready(reply);
        }
        if let Slot::Waiting(flight) = head {
            let first = match flight.poll_first(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(first) => first,
            };
            match shared.primary.settle_first(flight, first) {
                Ok(reply) => {
                    inflight.pop_front();
                    return Poll::Ready(reply);
                }
                Err(first) => {
                    let Some(Slot::Waiting(flight)) = inflight.pop_front() else {
                        unreachable!("the head was a waiting slot");
                    };
                    let fut = shared.primary.finish_with(flight, first);
                    inflight.push_front(Slot::Boxed(Box::pin(fut)));
                }
            }
        }
        let reply = match inflight.front_mut() {
            Some(Slot::Ready(reply)) => std::mem::take(reply),
            Some(Slot::Boxed(fut)) => match fut.as_mut().poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(reply) => reply,
            },
            _ => return Poll::Pending,
        };
        inflight.pop_front();
        Poll::Ready(reply)
    })
    .await
}
