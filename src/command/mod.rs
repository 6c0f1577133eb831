//! The command model: for every command slotgate knows, where its keys are, its flags, how
//! it is routed and how the replies of its parts combine (`spec.rs`), from the built-in
//! table (`table.rs`) or learned from the servers' `COMMAND INFO` (`learned.rs`).
//!
//! Each request is classified once (`resolve`): the entry it gets carries its behaviour, and
//! every other module decides by that entry's typed fields, never by the command's name.
//! Lookup is case-insensitive and allocation-free (the name is upper-cased into a stack
//! buffer).

use std::collections::{HashMap, HashSet};
use std::sync::{LazyLock, OnceLock};
use std::time::Duration;

use crate::resp::Request;

pub mod answer;
pub mod doc;
pub mod keys;
pub mod learned;
pub mod spec;
pub mod table;

pub use keys::{KeyIndices, Keys, RouteError};
pub use spec::{Cmd, CmdSpec, Flags, ResponsePolicy, Route, Shape, Timeout};
pub use table::{CLUSTER_DISABLED, COMMANDS, NODE_ADMIN};

static INDEX: LazyLock<HashMap<&'static [u8], &'static CmdSpec, crate::fasthash::FnvBuild>> =
    LazyLock::new(|| {
        let overridden = ROUTE_FROM_SERVER.get_or_init(Default::default);
        COMMANDS
            .iter()
            .filter(|c| {
                let parent = c.name.split('|').next().unwrap_or(c.name);
                !overridden.contains(parent)
            })
            .map(|c| (c.name.as_bytes(), c))
            .collect()
    });

/// Built-in commands (and their subcommands) routed by the servers' descriptions instead.
static ROUTE_FROM_SERVER: OnceLock<HashSet<String>> = OnceLock::new();

/// Makes the named built-in commands route by what the servers describe
/// (`cluster.route_from_server`). Takes effect only before the first lookup, once per
/// process; returns false when it came too late or a different list is in force.
pub fn route_from_server(names: &[String]) -> bool {
    let wanted: HashSet<String> = names.iter().map(|n| n.to_ascii_uppercase()).collect();
    let set = ROUTE_FROM_SERVER.get_or_init(|| wanted.clone());
    *set == wanted
}

/// Longest name (`PARENT|SUB` for subcommands) looked up, for the stack buffer.
const MAX_NAME: usize = 64;

/// Finds a command (or a `PARENT|SUB` subcommand) by name, ignoring case: the built-in
/// table first, then what the servers described.
pub fn lookup(name: &[u8]) -> Option<&'static CmdSpec> {
    if name.len() > MAX_NAME {
        return None;
    }
    let mut upper = [0u8; MAX_NAME];
    for (d, s) in upper.iter_mut().zip(name) {
        *d = s.to_ascii_uppercase();
    }
    let upper = &upper[..name.len()];
    builtin(upper).or_else(|| learned::lookup(upper))
}

/// The built-in entry for an upper-case name, unless `cluster.route_from_server` hands
/// that command to the servers' descriptions.
fn builtin(upper: &[u8]) -> Option<&'static CmdSpec> {
    INDEX.get(upper).copied()
}

/// The entry that decides what happens to `req`: its command's, or for a container
/// command (`SCRIPT`, `CONFIG`, ...) its subcommand's. `None` for an unknown command; a
/// container with a missing or unknown subcommand keeps the container's entry (answered
/// with Redis's errors for those cases).
pub fn resolve(req: &Request) -> Option<&'static CmdSpec> {
    let spec = lookup(req.arg(0))?;
    if spec.route != Route::Container || req.len() < 2 {
        return Some(spec);
    }
    let (parent, sub) = (spec.name.as_bytes(), req.arg(1));
    if parent.len() + 1 + sub.len() > MAX_NAME {
        return Some(spec);
    }
    let mut name = [0u8; MAX_NAME];
    name[..parent.len()].copy_from_slice(parent);
    name[parent.len()] = b'|';
    name[parent.len() + 1..parent.len() + 1 + sub.len()].copy_from_slice(sub);
    Some(lookup(&name[..parent.len() + 1 + sub.len()]).unwrap_or(spec))
}

impl CmdSpec {
    /// Whether the command changes the client connection's state: it must act exactly
    /// between the commands before and after it.
    pub fn changes_connection_state(&self) -> bool {
        self.flags.contains(Flags::CONNECTION_STATE)
    }

    /// Indices of the key arguments of `req` (see `Keys::indices`).
    pub fn key_indices(&self, req: &Request) -> KeyIndices {
        self.keys.indices(req)
    }

