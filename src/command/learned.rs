//! Commands learned from the servers: a master's `COMMAND INFO` read at start and whenever a
//! node of a new version answers, turned into command entries (key specs, flags,
//! request/response tips) for the commands the built-in table does not describe, plus each
//! command's raw description for answering `COMMAND` to clients.
//!
//! The built-in table wins where both describe a command. Learned entries live for the
//! process (`&'static`, like the built-in ones): they are made once per server version seen,
//! so their memory is bounded by the number of versions in the cluster's life.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, LazyLock, Mutex};

use arc_swap::ArcSwap;
use bytes::Bytes;

use super::keys::{BeginSearch, FindKeys, KeySpec, Keys};
use super::spec::{CmdSpec, Flags, ResponsePolicy, Route, Shape, Timeout};
use super::table::NODE_ADMIN;
use crate::resp::ReplyScanner;
use crate::resp::request::read_line_int;
use crate::resp::value::Value;

/// Refusal for a learned command whose keys slotgate cannot find from its key specs.
pub const UNKNOWN_KEYS: &str =
    "has key positions its server's key specifications do not describe; slotgate cannot route it";
/// Refusal for learned commands that need a code path of their own (pub/sub, special
/// request policies).
pub const NEEDS_SUPPORT: &str = "needs handling slotgate does not have for this command";

/// What the servers described, merged over every version seen.
#[derive(Debug, Default)]
pub struct Learned {
    /// Entries by upper-case name (`PARENT|SUB` for subcommands), for commands the
    /// built-in table does not have.
    specs: HashMap<Box<[u8]>, &'static CmdSpec>,
    /// Every top-level command a server described, by upper-case name, with its raw
    /// `COMMAND INFO` entry in RESP2 and RESP3.
    pub entries: HashMap<Box<[u8]>, RawEntry>,
    /// Server versions already learned.
    pub versions: HashSet<String>,
}

/// One command's `COMMAND INFO` entry as the server sent it.
#[derive(Debug, Clone)]
pub struct RawEntry {
    /// Lower-case name, as servers report it.
    pub name: String,
    pub resp2: Bytes,
    pub resp3: Option<Bytes>,
}

static LEARNED: LazyLock<ArcSwap<Learned>> = LazyLock::new(Default::default);
/// Serialises `install` (read, merge, store).
static INSTALL: Mutex<()> = Mutex::new(());

/// A learned entry by upper-case name.
pub fn lookup(upper: &[u8]) -> Option<&'static CmdSpec> {
    LEARNED.load().specs.get(upper).copied()
}

/// What has been learned so far.
pub fn current() -> Arc<Learned> {
    LEARNED.load_full()
}

/// How many commands and subcommands are routed from the servers' descriptions.
pub fn count() -> usize {
    LEARNED.load().specs.len()
}

/// Whether any server has described its commands yet.
pub fn has_any() -> bool {
    !LEARNED.load().entries.is_empty()
}

/// Whether `version`'s commands were learned already.
pub fn knows_version(version: &str) -> bool {
    LEARNED.load().versions.contains(version)
}

/// Reads one server's `COMMAND INFO` replies (RESP2, and RESP3 when available) and merges
/// them into what is known: entries for commands not in the built-in table are added; a
/// command both versions describe takes the newer description. Returns how many commands
/// were new.
pub fn install(version: &str, resp2: &[u8], resp3: Option<&[u8]>) -> Result<usize, String> {
    let parsed = parse_command_info(resp2, resp3)?;
    let _guard = INSTALL.lock().unwrap_or_else(|e| e.into_inner());
    let old = LEARNED.load_full();
    let mut next = Learned {
        specs: old.specs.clone(),
        entries: old.entries.clone(),
        versions: old.versions.clone(),
    };
    let mut added = 0;
    for (name, spec) in parsed.specs {
        if super::builtin(&name).is_some() {
            continue;
        }
        if next.specs.insert(name, Box::leak(Box::new(spec))).is_none() {
            added += 1;
        }
    }
    next.entries.extend(parsed.entries);
    next.versions.insert(version.to_string());
    LEARNED.store(Arc::new(next));
    Ok(added)
}

