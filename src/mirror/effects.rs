//! What a mirror is sent for a write.
//!
//! In the direct modes (`plan`), the command itself, at once, in parallel with the primary,
//! except where replaying it verbatim diverges even from identical data: a relative expiry
//! is sent with the absolute time slotgate computes when it sends it (`PEXPIREAT`, `PXAT`,
//! `RESTORE ... ABSTTL`); an id or member the server chooses (`XADD *`, `SPOP`) and a
//! blocking command (never sent blocking to a mirror) wait for the primary's reply and send
//! its effect. Counters and set, hash, list and sorted-set writes go verbatim: they commute,
//! so concurrent writers converge exactly.
//!
//! The async mode replays from a queue later, so it records effects (`effect`): counters
//! become the value the primary returned, conditional writes are recorded only when they
//! took effect, expiries are absolute.

use bytes::Bytes;

use crate::command::{Cmd, CmdSpec, Flags};
use crate::resp::Request;
use crate::resp::reply::bulk_body;
use crate::resp::reply::{elements, integer};

fn is_null(reply: &[u8]) -> bool {
    matches!(reply, b"$-1\r\n" | b"*-1\r\n" | b"_\r\n")
}

/// A scalar reply as text: bulk, simple string, integer or RESP3 double.
fn scalar(reply: &[u8]) -> Option<Bytes> {
    if let Some(b) = bulk_body(reply) {
        return Some(Bytes::copy_from_slice(b));
    }
    match reply.first() {
        Some(b'+' | b':' | b',') => {
            let line = &reply[1..];
            let end = line.iter().position(|&c| c == b'\r')?;
            Some(Bytes::copy_from_slice(&line[..end]))
        }
        _ => None,
    }
}

fn cmd(parts: &[&[u8]]) -> Request {
    Request::from_args(parts)
}

fn upper(req: &Request, i: usize) -> Vec<u8> {
    req.arg(i).to_ascii_uppercase()
}

fn parse_u64(b: &[u8]) -> Option<u64> {
    std::str::from_utf8(b).ok()?.parse().ok()
}

/// How a direct mode sends one write to the mirrors.
#[derive(Debug)]
pub enum Plan {
    /// The client's command, at once.
    Verbatim,
    /// This command instead, at once (a relative expiry made absolute).
    Rewritten(Request),
    /// The effect of the primary's reply (`effect`), once it arrives.
    AfterReply,
}