    /// The one slot all keys of `req` hash to; `None` for a request without keys.
    pub fn slot(&self, req: &Request) -> Result<Option<u16>, RouteError> {
        self.keys.slot(req)
    }

    /// How long this request may block its connection, from its timeout argument: `None`
    /// for ever (a zero timeout), zero when the argument is missing or unreadable (the node
    /// answers such a request with an error at once).
    pub fn block_time(&self, req: &Request) -> Option<Duration> {
        let (index, millis) = match self.timeout {
            Timeout::None => return Some(Duration::ZERO),
            Timeout::LastSecs => (req.len().checked_sub(1), false),
            Timeout::ArgSecs(i) => (Some(i as usize), false),
            Timeout::ArgMillis(i) => (Some(i as usize), true),
            Timeout::BlockOption => (block_option(req).map(|i| i + 1), true),
            Timeout::Unknown => return None,
        };
        let value = index
            .filter(|&i| i > 0 && i < req.len())
            .and_then(|i| std::str::from_utf8(req.arg(i)).ok())
            .and_then(|t| t.parse::<f64>().ok())
            .filter(|v| v.is_finite() && *v >= 0.0);
        match value {
            Some(0.0) => None,
            Some(v) => Some(Duration::from_secs_f64(if millis { v / 1000.0 } else { v })),
            None => Some(Duration::ZERO),
        }
    }

    /// Whether this request blocks its connection: the blocking commands, and those with a
    /// `BLOCK` option (XREAD, XREADGROUP) when the request has it.
    pub fn is_blocking(&self, req: &Request) -> bool {
        self.flags.contains(Flags::BLOCKING)
            || (self.timeout == Timeout::BlockOption && block_option(req).is_some())
    }
}

