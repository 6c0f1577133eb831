//! `COMMAND` as slotgate answers it: the servers' own descriptions (`learned.rs`) of exactly
//! the commands slotgate accepts, so `COMMAND`, `COMMAND COUNT`, `COMMAND INFO`,
//! `COMMAND LIST` and `COMMAND DOCS` agree with each other and with what is routed.

use bytes::Bytes;

use super::learned::{self, RawEntry};
use super::{CmdSpec, Route, lookup};
use crate::resp::reply::{elements, pair_elements};
use crate::resp::request::read_line_int;
use crate::resp::{Encoder, Proto, ReplyScanner};

/// Whether slotgate accepts the command (or `parent|sub` subcommand) named `name`: it is
/// known and neither refused nor answered with a fixed error.
pub fn accepts(name: &[u8]) -> bool {
    let routed = |s: &CmdSpec| !matches!(s.route, Route::Refused(_) | Route::Error(_));
    // A subcommand is reached through its parent: by its own entry when the parent routes
    // by subcommand, else as the parent is (XINFO STREAM goes where XINFO goes).
    if let Some(bar) = name.iter().position(|&b| b == b'|') {
        return match lookup(&name[..bar]) {
            Some(parent) if parent.route == Route::Container => lookup(name).is_some_and(routed),
            Some(parent) => routed(parent),
            None => false,
        };
    }
    lookup(name).is_some_and(routed)
}

/// `COMMAND` (and `COMMAND INFO` without names): every accepted command's description;
/// `None` before any server was described.
pub fn all(proto: Proto) -> Option<Bytes> {
    let learned = learned::current();
    if learned.entries.is_empty() {
        return None;
    }
    let mut accepted: Vec<&RawEntry> = learned
        .entries
        .iter()
        .filter(|(name, _)| accepts(name))
        .map(|(_, e)| e)
        .collect();
    accepted.sort_by(|a, b| a.name.cmp(&b.name));
    let mut e = Encoder::new(proto);
    e.array(accepted.len());
    for entry in accepted {
        e.raw(&described(entry, proto));
    }
    Some(e.finish())
}

/// `COMMAND COUNT`: how many commands `COMMAND` lists.
pub fn count() -> Option<i64> {
    let learned = learned::current();
    if learned.entries.is_empty() {
        return None;
    }
    Some(learned.entries.keys().filter(|n| accepts(n)).count() as i64)
}

/// `COMMAND INFO name ...`: each accepted command's description, nil for the others.
pub fn info<'a>(names: impl ExactSizeIterator<Item = &'a [u8]>, proto: Proto) -> Option<Bytes> {
    let learned = learned::current();
    if learned.entries.is_empty() {
        return None;
    }
    let mut e = Encoder::new(proto);
    e.array(names.len());
    for name in names {
        let entry = learned.entries.get(&name.to_ascii_uppercase()[..]);
        match entry {
            Some(entry) if accepts(name) => e.raw(&described(entry, proto)),
            _ => e.null(),
        };
    }
    Some(e.finish())
}

/// A `COMMAND LIST` reply from a server, without the commands slotgate does not accept.
pub fn filter_names(reply: Bytes, proto: Proto) -> Bytes {
    let Some(names) = elements(&reply) else {
        return reply;
    };
    let kept: Vec<&[u8]> = names
        .into_iter()
        .filter(|n| crate::resp::reply::bulk_body(n).is_some_and(accepts))
        .collect();
    let mut e = Encoder::new(proto);
    e.array(kept.len());
    for n in kept {
        e.raw(n);
    }
    e.finish()
}

/// A `COMMAND DOCS` reply from a server (name/doc pairs), without the commands slotgate
/// does not accept.
pub fn filter_docs(reply: Bytes, proto: Proto) -> Bytes {
    let Some(items) = pair_elements(&reply) else {
        return reply;
    };
    let kept: Vec<&[&[u8]]> = items
        .chunks(2)
        .filter(|p| crate::resp::reply::bulk_body(p[0]).is_some_and(accepts))
        .collect();
    let mut e = Encoder::new(proto);
    e.map(kept.len());
    for p in kept {
        e.raw(p[0]).raw(p[1]);
    }
    e.finish()
}

