//! The command table: for every command slotgate knows, where its keys are, what kind of
//! command it is, and how the proxy handles it.
//!
//! Lookup is case-insensitive and allocation-free (the name is upper-cased into a stack
//! buffer). Routing needs only the key positions: every key of one request must hash to the
//! same slot, otherwise the client gets `-CROSSSLOT` before anything is sent.

use std::collections::HashMap;
use std::sync::LazyLock;

use crate::resp::Request;
use crate::slot::slot_of;

/// What a command does, as the issue tracker and README classify commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Read,
    Write,
    /// May block the connection it runs on (BLPOP, XREAD BLOCK, ...).
    Blocking,
    PubSub,
    Transaction,
    /// Server administration and introspection.
    Admin,
    /// Connection state (PING, HELLO, AUTH, CLIENT ...).
    Connection,
}

/// Where a command's keys are, by argument index (0 is the command name).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keys {
    /// No keys: any master can serve it.
    None,
    /// Keys from `first` to `last` (negative counts from the end: -1 is the last argument)
    /// every `step` arguments. `GET k` is `1,1,1`; `MSET k v k v` is `1,-1,2`; `BLPOP k k t` is
    /// `1,-2,1`.
    Range { first: u8, last: i8, step: u8 },
    /// A key count at argument `at`, the keys right after it (EVAL, LMPOP, ZUNION ...). With
    /// `dest`, argument 1 is a key too (ZUNIONSTORE dest numkeys ...).
    NumKeys { at: u8, dest: bool },
    /// The keys are the first half of the arguments after `STREAMS` (XREAD, XREADGROUP).
    Streams,
}

/// How the proxy handles a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handling {
    /// Sent to the master owning the keys' slot, or to any master when it has none.
    Forward,
    /// Answered by slotgate without a backend (PING, HELLO, AUTH, CLIENT SETNAME ...).
    Local,
    /// INFO: forwarded to a master, with a `slotgate` section added.
    Info,
    /// Not forwarded; the client gets `-ERR` with this reason.
    Refused(&'static str),
    /// Sent to every master; the replies merge as `Fan` says.
    AllMasters(Fan),
    /// Handled by its own code path (SCAN, RANDOMKEY, SCRIPT, FUNCTION, transactions,
    /// pub/sub), named by the command.
    Special,
    /// Forwarded (like `Forward`) when the subcommand (argument 1) is one of `allowed`,
    /// refused with `reason` otherwise. `CONFIG GET` reads, `CONFIG SET` would change one
    /// node only.
    Subcommands {
        allowed: &'static [&'static str],
        reason: &'static str,
    },
}

/// How the replies of a command sent to every master become one reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fan {
    /// Sum of integers (DBSIZE).
    Sum,
    /// First error, else the first reply (FLUSHALL, SCRIPT LOAD).
    First,
    /// Arrays concatenated (KEYS).
    Concat,
    /// Element-wise AND of integer arrays (SCRIPT EXISTS).
    AllOf,
}

/// One command table entry.
#[derive(Debug, Clone, Copy)]
pub struct CmdSpec {
    /// Upper-case name.
    pub name: &'static str,
    pub kind: Kind,
    pub keys: Keys,
    pub handling: Handling,
}

/// Why a request cannot be routed to one slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteError {
    /// Keys hash to different slots.
    CrossSlot,
}

/// Reason given for commands that administer a single node.
pub const NODE_ADMIN: &str = "administers a single Redis node; connect to the node directly";
/// Reason given for commands that only make sense on one standalone server.
const CLUSTER_ONLY_DB0: &str = "is not available: a Redis Cluster has only database 0";
/// slotgate presents a standalone server: CLUSTER is answered as a standalone Redis answers
/// it, so clients that probe for cluster mode stay in standalone mode.
pub const CLUSTER_DISABLED: &str = "This instance has cluster support disabled";
/// Reason for commands that would give a wrong answer if sent to a single master.
const NEEDS_ALL_MASTERS: &str =
    "needs every master of the cluster and is not supported by slotgate yet";

macro_rules! table {
    ($( $name:literal $kind:ident $keys:expr, $handling:expr; )*) => {
        &[ $( CmdSpec { name: $name, kind: Kind::$kind, keys: $keys, handling: $handling }, )* ]
    };
}

