//! A transaction whose slot moved while it was being queued (resharding, a failover).
//!
//! The pinned master then redirects the queued commands (`MOVED`, `ASK`, `TRYAGAIN`,
//! `CLUSTERDOWN`) and discards the transaction at `EXEC`: nothing of it ran. A standalone
//! client cannot follow a redirect, so slotgate answers those commands `+QUEUED` (`+OK` for
//! `WATCH`) and decides at `EXEC`: a transaction that watched keys gets the null reply of a
//! changed watched key (its optimistic-locking loop tries again, on the new master); one
//! that did not is sent again whole (`MULTI`, its commands, `EXEC`) to the slot's master
//! after a topology refresh, up to `cluster.max_retries` times, and the client gets that
//! `EXEC`'s reply; a slot being migrated (`ASK`) is replayed on the importing node with
//! `ASKING` before each command. A replay whose connection breaks is not repeated: that
//! `EXEC` may have run.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::oneshot;

use crate::backend::conn::Pending;
use crate::redirect::{Attempts, Decision, Outcome, decide};
use crate::resp::encode::error;
use crate::resp::{Proto, Request};
use crate::shared::Shared;

/// Why a node refused a command for its slot.
#[derive(Debug)]
enum Refusal {
    /// `ASK`: the slot is being migrated to this node, which takes it after `ASKING`.
    Ask(String),
    /// `MOVED` (applied to the slot table), `TRYAGAIN` or `CLUSTERDOWN`.
    Elsewhere,
}

/// Whether `reply`, from the node at `from`, refuses a command because that node does not
/// serve its slot (now); a `MOVED` is applied to the slot table at once.
pub(super) fn refused_for_slot(shared: &Shared, reply: &[u8], from: &str) -> bool {
    refusal(shared, reply, from).is_some()
}

fn refusal(shared: &Shared, reply: &[u8], from: &str) -> Option<Refusal> {
    if reply.first() != Some(&b'-') {
        return None;
    }
    let outcome = Outcome::Reply { reply, from };
    let cluster = &shared.primary;
    match decide(outcome, Attempts::default(), cluster.policy, false) {
        Decision::Redirect {
            addr, asking: true, ..
        } => Some(Refusal::Ask(addr)),
        Decision::Redirect { slot, addr, .. } => {
            cluster.topology.moved(slot, Arc::from(addr));
            Some(Refusal::Elsewhere)
        }
        Decision::Retry { .. } => {
            cluster.topology.request_refresh(None);
            Some(Refusal::Elsewhere)
        }
        Decision::Return | Decision::Fail(_) => None,
    }
}

/// What `EXEC` needs to finish a transaction whose slot moved.
#[derive(Debug)]
pub struct Retry {
    /// Set by the reply of any of the transaction's commands that was refused for its slot.
    pub seen: Arc<AtomicBool>,
    /// WATCH went out before MULTI.
    pub watching: bool,
    /// The slot of the transaction's keys.
    pub slot: Option<u16>,
    /// The queued commands, in order (empty while watching: no replay then).
    pub commands: Vec<Bytes>,
    pub user: crate::backend::users::UserId,
}

impl Retry {
    /// The client's reply to `EXEC`, given the pinned master's `reply`.
    pub async fn after_exec(
        self,
        shared: &Shared,
        proto: Proto,
        reply: Bytes,
        from: &str,
    ) -> Bytes {
        let refused = refused_for_slot(shared, &reply, from);
        let discarded = self.seen.load(Ordering::Relaxed) && reply.starts_with(b"-EXECABORT");
        if !(refused || discarded) {
            return reply;
        }
        if self.watching {
            // As when a watched key changed: the transaction did not run.
            return Bytes::from_static(match proto {
                Proto::Resp2 => b"*-1\r\n",
                Proto::Resp3 => b"_\r\n",
            });
        }
        match self.slot {
            Some(slot) => self.replay(shared, proto, slot).await,
            None => reply,
        }
    }

