//! SCAN across every master with one cursor.
//!
//! The client's cursor stays a plain unsigned 64-bit decimal: the low 10 bits hold the index
//! of the master being scanned (masters sorted by address), the rest that master's own
//! cursor. When a master's scan ends, the cursor moves to the next master with cursor 0;
//! after the last master it is 0. `MATCH` with a hash tag (`{tag}*`) scans only the master
//! of that slot.
//!
//! Across a topology change a key may be returned twice (it moved to a master scanned
//! later); none is skipped unless it moved to a master already scanned.

use bytes::{BufMut, Bytes, BytesMut};

use crate::multikey::elements;
use crate::resp::Request;
use crate::resp::encode::error;
use crate::resp::reply::bulk_body;
use crate::slot::slot_of;

/// Bits of the cursor that hold the master index.
const INDEX_BITS: u32 = 10;
const INDEX_MASK: u64 = (1 << INDEX_BITS) - 1;

/// Where one SCAN call goes and how its reply's cursor is rewritten.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanStep {
    /// Index of the master to ask, in the sorted master list.
    pub master: usize,
    /// The request to send that master (its own cursor in place of the client's).
    pub raw: Bytes,
    /// Masters in the walk (1 when a hash tag pins the scan to one master).
    pub single: bool,
}

/// Plans one SCAN call. `masters` are the sorted master addresses; `master_of_slot` finds a
/// slot's master index in that list.
pub fn plan(
    req: &Request,
    masters: usize,
    master_of_slot: impl Fn(u16) -> Option<usize>,
) -> Result<ScanStep, Bytes> {
    if req.len() < 2 || !req.len().is_multiple_of(2) {
        return Err(error("ERR wrong number of arguments for 'scan' command"));
    }
    let cursor = std::str::from_utf8(req.arg(1))
        .ok()
        .and_then(|c| c.parse::<u64>().ok())
        .ok_or_else(|| error("ERR invalid cursor"))?;
    let index = (cursor & INDEX_MASK) as usize;
    let node_cursor = cursor >> INDEX_BITS;
    let pinned = (2..req.len())
        .step_by(2)
        .find(|&i| req.arg(i).eq_ignore_ascii_case(b"MATCH"))
        .and_then(|i| tag_of_pattern(req.arg(i + 1)))
        .map(slot_of);
    let (master, single) = match pinned {
        Some(slot) => (
            master_of_slot(slot).ok_or_else(|| error("CLUSTERDOWN Hash slot not served"))?,
            true,
        ),
        None => {
            if masters == 0 {
                return Err(error("CLUSTERDOWN The cluster is down"));
            }
            if index >= masters {
                return Err(error("ERR invalid cursor"));
            }
            (index, false)
        }
    };
    let mut args: Vec<&[u8]> = Vec::with_capacity(req.len());
    let cursor_text = node_cursor.to_string();
    args.push(req.arg(0));
    args.push(cursor_text.as_bytes());
    args.extend((2..req.len()).map(|i| req.arg(i)));
    Ok(ScanStep {
        master,
        raw: Request::from_args(&args).raw,
        single,
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

/// Rewrites a master's SCAN reply with the client-facing cursor.
pub fn rewrite(reply: &Bytes, step: &ScanStep, masters: usize) -> Bytes {
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
    let cursor = if node_cursor == 0 {
        if step.single || step.master + 1 >= masters {
            0
        } else {
            (step.master + 1) as u64
        }
    } else if node_cursor >> (64 - INDEX_BITS) != 0 {
        return error("ERR slotgate: a node's SCAN cursor is too large to combine");
    } else {
        (node_cursor << INDEX_BITS) | step.master as u64
    };
    let text = cursor.to_string();
    let mut out = BytesMut::with_capacity(reply.len() + 16);
    out.put_slice(b"*2\r\n$");
    out.put_slice(text.len().to_string().as_bytes());
    out.put_slice(b"\r\n");
    out.put_slice(text.as_bytes());
    out.put_slice(b"\r\n");
    out.put_slice(parts[1]);
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(s: &str) -> Request {
        Request::from_args(&s.split(' ').collect::<Vec<_>>())
    }

    fn reply(cursor: &str) -> Bytes {
        Bytes::from(format!(
            "*2\r\n${}\r\n{cursor}\r\n*1\r\n$1\r\nk\r\n",
            cursor.len()
        ))
    }

    #[test]
    fn walks_masters_in_turn() {
        let none = |_| None;
        let s = plan(&req("SCAN 0 COUNT 10"), 3, none).unwrap();
        assert_eq!(s.master, 0);
        assert_eq!(
            &s.raw[..],
            b"*4\r\n$4\r\nSCAN\r\n$1\r\n0\r\n$5\r\nCOUNT\r\n$2\r\n10\r\n"
        );
        // Master 0 is not done: its cursor 17 becomes 17 << 10 | 0.
        let out = rewrite(&reply("17"), &s, 3);
        assert_eq!(&out[..], b"*2\r\n$5\r\n17408\r\n*1\r\n$1\r\nk\r\n");
        let s = plan(&req("SCAN 17408"), 3, none).unwrap();
        assert_eq!(
            (s.master, &s.raw[..]),
            (0, &b"*2\r\n$4\r\nSCAN\r\n$2\r\n17\r\n"[..])
        );
        // Master 0 done: move on to master 1 at cursor 0.
        assert!(rewrite(&reply("0"), &s, 3).starts_with(b"*2\r\n$1\r\n1\r\n"));
        let s = plan(&req("SCAN 1"), 3, none).unwrap();
        assert_eq!(s.master, 1);
        // Last master done: the walk ends with 0.
        let s = plan(&req("SCAN 2"), 3, none).unwrap();
        assert!(rewrite(&reply("0"), &s, 3).starts_with(b"*2\r\n$1\r\n0\r\n"));
    }

    #[test]
    fn hash_tag_patterns_scan_one_master() {
        let s = plan(&req("SCAN 0 MATCH {user}*"), 3, |_| Some(2)).unwrap();
        assert_eq!((s.master, s.single), (2, true));
        assert!(rewrite(&reply("0"), &s, 3).starts_with(b"*2\r\n$1\r\n0\r\n"));
        assert!(
            !plan(&req("SCAN 0 MATCH *{user}"), 3, |_| Some(2))
                .unwrap()
                .single
        );
        assert!(
            !plan(&req("SCAN 0 MATCH {us*}x"), 3, |_| Some(2))
                .unwrap()
                .single
        );
    }

    #[test]
    fn bad_cursors() {
        assert!(plan(&req("SCAN x"), 3, |_| None).is_err());
        assert!(plan(&req("SCAN 5"), 3, |_| None).is_err());
        assert!(plan(&req("SCAN 0 COUNT"), 3, |_| None).is_err());
        assert!(plan(&req("SCAN 0"), 0, |_| None).is_err());
        let s = plan(&req("SCAN 0"), 3, |_| None).unwrap();
        assert!(rewrite(&reply(&u64::MAX.to_string()), &s, 3).starts_with(b"-ERR"));
        assert!(rewrite(&Bytes::from_static(b"+OK\r\n"), &s, 3).starts_with(b"-ERR"));
    }
}
