//! Multi-key commands across slots: split into one sub-command per slot, merge the parts'
//! replies in the client's order.
//!
//! MGET, MSET, DEL, UNLINK, EXISTS and TOUCH are split (Redis Cluster refuses multi-key
//! commands across slots, even on one node, so the unit is the slot). Keys of one slot stay
//! together, so duplicates behave as on a standalone server (`EXISTS a a` counts 2). The
//! merge rules (the command's `ResponsePolicy`) also serve commands sent to every master
//! (DBSIZE sums, KEYS concatenates, SCRIPT KILL needs one success).

use std::collections::HashMap;

use bytes::{BufMut, Bytes, BytesMut};

use crate::command::{CmdSpec, ResponsePolicy, Route};
use crate::resp::encode::error;
use crate::resp::reply::{elements, integer, pair_elements};
use crate::resp::request::{Request, format_usize};
use crate::resp::{Encoder, Proto};
use crate::slot::slot_of;

/// How the parts' replies become one reply: the command's response policy, plus for a
/// split `CombineArrays` command where each part's values go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Merge {
    pub policy: ResponsePolicy,
    /// For each part of a split request, the positions of its values in the client's key
    /// order (`CombineArrays`); empty otherwise.
    pub positions: Vec<Vec<usize>>,
    /// How many values the combined array has.
    pub total: usize,
}

impl Merge {
    /// A merge by `policy` alone (parts sent to every master).
    pub fn by(policy: ResponsePolicy) -> Merge {
        Merge {
            policy,
            positions: Vec::new(),
            total: 0,
        }
    }
}

/// One sub-command of a split request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    pub slot: u16,
    pub raw: Bytes,
}