/// The entries and raw descriptions of one `COMMAND INFO` reply.
#[derive(Debug, Default)]
pub struct Parsed {
    pub specs: Vec<(Box<[u8]>, CmdSpec)>,
    pub entries: Vec<(Box<[u8]>, RawEntry)>,
}

/// Parses a full `COMMAND INFO` reply (and its RESP3 twin, whose entries are matched by
/// name) into command entries and raw descriptions.
pub fn parse_command_info(resp2: &[u8], resp3: Option<&[u8]>) -> Result<Parsed, String> {
    let (value, _) = Value::parse(resp2)
        .map_err(|e| format!("unreadable COMMAND INFO reply: {e}"))?
        .ok_or("incomplete COMMAND INFO reply")?;
    let Value::Array(commands) = value else {
        return Err("COMMAND INFO reply is not an array".into());
    };
    let raw2 = split_entries(resp2).ok_or("unreadable COMMAND INFO entries")?;
    let raw3: HashMap<Vec<u8>, Bytes> = resp3
        .and_then(split_entries)
        .map(|entries| {
            entries
                .into_iter()
                .filter_map(|raw| Some((entry_name(&raw)?, raw)))
                .collect()
        })
        .unwrap_or_default();
    let mut parsed = Parsed::default();
    for (cmd, raw) in commands.iter().zip(raw2) {
        // Commands a server does not know come back as nil.
        let Some(fields) = cmd.as_array() else {
            continue;
        };
        let Some(name) = fields.first().and_then(Value::as_bytes) else {
            continue;
        };
        let upper: Box<[u8]> = name.to_ascii_uppercase().into();
        add_specs(&mut parsed.specs, cmd, &upper, false);
        parsed.entries.push((
            upper,
            RawEntry {
                name: String::from_utf8_lossy(name).to_ascii_lowercase(),
                resp3: raw3.get(&name.to_ascii_lowercase()).cloned(),
                resp2: raw,
            },
        ));
    }
    Ok(parsed)
}

/// The raw bytes of each element of a top-level array reply.
fn split_entries(reply: &[u8]) -> Option<Vec<Bytes>> {
    let (n, header) = read_line_int(reply, 0).ok()??;
    let n = usize::try_from(n?).ok()?;
    let mut at = header;
    let mut out = Vec::with_capacity(n.min(4096));
    for _ in 0..n {
        let len = ReplyScanner::new().next(&reply[at..]).ok()??;
        out.push(Bytes::copy_from_slice(&reply[at..at + len]));
        at += len;
    }
    Some(out)
}

/// The lower-case name of a raw `COMMAND INFO` entry.
fn entry_name(raw: &[u8]) -> Option<Vec<u8>> {
    let (value, _) = Value::parse(raw).ok()??;
    Some(value.as_array()?.first()?.as_bytes()?.to_ascii_lowercase())
}

/// Adds the entry of `cmd` (and of its subcommands) under `upper`.
fn add_specs(out: &mut Vec<(Box<[u8]>, CmdSpec)>, cmd: &Value, upper: &[u8], is_sub: bool) {
    let Some(fields) = cmd.as_array() else {
        return;
    };
    let subcommands = fields.get(9).and_then(Value::as_array).unwrap_or_default();
    let name: &'static str =
        Box::leak(String::from_utf8_lossy(upper).into_owned().into_boxed_str());
    let spec = if subcommands.is_empty() || is_sub {
        spec_of(name, fields)
    } else {
        CmdSpec::new(name, Keys::None)
            .route(Route::Container)
            .flag(Flags::LEARNED)
    };
    out.push((upper.into(), spec));
    if is_sub {
        return;
    }
    for sub in subcommands {
        let Some(sub_name) = sub.as_array().and_then(|f| f.first()?.as_bytes()) else {
            continue;
        };
        // Servers name subcommands `parent|sub`.
        let sub_upper = sub_name.to_ascii_uppercase();
        if sub_upper.starts_with(upper) && sub_upper.get(upper.len()) == Some(&b'|') {
            add_specs(out, sub, &sub_upper, true);
        }
    }
}

fn strings(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::text).collect())
        .unwrap_or_default()
}

