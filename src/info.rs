//! INFO through the proxy: a master's own sections (clients check `redis_version`,
//! `loading:0`, `role:master`) with what a client reads as a total summed over every master
//! (keyspace, blocked clients, command and error statistics, ...), `connected_clients` as
//! slotgate's own, followed by a `slotgate` section about the proxy itself.
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
    let ours = |n: &[u8]| is(n, "slotgate") || is(n, "multiwrite") || is(n, "hotkeys");
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

/// Fields of INFO a client reads as a cluster-wide total: summed over the masters.
const SUMMED: &[&str] = &[
    "blocked_clients",
    "clients_in_timeout_table",
    "rdb_changes_since_last_save",
    "total_commands_processed",
    "total_error_replies",
    "keyspace_hits",
    "keyspace_misses",
    "expired_keys",
    "evicted_keys",
    "total_blocking_keys",
];

/// The first master's INFO text with the totals summed over `texts` (every master's):
/// the `SUMMED` fields, each `cmdstat_*` (calls, usec, rejected and failed calls) and each
/// `errorstat_*` (count), including names only other masters report. `connected_clients`
/// becomes slotgate's own count.
pub fn sum_totals(texts: &[String], connected_clients: i64) -> String {
    let Some(first) = texts.first() else {
        return String::new();
    };
    let field = |text: &str, name: &str| -> i64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    };
    // name -> (field -> sum), first-seen order.
    let mut stats: Vec<(String, Vec<(String, f64)>)> = Vec::new();
    for text in texts {
        for line in text.lines() {
            if !(line.starts_with("cmdstat_") || line.starts_with("errorstat_")) {
                continue;
            }
            let Some((name, values)) = line.split_once(':') else {
                continue;
            };
            let at = match stats.iter().position(|(n, _)| n == name) {
                Some(i) => i,
                None => {
                    stats.push((name.to_string(), Vec::new()));
                    stats.len() - 1
                }
            };
            for kv in values.split(',') {
                let Some((k, v)) = kv.split_once('=') else {
                    continue;
                };
                let v: f64 = v.trim().parse().unwrap_or(0.0);
                let fields = &mut stats[at].1;
                match fields.iter_mut().find(|(f, _)| f == k) {
                    Some((_, sum)) => *sum += v,
                    None => fields.push((k.to_string(), v)),
                }
            }
        }
    }
    let stat_line = |name: &str, fields: &[(String, f64)]| {
        let get = |k: &str| fields.iter().find(|(f, _)| f == k).map_or(0.0, |(_, v)| *v);
        let values: Vec<String> = fields
            .iter()
            .map(|(k, v)| {
                if k == "usec_per_call" {
                    let calls = get("calls");
                    let per = if calls > 0.0 {
                        get("usec") / calls
                    } else {
                        0.0
                    };
                    format!("{k}={per:.2}")
                } else {
                    format!("{k}={}", *v as i64)
                }
            })
            .collect();
        format!("{name}:{}", values.join(","))
    };
    let mut out = String::with_capacity(first.len() + 256);
    let mut lines = first.split("\r\n").peekable();
    while let Some(line) = lines.next() {
        let section_of_stats = line == "# Commandstats" || line == "# Errorstats";
        if section_of_stats {
            out.push_str(line);
            out.push_str("\r\n");
            let prefix = if line == "# Commandstats" {
                "cmdstat_"
            } else {
                "errorstat_"
            };
            // Replace the section's lines with the merged ones.
            while lines.peek().is_some_and(|l| l.starts_with(prefix)) {
                lines.next();
            }
            for (name, fields) in stats.iter().filter(|(n, _)| n.starts_with(prefix)) {
                out.push_str(&stat_line(name, fields));
                out.push_str("\r\n");
            }
            continue;
        }
        let summed = line
            .split_once(':')
            .filter(|(name, _)| SUMMED.contains(name))
            .map(|(name, _)| {
                let total: i64 = texts.iter().map(|t| field(t, name)).sum();
                format!("{name}:{total}")
            });
        match summed {
            Some(l) => out.push_str(&l),
            None if line.starts_with("connected_clients:") => {
                out.push_str(&format!("connected_clients:{connected_clients}"))
            }
            None => out.push_str(line),
        }
        if lines.peek().is_some() {
            out.push_str("\r\n");
        }
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
         idle_timeouts:{}\r\n\
         read_timeouts:{}\r\n\
         output_buffer_closes:{}\r\n\
         auth_failures:{}\r\n\
         auth_rate_limited:{}\r\n\
         tls_handshake_failures:{}\r\n\
         total_commands_processed:{}\r\n\
         redirects_moved:{}\r\n\
         redirects_ask:{}\r\n\
         retries:{}\r\n\
         dedicated_connections:{}\r\n\
         topology_generation:{}\r\n\
         cluster_masters:{}\r\n\
         cluster_slots_assigned:{}\r\n\
         commands_learned:{}\r\n\
         acl_users:{}\r\n\
         tracking_clients:{}\r\n\
         tracking_keys:{}\r\n\
         tracking_invalidations:{}\r\n\
         tracking_flushes:{}\r\n",
        env!("CARGO_PKG_VERSION"),
        shared.started.elapsed().as_secs(),
        shared.config.worker_threads(),
        s.connected_clients.load(Ordering::Relaxed),
        s.total_connections.load(Ordering::Relaxed),
        s.rejected_connections.load(Ordering::Relaxed),
        s.idle_timeouts.load(Ordering::Relaxed),
        s.read_timeouts.load(Ordering::Relaxed),
        s.output_buffer_closes.load(Ordering::Relaxed),
        s.auth_failures.load(Ordering::Relaxed),
        s.auth_rate_limited.load(Ordering::Relaxed),
        s.tls_handshake_failures.load(Ordering::Relaxed),
        s.total_commands.get(),
        shared.primary.counters.redirects_moved.get(),
        shared.primary.counters.redirects_ask.get(),
        shared.primary.counters.retries.get(),
        shared.primary.backends.blocking_in_use(),
        table.generation,
        table.masters.len(),
        table.assigned_slots(),
        crate::command::learned::count(),
        shared.primary.backends.users().len(),
        shared.tracking.clients.load(Ordering::Relaxed),
        shared.tracking.tracked_keys(),
        shared.tracking.invalidations.load(Ordering::Relaxed),
        shared.tracking.flushes.load(Ordering::Relaxed),
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
    text.push_str("\r\n");
    text.push_str(&shared.hotkeys.info_section());
    if let Some(m) = &shared.mirrors() {
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

/// Rewrites a master's INFO reply for the client: totals summed with the `others` masters'
/// replies, `connected_clients` as slotgate's, `cluster_enabled:0`, and the slotgate section
/// appended when asked for. Error replies pass unchanged.
pub async fn rewrite(
    reply: Bytes,
    others: &[Bytes],
    shared: &Shared,
    proto: Proto,
    scope: InfoScope,
) -> Bytes {
    let Some(body) = bulk_body(&reply) else {
        return reply;
    };
    let first = String::from_utf8_lossy(body).into_owned();
    let mut texts = vec![first];
    texts.extend(
        others
            .iter()
            .filter_map(|r| bulk_body(r))
            .map(|b| String::from_utf8_lossy(b).into_owned()),
    );
    let mut text = sum_totals(
        &texts,
        shared.stats.connected_clients.load(Ordering::Relaxed),
    )
    .replace("cluster_enabled:1", "cluster_enabled:0");
    if text.contains("# Keyspace\r\n") {
        let replies: Vec<Bytes> = std::iter::once(reply.clone())
            .chain(others.iter().cloned())
            .collect();
        text = replace_keyspace(&text, &sum_keyspace(&replies));
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

    #[test]
    fn totals_are_summed_over_masters() {
        let a = "# Clients\r\nconnected_clients:5\r\nblocked_clients:1\r\n\r\n# Stats\r\ntotal_commands_processed:10\r\nkeyspace_hits:2\r\n\r\n# Commandstats\r\ncmdstat_get:calls=2,usec=10,usec_per_call=5.00,rejected_calls=0,failed_calls=0\r\n\r\n# Errorstats\r\n\r\n# Cluster\r\ncluster_enabled:1\r\n";
        let b = "# Clients\r\nconnected_clients:7\r\nblocked_clients:2\r\n\r\n# Stats\r\ntotal_commands_processed:5\r\nkeyspace_hits:3\r\n\r\n# Commandstats\r\ncmdstat_get:calls=2,usec=30,usec_per_call=15.00,rejected_calls=0,failed_calls=1\r\ncmdstat_set:calls=1,usec=1,usec_per_call=1.00,rejected_calls=0,failed_calls=0\r\n\r\n# Errorstats\r\nerrorstat_ERR:count=4\r\n\r\n# Cluster\r\ncluster_enabled:1\r\n";
        let t = sum_totals(&[a.to_string(), b.to_string()], 3);
        assert!(t.contains("connected_clients:3\r\n"), "{t}");
        assert!(t.contains("blocked_clients:3\r\n"));
        assert!(t.contains("total_commands_processed:15\r\n"));
        assert!(t.contains("keyspace_hits:5\r\n"));
        assert!(t.contains(
            "cmdstat_get:calls=4,usec=40,usec_per_call=10.00,rejected_calls=0,failed_calls=1\r\n"
        ));
        assert!(t.contains("cmdstat_set:calls=1,"));
        assert!(
            t.contains("# Errorstats\r\nerrorstat_ERR:count=4\r\n"),
            "{t}"
        );
        assert!(t.ends_with("cluster_enabled:1\r\n"), "{t:?}");
    }
}