/// How `req` goes to the mirrors in a direct mode, `now_ms` being when slotgate sends it.
pub fn plan(spec: &CmdSpec, req: &Request, now_ms: u64) -> Plan {
    let n = req.len();
    if spec.flags.contains(Flags::MIRROR_NEEDS_REPLY) {
        return match spec.cmd {
            // An explicit id replays as it is; `*` and `<ms>-*` are the server's choice.
            Cmd::XAdd => {
                let auto = (2..n).any(|i| req.arg(i) == b"*" || req.arg(i).ends_with(b"-*"));
                if auto {
                    Plan::AfterReply
                } else {
                    Plan::Verbatim
                }
            }
            // Without BLOCK it does not block: as it is.
            Cmd::XReadGroup if !spec.is_blocking(req) => Plan::Verbatim,
            _ => Plan::AfterReply,
        };
    }
    if !spec.flags.contains(Flags::MIRROR_ABSOLUTE_TIME) {
        return Plan::Verbatim;
    }
    let at = |i: usize, unit_ms: u64| {
        let t: i64 = std::str::from_utf8(req.arg(i)).ok()?.parse().ok()?;
        Some(
            (now_ms as i64)
                .saturating_add(t.saturating_mul(unit_ms as i64))
                .to_string(),
        )
    };
    let rewritten = match spec.cmd {
        // EXPIRE key seconds [NX|XX|GT|LT] -> PEXPIREAT key ms [NX|XX|GT|LT]
        Cmd::Expire | Cmd::PExpire if n >= 3 => {
            let unit = if spec.cmd == Cmd::Expire { 1000 } else { 1 };
            at(2, unit).map(|t| {
                let mut parts: Vec<&[u8]> = vec![b"PEXPIREAT", req.arg(1), t.as_bytes()];
                parts.extend((3..n).map(|i| req.arg(i)));
                cmd(&parts)
            })
        }
        // SETEX key seconds value -> SET key value PXAT ms
        Cmd::SetEx | Cmd::PSetEx if n == 4 => {
            let unit = if spec.cmd == Cmd::SetEx { 1000 } else { 1 };
            at(2, unit).map(|t| cmd(&[b"SET", req.arg(1), req.arg(3), b"PXAT", t.as_bytes()]))
        }
        // SET key value [...] EX s | PX ms -> PXAT; GETEX key EX s | PX ms -> PXAT.
        Cmd::Set | Cmd::GetEx => {
            let first = if spec.cmd == Cmd::Set { 3 } else { 2 };
            let opt = (first..n).find(|&i| {
                req.arg(i).eq_ignore_ascii_case(b"EX") || req.arg(i).eq_ignore_ascii_case(b"PX")
            });
            match opt {
                None => return Plan::Verbatim,
                Some(i) if i + 1 < n => {
                    let unit = if req.arg(i).eq_ignore_ascii_case(b"EX") {
                        1000
                    } else {
                        1
                    };
                    at(i + 1, unit).map(|t| {
                        let mut parts: Vec<&[u8]> = (0..n).map(|j| req.arg(j)).collect();
                        parts[i] = b"PXAT";
                        parts[i + 1] = t.as_bytes();
                        cmd(&parts)
                    })
                }
                Some(_) => None,
            }
        }
        // RESTORE key ttl payload [REPLACE] [ABSTTL] ...: a relative ttl made absolute.
        Cmd::Restore if n >= 4 => {
            let absolute = (4..n).any(|i| req.arg(i).eq_ignore_ascii_case(b"ABSTTL"));
            if absolute || req.arg(2) == b"0" {
                return Plan::Verbatim;
            }
            at(2, 1).map(|t| {
                let mut parts: Vec<&[u8]> = (0..n).map(|j| req.arg(j)).collect();
                parts[2] = t.as_bytes();
                parts.push(b"ABSTTL");
                cmd(&parts)
            })
        }
        _ => None,
    };
    // Arguments the server will refuse anyway go as they are, for the same error.
    rewritten.map_or(Plan::Verbatim, Plan::Rewritten)
}