/// The entry for one described (sub)command.
fn spec_of(name: &'static str, fields: &[Value]) -> CmdSpec {
    let flags = strings(fields.get(2));
    let tips = strings(fields.get(7));
    let has = |f: &str| flags.iter().any(|x| x.eq_ignore_ascii_case(f));
    let tip = |prefix: &str| {
        tips.iter()
            .find_map(|t| t.strip_prefix(prefix))
            .map(str::to_ascii_lowercase)
    };
    let (keys, complete) = key_specs(fields.get(8));
    let mut spec = CmdSpec::new(name, keys).flag(Flags::LEARNED);
    if has("write") {
        spec = spec.flag(Flags::WRITE);
    }
    if has("readonly") {
        spec = spec.flag(Flags::READONLY);
    }
    if has("blocking") {
        spec = spec.blocks(Timeout::Unknown);
    }
    if has("no_multi") {
        spec = spec.flag(Flags::NO_MULTI);
    }
    spec.policy = match tip("response_policy:").as_deref() {
        Some("agg_sum") => ResponsePolicy::AggSum,
        Some("agg_min") => ResponsePolicy::AggMin,
        Some("agg_max") => ResponsePolicy::AggMax,
        Some("agg_logical_and") => ResponsePolicy::AggLogicalAnd,
        Some("agg_logical_or") => ResponsePolicy::AggLogicalOr,
        Some("all_succeeded") => ResponsePolicy::AllSucceeded,
        Some("one_succeeded") => ResponsePolicy::OneSucceeded,
        Some(_) => ResponsePolicy::Special,
        None => ResponsePolicy::OneReply,
    };
    spec.route = if has("admin") {
        Route::Refused(NODE_ADMIN)
    } else if has("pubsub") {
        Route::Refused(NEEDS_SUPPORT)
    } else if !complete {
        spec = spec.flag(Flags::UNKNOWN_KEYS);
        Route::Refused(UNKNOWN_KEYS)
    } else {
        match tip("request_policy:").as_deref() {
            Some("all_shards" | "all_nodes") if spec.policy != ResponsePolicy::Special => {
                if spec.policy == ResponsePolicy::OneReply {
                    // Keyless replies of every shard: arrays concatenate.
                    spec.policy = ResponsePolicy::Concat;
                }
                Route::AllMasters
            }
            // Splitting a write would break its atomicity across keys, which the tips do
            // not state (Redis 7.0 tags MSETNX `multi_shard`): learned writes stay one slot
            // or CROSSSLOT; learned reads are split as the tip allows.
            Some("multi_shard") if !has("readonly") => Route::Slot,
            Some("multi_shard") => match split_shape(&keys) {
                Some(shape) => {
                    if spec.policy == ResponsePolicy::OneReply {
                        spec.policy = ResponsePolicy::CombineArrays;
                    }
                    Route::Split(shape)
                }
                // Keys that cannot be regrouped per slot: one slot or CROSSSLOT.
                None => Route::Slot,
            },
            Some(_) => Route::Refused(NEEDS_SUPPORT),
            None => Route::Slot,
        }
    };
    if spec.route == Route::Slot {
        spec.policy = ResponsePolicy::OneReply;
    }
    spec
}

/// A key layout that splits per slot: one spec, keys from argument 1 to the end, one or
/// two arguments per key.
fn split_shape(keys: &Keys) -> Option<Shape> {
    let Keys::Specs([only]) = keys else {
        return None;
    };
    match (only.begin, only.find) {
        (
            BeginSearch::Index(1),
            FindKeys::Range {
                lastkey: -1,
                step: 1,
                limit: 0 | 1,
            },
        ) => Some(Shape::Keys),
        (
            BeginSearch::Index(1),
            FindKeys::Range {
                lastkey: -1,
                step: 2,
                limit: 0 | 1,
            },
        ) => Some(Shape::Pairs),
        _ => None,
    }
}

/// The key specs of a description, and whether they locate every key (no `incomplete`
/// flag, no `unknown` search).
fn key_specs(v: Option<&Value>) -> (Keys, bool) {
    let Some(list) = v.and_then(Value::as_array) else {
        return (Keys::None, true);
    };
    let mut specs = Vec::with_capacity(list.len());
    let mut complete = true;
    for s in list {
        let flags = strings(s.get("flags"));
        if flags.iter().any(|f| f.eq_ignore_ascii_case("not_key")) {
            continue;
        }
        if flags.iter().any(|f| f.eq_ignore_ascii_case("incomplete")) {
            complete = false;
        }
        match key_spec(s) {
            Some(k) => specs.push(k),
            None => complete = false,
        }
    }
    if specs.is_empty() {
        return (Keys::None, complete);
    }
    (Keys::Specs(Box::leak(specs.into_boxed_slice())), complete)
}

