//! SCAN across every master with one cursor that names the master by identity.
//!
//! The walk goes through slot space: the cursor holds a slot `S`, a 12-bit hash of the id of
//! the master that served `S` when its scan began, and that master's own cursor. Each call
//! scans the current owner of `S`; when that master's scan ends, the walk moves to the
//! lowest slot above `S` that another master serves, and ends after the last one. If `S`
//! changed owner between two calls (a failover, a resharding), the new owner is scanned
//! from its start: a node's cursor means nothing on another node.
//!
//! Why no key that stays put is skipped: every slot is either a stop of the walk (its owner
//! is scanned in full) or lies between two stops, served by the master just scanned in full.
//! A key may be returned more than once (its master owns several slot ranges, or it moved).
//! `MATCH` with a hash tag (`{tag}*`) scans only the master of that slot.

use bytes::Bytes;

use crate::resp::encode::error;
use crate::resp::reply::{bulk_body, elements};
use crate::resp::{Encoder, Proto, Request};
use crate::slot::{SLOT_COUNT, slot_of};
use crate::topology::{Master, SlotTable};

/// Bits of the cursor that hold the slot.
const SLOT_BITS: u32 = 14;
/// Bits that hold the master's identity hash.
const ID_BITS: u32 = 12;
const LOW_BITS: u32 = SLOT_BITS + ID_BITS;

/// Where one SCAN call goes and how its reply's cursor is rewritten.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanStep {
    /// The slot whose owner is scanned.
    pub slot: u16,
    /// That owner's address.
    pub addr: std::sync::Arc<str>,
    /// That owner's identity hash.
    pub id: u16,
    /// The request to send it (its own cursor in place of the client's).
    pub raw: Bytes,
    /// A hash tag pins the scan to this one master.
    pub single: bool,
}

/// The 12-bit identity of a master: its node id (its address when the id is unknown).
fn identity(m: &Master) -> u16 {
    let key = if m.id.is_empty() {
        m.addr.as_bytes()
    } else {
        m.id.as_bytes()
    };
    use std::hash::Hasher;
    let mut h = crate::fasthash::Fnv::default();
    h.write(key);
    (h.finish() & ((1 << ID_BITS) - 1)) as u16
}

/// The first slot at or after `from` that has a master.
fn owned_from(table: &SlotTable, from: usize) -> Option<(u16, &Master)> {
    (from..SLOT_COUNT).find_map(|s| table.master_for(s as u16).map(|m| (s as u16, m)))
}

/// Plans one SCAN call against the current slot table.
pub fn plan(req: &Request, table: &SlotTable) -> Result<ScanStep, Bytes> {
    if req.len() < 2 || !req.len().is_multiple_of(2) {
        return Err(crate::replies::wrong_args("scan"));
    }
    let cursor = std::str::from_utf8(req.arg(1))
        .ok()
        .and_then(|c| c.parse::<u64>().ok())
        .ok_or_else(|| error("ERR invalid cursor"))?;
    let slot = (cursor & ((1 << SLOT_BITS) - 1)) as u16;
    let id = ((cursor >> SLOT_BITS) & ((1 << ID_BITS) - 1)) as u16;
    let mut node_cursor = cursor >> LOW_BITS;
    let pinned = (2..req.len())
        .step_by(2)
        .find(|&i| req.arg(i).eq_ignore_ascii_case(b"MATCH"))
        .and_then(|i| tag_of_pattern(req.arg(i + 1)))
        .map(slot_of);
    let (slot, master) = match pinned {
        Some(tag_slot) => (
            tag_slot,
            table
                .master_for(tag_slot)
                .ok_or_else(crate::replies::slot_not_served)?,
        ),
        None => owned_from(table, slot as usize).ok_or_else(crate::replies::cluster_down)?,
    };
    // Another master serves the slot now: its scan starts over.
    if identity(master) != id {
        node_cursor = 0;
    }
    let mut args: Vec<&[u8]> = Vec::with_capacity(req.len());
    let cursor_text = node_cursor.to_string();
    args.push(req.arg(0));
    args.push(cursor_text.as_bytes());
    args.extend((2..req.len()).map(|i| req.arg(i)));
    Ok(ScanStep {
        slot,
        addr: master.addr.clone(),
        id: identity(master),
        raw: Request::from_args(&args).raw,
        single: pinned.is_some(),
    })
}