/// The commands to send the mirrors for `req` (whose command is `id`), given the primary's reply
/// and the time it was accepted (Unix ms). Empty when the write did nothing on the primary
/// (an error, a condition not met) or nothing needs mirroring.
pub fn effect(id: Cmd, req: &Request, reply: &[u8], now_ms: u64) -> Vec<Request> {
    if reply.first() == Some(&b'-') {
        return Vec::new();
    }
    let same = || vec![req.clone()];
    let n = req.len();
    let ok = reply.starts_with(b"+OK");
    let one = integer(reply) == Some(1);
    match id {
        Cmd::Set if n >= 3 => set_effect(req, reply, now_ms).unwrap_or_else(same),
        Cmd::SetEx | Cmd::PSetEx if n == 4 && ok => {
            let Some(t) = parse_u64(req.arg(2)) else {
                return same();
            };
            let ms = if id == Cmd::SetEx {
                t.saturating_mul(1000)
            } else {
                t
            };
            let at = (now_ms + ms).to_string();
            vec![cmd(&[
                b"SET",
                req.arg(1),
                req.arg(3),
                b"PXAT",
                at.as_bytes(),
            ])]
        }
        Cmd::SetNx if n == 3 => {
            if one {
                vec![cmd(&[b"SET", req.arg(1), req.arg(2)])]
            } else {
                Vec::new()
            }
        }
        Cmd::MSetNx => {
            if one {
                let mut parts: Vec<&[u8]> = vec![b"MSET"];
                parts.extend((1..n).map(|i| req.arg(i)));
                vec![cmd(&parts)]
            } else {
                Vec::new()
            }
        }
        Cmd::HSetNx if n == 4 => {
            if one {
                vec![cmd(&[b"HSET", req.arg(1), req.arg(2), req.arg(3)])]
            } else {
                Vec::new()
            }
        }
        Cmd::Expire | Cmd::PExpire | Cmd::ExpireAt | Cmd::PExpireAt if n >= 3 => {
            if !one {
                return Vec::new();
            }
            let Some(t) = std::str::from_utf8(req.arg(2))
                .ok()
                .and_then(|t| t.parse::<i64>().ok())
            else {
                return same();
            };
            let at: i64 = match id {
                Cmd::Expire => now_ms as i64 + t.saturating_mul(1000),
                Cmd::PExpire => now_ms as i64 + t,
                Cmd::ExpireAt => t.saturating_mul(1000),
                _ => t,
            };
            let at = at.to_string();
            vec![cmd(&[b"PEXPIREAT", req.arg(1), at.as_bytes()])]
        }
        Cmd::GetEx if n >= 2 => {
            if is_null(reply) || n == 2 {
                return Vec::new();
            }
            let opt = upper(req, 2);
            if opt == b"PERSIST" {
                return vec![cmd(&[b"PERSIST", req.arg(1)])];
            }
            let Some(t) = (n > 3).then(|| parse_u64(req.arg(3))).flatten() else {
                return same();
            };
            let at = match &opt[..] {
                b"EX" => now_ms + t.saturating_mul(1000),
                b"PX" => now_ms + t,
                b"EXAT" => t.saturating_mul(1000),
                b"PXAT" => t,
                _ => return same(),
            };
            let at = at.to_string();
            vec![cmd(&[b"PEXPIREAT", req.arg(1), at.as_bytes()])]
        }
        Cmd::Incr | Cmd::Decr | Cmd::IncrBy | Cmd::DecrBy | Cmd::IncrByFloat => match scalar(reply)
        {
            Some(v) => vec![cmd(&[b"SET", req.arg(1), &v, b"KEEPTTL"])],
            None => same(),
        },
        Cmd::HIncrBy | Cmd::HIncrByFloat if n == 4 => match scalar(reply) {
            Some(v) => vec![cmd(&[b"HSET", req.arg(1), req.arg(2), &v])],
            None => same(),
        },
        Cmd::ZIncrBy if n == 4 => match scalar(reply) {
            Some(v) => vec![cmd(&[b"ZADD", req.arg(1), &v, req.arg(3)])],
            None => same(),
        },
        Cmd::SPop if n >= 2 => {
            let members: Vec<Bytes> = if let Some(v) = bulk_body(reply) {
                vec![Bytes::copy_from_slice(v)]
            } else if let Some(items) = elements(reply) {
                items
                    .iter()
                    .filter_map(|i| bulk_body(i))
                    .map(Bytes::copy_from_slice)
                    .collect()
            } else {
                Vec::new()
            };
            if members.is_empty() {
                return Vec::new();
            }
            let mut parts: Vec<&[u8]> = vec![b"SREM", req.arg(1)];
            parts.extend(members.iter().map(|m| &m[..]));
            vec![cmd(&parts)]
        }
        Cmd::BLPop | Cmd::BRPop => {
            let Some(key) = elements(reply).and_then(|e| {
                e.first()
                    .and_then(|k| bulk_body(k))
                    .map(Bytes::copy_from_slice)
            }) else {
                return Vec::new();
            };
            let pop: &[u8] = if id == Cmd::BLPop { b"LPOP" } else { b"RPOP" };
            vec![cmd(&[pop, &key])]
        }
        Cmd::BZPopMin | Cmd::BZPopMax => {
            let Some(e) = elements(reply).filter(|e| e.len() == 3) else {
                return Vec::new();
            };
            match (bulk_body(e[0]), bulk_body(e[1])) {
                (Some(k), Some(m)) => vec![cmd(&[b"ZREM", k, m])],
                _ => Vec::new(),
            }
        }
        Cmd::BLMove if n == 6 => {
            if is_null(reply) {
                return Vec::new();
            }
            vec![cmd(&[
                b"LMOVE",
                req.arg(1),
                req.arg(2),
                req.arg(3),
                req.arg(4),
            ])]
        }
        Cmd::BRPopLPush if n == 4 => {
            if is_null(reply) {
                return Vec::new();
            }
            vec![cmd(&[b"RPOPLPUSH", req.arg(1), req.arg(2)])]
        }
        // [key, [elements]] -> LPOP/RPOP key count
        Cmd::BLMPop => {
            let Some(parts) = elements(reply).filter(|e| e.len() == 2) else {
                return Vec::new();
            };
            let (Some(key), Some(items)) = (bulk_body(parts[0]), elements(parts[1])) else {
                return Vec::new();
            };
            let left = (1..n).any(|i| req.arg(i).eq_ignore_ascii_case(b"LEFT"));
            let count = items.len().to_string();
            let pop: &[u8] = if left { b"LPOP" } else { b"RPOP" };
            vec![cmd(&[pop, key, count.as_bytes()])]
        }
        // [key, [[member, score], ...]] -> ZREM key member ...
        Cmd::BZMPop => {
            let Some(parts) = elements(reply).filter(|e| e.len() == 2) else {
                return Vec::new();
            };
            let (Some(key), Some(items)) = (bulk_body(parts[0]), elements(parts[1])) else {
                return Vec::new();
            };
            let members: Vec<&[u8]> = items
                .iter()
                .filter_map(|pair| bulk_body(elements(pair)?.first()?))
                .collect();
            if members.is_empty() {
                return Vec::new();
            }
            let mut parts: Vec<&[u8]> = vec![b"ZREM", key];
            parts.extend(members);
            vec![cmd(&parts)]
        }
        // The same read without BLOCK, once the primary delivered entries: the mirror's
        // group records them as delivered too.
        Cmd::XReadGroup => {
            if is_null(reply) || reply.starts_with(b"*0") || reply.starts_with(b"%0") {
                return Vec::new();
            }
            let Some(block) = (1..n).find(|&i| req.arg(i).eq_ignore_ascii_case(b"BLOCK")) else {
                return same();
            };
            let parts: Vec<&[u8]> = (0..n)
                .filter(|&i| i != block && i != block + 1)
                .map(|i| req.arg(i))
                .collect();
            vec![cmd(&parts)]
        }
        Cmd::XAdd => {
            // An auto-generated id is replaced by the id the primary chose.
            let Some(id) = scalar(reply) else {
                return same();
            };
            let star = (2..n).find(|&i| req.arg(i) == b"*" || req.arg(i).ends_with(b"-*"));
            match star {
                Some(i) => {
                    let mut parts: Vec<&[u8]> = (0..n).map(|j| req.arg(j)).collect();
                    parts[i] = &id;
                    vec![cmd(&parts)]
                }
                None => same(),
            }
        }
        _ => same(),
    }
}

