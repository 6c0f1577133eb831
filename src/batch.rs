//! Per-node batching of one client's pipelined requests.
//!
//! Plain forwarded commands that arrive in one read are grouped by the node they go to; each
//! group is queued on that node's connection as one unit, and its replies come back together
//! on one channel. A pipeline of 16 commands spread over three masters then costs three
//! channel round trips instead of sixteen. Replies are still handed to the client one by one,
//! in request order; a reply that is a redirect or a failure is followed up alone, like any
//! other command.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use tokio::sync::oneshot;

use crate::backend::conn::{BatchResult, ReplyResult};
use crate::dispatch::{Flight, SendOptions, Target};
use crate::shared::Shared;

/// A batched command's place: its group and its position in it, plus what is needed to send
/// it again alone.
#[derive(Debug)]
pub struct BatchedCommand {
    group: u64,
    index: usize,
    raw: Bytes,
    target: Target,
    opts: SendOptions,
}

/// A group being filled during one read.
#[derive(Debug)]
struct OpenGroup {
    id: u64,
    addr: Arc<str>,
    /// Protocol and connection choice of the commands in it (HELLO may change the protocol
    /// between two commands of one read).
    proto: crate::resp::Proto,
    session: u64,
    user: crate::backend::users::UserId,
    raw: BytesMut,
    count: usize,
}

/// A sent group, waiting for or holding its replies.
#[derive(Debug)]
struct Group {
    addr: Arc<str>,
    state: GroupState,
    /// When it was queued, for the latency histogram (one group in `LATENCY_SAMPLE`).
    sent_at: Option<std::time::Instant>,
    /// The pass (`Batcher::begin_pass`) in which its reply channel was last found empty:
    /// the other commands of the group skip polling it again in the same pass.
    pending_in_pass: u64,
}

#[derive(Debug)]
enum GroupState {
    Waiting(oneshot::Receiver<BatchResult>, usize),
    Replied {
        result: BatchResult,
        /// Replies not taken yet; the group is done at zero.
        remaining: usize,
    },
    Done,
}

/// One client's batches.
#[derive(Debug, Default)]
pub struct Batcher {
    /// Batch plain commands at all (off for connections slotgate makes itself).
    pub enabled: bool,
    open: Vec<OpenGroup>,
    /// Sent groups by id, oldest first: `sent[i]` has id `first_sent + i`. Ids are given in
    /// order and groups finish roughly in order, so this is a queue, not a map.
    sent: VecDeque<Group>,
    first_sent: u64,
    next_id: u64,
    /// Counts the pipeline's passes over its commands (`begin_pass`).
    pass: u64,
}

/// What the head of the reply queue resolves to.
pub enum Resolved {
    Pending,
    /// The reply, to pass on as it is.
    Reply(Bytes),
    /// The command must be followed up (redirect, retry, failure).
    FollowUp(Flight, Option<ReplyResult>),
}

impl BatchedCommand {
    /// The slot this command goes to, when it goes to one slot.
    pub fn slot(&self) -> Option<u16> {
        self.target.slot()
    }
}

impl Batcher {
    /// Starts a pass over the pipeline's commands: each group's reply channel is polled at
    /// most once per pass, however many of its commands are looked at.
    pub fn begin_pass(&mut self) {
        self.pass += 1;
    }

    /// True while commands wait in open groups (to be sent by `flush`).
    pub fn has_open(&self) -> bool {
        !self.open.is_empty()
    }

    /// Adds a command for `addr` to this read's group for that node.
    pub fn add(
        &mut self,
        addr: &Arc<str>,
        raw: Bytes,
        target: Target,
        opts: SendOptions,
    ) -> BatchedCommand {
        let pos = match self.open.iter().position(|g| {
            Arc::ptr_eq(&g.addr, addr) && g.proto == opts.proto && g.user == opts.user
        }) {
            Some(p) => p,
            None => {
                if self.sent.is_empty() && self.open.is_empty() {
                    self.first_sent = self.next_id;
                }
                self.open.push(OpenGroup {
                    id: self.next_id,
                    addr: addr.clone(),
                    proto: opts.proto,
                    session: opts.session,
                    user: opts.user,
                    raw: BytesMut::with_capacity(256),
                    count: 0,
                });
                self.next_id += 1;
                self.open.len() - 1
            }
        };
        let g = &mut self.open[pos];
        g.raw.extend_from_slice(&raw);
        g.count += 1;
        BatchedCommand {
            group: g.id,
            index: g.count - 1,
            raw,
            target,
            opts,
        }
    }

    /// Queues every open group on its node's connection.
    pub async fn flush(&mut self, shared: &Shared) {
        for g in std::mem::take(&mut self.open) {
            let rx = shared
                .primary
                .backends
                .send_many(&g.addr, g.proto, g.session, g.user, g.raw.freeze(), g.count)
                .await;
            debug_assert_eq!(g.id, self.first_sent + self.sent.len() as u64);
            self.sent.push_back(Group {
                addr: g.addr,
                state: GroupState::Waiting(rx, g.count),
                sent_at: crate::dispatch::sample_clock(),
                pending_in_pass: 0,
            });
        }
    }

    /// Resolves a batched command at the head of the reply queue.
    pub fn poll_reply(
        &mut self,
        cx: &mut Context<'_>,
        shared: &Shared,
        cmd: &BatchedCommand,
    ) -> Resolved {
        let Some(group) = cmd
            .group
            .checked_sub(self.first_sent)
            .and_then(|i| self.sent.get_mut(i as usize))
        else {
            // Still open: the client loop flushes before it waits.
            return Resolved::Pending;
        };
        if let GroupState::Waiting(rx, count) = &mut group.state {
            if group.pending_in_pass == self.pass {
                return Resolved::Pending;
            }
            let result = match std::pin::Pin::new(rx).poll(cx) {
                Poll::Pending => {
                    group.pending_in_pass = self.pass;
                    return Resolved::Pending;
                }
                Poll::Ready(r) => r.unwrap_or_else(|_| {
                    Err(crate::error::BackendError::ConnectionLost {
                        addr: group.addr.to_string(),
                        sent: true,
                    })
                }),
            };
            let remaining = *count;
            group.state = GroupState::Replied { result, remaining };
            if let Some(t) = group.sent_at {
                shared.primary.record_latency(t);
            }
        }
        let GroupState::Replied { result, remaining } = &mut group.state else {
            return Resolved::Pending;
        };
        *remaining -= 1;
        let reply = match result {
            Ok(replies) => Ok(std::mem::take(&mut replies[cmd.index])),
            Err(e) => Err(e.clone()),
        };
        let done = *remaining == 0;
        let resolved = match reply {
            Ok(reply)
                if shared
                    .primary
                    .is_plain(&reply, &group.addr, cmd.opts.idempotent) =>
            {
                shared.primary.count_reply(&reply);
                Resolved::Reply(reply)
            }
            other => {
                let flight = Flight::sent(
                    cmd.raw.clone(),
                    cmd.target.clone(),
                    cmd.opts,
                    group.addr.clone(),
                );
                Resolved::FollowUp(flight, Some(other))
            }
        };
        if done {
            group.state = GroupState::Done;
            while self
                .sent
                .front()
                .is_some_and(|g| matches!(g.state, GroupState::Done))
            {
                self.sent.pop_front();
                self.first_sent += 1;
            }
        }
        resolved
    }
}
