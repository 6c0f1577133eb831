//! INFO through the proxy: a master's own sections (clients check `redis_version`,
//! `loading:0`, `role:master`) followed by a `slotgate` section about the proxy itself.
//!
//! slotgate presents itself as a standalone server, so the forwarded text says
//! `cluster_enabled:0`: clients that probe INFO for cluster mode must not switch to it.

use std::fmt::Write;
use std::sync::atomic::Ordering;

use bytes::Bytes;

use crate::resp::Request;
use crate::resp::encode::{Encoder, Proto};
use crate::resp::reply::bulk_body;
use crate::shared::Shared;

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
    let ours = |n: &[u8]| is(n, "slotgate") || is(n, "multiwrite");
    if names.iter().all(|n| ours(n)) {
        InfoScope::SlotgateOnly
    } else if names
        .iter()
        .any(|n| ours(n) || is(n, "all") || is(n, "everything") || is(n, "default"))
    {
        InfoScope::WithSlotgate
    } else {
        InfoScope::BackendOnly
    }
}

/// Whether INFO with these arguments includes the keyspace section, which is then summed
/// over every master.
pub fn wants_keyspace(req: &Request) -> bool {
    req.len() == 1
        || (1..req.len()).any(|i| {
            let a = req.arg(i);
            ["keyspace", "default", "all", "everything"]
                .iter()
                .any(|s| a.eq_ignore_ascii_case(s.as_bytes()))
        })
}

/// The `# Keyspace` section summed over the masters' `INFO keyspace` replies: keys and
/// expires added per database, `avg_ttl` weighted by expiring keys.
pub fn sum_keyspace(replies: &[Bytes]) -> String {
    // db index -> (keys, expires, avg_ttl * expires)
    let mut dbs: std::collections::BTreeMap<u64, (u64, u64, u128)> = Default::default();
    for reply in replies {
        let Some(body) = bulk_body(reply) else {
            continue;
        };
        for line in String::from_utf8_lossy(body).lines() {
            let Some((db, fields)) = line.split_once(':') else {
                continue;
            };
            let Some(index) = db.strip_prefix("db").and_then(|d| d.parse::<u64>().ok()) else {
                continue;
            };
            let field = |name: &str| {
                fields
                    .split(',')
                    .find_map(|f| f.strip_prefix(name)?.strip_prefix('='))
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .unwrap_or(0)
            };
            let entry = dbs.entry(index).or_default();
            entry.0 += field("keys");
            entry.1 += field("expires");
            entry.2 += u128::from(field("avg_ttl")) * u128::from(field("expires"));
        }
    }
    let mut out = String::from("# Keyspace\r\n");
    for (db, (keys, expires, ttl_weight)) in dbs {
        let avg_ttl = if expires > 0 {
            ttl_weight / u128::from(expires)
        } else {
            0
        };
        let _ = write!(
            out,
            "db{db}:keys={keys},expires={expires},avg_ttl={avg_ttl}\r\n"
        );
    }
    out
}

/// Replaces the `# Keyspace` section of INFO text (or appends one).
fn replace_keyspace(text: &str, section: &str) -> String {
    let Some(start) = text.find("# Keyspace\r\n") else {
        let mut t = text.to_string();
        if !t.is_empty() && !t.ends_with("\r\n\r\n") {
            t.push_str("\r\n");
        }
        t.push_str(section);
        return t;
    };
    let after = start + "# Keyspace\r\n".len();
    let end = text[after..]
        .find("\r\n#")
        .map_or(text.len(), |i| after + i + 2);
    let mut t = String::with_capacity(text.len() + section.len());
    t.push_str(&text[..start]);
    t.push_str(section);
    if end < text.len() {
        t.push_str("\r\n");
    }
    t.push_str(&text[end..]);
    t
}