/// Splits `req` into per-slot parts when its entry says it may be split (`Route::Split`),
/// or `None` when it cannot be split or its arguments do not have the command's shape (the
/// node's own error then reaches the client).
pub fn split(spec: &CmdSpec, req: &Request) -> Option<(Vec<Part>, Merge)> {
    let Route::Split(shape) = spec.route else {
        return None;
    };
    let step = shape.step();
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
    let by_position = spec.policy == ResponsePolicy::CombineArrays;
    let mut positions = Vec::with_capacity(if by_position { groups.len() } else { 0 });
    for (slot, idx) in &groups {
        let args = idx.iter().flat_map(|&i| (i..i + step).map(|j| req.arg(j)));
        parts.push(Part {
            slot: *slot,
            raw: encode_command(name_arg, args, idx.len() * step),
        });
        if by_position {
            positions.push(idx.iter().map(|&i| (i - 1) / step).collect());
        }
    }
    let merge = Merge {
        policy: spec.policy,
        positions,
        total: if by_position { (n - 1) / step } else { 0 },
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
    let is_error = |r: &Bytes| r.first() == Some(&b'-');
    if merge.policy == ResponsePolicy::OneSucceeded {
        return replies
            .iter()
            .find(|r| !is_error(r))
            .or(replies.first())
            .cloned()
            .unwrap_or_else(|| error("ERR no reply"));
    }
    if let Some(e) = replies.iter().find(|r| is_error(r)) {
        return e.clone();
    }
    match merge.policy {
        ResponsePolicy::OneReply
        | ResponsePolicy::AllSucceeded
        | ResponsePolicy::OneSucceeded
        | ResponsePolicy::Special => replies
            .first()
            .cloned()
            .unwrap_or_else(|| error("ERR no reply")),
        ResponsePolicy::AggSum | ResponsePolicy::AggMin | ResponsePolicy::AggMax => {
            let mut acc: Option<i64> = None;
            for r in replies {
                let Some(v) = integer(r) else {
                    return unexpected(r);
                };
                acc = Some(match (acc, merge.policy) {
                    (None, _) => v,
                    (Some(a), ResponsePolicy::AggMin) => a.min(v),
                    (Some(a), ResponsePolicy::AggMax) => a.max(v),
                    (Some(a), _) => a.saturating_add(v),
                });
            }
            let mut e = crate::resp::Encoder::new(crate::resp::Proto::Resp2);
            e.integer(acc.unwrap_or(0));
            e.finish()
        }
        ResponsePolicy::CombineArrays if !merge.positions.is_empty() => {
            let mut slots: Vec<&[u8]> = vec![&[]; merge.total];
            for (r, pos) in replies.iter().zip(&merge.positions) {
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
            array_of(slots.iter().copied(), merge.total)
        }
        ResponsePolicy::CombineArrays | ResponsePolicy::Concat | ResponsePolicy::ConcatUnique => {
            if replies.first().is_some_and(|r| elements(r).is_none()) {
                // Not arrays (a keyless command answering OK everywhere): as all_succeeded.
                return replies[0].clone();
            }
            let mut all: Vec<&[u8]> = Vec::new();
            for r in replies {
                match elements(r) {
                    Some(e) => all.extend(e),
                    None => return unexpected(r),
                }
            }
            if merge.policy == ResponsePolicy::ConcatUnique {
                let mut seen = std::collections::HashSet::new();
                all.retain(|e| seen.insert(*e));
            }
            let n = all.len();
            array_of(all.into_iter(), n)
        }
        ResponsePolicy::SumPairs => sum_pairs(replies),
        ResponsePolicy::AggLogicalAnd | ResponsePolicy::AggLogicalOr => {
            let and = merge.policy == ResponsePolicy::AggLogicalAnd;
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
                        .map(|(x, y)| {
                            i64::from(if and {
                                *x != 0 && *y != 0
                            } else {
                                *x != 0 || *y != 0
                            })
                        })
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

/// Name/count pairs (a flat array, or a RESP3 map) summed per name, in the first reply's
/// order and type (PUBSUB NUMSUB).
fn sum_pairs(replies: &[Bytes]) -> Bytes {
    let mut names: Vec<&[u8]> = Vec::new();
    let mut counts: Vec<i64> = Vec::new();
    for r in replies {
        let Some(elems) = pair_elements(r) else {
            return unexpected(r);
        };
        for pair in elems.chunks(2) {
            let Some(n) = integer(pair[1]) else {
                return unexpected(r);
            };
            match names.iter().position(|x| *x == pair[0]) {
                Some(i) => counts[i] += n,
                None => {
                    names.push(pair[0]);
                    counts.push(n);
                }
            }
        }
    }
    // A map in RESP3 (as the nodes sent it), a flat array in RESP2.
    let map = replies.first().is_some_and(|r| r.first() == Some(&b'%'));
    let mut e = Encoder::new(if map { Proto::Resp3 } else { Proto::Resp2 });
    e.map(names.len());
    for (name, count) in names.iter().zip(counts) {
        e.raw(name).integer(count);
    }
    e.finish()
}

fn unexpected(reply: &[u8]) -> Bytes {
    let shown = String::from_utf8_lossy(&reply[..reply.len().min(64)]).into_owned();
    error(&format!(
        "ERR slotgate: unexpected reply from a node while merging: {shown}"
    ))
}

fn array_of<'a>(elems: impl Iterator<Item = &'a [u8]>, n: usize) -> Bytes {
    let mut e = Encoder::new(Proto::Resp2);
    e.array(n);
    for elem in elems {
        e.raw(elem);
    }
    e.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(s: &str) -> Request {
        Request::from_args(&s.split(' ').collect::<Vec<_>>())
    }

    fn spec(name: &str) -> &'static CmdSpec {
        crate::command::lookup(name.as_bytes()).unwrap()
    }

    fn by(p: ResponsePolicy) -> Merge {
        Merge::by(p)
    }

    fn b(s: &'static str) -> Bytes {
        Bytes::from_static(s.as_bytes())
    }

    #[test]
    fn groups_by_slot_in_first_seen_order() {
        let (parts, merge) = split(spec("MGET"), &req("MGET foo {a}1 bar {a}2 foo")).unwrap();
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
            Merge {
                policy: ResponsePolicy::CombineArrays,
                positions: vec![vec![0, 4], vec![1, 3], vec![2]],
                total: 5
            }
        );
    }

    #[test]
    fn mset_keeps_pairs_together() {
        let (parts, merge) = split(spec("MSET"), &req("MSET foo 1 bar 2 {foo}x 3")).unwrap();
        assert_eq!(merge, by(ResponsePolicy::AllSucceeded));
        assert_eq!(parts.len(), 2);
        assert_eq!(
            &parts[0].raw[..],
            b"*5\r\n$4\r\nMSET\r\n$3\r\nfoo\r\n$1\r\n1\r\n$6\r\n{foo}x\r\n$1\r\n3\r\n"
        );
        assert!(split(spec("MSET"), &req("MSET a 1 b")).is_none());
        assert!(split(spec("MGET"), &req("MGET")).is_none());
        assert!(split(spec("GET"), &req("GET a")).is_none());
        assert_eq!(
            split(spec("DEL"), &req("DEL a b")).unwrap().1,
            by(ResponsePolicy::AggSum)
        );
        assert!(split(spec("MSETNX"), &req("MSETNX a 1 b 2")).is_none());
    }

    #[test]
    fn merges_values_back_in_key_order() {
        let m = Merge {
            policy: ResponsePolicy::CombineArrays,
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
            &merge(&by(ResponsePolicy::AggSum), &[b(":2\r\n"), b(":3\r\n")])[..],
            b":5\r\n"
        );
        assert_eq!(
            &merge(&by(ResponsePolicy::AggSum), &[b(":2\r\n"), b("-ERR x\r\n")])[..],
            b"-ERR x\r\n"
        );
        assert_eq!(
            &merge(
                &by(ResponsePolicy::AllSucceeded),
                &[b("+OK\r\n"), b("+OK\r\n")]
            )[..],
            b"+OK\r\n"
        );
        assert_eq!(
            &merge(
                &by(ResponsePolicy::AllSucceeded),
                &[b("+OK\r\n"), b("-OOM no\r\n")]
            )[..],
            b"-OOM no\r\n"
        );
        assert!(
            merge(&by(ResponsePolicy::AggSum), &[b("+OK\r\n")])
                .starts_with(b"-ERR slotgate: unexpected")
        );
    }

    #[test]
    fn concat_and_all_of() {
        assert_eq!(
            &merge(
                &by(ResponsePolicy::Concat),
                &[b("*1\r\n$1\r\na\r\n"), b("*0\r\n"), b("*1\r\n$1\r\nb\r\n")]
            )[..],
            b"*2\r\n$1\r\na\r\n$1\r\nb\r\n"
        );
        assert_eq!(
            &merge(
                &by(ResponsePolicy::AggLogicalAnd),
                &[b("*2\r\n:1\r\n:1\r\n"), b("*2\r\n:0\r\n:1\r\n")]
            )[..],
            b"*2\r\n:0\r\n:1\r\n"
        );
    }

    #[test]
    fn other_policies() {
        let one = by(ResponsePolicy::OneSucceeded);
        assert_eq!(
            &merge(&one, &[b("-NOTBUSY x\r\n"), b("+OK\r\n")])[..],
            b"+OK\r\n"
        );
        assert_eq!(
            &merge(&one, &[b("-NOTBUSY x\r\n"), b("-NOTBUSY y\r\n")])[..],
            b"-NOTBUSY x\r\n"
        );
        assert_eq!(
            &merge(&by(ResponsePolicy::AggMin), &[b(":2\r\n"), b(":1\r\n")])[..],
            b":1\r\n"
        );
        assert_eq!(
            &merge(&by(ResponsePolicy::AggMax), &[b(":2\r\n"), b(":1\r\n")])[..],
            b":2\r\n"
        );
        assert_eq!(
            &merge(
                &by(ResponsePolicy::ConcatUnique),
                &[b("*2\r\n$1\r\na\r\n$1\r\nb\r\n"), b("*1\r\n$1\r\na\r\n")]
            )[..],
            b"*2\r\n$1\r\na\r\n$1\r\nb\r\n"
        );
        assert_eq!(
            &merge(
                &by(ResponsePolicy::SumPairs),
                &[
                    b("*4\r\n$1\r\na\r\n:1\r\n$1\r\nb\r\n:0\r\n"),
                    b("*4\r\n$1\r\na\r\n:2\r\n$1\r\nb\r\n:3\r\n")
                ]
            )[..],
            b"*4\r\n$1\r\na\r\n:3\r\n$1\r\nb\r\n:3\r\n"
        );
        assert_eq!(
            &merge(
                &by(ResponsePolicy::SumPairs),
                &[b("%1\r\n$1\r\na\r\n:1\r\n"), b("%1\r\n$1\r\na\r\n:2\r\n")]
            )[..],
            b"%1\r\n$1\r\na\r\n:3\r\n"
        );
        // Keyless commands answering OK on every master.
        assert_eq!(
            &merge(&by(ResponsePolicy::Concat), &[b("+OK\r\n"), b("+OK\r\n")])[..],
            b"+OK\r\n"
        );
    }
}
