//! Per-node batching of one client's pipelined requests.
//!
//! Plain forwarded commands that arrive in one read are grouped by the node they go to; each
//! group is queued on that node's connection as one unit, and its replies come back together
//! on one channel. A pipeline of 16 commands spread over three masters then costs three
//! channel round trips instead of sixteen. Replies are still handed to the client one by one,
//! in request order; a reply that is a redirect or a failure is followed up alone, like any
//! other command.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use tokio::sync::oneshot;

use crate::backend::conn::BatchResult;
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
    addr: Arc<str>,
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
    raw: BytesMut,
    count: usize,
}

/// A sent group, waiting for or holding its replies.
#[derive(Debug)]
enum Group {
    Waiting(oneshot::Receiver<BatchResult>, usize),
    Replied {
        result: BatchResult,
        /// Replies not taken yet; the group is dropped at zero.
        remaining: usize,
    },
}

/// One client's batches.
#[derive(Debug, Default)]
pub struct Batcher {
    /// Batch plain commands at all (off for connections slotgate makes itself).
    pub enabled: bool,
    open: Vec<OpenGroup>,
    sent: HashMap<u64, Group>,
    next_id: u64,
}

/// What the head of the reply queue resolves to.
pub enum Resolved {
    Pending,
    /// The reply, to pass on as it is.
    Reply(Bytes),
    /// The command must be followed up (redirect, retry, failure).
    FollowUp(Flight, Option<crate::backend::conn::ReplyResult>),
}

impl Batcher {
    /// True while commands wait in open groups (to be sent by `flush`).
    pub fn has_open(&self) -> bool {
        !self.open.is_empty()
    }

    /// Adds a command for `addr` to this read's group for that node.
    pub fn add(
        &mut self,
        addr: Arc<str>,
        raw: Bytes,
        target: Target,
        opts: SendOptions,
    ) -> BatchedCommand {
        let pos = match self
            .open
            .iter()
            .position(|g| g.addr == addr && g.proto == opts.proto)
        {
            Some(p) => p,
            None => {
                self.next_id += 1;
                self.open.push(OpenGroup {
                    id: self.next_id,
                    addr: addr.clone(),
                    proto: opts.proto,
                    session: opts.session,
                    raw: BytesMut::with_capacity(256),
                    count: 0,
                });
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
            addr,
        }
    }

    /// Queues every open group on its node's connection.
    pub async fn flush(&mut self, shared: &Shared) {
        for g in std::mem::take(&mut self.open) {
            let rx = shared
                .primary
                .backends
                .send_many(&g.addr, g.proto, g.session, g.raw.freeze(), g.count)
                .await;
            self.sent.insert(g.id, Group::Waiting(rx, g.count));
        }
    }

    /// Resolves a batched command at the head of the reply queue.
    pub fn poll_reply(
        &mut self,
        cx: &mut Context<'_>,
        shared: &Shared,
        cmd: &BatchedCommand,
    ) -> Resolved {
        let Some(group) = self.sent.get_mut(&cmd.group) else {
            // Still open: the head waits for a flush (the client loop flushes before waiting).
            return Resolved::Pending;
        };
        if let Group::Waiting(rx, count) = group {
            let result = match std::pin::Pin::new(rx).poll(cx) {
                Poll::Pending => return Resolved::Pending,
                Poll::Ready(r) => r.unwrap_or_else(|_| {
                    Err(crate::error::BackendError::ConnectionLost {
                        addr: cmd.addr.to_string(),
                        sent: true,
                    })
                }),
            };
            *group = Group::Replied {
                result,
                remaining: *count,
            };
        }
        let Group::Replied { result, remaining } = group else {
            return Resolved::Pending;
        };
        *remaining -= 1;
        let reply = match result {
            Ok(replies) => Ok(std::mem::take(&mut replies[cmd.index])),
            Err(e) => Err(e.clone()),
        };
        if *remaining == 0 {
            self.sent.remove(&cmd.group);
        }
        match reply {
            Ok(reply)
                if shared
                    .primary
                    .is_plain(&reply, &cmd.addr, cmd.opts.idempotent) =>
            {
                shared.primary.count_reply(&reply);
                Resolved::Reply(reply)
            }
            other => {
                let flight = Flight::sent(
                    cmd.raw.clone(),
                    cmd.target.clone(),
                    cmd.opts,
                    cmd.addr.clone(),
                );
                Resolved::FollowUp(flight, Some(other))
            }
        }
    }
}