/// One command's description in `proto`, its subcommand list cut to the accepted ones.
fn described(entry: &RawEntry, proto: Proto) -> Bytes {
    let raw = match proto {
        Proto::Resp3 => entry.resp3.as_ref().unwrap_or(&entry.resp2),
        Proto::Resp2 => &entry.resp2,
    };
    without_refused_subcommands(raw).unwrap_or_else(|| raw.clone())
}

/// Rebuilds a description whose 10th field (subcommands) lists a refused subcommand.
fn without_refused_subcommands(raw: &Bytes) -> Option<Bytes> {
    let fields = elements(raw)?;
    let subs = elements(fields.get(9)?)?;
    let kept: Vec<&[u8]> = subs
        .iter()
        .copied()
        .filter(|s| {
            elements(s)
                .and_then(|f| crate::resp::reply::bulk_body(f.first()?).map(accepts))
                .unwrap_or(true)
        })
        .collect();
    if kept.len() == subs.len() {
        return None;
    }
    let mut out = Vec::with_capacity(raw.len());
    let (_, header) = read_line_int(raw, 0).ok()??;
    out.extend_from_slice(&raw[..header]);
    for f in &fields[..9] {
        out.extend_from_slice(f);
    }
    let subs_raw = fields[9];
    out.push(subs_raw[0]);
    out.extend_from_slice(kept.len().to_string().as_bytes());
    out.extend_from_slice(b"\r\n");
    for s in kept {
        out.extend_from_slice(s);
    }
    for f in &fields[10..] {
        out.extend_from_slice(f);
    }
    debug_assert!(ReplyScanner::new().next(&out).ok().flatten() == Some(out.len()));
    Some(Bytes::from(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resp::value::Value;

    use crate::fixtures::server_reply as fixture;

    #[test]
    fn command_answers_agree_with_what_is_accepted() {
        learned::install(
            "redis test-answer",
            &fixture("redis74-command-info.resp2"),
            Some(&fixture("redis74-command-info.resp3")),
        )
        .unwrap();
        for proto in [Proto::Resp2, Proto::Resp3] {
            let all = all(proto).unwrap();
            let (value, _) = Value::parse(&all).unwrap().unwrap();
            let listed = value.as_array().unwrap();
            assert_eq!(listed.len() as i64, count().unwrap());
            let names: Vec<String> = listed
                .iter()
                .map(|c| c.as_array().unwrap()[0].text().unwrap())
                .collect();
            assert!(names.contains(&"get".to_string()));
            assert!(names.contains(&"hexpire".to_string()), "learned from 7.4");
            assert!(!names.contains(&"monitor".to_string()), "refused");
            assert!(
                !names.contains(&"cluster".to_string()),
                "answered as standalone"
            );
            // CONFIG is listed without the subcommands slotgate refuses.
            let config = listed
                .iter()
                .find(|c| c.as_array().unwrap()[0].text().as_deref() == Some("config"))
                .unwrap();
            let subs: Vec<String> = config.as_array().unwrap()[9]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| s.as_array().unwrap()[0].text().unwrap())
                .collect();
            assert!(subs.contains(&"config|get".to_string()));
            assert!(!subs.contains(&"config|set".to_string()), "{subs:?}");
            // XINFO routes all its subcommands by its keys: they are all listed.
            let xinfo = listed
                .iter()
                .find(|c| c.as_array().unwrap()[0].text().as_deref() == Some("xinfo"))
                .unwrap();
            assert!(xinfo.as_array().unwrap()[9].as_array().unwrap().len() >= 3);
        }
        let one = info(
            [&b"get"[..], b"monitor", b"nosuch"].into_iter(),
            Proto::Resp2,
        )
        .unwrap();
        let (value, _) = Value::parse(&one).unwrap().unwrap();
        let items = value.as_array().unwrap();
        assert!(items[0].as_array().is_some());
        assert_eq!(items[1], Value::Null);
        assert_eq!(items[2], Value::Null);
        let list = Bytes::from_static(b"*3\r\n$3\r\nget\r\n$7\r\nmonitor\r\n$3\r\nset\r\n");
        assert_eq!(
            &filter_names(list, Proto::Resp2)[..],
            b"*2\r\n$3\r\nget\r\n$3\r\nset\r\n"
        );
        let docs = Bytes::from_static(b"%2\r\n$3\r\nget\r\n%0\r\n$7\r\nmonitor\r\n%0\r\n");
        assert_eq!(
            &filter_docs(docs, Proto::Resp3)[..],
            b"%1\r\n$3\r\nget\r\n%0\r\n"
        );
    }
}
