//! WAIT and WAITAOF through the proxy.
//!
//! Redis counts WAIT per connection: a replica is counted once it acknowledged the offset of
//! that connection's last write. slotgate's backend connections are shared, and WAIT would
//! block one for everyone, so WAIT runs on a connection of its own to every master this
//! client wrote to since its last WAIT. On that connection slotgate first writes a tiny
//! expiring marker key in a slot of that master (`SET slotgate:wait:{tag} 1 PX 100`), which
//! sets the connection's write offset at or past every write the client made before (they
//! were acknowledged first: WAIT is only sent once the replies before it are written), then
//! sends the client's WAIT. The reply is the minimum count over those masters (for WAITAOF,
//! the minimum of each of the two counts). With no writes, WAIT goes to one master as on a
//! fresh connection.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::future::join_all;
use tokio::sync::oneshot;

use crate::backend::conn::{Deadline, Pending};
use crate::resp::encode::{Encoder, error};
use crate::resp::reply::{elements, integer};
use crate::resp::{Proto, Request};
use crate::shared::Shared;
use crate::slot::{SLOT_COUNT, slot_of};

/// What one client wrote since its last WAIT.
#[derive(Debug, Default)]
pub struct Written {
    /// Slots of the keys written (a bit per slot, allocated on the first write).
    slots: Option<Box<[u64; SLOT_COUNT / 64]>>,
    /// A write went to every master, or to one not known by slot (keyless scripts).
    pub everywhere: bool,
}

impl Written {
    pub fn record_keys<'a>(&mut self, keys: impl Iterator<Item = &'a [u8]>) {
        let mut any = false;
        for k in keys {
            any = true;
            let s = slot_of(k) as usize;
            let bits = self
                .slots
                .get_or_insert_with(|| Box::new([0; SLOT_COUNT / 64]));
            bits[s / 64] |= 1 << (s % 64);
        }
        if !any {
            self.everywhere = true;
        }
    }

    /// The slots written, in order.
    fn written_slots(&self) -> impl Iterator<Item = u16> + '_ {
        self.slots
            .iter()
            .flat_map(|bits| (0..SLOT_COUNT).filter(move |&s| bits[s / 64] & (1 << (s % 64)) != 0))
            .map(|s| s as u16)
    }

    /// The masters to ask: those serving the written slots now.
    fn masters(&self, shared: &Shared) -> Vec<Arc<str>> {
        if self.everywhere {
            return shared.primary.serving_masters();
        }
        let table = shared.primary.topology.table();
        let mut out: Vec<Arc<str>> = Vec::new();
        for s in self.written_slots() {
            if let Some(m) = table.master_for(s)
                && !out.contains(&m.addr)
            {
                out.push(m.addr.clone());
            }
        }
        out
    }
}

/// A short string whose slot is `slot`, to put a marker key on that slot's master.
fn tag_for_slot(slot: u16) -> String {
    (0u32..)
        .map(|i| i.to_string())
        .find(|t| slot_of(t.as_bytes()) == slot)
        .unwrap_or_default()
}

/// Runs WAIT or WAITAOF (`req`) for a client that wrote `written`, which it then clears.
pub async fn run(
    shared: &Shared,
    written: &mut Written,
    req: Request,
    proto: Proto,
    user: crate::backend::users::UserId,
) -> Bytes {
    let mut masters = written.masters(shared);
    *written = Written::default();
    if masters.is_empty() {
        match shared.primary.topology.table().any_master(rand::random()) {
            Some(m) => masters.push(m.addr.clone()),
            None => return crate::replies::cluster_down(),
        }
    }
    let table = shared.primary.topology.table();
    let calls = masters.iter().map(|addr| {
        // A slot this master serves, for the marker key.
        let slot =
            (0..SLOT_COUNT as u16).find(|&s| table.master_for(s).is_some_and(|m| &m.addr == addr));
        wait_on(shared, addr.clone(), slot, &req, proto, user)
    });
    let replies = join_all(calls).await;
    if let Some(e) = replies.iter().find(|r| r.first() == Some(&b'-')) {
        return e.clone();
    }
    let aof = crate::command::resolve(&req).is_some_and(|s| s.cmd == crate::command::Cmd::WaitAof);
    if !aof {
        let min = replies.iter().filter_map(|r| integer(r)).min();
        return match min {
            Some(n) if replies.iter().all(|r| integer(r).is_some()) => {
                let mut e = Encoder::new(proto);
                e.integer(n);
                e.finish()
            }
            _ => error("ERR slotgate: unexpected WAIT reply from a node"),
        };
    }
    let mut mins: Option<Vec<i64>> = None;
    for r in &replies {
        let Some(vals) =
            elements(r).and_then(|e| e.iter().map(|x| integer(x)).collect::<Option<Vec<_>>>())
        else {
            return error("ERR slotgate: unexpected WAITAOF reply from a node");
        };
        mins = Some(match mins {
            None => vals,
            Some(m) => m.iter().zip(&vals).map(|(a, b)| *a.min(b)).collect(),
        });
    }
    let vals = mins.unwrap_or_default();
    let mut e = Encoder::new(proto);
    e.array(vals.len());
    for v in vals {
        e.integer(v);
    }
    e.finish()
}

/// Marker write then the client's WAIT, on a connection of its own to `addr`.
async fn wait_on(
    shared: &Shared,
    addr: Arc<str>,
    slot: Option<u16>,
    req: &Request,
    proto: Proto,
    user: crate::backend::users::UserId,
) -> Bytes {
    let conn = match shared.primary.backends.session(&addr, proto, user) {
        Ok(c) => c,
        Err(limit) => {
            return error(&format!(
                "ERR slotgate: too many dedicated connections in use on {addr} (limit {limit})"
            ));
        }
    };
    if let Some(slot) = slot {
        let key = format!("slotgate:wait:{{{}}}", tag_for_slot(slot));
        let marker = Request::from_args(&["SET", key.as_str(), "1", "PX", "100"]);
        let (tx, _rx) = oneshot::channel();
        conn.send(Pending::one(marker.raw, false, tx)).await;
    }
    let block =
        crate::command::resolve(req).map_or(Some(Duration::ZERO), |spec| spec.block_time(req));
    let deadline = Deadline::for_block_time(block);
    let (tx, rx) = oneshot::channel();
    conn.send(Pending::one(req.raw.clone(), false, tx).with_deadline(deadline))
        .await;
    match rx.await {
        Ok(Ok(reply)) => {
            // A master that turns into a replica unblocks WAIT with an error and closes the
            // connection: it is not reused.
            if !crate::redirect::unblocked_by_demotion(&reply) {
                conn.release();
            }
            reply
        }
        Ok(Err(e)) => error(&format!("ERR slotgate: {e}")),
        Err(_) => error(&format!("ERR slotgate: connection to {addr} lost")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_land_in_their_slot() {
        for slot in [0u16, 1, 5000, 16383] {
            assert_eq!(slot_of(tag_for_slot(slot).as_bytes()), slot);
        }
    }

    #[test]
    fn keyless_writes_mean_every_master() {
        let mut w = Written::default();
        w.record_keys([&b"a"[..], b"b"].into_iter());
        assert_eq!(
            w.written_slots().collect::<Vec<_>>(),
            [slot_of(b"b"), slot_of(b"a")]
                .into_iter()
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .collect::<Vec<_>>()
        );
        assert!(!w.everywhere);
        w.record_keys(std::iter::empty());
        assert!(w.everywhere);
    }
}