    /// Runs the transaction again on the slot's master (or, after an `ASK`, on the node
    /// importing the slot) until no node refuses it.
    async fn replay(&self, shared: &Shared, proto: Proto, slot: u16) -> Bytes {
        let cluster = &shared.primary;
        let mut wait = cluster.policy.backoff;
        let mut last = String::new();
        let mut importing: Option<String> = None;
        for _ in 0..cluster.policy.max_retries.max(1) {
            cluster.counters.retries.add(1);
            if importing.is_none() {
                cluster
                    .topology
                    .refresh_and_wait(None, cluster.timeouts.connect())
                    .await;
            }
            match self.run_once(shared, proto, slot, importing.take()).await {
                Ok(reply) => return reply,
                Err((text, Refusal::Ask(addr))) => {
                    last = text;
                    importing = Some(addr);
                    continue;
                }
                Err((text, Refusal::Elsewhere)) => last = text,
            }
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(Duration::from_secs(1));
        }
        error(&format!(
            "EXECABORT Transaction discarded because of previous errors: slot {slot} kept \
             moving while slotgate sent it again ({last})"
        ))
    }

    /// MULTI, the commands and EXEC on the master of `slot`, or with `ASKING` on the node
    /// `importing` it: `Err` (with the refusal) when a node refused the transaction for its
    /// slot again, so that nothing of it ran.
    async fn run_once(
        &self,
        shared: &Shared,
        proto: Proto,
        slot: u16,
        importing: Option<String>,
    ) -> Result<Bytes, (String, Refusal)> {
        let asking = importing.is_some();
        let addr: Arc<str> = match importing {
            Some(addr) => Arc::from(addr),
            None => {
                let table = shared.primary.topology.table();
                let Some(master) = table.master_for(slot) else {
                    return Err((format!("slot {slot} not served"), Refusal::Elsewhere));
                };
                master.addr.clone()
            }
        };
        let conn = shared
            .primary
            .backends
            .session(&addr, proto, self.user)
            .map_err(|limit| {
                let text = format!("too many dedicated connections on {addr} (limit {limit})");
                (text, Refusal::Elsewhere)
            })?;
        let multi = Request::from_args(&["MULTI"]).raw;
        let exec = Request::from_args(&["EXEC"]).raw;
        let mut waiting = Vec::with_capacity(self.commands.len() + 2);
        for (i, raw) in std::iter::once(multi)
            .chain(self.commands.iter().cloned())
            .chain(std::iter::once(exec))
            .enumerate()
        {
            // One ASKING before MULTI holds for the whole transaction (Redis keeps the flag
            // while MULTI is open; an ASKING inside would be queued).
            let (tx, rx) = oneshot::channel();
            conn.send(Pending::one(raw, asking && i == 0, tx)).await;
            waiting.push(rx);
        }
        let mut replies = Vec::with_capacity(waiting.len());
        for rx in waiting {
            match rx.await {
                Ok(Ok(reply)) => replies.push(reply),
                // EXEC may have gone out: never sent a third time.
                Ok(Err(e)) => {
                    return Ok(error(&format!(
                        "ERR slotgate: {e} while sending a transaction again after its slot \
                         moved; it may or may not have been executed"
                    )));
                }
                Err(_) => {
                    return Ok(error(&format!(
                        "ERR slotgate: connection to {addr} lost while sending a transaction \
                         again after its slot moved; it may or may not have been executed"
                    )));
                }
            }
        }
        conn.release();
        let exec = replies.pop().unwrap_or_default();
        if let Some((reply, why)) = replies
            .iter()
            .chain(std::iter::once(&exec))
            .find_map(|r| refusal(shared, r, &addr).map(|why| (r, why)))
        {
            let text = String::from_utf8_lossy(&reply[1..]).trim_end().to_string();
            return Err((text, why));
        }
        if exec.starts_with(b"-EXECABORT")
            && let Some(first) = replies.iter().skip(1).find(|r| r.first() == Some(&b'-'))
        {
            // The client never saw this command's error (its first attempt was redirected).
            let text = String::from_utf8_lossy(&first[1..]).trim_end().to_string();
            return Ok(error(&format!(
                "EXECABORT Transaction discarded because of previous errors: {text}"
            )));
        }
        Ok(exec)
    }
}