/// The slotgate section.
pub fn slotgate_section(shared: &Shared) -> String {
    let table = shared.primary.topology.table();
    let s = &shared.stats;
    let mut out = String::with_capacity(512);
    let _ = write!(
        out,
        "# Slotgate\r\n\
         slotgate_version:{}\r\n\
         uptime_in_seconds:{}\r\n\
         worker_threads:{}\r\n\
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
        shared.config.worker_threads(),
        s.connected_clients.load(Ordering::Relaxed),
        s.total_connections.load(Ordering::Relaxed),
        s.rejected_connections.load(Ordering::Relaxed),
        s.total_commands.get(),
        shared.primary.counters.redirects_moved.get(),
        shared.primary.counters.redirects_ask.get(),
        shared.primary.counters.retries.get(),
        shared.primary.backends.blocking_in_use(),
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

/// The sections slotgate adds: `# Slotgate`, and `# Multiwrite` when writes are mirrored.
pub async fn proxy_sections(shared: &Shared) -> String {
    let mut text = slotgate_section(shared);
    if let Some(m) = &shared.mirrors {
        let lag = match &m.queue {
            Some(q) => q.lag().await,
            None => None,
        };
        text.push_str("\r\n");
        text.push_str(&crate::mirror::info_section(m, &shared.primary, lag));
    }
    text
}

/// Only slotgate's own sections, as a reply.
pub async fn local_reply(shared: &Shared, proto: Proto) -> Bytes {
    let mut e = Encoder::new(proto);
    e.verbatim_text(proxy_sections(shared).await.as_bytes());
    e.finish()
}

/// Rewrites a master's INFO reply for the client: `cluster_enabled:0`, and the slotgate
/// section appended when asked for. Error replies pass unchanged.
pub async fn rewrite(
    reply: Bytes,
    shared: &Shared,
    proto: Proto,
    scope: InfoScope,
    keyspace: Option<String>,
) -> Bytes {
    let Some(body) = bulk_body(&reply) else {
        return reply;
    };
    let mut text = String::from_utf8_lossy(body).replace("cluster_enabled:1", "cluster_enabled:0");
    if let Some(section) = keyspace {
        text = replace_keyspace(&text, &section);
    }
    if scope == InfoScope::WithSlotgate {
        if !text.is_empty() && !text.ends_with("\r\n\r\n") {
            text.push_str(if text.ends_with("\r\n") {
                "\r\n"
            } else {
                "\r\n\r\n"
            });
        }
        text.push_str(&proxy_sections(shared).await);
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
        assert!(wants_keyspace(&req("INFO")));
        assert!(wants_keyspace(&req("INFO KEYSPACE")));
        assert!(!wants_keyspace(&req("INFO server")));
    }

    #[test]
    fn keyspace_is_summed() {
        let r = |t: &str| Bytes::from(format!("${}\r\n{t}\r\n", t.len()));
        let replies = [
            r("# Keyspace\r\ndb0:keys=10,expires=2,avg_ttl=100\r\n"),
            r("# Keyspace\r\ndb0:keys=5,expires=2,avg_ttl=300\r\n"),
            r("# Keyspace\r\n"),
        ];
        let section = sum_keyspace(&replies);
        assert_eq!(
            section,
            "# Keyspace\r\ndb0:keys=15,expires=4,avg_ttl=200\r\n"
        );
        let text = "# Server\r\nx:1\r\n\r\n# Keyspace\r\ndb0:keys=10,expires=2,avg_ttl=100\r\n\r\n# Other\r\ny:2\r\n";
        assert_eq!(
            replace_keyspace(text, &section),
            "# Server\r\nx:1\r\n\r\n# Keyspace\r\ndb0:keys=15,expires=4,avg_ttl=200\r\n\r\n# Other\r\ny:2\r\n"
        );
        let text = "# Server\r\nx:1\r\n\r\n# Keyspace\r\ndb0:keys=10,expires=2,avg_ttl=100\r\n";
        assert_eq!(
            replace_keyspace(text, &section),
            "# Server\r\nx:1\r\n\r\n# Keyspace\r\ndb0:keys=15,expires=4,avg_ttl=200\r\n"
        );
    }
}