const fn r(first: u8, last: i8, step: u8) -> Keys {
    Keys::Range { first, last, step }
}
const K1: Keys = r(1, 1, 1);
const ALL: Keys = r(1, -1, 1);
const NONE: Keys = Keys::None;
const F: Handling = Handling::Forward;
const L: Handling = Handling::Local;

/// Every command slotgate knows. Commands not listed get `-ERR unknown command`.
pub static COMMANDS: &[CmdSpec] = table! {
    // Connection, answered locally.
    "PING" Connection NONE, L;
    "ECHO" Connection NONE, L;
    "QUIT" Connection NONE, L;
    "SELECT" Connection NONE, L;
    "AUTH" Connection NONE, L;
    "HELLO" Connection NONE, L;
    "CLIENT" Connection NONE, L;
    "READONLY" Connection NONE, L;
    "READWRITE" Connection NONE, L;
    "RESET" Connection NONE, L;
    "SWAPDB" Admin NONE, Handling::Refused(CLUSTER_ONLY_DB0);
    "MOVE" Write K1, Handling::Refused(CLUSTER_ONLY_DB0);
    // Server, forwarded to any master.
    "INFO" Admin NONE, Handling::Info;
    "COMMAND" Admin NONE, F;
    "TIME" Admin NONE, F;
    "LASTSAVE" Admin NONE, F;
    "LOLWUT" Read NONE, F;
    // Strings.
    "GET" Read K1, F;
    "SET" Write K1, F;
    "SETNX" Write K1, F;
    "SETEX" Write K1, F;
    "PSETEX" Write K1, F;
    "GETSET" Write K1, F;
    "GETDEL" Write K1, F;
    "GETEX" Write K1, F;
    "GETRANGE" Read K1, F;
    "SUBSTR" Read K1, F;
    "SETRANGE" Write K1, F;
    "APPEND" Write K1, F;
    "STRLEN" Read K1, F;
    "INCR" Write K1, F;
    "DECR" Write K1, F;
    "INCRBY" Write K1, F;
    "DECRBY" Write K1, F;
    "INCRBYFLOAT" Write K1, F;
    "MGET" Read ALL, F;
    "MSET" Write r(1, -1, 2), F;
    "MSETNX" Write r(1, -1, 2), F;
    "LCS" Read r(1, 2, 1), F;
    // Generic keyspace.
    "DEL" Write ALL, F;
    "UNLINK" Write ALL, F;
    "EXISTS" Read ALL, F;
    "TOUCH" Read ALL, F;
    "EXPIRE" Write K1, F;
    "PEXPIRE" Write K1, F;
    "EXPIREAT" Write K1, F;
    "PEXPIREAT" Write K1, F;
    "EXPIRETIME" Read K1, F;
    "PEXPIRETIME" Read K1, F;
    "TTL" Read K1, F;
    "PTTL" Read K1, F;
    "PERSIST" Write K1, F;
    "TYPE" Read K1, F;
    "RENAME" Write r(1, 2, 1), F;
    "RENAMENX" Write r(1, 2, 1), F;
    "COPY" Write r(1, 2, 1), F;
    "DUMP" Read K1, F;
    "RESTORE" Write K1, F;
    "OBJECT" Read r(2, 2, 1), F;
    "SORT" Write K1, F;
    "SORT_RO" Read K1, F;
    "MEMORY" Read r(2, 2, 1), F;
    // Hashes.
    "HSET" Write K1, F;
    "HSETNX" Write K1, F;
    "HMSET" Write K1, F;
    "HGET" Read K1, F;
    "HMGET" Read K1, F;
    "HDEL" Write K1, F;
    "HLEN" Read K1, F;
    "HSTRLEN" Read K1, F;
    "HINCRBY" Write K1, F;
    "HINCRBYFLOAT" Write K1, F;
    "HKEYS" Read K1, F;
    "HVALS" Read K1, F;
    "HGETALL" Read K1, F;
    "HEXISTS" Read K1, F;
    "HRANDFIELD" Read K1, F;
    "HSCAN" Read K1, F;
    "HEXPIRE" Write K1, F;
    "HPEXPIRE" Write K1, F;
    "HEXPIREAT" Write K1, F;
    "HPEXPIREAT" Write K1, F;
    "HPERSIST" Write K1, F;
    "HTTL" Read K1, F;
    "HPTTL" Read K1, F;
    "HEXPIRETIME" Read K1, F;
    "HPEXPIRETIME" Read K1, F;
    "HGETDEL" Write K1, F;
    "HGETEX" Write K1, F;
    "HSETEX" Write K1, F;
    // Lists.
    "LPUSH" Write K1, F;
    "RPUSH" Write K1, F;
    "LPUSHX" Write K1, F;
    "RPUSHX" Write K1, F;
    "LPOP" Write K1, F;
    "RPOP" Write K1, F;
    "LLEN" Read K1, F;
    "LRANGE" Read K1, F;
    "LINDEX" Read K1, F;
    "LSET" Write K1, F;
    "LINSERT" Write K1, F;
    "LREM" Write K1, F;
    "LTRIM" Write K1, F;
    "LPOS" Read K1, F;
    "LMOVE" Write r(1, 2, 1), F;
    "RPOPLPUSH" Write r(1, 2, 1), F;
    "LMPOP" Write Keys::NumKeys { at: 1, dest: false }, F;
    "BLPOP" Blocking r(1, -2, 1), F;
    "BRPOP" Blocking r(1, -2, 1), F;
    "BLMOVE" Blocking r(1, 2, 1), F;
    "BRPOPLPUSH" Blocking r(1, 2, 1), F;
    "BLMPOP" Blocking Keys::NumKeys { at: 2, dest: false }, F;
    // Sets.
    "SADD" Write K1, F;
    "SREM" Write K1, F;
    "SMEMBERS" Read K1, F;
    "SISMEMBER" Read K1, F;
    "SMISMEMBER" Read K1, F;
    "SCARD" Read K1, F;
    "SPOP" Write K1, F;
    "SRANDMEMBER" Read K1, F;
    "SMOVE" Write r(1, 2, 1), F;
    "SINTER" Read ALL, F;
    "SUNION" Read ALL, F;
    "SDIFF" Read ALL, F;
    "SINTERSTORE" Write ALL, F;
    "SUNIONSTORE" Write ALL, F;
    "SDIFFSTORE" Write ALL, F;
    "SINTERCARD" Read Keys::NumKeys { at: 1, dest: false }, F;
    "SSCAN" Read K1, F;
    // Sorted sets.
    "ZADD" Write K1, F;
    "ZINCRBY" Write K1, F;
    "ZREM" Write K1, F;
    "ZCARD" Read K1, F;
    "ZCOUNT" Read K1, F;
    "ZSCORE" Read K1, F;
    "ZMSCORE" Read K1, F;
    "ZRANK" Read K1, F;
    "ZREVRANK" Read K1, F;
    "ZRANGE" Read K1, F;
    "ZREVRANGE" Read K1, F;
    "ZRANGEBYSCORE" Read K1, F;
    "ZREVRANGEBYSCORE" Read K1, F;
    "ZRANGEBYLEX" Read K1, F;
    "ZREVRANGEBYLEX" Read K1, F;
    "ZLEXCOUNT" Read K1, F;
    "ZREMRANGEBYRANK" Write K1, F;
    "ZREMRANGEBYSCORE" Write K1, F;
    "ZREMRANGEBYLEX" Write K1, F;
    "ZPOPMIN" Write K1, F;
    "ZPOPMAX" Write K1, F;
    "ZRANDMEMBER" Read K1, F;
    "ZSCAN" Read K1, F;
    "ZRANGESTORE" Write r(1, 2, 1), F;
    "ZUNIONSTORE" Write Keys::NumKeys { at: 2, dest: true }, F;
    "ZINTERSTORE" Write Keys::NumKeys { at: 2, dest: true }, F;
    "ZDIFFSTORE" Write Keys::NumKeys { at: 2, dest: true }, F;
    "ZUNION" Read Keys::NumKeys { at: 1, dest: false }, F;
    "ZINTER" Read Keys::NumKeys { at: 1, dest: false }, F;
    "ZDIFF" Read Keys::NumKeys { at: 1, dest: false }, F;
    "ZINTERCARD" Read Keys::NumKeys { at: 1, dest: false }, F;
    "ZMPOP" Write Keys::NumKeys { at: 1, dest: false }, F;
    "BZPOPMIN" Blocking r(1, -2, 1), F;
    "BZPOPMAX" Blocking r(1, -2, 1), F;
    "BZMPOP" Blocking Keys::NumKeys { at: 2, dest: false }, F;
    // HyperLogLog, geo, bitmaps.
    "PFADD" Write K1, F;
    "PFCOUNT" Read ALL, F;
    "PFMERGE" Write ALL, F;
    "GEOADD" Write K1, F;
    "GEODIST" Read K1, F;
    "GEOHASH" Read K1, F;
    "GEOPOS" Read K1, F;
    "GEORADIUS" Write K1, F;
    "GEORADIUSBYMEMBER" Write K1, F;
    "GEORADIUS_RO" Read K1, F;
    "GEORADIUSBYMEMBER_RO" Read K1, F;
    "GEOSEARCH" Read K1, F;
    "GEOSEARCHSTORE" Write r(1, 2, 1), F;
    "SETBIT" Write K1, F;
    "GETBIT" Read K1, F;
    "BITCOUNT" Read K1, F;
    "BITPOS" Read K1, F;
    "BITFIELD" Write K1, F;
    "BITFIELD_RO" Read K1, F;
    "BITOP" Write r(2, -1, 1), F;
    // Streams.
    "XADD" Write K1, F;
    "XLEN" Read K1, F;
    "XRANGE" Read K1, F;
    "XREVRANGE" Read K1, F;
    "XDEL" Write K1, F;
    "XTRIM" Write K1, F;
    "XACK" Write K1, F;
    "XCLAIM" Write K1, F;
    "XAUTOCLAIM" Write K1, F;
    "XPENDING" Read K1, F;
    "XSETID" Write K1, F;
    "XGROUP" Write r(2, 2, 1), F;
    "XINFO" Read r(2, 2, 1), F;
    "XREAD" Read Keys::Streams, F;
    "XREADGROUP" Write Keys::Streams, F;
    // Scripts and functions.
    "EVAL" Write Keys::NumKeys { at: 2, dest: false }, F;
    "EVALSHA" Write Keys::NumKeys { at: 2, dest: false }, F;
    "EVAL_RO" Read Keys::NumKeys { at: 2, dest: false }, F;
    "EVALSHA_RO" Read Keys::NumKeys { at: 2, dest: false }, F;
    "FCALL" Write Keys::NumKeys { at: 2, dest: false }, F;
    "FCALL_RO" Read Keys::NumKeys { at: 2, dest: false }, F;
    "SCRIPT" Admin NONE, Handling::Special;
    "FUNCTION" Admin NONE, Handling::Special;
    // Pub/sub.
    "PUBLISH" PubSub NONE, F;
    "SPUBLISH" PubSub K1, F;
    "SUBSCRIBE" PubSub NONE, Handling::Special;
    "PSUBSCRIBE" PubSub NONE, Handling::Special;
    "SSUBSCRIBE" PubSub NONE, Handling::Special;
    "UNSUBSCRIBE" PubSub NONE, Handling::Special;
    "PUNSUBSCRIBE" PubSub NONE, Handling::Special;
    "SUNSUBSCRIBE" PubSub NONE, Handling::Special;
    "PUBSUB" PubSub NONE, Handling::Refused(NEEDS_ALL_MASTERS);
    // Transactions.
    "MULTI" Transaction NONE, Handling::Special;
    "EXEC" Transaction NONE, Handling::Special;
    "DISCARD" Transaction NONE, Handling::Special;
    "WATCH" Transaction ALL, Handling::Special;
    "UNWATCH" Transaction NONE, Handling::Special;
    // Whole-keyspace commands.
    "KEYS" Read NONE, Handling::AllMasters(Fan::Concat);
    "SCAN" Read NONE, Handling::Special;
    "DBSIZE" Read NONE, Handling::AllMasters(Fan::Sum);
    "RANDOMKEY" Read NONE, Handling::Special;
    "FLUSHALL" Write NONE, Handling::AllMasters(Fan::First);
    "FLUSHDB" Write NONE, Handling::AllMasters(Fan::First);
    "WAIT" Admin NONE, Handling::Special;
    "WAITAOF" Admin NONE, Handling::Special;
    // Single-node administration.
    "CLUSTER" Admin NONE, Handling::Special;
    "CONFIG" Admin NONE, Handling::Subcommands { allowed: &["GET"], reason: NODE_ADMIN };
    "MONITOR" Admin NONE, Handling::Refused(NODE_ADMIN);
    "SYNC" Admin NONE, Handling::Refused(NODE_ADMIN);
    "PSYNC" Admin NONE, Handling::Refused(NODE_ADMIN);
    "REPLICAOF" Admin NONE, Handling::Refused(NODE_ADMIN);
    "SLAVEOF" Admin NONE, Handling::Refused(NODE_ADMIN);
    "DEBUG" Admin NONE, Handling::Refused(NODE_ADMIN);
    "SHUTDOWN" Admin NONE, Handling::Refused(NODE_ADMIN);
    "MIGRATE" Admin NONE, Handling::Refused(NODE_ADMIN);
    "SAVE" Admin NONE, Handling::Refused(NODE_ADMIN);
    "BGSAVE" Admin NONE, Handling::Refused(NODE_ADMIN);
    "BGREWRITEAOF" Admin NONE, Handling::Refused(NODE_ADMIN);
    "FAILOVER" Admin NONE, Handling::Refused(NODE_ADMIN);
    "ACL" Admin NONE, Handling::Refused(NODE_ADMIN);
    "MODULE" Admin NONE, Handling::Refused(NODE_ADMIN);
    "SLOWLOG" Admin NONE, Handling::Refused(NODE_ADMIN);
    "LATENCY" Admin NONE, Handling::Refused(NODE_ADMIN);
    "PFDEBUG" Admin NONE, Handling::Refused(NODE_ADMIN);
    "PFSELFTEST" Admin NONE, Handling::Refused(NODE_ADMIN);
    "ASKING" Admin NONE, Handling::Refused(NODE_ADMIN);
};

