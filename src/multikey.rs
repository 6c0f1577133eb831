//! Multi-key commands across slots: split into one sub-command per slot, merge the parts'
//! replies in the client's order.
//!
//! MGET, MSET, DEL, UNLINK, EXISTS and TOUCH are split (Redis Cluster refuses multi-key
//! commands across slots, even on one node, so the unit is the slot). Keys of one slot stay
//! together, so duplicates behave as on a standalone server (`EXISTS a a` counts 2). The
//! merge rules also serve commands sent to every master (DBSIZE sums, KEYS concatenates).

use std::collections::HashMap;

use bytes::{BufMut, Bytes, BytesMut};

use crate::resp::ReplyScanner;
use crate::resp::encode::error;
use crate::resp::request::{Request, format_usize, read_line_int};
use crate::slot::slot_of;

/// How the parts' replies become one reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Merge {
    /// MGET: each part is an array of values for `positions[part]`; the result has `total`
    /// values in the client's key order.
    ByPosition {
        positions: Vec<Vec<usize>>,
        total: usize,
    },
    /// DEL, UNLINK, EXISTS, TOUCH, DBSIZE: the sum of the integer replies.
    Sum,
    /// MSET, FLUSHALL, SCRIPT LOAD ...: the first error if any part failed, otherwise the
    /// first part's reply.
    First,
    /// KEYS: the arrays of every part, concatenated.
    Concat,
    /// SCRIPT EXISTS: element-wise AND of integer arrays (1 only where every master has it).
    AllOf,
}

impl From<crate::command::Fan> for Merge {
    fn from(fan: crate::command::Fan) -> Merge {
        use crate::command::Fan;
        match fan {
            Fan::Sum => Merge::Sum,
            Fan::First => Merge::First,
            Fan::Concat => Merge::Concat,
            Fan::AllOf => Merge::AllOf,
        }
    }
}

/// One sub-command of a split request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    pub slot: u16,
    pub raw: Bytes,
}

/// How a splittable command's arguments group into keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    /// Every argument is a key (MGET, DEL, ...).
    Keys,
    /// Key/value pairs (MSET).
    Pairs,
}

/// The merge rule and argument shape of a command that may be split, by upper-case name.
fn splittable(name: &str) -> Option<(Shape, bool)> {
    // The bool: whether the merge is by position (MGET) rather than Sum/First.
    match name {
        "MGET" => Some((Shape::Keys, true)),
        "DEL" | "UNLINK" | "EXISTS" | "TOUCH" => Some((Shape::Keys, false)),
        "MSET" => Some((Shape::Pairs, false)),
        _ => None,
    }
}

/// Splits `req` (a command named `name`, upper case) into per-slot parts, or `None` when the
/// command cannot be split or its arguments do not have the command's shape (the node's own
/// error then reaches the client).
pub fn split(name: &str, req: &Request) -> Option<(Vec<Part>, Merge)> {
    let (shape, by_position) = splittable(name)?;
    let step = match shape {
        Shape::Keys => 1,
        Shape::Pairs => 2,
    };
    let n = req.len();
    if n < 2 || !(n - 1).is_multiple_of(step) {
        return None;
    }
    // Group key indices by slot, keeping first-seen slot order. A linear search is cheapest
    // for the usual handful of keys; large requests use a map.
    let mut group_of: Option<HashMap<u16, usize, crate::fasthash::FnvBuild>> =
        (n > 64).then(HashMap::default);
    let mut groups: Vec<(u16, Vec<usize>)> = Vec::new();
    for i in (1..n).step_by(step) {
        let slot = slot_of(req.arg(i));
        let found = match &mut group_of {
            Some(map) => *map.entry(slot).or_insert(groups.len()),
            None => groups
                .iter()
                .position(|g| g.0 == slot)
                .unwrap_or(groups.len()),
        };
        if found == groups.len() {
            groups.push((slot, Vec::new()));
        }
        groups[found].1.push(i);
    }
    let name_arg = req.arg(0);
    let mut parts = Vec::with_capacity(groups.len());
    let mut positions = Vec::with_capacity(groups.len());
    for (slot, idx) in &groups {
        let args = idx.iter().flat_map(|&i| (i..i + step).map(|j| req.arg(j)));
        parts.push(Part {
            slot: *slot,
            raw: encode_command(name_arg, args, idx.len() * step),
        });
        positions.push(idx.iter().map(|&i| (i - 1) / step).collect());
    }
    let merge = if by_position {
        Merge::ByPosition {
            positions,
            total: (n - 1) / step,
        }
    } else if name == "MSET" {
        Merge::First
    } else {
        Merge::Sum
    };
    Some((parts, merge))
}