fn int_of(v: Option<&Value>) -> Option<i64> {
    let v = v?;
    v.as_int().or_else(|| v.text().and_then(|t| t.parse().ok()))
}

fn key_spec(s: &Value) -> Option<KeySpec> {
    let begin = s.get("begin_search")?;
    let begin_spec = begin.get("spec")?;
    let begin = match begin.get("type")?.text()?.as_str() {
        "index" => BeginSearch::Index(u32::try_from(int_of(begin_spec.get("index"))?).ok()?),
        "keyword" => BeginSearch::Keyword {
            keyword: Box::leak(begin_spec.get("keyword")?.text()?.into_boxed_str()),
            startfrom: i32::try_from(int_of(begin_spec.get("startfrom"))?).ok()?,
        },
        _ => return None,
    };
    let find = s.get("find_keys")?;
    let find_spec = find.get("spec")?;
    let find = match find.get("type")?.text()?.as_str() {
        "range" => FindKeys::Range {
            lastkey: i32::try_from(int_of(find_spec.get("lastkey"))?).ok()?,
            step: u32::try_from(int_of(find_spec.get("keystep"))?).ok()?,
            limit: u32::try_from(int_of(find_spec.get("limit"))?).ok()?,
        },
        "keynum" => FindKeys::KeyNum {
            keynumidx: u32::try_from(int_of(find_spec.get("keynumidx"))?).ok()?,
            firstkey: u32::try_from(int_of(find_spec.get("firstkey"))?).ok()?,
            step: u32::try_from(int_of(find_spec.get("keystep"))?).ok()?,
        },
        _ => return None,
    };
    Some(KeySpec { begin, find })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resp::Request;

    use crate::fixtures::server_reply as fixture;

    const SERVERS: &[&str] = &["redis70", "redis74", "redis-unstable-2024-10", "valkey80"];

    #[test]
    fn every_captured_command_info_yields_a_route_for_each_command() {
        for server in SERVERS {
            let resp2 = fixture(&format!("{server}-command-info.resp2"));
            let resp3 = fixture(&format!("{server}-command-info.resp3"));
            let parsed = parse_command_info(&resp2, Some(&resp3)).unwrap();
            assert!(
                parsed.entries.len() > 200,
                "{server}: {}",
                parsed.entries.len()
            );
            for (name, entry) in &parsed.entries {
                assert!(
                    entry.resp3.is_some(),
                    "{server}: no RESP3 entry for {}",
                    entry.name
                );
                assert!(
                    parsed.specs.iter().any(|(n, _)| n == name),
                    "{server}: no entry for {}",
                    entry.name
                );
            }
            let by_name: HashMap<_, _> = parsed.specs.iter().map(|(n, s)| (&n[..], s)).collect();
            let get = by_name[&b"GET"[..]];
            assert_eq!(get.route, Route::Slot);
            assert!(get.is_readonly());
            let r = Request::from_args(&["GET", "k"]);
            assert_eq!(get.key_indices(&r).collect::<Vec<_>>(), [1]);
            // Learned writes are never split, whatever their tips say (the built-in table
            // splits MSET and DEL, whose atomicity it knows).
            let msetnx = by_name[&b"MSETNX"[..]];
            assert_eq!(msetnx.route, Route::Slot, "{server}: MSETNX is atomic");
            assert_eq!(by_name[&b"MSET"[..]].route, Route::Slot, "{server}");
            assert_eq!(by_name[&b"DEL"[..]].route, Route::Slot, "{server}");
            let exists = by_name[&b"EXISTS"[..]];
            assert_eq!(exists.route, Route::Split(Shape::Keys), "{server}");
            assert_eq!(exists.policy, ResponsePolicy::AggSum);
            let mget = by_name[&b"MGET"[..]];
            assert_eq!(mget.route, Route::Split(Shape::Keys), "{server}");
            assert_eq!(mget.policy, ResponsePolicy::CombineArrays);
            let dbsize = by_name[&b"DBSIZE"[..]];
            assert_eq!(dbsize.route, Route::AllMasters);
            assert_eq!(dbsize.policy, ResponsePolicy::AggSum);
            assert!(by_name[&b"BLPOP"[..]].flags.contains(Flags::BLOCKING));
            assert!(matches!(by_name[&b"SHUTDOWN"[..]].route, Route::Refused(_)));
            assert!(
                matches!(by_name[&b"SORT"[..]].route, Route::Refused(_)),
                "{server}: SORT BY/GET keys are unknown"
            );
            assert_eq!(by_name[&b"SCRIPT"[..]].route, Route::Container);
            assert_eq!(
                by_name[&b"SCRIPT|EXISTS"[..]].policy,
                ResponsePolicy::AggLogicalAnd
            );
            // Keys found by key specs match the built-in positions.
            for (args, want) in [
                (&["LMPOP", "2", "a", "b", "LEFT"][..], &[2usize, 3][..]),
                (
                    &["XREAD", "COUNT", "1", "STREAMS", "a", "b", "0", "0"],
                    &[4, 5],
                ),
                (&["ZUNIONSTORE", "d", "2", "a", "b"], &[1, 3, 4]),
                (&["EVAL", "s", "1", "k", "v"], &[3]),
                (&["BLMPOP", "0", "1", "k", "LEFT"], &[3]),
            ] {
                let r = Request::from_args(args);
                let spec = by_name[args[0].as_bytes()];
                let mut got: Vec<usize> = spec.key_indices(&r).collect();
                got.sort();
                assert_eq!(got, want, "{server}: {args:?}");
                let builtin = crate::command::lookup(args[0].as_bytes()).unwrap();
                let mut b: Vec<usize> = builtin.key_indices(&r).collect();
                b.sort();
                assert_eq!(b, want, "built-in {args:?}");
            }
        }
    }

    #[test]
    fn newer_servers_describe_commands_the_table_routes_by_key_spec() {
        let resp2 = fixture("redis74-command-info.resp2");
        let parsed = parse_command_info(&resp2, None).unwrap();
        let by_name: HashMap<_, _> = parsed.specs.iter().map(|(n, s)| (&n[..], s)).collect();
        // Hash-field expiry (7.4): key at 1.
        let hexpire = by_name[&b"HEXPIRE"[..]];
        assert!(hexpire.is_write());
        let r = Request::from_args(&["HEXPIRE", "h", "10", "FIELDS", "1", "f"]);
        assert_eq!(hexpire.key_indices(&r).collect::<Vec<_>>(), [1]);
    }

    /// RESP2 text of a `COMMAND INFO` entry written by hand: name, arity, flags, tips and
    /// key specs as (begin_search, find_keys) pairs of (type, spec fields).
    fn entry(name: &str, arity: i64, flags: &[&str], tips: &[&str], specs: &[&str]) -> String {
        let bulk = |t: &str| format!("${}\r\n{t}\r\n", t.len());
        let list = |items: &[&str]| {
            let mut out = format!("*{}\r\n", items.len());
            for i in items {
                out.push_str(&bulk(i));
            }
            out
        };
        let mut out = format!("*10\r\n{}:{arity}\r\n{}", bulk(name), list(flags));
        out.push_str(":1\r\n:1\r\n:1\r\n*0\r\n");
        out.push_str(&list(tips));
        out.push_str(&format!("*{}\r\n", specs.len()));
        for spec in specs {
            out.push_str(spec);
        }
        out.push_str("*0\r\n");
        out
    }

    #[test]
    fn commands_newer_than_every_fixture_route_from_their_descriptions() {
        // As Redis 8.4 describes MSETEX (numkeys, then key/value pairs, atomic across its
        // keys) and DELEX, and Valkey 9 DELIFEQ (key at 1).
        let keynum_pairs = "*6\r\n$5\r\nflags\r\n*2\r\n$2\r\nOW\r\n$6\r\nUPDATE\r\n\
             $12\r\nbegin_search\r\n*4\r\n$4\r\ntype\r\n$5\r\nindex\r\n$4\r\nspec\r\n\
             *2\r\n$5\r\nindex\r\n:1\r\n\
             $9\r\nfind_keys\r\n*4\r\n$4\r\ntype\r\n$6\r\nkeynum\r\n$4\r\nspec\r\n\
             *6\r\n$9\r\nkeynumidx\r\n:0\r\n$8\r\nfirstkey\r\n:1\r\n$7\r\nkeystep\r\n:2\r\n";
        let first_key = "*6\r\n$5\r\nflags\r\n*1\r\n$2\r\nRM\r\n\
             $12\r\nbegin_search\r\n*4\r\n$4\r\ntype\r\n$5\r\nindex\r\n$4\r\nspec\r\n\
             *2\r\n$5\r\nindex\r\n:1\r\n\
             $9\r\nfind_keys\r\n*4\r\n$4\r\ntype\r\n$5\r\nrange\r\n$4\r\nspec\r\n\
             *6\r\n$7\r\nlastkey\r\n:0\r\n$7\r\nkeystep\r\n:1\r\n$5\r\nlimit\r\n:0\r\n";
        let reply = format!(
            "*3\r\n{}{}{}",
            entry(
                "msetex",
                -4,
                &["write", "denyoom"],
                &[
                    "request_policy:multi_shard",
                    "response_policy:all_succeeded"
                ],
                &[keynum_pairs],
            ),
            entry("delex", -2, &["write", "fast"], &[], &[first_key]),
            entry("delifeq", 3, &["write", "fast"], &[], &[first_key]),
        );
        let parsed = parse_command_info(reply.as_bytes(), None).unwrap();
        let by_name: HashMap<_, _> = parsed.specs.iter().map(|(n, s)| (&n[..], s)).collect();
        for name in ["MSETEX", "DELEX", "DELIFEQ"] {
            assert!(
                !super::super::table::COMMANDS
                    .iter()
                    .any(|c| c.name.eq_ignore_ascii_case(name)),
                "{name} is built in now: pick a newer command for this test"
            );
        }

        // MSETEX: every key found, never split (one slot or CROSSSLOT) though it is tagged
        // multi_shard, as its keys are set atomically.
        let msetex = by_name[&b"MSETEX"[..]];
        assert!(msetex.is_write());
        assert_eq!(msetex.route, Route::Slot);
        let one_slot = Request::from_args(&["MSETEX", "2", "{t}a", "1", "{t}b", "2", "EX", "10"]);
        assert_eq!(msetex.key_indices(&one_slot).collect::<Vec<_>>(), [2, 4]);
        assert_eq!(
            msetex.slot(&one_slot).unwrap(),
            Some(crate::slot::slot_of(b"{t}a"))
        );
        let across = Request::from_args(&["MSETEX", "2", "a", "1", "b", "2"]);
        assert!(
            msetex.slot(&across).is_err(),
            "MSETEX across slots must be refused"
        );

        for name in ["DELEX", "DELIFEQ"] {
            let spec = by_name[name.as_bytes()];
            assert!(spec.is_write(), "{name}");
            assert_eq!(spec.route, Route::Slot, "{name}");
            let r = Request::from_args(&[name, "k", "v"]);
            assert_eq!(spec.key_indices(&r).collect::<Vec<_>>(), [1], "{name}");
        }
    }

    #[test]
    fn what_each_captured_server_adds_to_the_built_in_table() {
        for server in SERVERS {
            let parsed =
                parse_command_info(&fixture(&format!("{server}-command-info.resp2")), None)
                    .unwrap();
            let mut outside: Vec<String> = parsed
                .entries
                .iter()
                .map(|(n, _)| String::from_utf8_lossy(n).into_owned())
                .filter(|n| !super::super::table::COMMANDS.iter().any(|c| c.name == n))
                .collect();
            outside.sort();
            assert_eq!(outside, ["REPLCONF", "RESTORE-ASKING", "ROLE"], "{server}");
            let by_name: HashMap<_, _> = parsed.specs.iter().map(|(n, s)| (&n[..], s)).collect();
            assert_eq!(by_name[&b"ROLE"[..]].route, Route::Slot);
            assert!(matches!(by_name[&b"REPLCONF"[..]].route, Route::Refused(_)));
            let restore = by_name[&b"RESTORE-ASKING"[..]];
            let r = Request::from_args(&["RESTORE-ASKING", "k", "0", "payload"]);
            assert_eq!(restore.key_indices(&r).collect::<Vec<_>>(), [1]);
        }
    }
}
