//! Parser for `CLUSTER SHARDS` (Redis 7+), the topology source when `CLUSTER NODES` is
//! refused or renamed. Each shard lists its slot ranges and its nodes (id, ip, endpoint,
//! port, role, health); the result has the shape `CLUSTER NODES` gives, so one table builder
//! serves both.

use crate::resp::value::Value;
use crate::topology::nodes::{NodeEntry, NodeFlags};

/// Parses a `CLUSTER SHARDS` reply (RESP2 or RESP3). `dialled_host` stands in for a node
/// whose address is unknown (`?` or empty). With `tls`, nodes are reached at their
/// `tls-port` (a node with TLS only reports no `port`).
pub fn parse_shards(reply: &[u8], dialled_host: &str, tls: bool) -> Result<Vec<NodeEntry>, String> {
    let (value, _) = Value::parse(reply)
        .map_err(|e| format!("unreadable CLUSTER SHARDS reply: {e}"))?
        .ok_or("incomplete CLUSTER SHARDS reply")?;
    if let Value::Error(e) = &value {
        return Err(String::from_utf8_lossy(e).into_owned());
    }
    let shards = value
        .as_array()
        .ok_or("CLUSTER SHARDS reply is not an array")?;
    let mut out = Vec::new();
    for shard in shards {
        let slots = shard
            .get("slots")
            .and_then(Value::as_array)
            .ok_or("a shard without slots")?;
        let bound = |v: &Value| {
            v.as_int()
                .or_else(|| v.text()?.parse().ok())
                .and_then(|n| u16::try_from(n).ok())
                .filter(|&n| (n as usize) < crate::slot::SLOT_COUNT)
        };
        let mut ranges = Vec::with_capacity(slots.len() / 2);
        for pair in slots.chunks(2) {
            match (pair.first().and_then(bound), pair.get(1).and_then(bound)) {
                (Some(a), Some(b)) if a <= b => ranges.push((a, b)),
                _ => return Err("a bad slot range in CLUSTER SHARDS".into()),
            }
        }
        let nodes = shard
            .get("nodes")
            .and_then(Value::as_array)
            .ok_or("a shard without nodes")?;
        let text = |n: &Value, k: &str| n.get(k).and_then(Value::text).unwrap_or_default();
        let master_id = nodes
            .iter()
            .find(|n| text(n, "role") == "master")
            .map(|n| text(n, "id"));
        for n in nodes {
            let master = text(n, "role") == "master";
            let health = text(n, "health");
            let port = n
                .get(if tls { "tls-port" } else { "port" })
                .and_then(|p| p.as_int().or_else(|| p.text()?.parse().ok()))
                .and_then(|p| u16::try_from(p).ok())
                .unwrap_or(0);
            // `ip` as CLUSTER NODES reports it; `endpoint` when there is no ip; `?` or
            // nothing means the node we asked.
            let host = [text(n, "ip"), text(n, "endpoint")]
                .into_iter()
                .find(|h| !h.is_empty() && h != "?")
                .unwrap_or_else(|| dialled_host.to_string());
            out.push(NodeEntry {
                id: text(n, "id"),
                addr: (port != 0).then(|| format!("{host}:{port}")),
                flags: NodeFlags {
                    master,
                    replica: !master,
                    fail: health == "fail",
                    pfail: false,
                    ..NodeFlags::default()
                },
                master_id: if master { None } else { master_id.clone() },
                config_epoch: 0,
                connected: health == "online",
                slots: if master { ranges.clone() } else { Vec::new() },
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topology::SlotTable;
    use crate::topology::nodes::parse_nodes;

    use crate::fixtures::server_reply as fixture;

    /// Each slot's master address.
    fn routes(t: &SlotTable) -> Vec<Option<String>> {
        (0..16384u16)
            .map(|s| t.master_for(s).map(|m| m.addr.to_string()))
            .collect()
    }

    fn from_nodes(text: &str) -> SlotTable {
        let (view, errors) = parse_nodes(text, "127.0.0.1");
        assert!(errors.is_empty(), "{errors:?}");
        SlotTable::default().merge_view(&view)
    }

    #[test]
    fn every_captured_nodes_and_shards_reply_gives_the_same_table() {
        let servers = [
            "redis70",
            "redis74",
            "redis74-tls",
            "redis-unstable-2024-10",
            "valkey80",
        ];
        for server in servers {
            for variant in ["", "-hostname"] {
                let txt =
                    String::from_utf8(fixture(&format!("{server}-cluster-nodes{variant}.txt")))
                        .unwrap();
                let reference = from_nodes(&txt);
                assert_eq!(reference.assigned_slots(), 16384, "{server}{variant}");
                assert_eq!(reference.masters.len(), 3, "{server}{variant}");
                for proto in ["resp2", "resp3"] {
                    let raw = fixture(&format!("{server}-cluster-nodes{variant}.{proto}"));
                    let text = crate::topology::bulk_text(&raw).unwrap();
                    assert!(
                        from_nodes(&text).same_routing(&reference),
                        "{server}{variant} nodes {proto}"
                    );
                    assert_eq!(routes(&from_nodes(&text)), routes(&reference));
                    let raw = fixture(&format!("{server}-cluster-shards{variant}.{proto}"));
                    let view = parse_shards(&raw, "127.0.0.1", false).unwrap();
                    let table = SlotTable::default().merge_view(&view);
                    assert!(
                        routes(&table) == routes(&reference),
                        "{server}{variant} shards {proto}"
                    );
                }
            }
        }
        // Asked over TLS, the same cluster reports its TLS ports.
        let txt = String::from_utf8(fixture("redis74-tls-cluster-nodes-via-tls.txt")).unwrap();
        let via_tls = from_nodes(&txt);
        assert_eq!(via_tls.masters.len(), 3);
        assert!(via_tls.masters.iter().all(|m| m.addr.ends_with(":8960")
            || m.addr.ends_with(":8961")
            || m.addr.ends_with(":8962")));
    }

    #[test]
    fn tls_clusters_are_reached_at_their_tls_ports() {
        for name in [
            "redis74-tls-cluster-shards.resp2",
            "redis74-tls-cluster-shards.resp3",
            "redis74-tls-cluster-shards-hostname.resp2",
        ] {
            let raw = fixture(name);
            let ports = |tls| {
                let mut p: Vec<String> = parse_shards(&raw, "127.0.0.1", tls)
                    .unwrap()
                    .into_iter()
                    .filter_map(|n| n.addr)
                    .collect();
                p.sort();
                p
            };
            assert_eq!(
                ports(true),
                ["127.0.0.1:8960", "127.0.0.1:8961", "127.0.0.1:8962"],
                "{name}"
            );
            assert_eq!(
                ports(false),
                ["127.0.0.1:8910", "127.0.0.1:8911", "127.0.0.1:8912"],
                "{name}"
            );
        }
        // A node with TLS only reports no plain port: without tls it has no address.
        let reply = b"*1\r\n*4\r\n$5\r\nslots\r\n*2\r\n:0\r\n:16383\r\n$5\r\nnodes\r\n*1\r\n*8\r\n$2\r\nid\r\n$1\r\na\r\n$8\r\ntls-port\r\n:7100\r\n$2\r\nip\r\n$9\r\n127.0.0.1\r\n$4\r\nrole\r\n$6\r\nmaster\r\n";
        assert_eq!(
            parse_shards(reply, "h", true).unwrap()[0].addr.as_deref(),
            Some("127.0.0.1:7100")
        );
        assert_eq!(parse_shards(reply, "h", false).unwrap()[0].addr, None);
    }

    #[test]
    fn unknown_endpoints_mean_the_dialled_node() {
        let reply = b"*1\r\n*4\r\n$5\r\nslots\r\n*2\r\n:0\r\n:16383\r\n$5\r\nnodes\r\n*1\r\n*10\r\n$2\r\nid\r\n$1\r\na\r\n$4\r\nport\r\n:7000\r\n$2\r\nip\r\n$0\r\n\r\n$8\r\nendpoint\r\n$1\r\n?\r\n$4\r\nrole\r\n$6\r\nmaster\r\n";
        let view = parse_shards(reply, "10.0.0.9", false).unwrap();
        assert_eq!(view[0].addr.as_deref(), Some("10.0.0.9:7000"));
        assert_eq!(view[0].slots, [(0, 16383)]);
        assert!(parse_shards(b"-ERR unknown command\r\n", "h", false).is_err());
        assert!(parse_shards(b"*1\r\n*0\r\n", "h", false).is_err());
    }
}