/// Encodes `name` followed by `count` arguments as a RESP array, in one allocation.
fn encode_command<'a>(
    name: &'a [u8],
    args: impl Iterator<Item = &'a [u8]> + Clone,
    count: usize,
) -> Bytes {
    let size = 16 + name.len() + 16 + args.clone().map(|a| a.len() + 16).sum::<usize>();
    let mut out = BytesMut::with_capacity(size);
    let mut num = [0u8; 20];
    out.put_u8(b'*');
    out.put_slice(format_usize(count + 1, &mut num));
    out.put_slice(b"\r\n");
    for a in std::iter::once(name).chain(args) {
        out.put_u8(b'$');
        out.put_slice(format_usize(a.len(), &mut num));
        out.put_slice(b"\r\n");
        out.put_slice(a);
        out.put_slice(b"\r\n");
    }
    out.freeze()
}

/// Merges the parts' replies (in part order) as `merge` says.
pub fn merge(merge: &Merge, replies: &[Bytes]) -> Bytes {
    if let Some(e) = replies.iter().find(|r| r.first() == Some(&b'-')) {
        return e.clone();
    }
    match merge {
        Merge::First => replies
            .first()
            .cloned()
            .unwrap_or_else(|| error("ERR no reply")),
        Merge::Sum => {
            let mut sum: i64 = 0;
            for r in replies {
                match integer(r) {
                    Some(v) => sum = sum.saturating_add(v),
                    None => return unexpected(r),
                }
            }
            let mut e = crate::resp::Encoder::new(crate::resp::Proto::Resp2);
            e.integer(sum);
            e.finish()
        }
        Merge::ByPosition { positions, total } => {
            let mut slots: Vec<&[u8]> = vec![&[]; *total];
            for (r, pos) in replies.iter().zip(positions) {
                let Some(elems) = elements(r) else {
                    return unexpected(r);
                };
                if elems.len() != pos.len() {
                    return unexpected(r);
                }
                for (e, &p) in elems.into_iter().zip(pos) {
                    slots[p] = e;
                }
            }
            array_of(slots.iter().copied(), *total)
        }
        Merge::Concat => {
            let mut all = Vec::new();
            for r in replies {
                match elements(r) {
                    Some(e) => all.extend(e),
                    None => return unexpected(r),
                }
            }
            let n = all.len();
            array_of(all.into_iter(), n)
        }
        Merge::AllOf => {
            let mut acc: Option<Vec<i64>> = None;
            for r in replies {
                let Some(vals) = elements(r)
                    .and_then(|e| e.iter().map(|x| integer(x)).collect::<Option<Vec<_>>>())
                else {
                    return unexpected(r);
                };
                acc = Some(match acc {
                    None => vals,
                    Some(a) if a.len() == vals.len() => a
                        .iter()
                        .zip(&vals)
                        .map(|(x, y)| i64::from(*x != 0 && *y != 0))
                        .collect(),
                    Some(_) => return unexpected(r),
                });
            }
            let vals = acc.unwrap_or_default();
            let mut e = crate::resp::Encoder::new(crate::resp::Proto::Resp2);
            e.array(vals.len());
            for v in vals {
                e.integer(v);
            }
            e.finish()
        }
    }
}

fn unexpected(reply: &[u8]) -> Bytes {
    let shown = String::from_utf8_lossy(&reply[..reply.len().min(64)]).into_owned();
    error(&format!(
        "ERR slotgate: unexpected reply from a node while merging: {shown}"
    ))
}

fn array_of<'a>(elems: impl Iterator<Item = &'a [u8]>, n: usize) -> Bytes {
    let mut out = BytesMut::new();
    let mut num = [0u8; 20];
    out.put_u8(b'*');
    out.put_slice(format_usize(n, &mut num));
    out.put_slice(b"\r\n");
    for e in elems {
        out.extend_from_slice(e);
    }
    out.freeze()
}

/// The integer of a `:N` reply.
pub fn integer(reply: &[u8]) -> Option<i64> {
    if reply.first() != Some(&b':') {
        return None;
    }
    let (v, len) = read_line_int(reply, 0).ok()??;
    (len == reply.len()).then_some(v?)
}