/// SET with its options resolved: sent only when it took effect, with NX/XX/GET dropped and
/// a relative expiry made absolute. `None` when the options are not understood.
fn set_effect(req: &Request, reply: &[u8], now_ms: u64) -> Option<Vec<Request>> {
    let (mut nx, mut xx, mut get) = (false, false, false);
    let mut ttl: Option<Vec<u8>> = None;
    let mut keepttl = false;
    let mut i = 3;
    while i < req.len() {
        match &upper(req, i)[..] {
            b"NX" => nx = true,
            b"XX" => xx = true,
            b"GET" => get = true,
            b"KEEPTTL" => keepttl = true,
            opt @ (b"EX" | b"PX" | b"EXAT" | b"PXAT") => {
                if i + 1 >= req.len() {
                    return None;
                }
                let t = parse_u64(req.arg(i + 1))?;
                let at = match opt {
                    b"EX" => now_ms + t.saturating_mul(1000),
                    b"PX" => now_ms + t,
                    b"EXAT" => t.saturating_mul(1000),
                    _ => t,
                };
                ttl = Some(at.to_string().into_bytes());
                i += 1;
            }
            _ => return None,
        }
        i += 1;
    }
    let applied = match (nx, xx, get) {
        (true, _, true) => is_null(reply),
        (_, true, true) => !is_null(reply),
        (true, _, false) | (_, true, false) => reply.starts_with(b"+OK"),
        _ => true,
    };
    if !applied {
        return Some(Vec::new());
    }
    let mut parts: Vec<&[u8]> = vec![b"SET", req.arg(1), req.arg(2)];
    if let Some(at) = &ttl {
        parts.push(b"PXAT");
        parts.push(at);
    } else if keepttl {
        parts.push(b"KEEPTTL");
    }
    Some(vec![cmd(&parts)])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(s: &str) -> Request {
        Request::from_args(&s.split(' ').collect::<Vec<_>>())
    }

    fn eff(command: &str, reply: &str) -> Vec<String> {
        let r = req(command);
        let id = crate::command::resolve(&r).unwrap().cmd;
        effect(id, &r, reply.as_bytes(), 1_000_000)
            .iter()
            .map(|c| {
                (0..c.len())
                    .map(|i| String::from_utf8_lossy(c.arg(i)).into_owned())
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect()
    }

    #[test]
    fn relative_expirations_become_absolute() {
        assert_eq!(eff("SET k v EX 10", "+OK\r\n"), ["SET k v PXAT 1010000"]);
        assert_eq!(eff("SET k v PX 10", "+OK\r\n"), ["SET k v PXAT 1000010"]);
        assert_eq!(eff("SET k v EXAT 5", "+OK\r\n"), ["SET k v PXAT 5000"]);
        assert_eq!(eff("SETEX k 2 v", "+OK\r\n"), ["SET k v PXAT 1002000"]);
        assert_eq!(eff("PSETEX k 2 v", "+OK\r\n"), ["SET k v PXAT 1000002"]);
        assert_eq!(eff("EXPIRE k 3", ":1\r\n"), ["PEXPIREAT k 1003000"]);
        assert_eq!(eff("PEXPIRE k 3 NX", ":1\r\n"), ["PEXPIREAT k 1000003"]);
        assert_eq!(eff("EXPIREAT k 7", ":1\r\n"), ["PEXPIREAT k 7000"]);
        assert!(eff("EXPIRE k 3", ":0\r\n").is_empty());
        assert_eq!(eff("GETEX k EX 1", "$1\r\nv\r\n"), ["PEXPIREAT k 1001000"]);
        assert_eq!(eff("GETEX k PERSIST", "$1\r\nv\r\n"), ["PERSIST k"]);
        assert!(eff("GETEX k EX 1", "$-1\r\n").is_empty());
        assert!(eff("GETEX k", "$1\r\nv\r\n").is_empty());
    }

    #[test]
    fn conditional_writes_only_when_applied() {
        assert_eq!(eff("SET k v NX", "+OK\r\n"), ["SET k v"]);
        assert!(eff("SET k v NX", "$-1\r\n").is_empty());
        assert!(eff("SET k v XX", "_\r\n").is_empty());
        assert_eq!(eff("SET k v NX GET", "$-1\r\n"), ["SET k v"]);
        assert!(eff("SET k v NX GET", "$1\r\no\r\n").is_empty());
        assert_eq!(
            eff("SET k v XX GET KEEPTTL", "$1\r\no\r\n"),
            ["SET k v KEEPTTL"]
        );
        assert_eq!(eff("SETNX k v", ":1\r\n"), ["SET k v"]);
        assert!(eff("SETNX k v", ":0\r\n").is_empty());
        assert_eq!(eff("HSETNX h f v", ":1\r\n"), ["HSET h f v"]);
        assert_eq!(eff("MSETNX a 1 b 2", ":1\r\n"), ["MSET a 1 b 2"]);
        assert!(eff("MSETNX a 1 b 2", ":0\r\n").is_empty());
        // An unknown option: sent as it is, the mirror decides.
        assert_eq!(eff("SET k v WEIRD", "+OK\r\n"), ["SET k v WEIRD"]);
    }

    #[test]
    fn counters_become_values() {
        assert_eq!(eff("INCR c", ":5\r\n"), ["SET c 5 KEEPTTL"]);
        assert_eq!(eff("DECRBY c 2", ":-1\r\n"), ["SET c -1 KEEPTTL"]);
        assert_eq!(
            eff("INCRBYFLOAT c 0.5", "$3\r\n1.5\r\n"),
            ["SET c 1.5 KEEPTTL"]
        );
        assert_eq!(eff("HINCRBY h f 2", ":7\r\n"), ["HSET h f 7"]);
        assert_eq!(eff("HINCRBYFLOAT h f 2", "$3\r\n7.5\r\n"), ["HSET h f 7.5"]);
        assert_eq!(eff("ZINCRBY z 2 m", "$1\r\n4\r\n"), ["ZADD z 4 m"]);
        assert_eq!(eff("ZINCRBY z 2 m", ",4.5\r\n"), ["ZADD z 4.5 m"]);
    }

    #[test]
    fn pops_become_removals() {
        assert_eq!(eff("SPOP s", "$1\r\na\r\n"), ["SREM s a"]);
        assert_eq!(
            eff("SPOP s 2", "*2\r\n$1\r\na\r\n$1\r\nb\r\n"),
            ["SREM s a b"]
        );
        assert!(eff("SPOP s", "$-1\r\n").is_empty());
        assert!(eff("SPOP s 2", "*0\r\n").is_empty());
        assert_eq!(
            eff("BLPOP a b 0", "*2\r\n$1\r\nb\r\n$1\r\nx\r\n"),
            ["LPOP b"]
        );
        assert!(eff("BRPOP a 1", "*-1\r\n").is_empty());
        assert_eq!(
            eff("BZPOPMIN z 0", "*3\r\n$1\r\nz\r\n$1\r\nm\r\n$1\r\n1\r\n"),
            ["ZREM z m"]
        );
        assert_eq!(
            eff("BLMOVE a b LEFT RIGHT 0", "$1\r\nx\r\n"),
            ["LMOVE a b LEFT RIGHT"]
        );
        assert_eq!(eff("BRPOPLPUSH a b 0", "$1\r\nx\r\n"), ["RPOPLPUSH a b"]);
    }

    #[test]
    fn stream_ids_are_fixed_and_others_pass() {
        assert_eq!(eff("XADD s * f v", "$3\r\n1-0\r\n"), ["XADD s 1-0 f v"]);
        assert_eq!(
            eff("XADD s MAXLEN 5 * f v", "$3\r\n1-0\r\n"),
            ["XADD s MAXLEN 5 1-0 f v"]
        );
        assert_eq!(eff("XADD s 5-1 f v", "$3\r\n5-1\r\n"), ["XADD s 5-1 f v"]);
        assert_eq!(eff("LPUSH l a", ":1\r\n"), ["LPUSH l a"]);
        assert!(eff("LPUSH l a", "-WRONGTYPE x\r\n").is_empty());
        let needs = |n: &str| {
            crate::command::lookup(n.as_bytes())
                .unwrap()
                .flags
                .contains(crate::command::Flags::MIRROR_NEEDS_REPLY)
        };
        assert!(needs("SPOP") && needs("XADD") && !needs("INCR") && !needs("LPUSH"));
    }

    fn planned(command: &str, now: u64) -> String {
        let r = req(command);
        let spec = crate::command::resolve(&r).unwrap();
        match plan(spec, &r, now) {
            Plan::Verbatim => "verbatim".into(),
            Plan::AfterReply => "after reply".into(),
            Plan::Rewritten(c) => (0..c.len())
                .map(|i| String::from_utf8_lossy(c.arg(i)).into_owned())
                .collect::<Vec<_>>()
                .join(" "),
        }
    }

    #[test]
    fn direct_modes_send_verbatim_except_where_replay_diverges() {
        let now = 1_000_000;
        for verbatim in [
            "INCR k",
            "HINCRBY h f 2",
            "RPUSH l a",
            "SADD s m",
            "SETNX k v",
            "SET k v",
            "SET k v NX GET",
            "EXPIREAT k 5",
            "XADD s 1-1 f v",
            "XREADGROUP GROUP g c STREAMS s >",
            "RESTORE k 0 payload",
            "EXPIRE k x",
        ] {
            assert_eq!(planned(verbatim, now), "verbatim", "{verbatim}");
        }
        assert_eq!(planned("EXPIRE k 10", now), "PEXPIREAT k 1010000");
        assert_eq!(planned("PEXPIRE k 10 NX", now), "PEXPIREAT k 1000010 NX");
        assert_eq!(planned("SETEX k 2 v", now), "SET k v PXAT 1002000");
        assert_eq!(planned("PSETEX k 2 v", now), "SET k v PXAT 1000002");
        assert_eq!(planned("SET k v XX EX 3", now), "SET k v XX PXAT 1003000");
        assert_eq!(planned("SET k v px 3 GET", now), "SET k v PXAT 1000003 GET");
        assert_eq!(planned("GETEX k EX 1", now), "GETEX k PXAT 1001000");
        assert_eq!(
            planned("RESTORE k 50 payload REPLACE", now),
            "RESTORE k 1000050 payload REPLACE ABSTTL"
        );
        for after in [
            "XADD s * f v",
            "XADD s MAXLEN ~ 10 5-* f v",
            "SPOP s",
            "BLPOP l 0",
            "BLMPOP 1 1 l LEFT",
            "BZMPOP 1 1 z MIN",
            "XREADGROUP GROUP g c BLOCK 10 STREAMS s >",
        ] {
            assert_eq!(planned(after, now), "after reply", "{after}");
        }
    }

    #[test]
    fn blocking_pops_become_their_effect() {
        assert_eq!(
            eff(
                "BLMPOP 0 1 l LEFT COUNT 2",
                "*2\r\n$1\r\nl\r\n*2\r\n$1\r\na\r\n$1\r\nb\r\n"
            ),
            ["LPOP l 2"]
        );
        assert_eq!(eff("BLMPOP 0 1 l RIGHT", "*-1\r\n"), Vec::<String>::new());
        assert_eq!(
            eff(
                "BZMPOP 0 1 z MIN",
                "*2\r\n$1\r\nz\r\n*1\r\n*2\r\n$1\r\nm\r\n$1\r\n1\r\n"
            ),
            ["ZREM z m"]
        );
        assert_eq!(
            eff(
                "XREADGROUP GROUP g c BLOCK 5 STREAMS s >",
                "*1\r\n*2\r\n$1\r\ns\r\n*0\r\n"
            ),
            ["XREADGROUP GROUP g c STREAMS s >"]
        );
        assert_eq!(
            eff("XREADGROUP GROUP g c BLOCK 5 STREAMS s >", "*-1\r\n"),
            Vec::<String>::new()
        );
    }
}
