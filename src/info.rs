//! INFO through the proxy: a master's own sections (clients check `redis_version`,
//! `loading:0`, `role:master`) followed by a `slotgate` section about the proxy itself.
//!
//! slotgate presents itself as a standalone server, so the forwarded text says
//! `cluster_enabled:0`: clients that probe INFO for cluster mode must not switch to it.

use std::fmt::Write;
use std::sync::atomic::Ordering;

use bytes::Bytes;

use crate::dispatch::Shared;
use crate::resp::Request;
use crate::resp::encode::{Encoder, Proto};
use crate::resp::reply::bulk_body;

/// What an INFO request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InfoScope {
    /// Only the slotgate section: answered without a backend.
    SlotgateOnly,
    /// Backend sections, with the slotgate section appended.
    WithSlotgate,
    /// Backend sections only (the client named other sections).
    BackendOnly,
}

/// Reads the section arguments of INFO.
pub fn scope(req: &Request) -> InfoScope {
    if req.len() == 1 {
        return InfoScope::WithSlotgate;
    }
    let names: Vec<&[u8]> = (1..req.len()).map(|i| req.arg(i)).collect();
    let is = |n: &[u8], s: &str| n.eq_ignore_ascii_case(s.as_bytes());
    if names.iter().all(|n| is(n, "slotgate")) {
        InfoScope::SlotgateOnly
    } else if names
        .iter()
        .any(|n| is(n, "slotgate") || is(n, "all") || is(n, "everything") || is(n, "default"))
    {
        InfoScope::WithSlotgate
    } else {
        InfoScope::BackendOnly
    }
}

/// The slotgate section.
pub fn slotgate_section(shared: &Shared) -> String {
    let table = shared.topology.table();
    let s = &shared.stats;
    let mut out = String::with_capacity(512);
    let _ = write!(
        out,
        "# Slotgate\r\n\
         slotgate_version:{}\r\n\
         uptime_in_seconds:{}\r\n\
         connected_clients:{}\r\n\
         total_connections_received:{}\r\n\
         rejected_connections:{}\r\n\
         total_commands_processed:{}\r\n\
         redirects_moved:{}\r\n\
         redirects_ask:{}\r\n\
         retries:{}\r\n\
         dedicated_connections:{}\r\n\
         topology_generation:{}\r\n\
         cluster_masters:{}\r\n\
         cluster_slots_assigned:{}\r\n",
        env!("CARGO_PKG_VERSION"),
        shared.started.elapsed().as_secs(),
        s.connected_clients.load(Ordering::Relaxed),
        s.total_connections.load(Ordering::Relaxed),
        s.rejected_connections.load(Ordering::Relaxed),
        s.total_commands.load(Ordering::Relaxed),
        s.redirects_moved.load(Ordering::Relaxed),
        s.redirects_ask.load(Ordering::Relaxed),
        s.retries.load(Ordering::Relaxed),
        shared.backends.blocking_in_use(),
        table.generation,
        table.masters.len(),
        table.assigned_slots(),
    );
    for (i, (m, slots)) in table
        .masters
        .iter()
        .zip(table.slots_per_master())
        .enumerate()
    {
        let _ = write!(
            out,
            "master{i}:addr={},slots={slots},replicas={},status={}\r\n",
            m.addr,
            m.replicas.len(),
            if m.failing { "failing" } else { "ok" }
        );
    }
    out
}

/// Only the slotgate section, as a reply.
pub fn local_reply(shared: &Shared, proto: Proto) -> Bytes {
    let mut e = Encoder::new(proto);
    e.verbatim_text(slotgate_section(shared).as_bytes());
    e.finish()
}

/// Rewrites a master's INFO reply for the client: `cluster_enabled:0`, and the slotgate
/// section appended when asked for. Error replies pass unchanged.
pub fn rewrite(reply: Bytes, shared: &Shared, proto: Proto, scope: InfoScope) -> Bytes {
    let Some(body) = bulk_body(&reply) else {
        return reply;
    };
    let mut text = String::from_utf8_lossy(body).replace("cluster_enabled:1", "cluster_enabled:0");
    if scope == InfoScope::WithSlotgate {
        if !text.is_empty() && !text.ends_with("\r\n\r\n") {
            text.push_str(if text.ends_with("\r\n") {
                "\r\n"
            } else {
                "\r\n\r\n"
            });
        }
        text.push_str(&slotgate_section(shared));
    }
    let mut e = Encoder::new(proto);
    e.verbatim_text(text.as_bytes());
    e.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(s: &str) -> Request {
        Request::from_args(&s.split(' ').collect::<Vec<_>>())
    }

    #[test]
    fn scopes() {
        assert_eq!(scope(&req("INFO")), InfoScope::WithSlotgate);
        assert_eq!(scope(&req("INFO slotgate")), InfoScope::SlotgateOnly);
        assert_eq!(scope(&req("INFO SLOTGATE")), InfoScope::SlotgateOnly);
        assert_eq!(scope(&req("INFO server slotgate")), InfoScope::WithSlotgate);
        assert_eq!(scope(&req("INFO all")), InfoScope::WithSlotgate);
        assert_eq!(scope(&req("INFO server")), InfoScope::BackendOnly);
        assert_eq!(scope(&req("INFO replication")), InfoScope::BackendOnly);
    }
}