static INDEX: LazyLock<HashMap<&'static [u8], &'static CmdSpec, crate::fasthash::FnvBuild>> =
    LazyLock::new(|| COMMANDS.iter().map(|c| (c.name.as_bytes(), c)).collect());

/// Longest command name in the table, for the stack buffer used by `lookup`.
const MAX_NAME: usize = 24;

/// Finds a command by name, ignoring case.
pub fn lookup(name: &[u8]) -> Option<&'static CmdSpec> {
    if name.len() > MAX_NAME {
        return None;
    }
    let mut upper = [0u8; MAX_NAME];
    for (d, s) in upper.iter_mut().zip(name) {
        *d = s.to_ascii_uppercase();
    }
    INDEX.get(&upper[..name.len()]).copied()
}

impl CmdSpec {
    /// Whether the command changes the client connection's state (protocol, user, name,
    /// database, or all of it with RESET): it must act exactly between the commands before
    /// and after it. PING, ECHO and QUIT change nothing that later commands depend on.
    pub fn changes_connection_state(&self) -> bool {
        self.kind == Kind::Connection
            && self.handling == Handling::Local
            && !matches!(self.name, "PING" | "ECHO" | "QUIT")
    }

    /// Indices of the key arguments of `req`. Arguments that do not match the command's
    /// shape (too few, a bad key count) yield no keys: the request then goes to any master,
    /// whose own error message reaches the client.
    pub fn key_indices(&self, req: &Request) -> KeyIndices {
        let n = req.len();
        let (start, end, step) = match self.keys {
            Keys::None => (0, 0, 1),
            Keys::Range { first, last, step } => {
                let first = first as usize;
                let last = if last < 0 {
                    n as isize + last as isize
                } else {
                    last as isize
                };
                if last < first as isize || last as usize >= n {
                    (0, 0, 1)
                } else {
                    (first, last as usize + 1, step as usize)
                }
            }
            Keys::NumKeys { at, dest } => {
                let at = at as usize;
                let count = (at < n)
                    .then(|| crate::resp::request::parse_i64(req.arg(at)))
                    .flatten();
                match count {
                    Some(c) if c >= 0 && at + 1 + (c as usize) <= n => {
                        return KeyIndices {
                            extra: (dest && n > 1).then_some(1),
                            range: at + 1..at + 1 + c as usize,
                            step: 1,
                        };
                    }
                    _ => (0, 0, 1),
                }
            }
            Keys::Streams => {
                let pos = (1..n).find(|&i| req.arg(i).eq_ignore_ascii_case(b"STREAMS"));
                match pos {
                    Some(p) if (n - p - 1).is_multiple_of(2) => {
                        let count = (n - p - 1) / 2;
                        (p + 1, p + 1 + count, 1)
                    }
                    _ => (0, 0, 1),
                }
            }
        };
        KeyIndices {
            extra: None,
            range: start..end,
            step,
        }
    }