/// The hash tag of a MATCH pattern when the tag is literal (no glob characters before its
/// closing brace), so every matching key is in that tag's slot.
fn tag_of_pattern(pattern: &[u8]) -> Option<&[u8]> {
    let open = pattern.iter().position(|&b| b == b'{')?;
    let len = pattern[open + 1..].iter().position(|&b| b == b'}')?;
    let tag = &pattern[open + 1..open + 1 + len];
    let prefix_literal = !pattern[..open]
        .iter()
        .any(|b| matches!(b, b'*' | b'?' | b'[' | b'\\'));
    let tag_literal = !tag.iter().any(|b| matches!(b, b'*' | b'?' | b'[' | b'\\'));
    (len > 0 && prefix_literal && tag_literal).then_some(tag)
}

/// Rewrites a master's SCAN reply with the client-facing cursor; `table` is the slot table
/// now, which decides the next master when this one is done.
pub fn rewrite(reply: &Bytes, step: &ScanStep, table: &SlotTable) -> Bytes {
    if reply.first() == Some(&b'-') {
        return reply.clone();
    }
    let Some(parts) = elements(reply).filter(|p| p.len() == 2) else {
        return error("ERR slotgate: unexpected SCAN reply from a node");
    };
    let Some(node_cursor) = bulk_body(parts[0])
        .and_then(|c| std::str::from_utf8(c).ok())
        .and_then(|c| c.parse::<u64>().ok())
    else {
        return error("ERR slotgate: unexpected SCAN cursor from a node");
    };
    let encode = |slot: u16, id: u16, node: u64| {
        node << LOW_BITS | u64::from(id) << SLOT_BITS | u64::from(slot)
    };
    let cursor = if node_cursor == 0 {
        if step.single {
            0
        } else {
            // The next stop: the lowest slot above this one served by another master.
            (step.slot as usize + 1..SLOT_COUNT)
                .find_map(|s| {
                    let m = table.master_for(s as u16)?;
                    (*m.addr != *step.addr).then(|| encode(s as u16, identity(m), 0))
                })
                .unwrap_or(0)
        }
    } else if node_cursor >> (64 - LOW_BITS) != 0 {
        return error("ERR slotgate: a node's SCAN cursor is too large to combine");
    } else {
        encode(step.slot, step.id, node_cursor)
    };
    let mut e = Encoder::new(Proto::Resp2);
    e.array(2).bulk(cursor.to_string().as_bytes()).raw(parts[1]);
    e.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topology::nodes::parse_nodes;

    fn req(s: &str) -> Request {
        Request::from_args(&s.split(' ').collect::<Vec<_>>())
    }

    fn reply(cursor: &str) -> Bytes {
        Bytes::from(format!(
            "*2\r\n${}\r\n{cursor}\r\n*1\r\n$1\r\nk\r\n",
            cursor.len()
        ))
    }

    fn table(nodes: &str) -> SlotTable {
        let (view, errors) = parse_nodes(nodes, "127.0.0.1");
        assert!(errors.is_empty(), "{errors:?}");
        SlotTable::default().merge_view(&view)
    }

    const THREE: &str = "\
a 127.0.0.1:7000@17000 master - 0 0 1 connected 0-5460 10000-10001
b 127.0.0.1:7001@17001 master - 0 0 2 connected 5461-9999
c 127.0.0.1:7002@17002 master - 0 0 3 connected 10002-16383
";

    fn cursor_of(out: &Bytes) -> u64 {
        let parts = elements(out).unwrap();
        std::str::from_utf8(bulk_body(parts[0]).unwrap())
            .unwrap()
            .parse()
            .unwrap()
    }

    /// The masters a walk visits, scanning each in one call.
    fn walk(t: &SlotTable) -> Vec<String> {
        let mut cursor = 0u64;
        let mut seen = Vec::new();
        loop {
            let step = plan(&req(&format!("SCAN {cursor}")), t).unwrap();
            seen.push(step.addr.to_string());
            cursor = cursor_of(&rewrite(&reply("0"), &step, t));
            if cursor == 0 {
                return seen;
            }
        }
    }

    #[test]
    fn walks_slot_space_master_by_master() {
        let t = table(THREE);
        assert_eq!(
            walk(&t),
            [
                "127.0.0.1:7000",
                "127.0.0.1:7001",
                "127.0.0.1:7000",
                "127.0.0.1:7002"
            ]
        );
        // A master's own cursor is carried with its slot and identity.
        let s = plan(&req("SCAN 0 COUNT 10"), &t).unwrap();
        assert_eq!(
            &s.raw[..],
            b"*4\r\n$4\r\nSCAN\r\n$1\r\n0\r\n$5\r\nCOUNT\r\n$2\r\n10\r\n"
        );
        let c = cursor_of(&rewrite(&reply("17"), &s, &t));
        let again = plan(&req(&format!("SCAN {c}")), &t).unwrap();
        assert_eq!(&again.raw[..], b"*2\r\n$4\r\nSCAN\r\n$2\r\n17\r\n");
        assert_eq!(&*again.addr, "127.0.0.1:7000");
    }

    #[test]
    fn a_new_owner_of_the_slot_is_scanned_from_its_start() {
        let t = table(THREE);
        let s = plan(&req("SCAN 0"), &t).unwrap();
        let c = cursor_of(&rewrite(&reply("17"), &s, &t));
        // Failover: a promoted replica (another node id) now serves slot 0.
        let after = table(
            "\
z 127.0.0.1:7003@17003 master - 0 0 4 connected 0-5460 10000-10001
b 127.0.0.1:7001@17001 master - 0 0 2 connected 5461-9999
c 127.0.0.1:7002@17002 master - 0 0 3 connected 10002-16383
",
        );
        let again = plan(&req(&format!("SCAN {c}")), &after).unwrap();
        assert_eq!(&*again.addr, "127.0.0.1:7003");
        assert_eq!(&again.raw[..], b"*2\r\n$4\r\nSCAN\r\n$1\r\n0\r\n");
        // An added master taking slots ahead of the walk is visited when the walk gets there.
        let added = table(
            "\
a 127.0.0.1:7000@17000 master - 0 0 1 connected 0-5460 10000-10001
b 127.0.0.1:7001@17001 master - 0 0 2 connected 5461-8000
d 127.0.0.1:7004@17004 master - 0 0 5 connected 8001-9999
c 127.0.0.1:7002@17002 master - 0 0 3 connected 10002-16383
",
        );
        assert!(walk(&added).contains(&"127.0.0.1:7004".to_string()));
    }

    #[test]
    fn hash_tag_patterns_scan_one_master() {
        let t = table(THREE);
        let s = plan(&req("SCAN 0 MATCH {user}*"), &t).unwrap();
        assert!(s.single);
        assert_eq!(s.slot, slot_of(b"user"));
        assert!(rewrite(&reply("0"), &s, &t).starts_with(b"*2\r\n$1\r\n0\r\n"));
        assert!(!plan(&req("SCAN 0 MATCH *{user}"), &t).unwrap().single);
        assert!(!plan(&req("SCAN 0 MATCH {us*}x"), &t).unwrap().single);
    }

    #[test]
    fn bad_cursors() {
        let t = table(THREE);
        assert!(plan(&req("SCAN x"), &t).is_err());
        assert!(plan(&req("SCAN 0 COUNT"), &t).is_err());
        assert!(plan(&req("SCAN 0"), &SlotTable::default()).is_err());
        let s = plan(&req("SCAN 0"), &t).unwrap();
        assert!(rewrite(&reply(&u64::MAX.to_string()), &s, &t).starts_with(b"-ERR"));
        assert!(rewrite(&Bytes::from_static(b"+OK\r\n"), &s, &t).starts_with(b"-ERR"));
    }
}