/// Index of a `BLOCK` option before `STREAMS`.
fn block_option(req: &Request) -> Option<usize> {
    (1..req.len())
        .take_while(|&i| !req.arg(i).eq_ignore_ascii_case(b"STREAMS"))
        .find(|&i| req.arg(i).eq_ignore_ascii_case(b"BLOCK"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(s: &str) -> Request {
        Request::from_args(&s.split(' ').collect::<Vec<_>>())
    }

    fn keys(s: &str) -> Vec<String> {
        let r = req(s);
        let spec = lookup(r.arg(0)).unwrap();
        spec.key_indices(&r)
            .map(|i| String::from_utf8(r.arg(i).to_vec()).unwrap())
            .collect()
    }

    #[test]
    fn lookup_ignores_case_and_rejects_unknown() {
        assert_eq!(lookup(b"get").unwrap().name, "GET");
        assert_eq!(lookup(b"GeT").unwrap().name, "GET");
        assert!(lookup(b"NOSUCHCOMMAND").is_none());
        assert!(lookup(&[b'A'; 100]).is_none());
        assert!(lookup(b"").is_none());
    }

    #[test]
    fn table_has_no_duplicates_and_fits_the_lookup_buffer() {
        let mut names: Vec<_> = COMMANDS.iter().map(|c| c.name).collect();
        names.sort();
        let before = names.len();
        names.dedup();
        assert_eq!(before, names.len());
        assert!(
            COMMANDS
                .iter()
                .all(|c| c.name.len() <= MAX_NAME && c.name == c.name.to_ascii_uppercase())
        );
        // Every subcommand has its container.
        for c in COMMANDS {
            if let Some((parent, _)) = c.name.split_once('|') {
                assert_eq!(lookup(parent.as_bytes()).unwrap().route, Route::Container);
            }
        }
    }

    #[test]
    fn key_positions() {
        assert_eq!(keys("GET a"), ["a"]);
        assert_eq!(keys("SET a 1 EX 10"), ["a"]);
        assert_eq!(keys("MSET a 1 b 2"), ["a", "b"]);
        assert_eq!(keys("DEL a b c"), ["a", "b", "c"]);
        assert_eq!(keys("BLPOP a b 0"), ["a", "b"]);
        assert_eq!(keys("RENAME a b"), ["a", "b"]);
        assert_eq!(keys("EVAL s 2 a b x y"), ["a", "b"]);
        assert_eq!(keys("EVAL s 0"), Vec::<String>::new());
        assert_eq!(keys("ZUNIONSTORE d 2 a b WEIGHTS 1 2"), ["d", "a", "b"]);
        assert_eq!(keys("LMPOP 2 a b LEFT"), ["a", "b"]);
        assert_eq!(keys("BLMPOP 0 2 a b LEFT"), ["a", "b"]);
        assert_eq!(keys("XREAD COUNT 2 STREAMS a b 0 0"), ["a", "b"]);
        assert_eq!(keys("XREADGROUP GROUP g c STREAMS a >"), ["a"]);
        assert_eq!(keys("OBJECT ENCODING a"), ["a"]);
        assert_eq!(keys("BITOP AND d a b"), ["d", "a", "b"]);
        assert_eq!(keys("PING"), Vec::<String>::new());
    }

    #[test]
    fn malformed_arguments_yield_no_keys() {
        assert_eq!(keys("GET"), Vec::<String>::new());
        assert_eq!(keys("EVAL s 5 a"), Vec::<String>::new());
        assert_eq!(keys("EVAL s -1"), Vec::<String>::new());
        assert_eq!(keys("EVAL s x a"), Vec::<String>::new());
        assert_eq!(keys("XREAD STREAMS a b 0"), Vec::<String>::new());
        assert_eq!(keys("RENAME a"), Vec::<String>::new());
    }

    #[test]
    fn slot_routing_and_crossslot() {
        let get = lookup(b"GET").unwrap();
        assert_eq!(get.slot(&req("GET foo")), Ok(Some(12182)));
        let mget = lookup(b"MGET").unwrap();
        assert_eq!(
            mget.slot(&req("MGET {u}a {u}b")),
            Ok(Some(crate::slot::slot_of(b"u")))
        );
        assert_eq!(mget.slot(&req("MGET foo bar")), Err(RouteError::CrossSlot));
        assert_eq!(lookup(b"PING").unwrap().slot(&req("PING")), Ok(None));
    }

    #[test]
    fn blocking_detection() {
        let xread = lookup(b"XREAD").unwrap();
        assert!(xread.is_blocking(&req("XREAD BLOCK 0 STREAMS a $")));
        assert!(!xread.is_blocking(&req("XREAD STREAMS a 0")));
        assert!(!xread.is_blocking(&req("XREAD STREAMS BLOCK 0")));
        assert!(lookup(b"BLPOP").unwrap().is_blocking(&req("BLPOP a 0")));
        assert!(!lookup(b"LPOP").unwrap().is_blocking(&req("LPOP a")));
    }

    #[test]
    fn flags_routes_and_subcommands() {
        assert!(lookup(b"SET").unwrap().is_write());
        assert!(lookup(b"GET").unwrap().is_readonly());
        assert_eq!(lookup(b"MULTI").unwrap().route, Route::Transaction);
        assert!(matches!(
            lookup(b"MONITOR").unwrap().route,
            Route::Refused(_)
        ));
        assert_eq!(lookup(b"HELLO").unwrap().route, Route::Local);
        let resolved = |s: &str| resolve(&req(s)).unwrap();
        assert_eq!(resolved("CONFIG get save").cmd, Cmd::ConfigGet);
        assert!(matches!(
            resolved("CONFIG SET save x").route,
            Route::Refused(_)
        ));
        assert_eq!(resolved("CONFIG").route, Route::Container);
        assert_eq!(resolved("CONFIG nosuch").route, Route::Container);
        assert_eq!(resolved("script load x").cmd, Cmd::ScriptLoad);
        assert_eq!(resolved("GET a").route, Route::Slot);
        assert_eq!(
            resolved("MSETNX a 1 b 2").route,
            Route::Slot,
            "atomic across keys: never split"
        );
        assert_eq!(resolved("MSET a 1 b 2").route, Route::Split(Shape::Pairs));
        assert!(resolve(&req("NOSUCH a")).is_none());
        let long = format!("CONFIG {}", "x".repeat(200));
        assert_eq!(resolved(&long).route, Route::Container);
    }

    #[test]
    fn block_times() {
        use std::time::Duration;
        let t = |args: &[&str]| {
            let req = Request::from_args(args);
            lookup(req.arg(0)).unwrap().block_time(&req)
        };
        assert_eq!(
            t(&["BLPOP", "a", "b", "1.5"]),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(t(&["BLPOP", "a", "0"]), None);
        assert_eq!(
            t(&["BLMPOP", "2", "1", "a", "LEFT"]),
            Some(Duration::from_secs(2))
        );
        assert_eq!(
            t(&["XREAD", "BLOCK", "250", "STREAMS", "s", "$"]),
            Some(Duration::from_millis(250))
        );
        assert_eq!(t(&["XREAD", "BLOCK", "0", "STREAMS", "s", "$"]), None);
        assert_eq!(t(&["WAIT", "1", "100"]), Some(Duration::from_millis(100)));
        assert_eq!(t(&["WAITAOF", "0", "1", "0"]), None);
        assert_eq!(t(&["BLPOP", "a", "x"]), Some(Duration::ZERO));
    }
}