    /// The one slot all keys of `req` hash to; `None` for a request without keys.
    pub fn slot(&self, req: &Request) -> Result<Option<u16>, RouteError> {
        let mut slot = None;
        for i in self.key_indices(req) {
            let s = slot_of(req.arg(i));
            match slot {
                None => slot = Some(s),
                Some(prev) if prev != s => return Err(RouteError::CrossSlot),
                Some(_) => {}
            }
        }
        Ok(slot)
    }

    /// How this request is handled, with subcommand rules resolved.
    pub fn handling_of(&self, req: &Request) -> Handling {
        match self.handling {
            Handling::Subcommands { allowed, reason } => {
                let ok = req.len() > 1
                    && allowed
                        .iter()
                        .any(|a| req.arg(1).eq_ignore_ascii_case(a.as_bytes()));
                if ok {
                    Handling::Forward
                } else {
                    Handling::Refused(reason)
                }
            }
            other => other,
        }
    }

    /// How long this request may block its connection, from its timeout argument: `None`
    /// for ever (a zero timeout), zero when the argument is missing or unreadable (the node
    /// answers such a request with an error at once). Blocking commands take seconds (a
    /// float), `XREAD`/`XREADGROUP ... BLOCK` and `WAIT`/`WAITAOF` milliseconds.
    pub fn block_time(&self, req: &Request) -> Option<std::time::Duration> {
        let (index, millis) = match self.name {
            "BLMPOP" | "BZMPOP" => (Some(1), false),
            "WAIT" => (Some(2), true),
            "WAITAOF" => (Some(3), true),
            _ if matches!(self.keys, Keys::Streams) => (
                (1..req.len())
                    .take_while(|&i| !req.arg(i).eq_ignore_ascii_case(b"STREAMS"))
                    .find(|&i| req.arg(i).eq_ignore_ascii_case(b"BLOCK"))
                    .map(|i| i + 1),
                true,
            ),
            _ => (req.len().checked_sub(1), false),
        };
        let value = index
            .filter(|&i| i > 0 && i < req.len())
            .and_then(|i| std::str::from_utf8(req.arg(i)).ok())
            .and_then(|t| t.parse::<f64>().ok())
            .filter(|v| v.is_finite() && *v >= 0.0);
        match value {
            Some(0.0) => None,
            Some(v) => Some(std::time::Duration::from_secs_f64(if millis {
                v / 1000.0
            } else {
                v
            })),
            None => Some(std::time::Duration::ZERO),
        }
    }