/// The raw elements of an array (`*`), set (`~`) or push (`>`) reply.
pub fn elements(reply: &[u8]) -> Option<Vec<&[u8]>> {
    if !matches!(reply.first(), Some(b'*' | b'~' | b'>')) {
        return None;
    }
    let (n, mut at) = read_line_int(reply, 0).ok()??;
    let n = usize::try_from(n?).ok()?;
    let mut out = Vec::with_capacity(n.min(1024));
    for _ in 0..n {
        let len = ReplyScanner::new().next(&reply[at..]).ok()??;
        out.push(&reply[at..at + len]);
        at += len;
    }
    (at == reply.len()).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(s: &str) -> Request {
        Request::from_args(&s.split(' ').collect::<Vec<_>>())
    }

    fn b(s: &'static str) -> Bytes {
        Bytes::from_static(s.as_bytes())
    }

    #[test]
    fn groups_by_slot_in_first_seen_order() {
        let (parts, merge) = split("MGET", &req("MGET foo {a}1 bar {a}2 foo")).unwrap();
        assert_eq!(parts.len(), 3);
        assert_eq!(parts[0].slot, slot_of(b"foo"));
        assert_eq!(
            &parts[0].raw[..],
            b"*3\r\n$4\r\nMGET\r\n$3\r\nfoo\r\n$3\r\nfoo\r\n"
        );
        assert_eq!(
            &parts[1].raw[..],
            b"*3\r\n$4\r\nMGET\r\n$4\r\n{a}1\r\n$4\r\n{a}2\r\n"
        );
        assert_eq!(&parts[2].raw[..], b"*2\r\n$4\r\nMGET\r\n$3\r\nbar\r\n");
        assert_eq!(
            merge,
            Merge::ByPosition {
                positions: vec![vec![0, 4], vec![1, 3], vec![2]],
                total: 5
            }
        );
    }

    #[test]
    fn mset_keeps_pairs_together() {
        let (parts, merge) = split("MSET", &req("MSET foo 1 bar 2 {foo}x 3")).unwrap();
        assert_eq!(merge, Merge::First);
        assert_eq!(parts.len(), 2);
        assert_eq!(
            &parts[0].raw[..],
            b"*5\r\n$4\r\nMSET\r\n$3\r\nfoo\r\n$1\r\n1\r\n$6\r\n{foo}x\r\n$1\r\n3\r\n"
        );
        assert!(split("MSET", &req("MSET a 1 b")).is_none());
        assert!(split("MGET", &req("MGET")).is_none());
        assert!(split("GET", &req("GET a")).is_none());
        assert_eq!(split("DEL", &req("DEL a b")).unwrap().1, Merge::Sum);
    }

    #[test]
    fn merges_values_back_in_key_order() {
        let m = Merge::ByPosition {
            positions: vec![vec![0, 4], vec![1, 3], vec![2]],
            total: 5,
        };
        let replies = [
            b("*2\r\n$1\r\na\r\n$1\r\na\r\n"),
            b("*2\r\n$-1\r\n$2\r\nb2\r\n"),
            b("*1\r\n_\r\n"),
        ];
        assert_eq!(
            &merge(&m, &replies)[..],
            b"*5\r\n$1\r\na\r\n$-1\r\n_\r\n$2\r\nb2\r\n$1\r\na\r\n"
        );
    }

    #[test]
    fn sums_and_errors() {
        assert_eq!(
            &merge(&Merge::Sum, &[b(":2\r\n"), b(":3\r\n")])[..],
            b":5\r\n"
        );
        assert_eq!(
            &merge(&Merge::Sum, &[b(":2\r\n"), b("-ERR x\r\n")])[..],
            b"-ERR x\r\n"
        );
        assert_eq!(
            &merge(&Merge::First, &[b("+OK\r\n"), b("+OK\r\n")])[..],
            b"+OK\r\n"
        );
        assert_eq!(
            &merge(&Merge::First, &[b("+OK\r\n"), b("-OOM no\r\n")])[..],
            b"-OOM no\r\n"
        );
        assert!(merge(&Merge::Sum, &[b("+OK\r\n")]).starts_with(b"-ERR slotgate: unexpected"));
    }

    #[test]
    fn concat_and_all_of() {
        assert_eq!(
            &merge(
                &Merge::Concat,
                &[b("*1\r\n$1\r\na\r\n"), b("*0\r\n"), b("*1\r\n$1\r\nb\r\n")]
            )[..],
            b"*2\r\n$1\r\na\r\n$1\r\nb\r\n"
        );
        assert_eq!(
            &merge(
                &Merge::AllOf,
                &[b("*2\r\n:1\r\n:1\r\n"), b("*2\r\n:0\r\n:1\r\n")]
            )[..],
            b"*2\r\n:0\r\n:1\r\n"
        );
    }

    #[test]
    fn element_parsing() {
        assert_eq!(elements(b"*2\r\n*1\r\n:1\r\n$1\r\nx\r\n").unwrap().len(), 2);
        assert!(elements(b"*2\r\n:1\r\n").is_none());
        assert!(elements(b":1\r\n").is_none());
        assert_eq!(integer(b":-7\r\n"), Some(-7));
        assert_eq!(integer(b"$1\r\n7\r\n"), None);
    }
}