    /// Whether this request blocks its connection: the blocking commands, and XREAD /
    /// XREADGROUP with a BLOCK option.
    pub fn is_blocking(&self, req: &Request) -> bool {
        match self.kind {
            Kind::Blocking => true,
            _ if matches!(self.keys, Keys::Streams) => (1..req.len())
                .take_while(|&i| !req.arg(i).eq_ignore_ascii_case(b"STREAMS"))
                .any(|i| req.arg(i).eq_ignore_ascii_case(b"BLOCK")),
            _ => false,
        }
    }
}

/// Iterator over key argument indices of one request.
#[derive(Debug, Clone)]
pub struct KeyIndices {
    /// A key outside the range (ZUNIONSTORE's destination).
    extra: Option<usize>,
    range: std::ops::Range<usize>,
    step: usize,
}

impl Iterator for KeyIndices {
    type Item = usize;

    fn next(&mut self) -> Option<usize> {
        if let Some(e) = self.extra.take() {
            return Some(e);
        }
        if self.range.start >= self.range.end {
            return None;
        }
        let i = self.range.start;
        self.range.start += self.step;
        Some(i)
    }
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
    fn kinds() {
        assert_eq!(lookup(b"SET").unwrap().kind, Kind::Write);
        assert_eq!(lookup(b"GET").unwrap().kind, Kind::Read);
        assert_eq!(lookup(b"MULTI").unwrap().kind, Kind::Transaction);
        assert!(matches!(
            lookup(b"MONITOR").unwrap().handling,
            Handling::Refused(_)
        ));
        assert_eq!(lookup(b"HELLO").unwrap().handling, Handling::Local);
        let config = lookup(b"CONFIG").unwrap();
        assert_eq!(
            config.handling_of(&req("CONFIG get save")),
            Handling::Forward
        );
        assert!(matches!(
            config.handling_of(&req("CONFIG SET save x")),
            Handling::Refused(_)
        ));
        assert!(matches!(
            config.handling_of(&req("CONFIG")),
            Handling::Refused(_)
        ));
        assert_eq!(
            lookup(b"GET").unwrap().handling_of(&req("GET a")),
            Handling::Forward
        );
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
