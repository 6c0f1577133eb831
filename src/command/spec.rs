//! The typed command model: what one command table entry says about a command (its identity
//! where slotgate treats it specially, flags, key positions, route, response policy, blocking
//! timeout). Every module decides by these values; only the table names commands.

use super::keys::Keys;

/// Commands some module treats specially, by identity. Everything else is `Plain`: routed
/// by its keys and flags alone. Subcommands of container commands (`SCRIPT LOAD`) have
/// their own identities.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Cmd {
    Plain,
    // Connection, answered locally.
    Ping,
    Echo,
    Quit,
    Select,
    Auth,
    Hello,
    ClientSetName,
    ClientSetInfo,
    ClientGetName,
    ClientId,
    /// ACL WHOAMI: the user this client logged in as.
    AclWhoami,
    SlowlogGet,
    SlowlogLen,
    SlowlogReset,
    ClientInfo,
    ClientList,
    ClientReply,
    ClientNoOp,
    ClientMaintNotifications,
    ClientTracking,
    ClientTrackingInfo,
    ClientCaching,
    ClientGetRedir,
    ReadOnly,
    ReadWrite,
    Reset,
    // Transactions.
    Multi,
    Exec,
    Discard,
    Watch,
    Unwatch,
    // Pub/sub.
    Subscribe,
    Psubscribe,
    Ssubscribe,
    Unsubscribe,
    Punsubscribe,
    Sunsubscribe,
    Publish,
    // Commands with a code path of their own.
    Info,
    Scan,
    RandomKey,
    Wait,
    WaitAof,
    Eval,
    EvalSha,
    ScriptLoad,
    ScriptFlush,
    ScriptExists,
    /// PUBSUB NUMSUB / NUMPAT: summed over the masters, fanned keyspace subscriptions once.
    PubsubCount,
    ConfigGet,
    Command,
    CommandCount,
    CommandInfo,
    CommandList,
    CommandDocs,
    // Writes whose mirror copy depends on the primary's reply (`mirror::effects`).
    Set,
    SetEx,
    PSetEx,
    SetNx,
    MSetNx,
    HSetNx,
    Expire,
    PExpire,
    ExpireAt,
    PExpireAt,
    GetEx,
    Incr,
    Decr,
    IncrBy,
    DecrBy,
    IncrByFloat,
    HIncrBy,
    HIncrByFloat,
    ZIncrBy,
    SPop,
    BLPop,
    BRPop,
    BZPopMin,
    BZPopMax,
    BLMove,
    BRPopLPush,
    BLMPop,
    BZMPop,
    XAdd,
    XReadGroup,
    Restore,
}

/// Command flags, as a small bit set (`Flags::WRITE | Flags::BLOCKING`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Flags(u16);

impl Flags {
    pub const NONE: Flags = Flags(0);
    /// Changes data: mirrored, recorded for WAIT, never sent to a replica.
    pub const WRITE: Flags = Flags(1);
    /// Only reads data: may be retried after a timeout and may go to a replica.
    pub const READONLY: Flags = Flags(1 << 1);
    /// Always blocks its connection (BLPOP ...): runs on a session connection.
    pub const BLOCKING: Flags = Flags(1 << 2);
    /// The mirror copy is made from the primary's reply (`mirror::effects`): the server
    /// chooses something (an XADD id, SPOP's members) or the command blocks.
    pub const MIRROR_NEEDS_REPLY: Flags = Flags(1 << 3);
    /// A relative expiry: the mirrors get the absolute time slotgate computes when it sends
    /// the write (`mirror::effects`).
    pub const MIRROR_ABSOLUTE_TIME: Flags = Flags(1 << 11);
    /// Sent to the mirrors too although it writes no data (PUBLISH, SPUBLISH: subscribers
    /// of every resource hear it, as Camellia does).
    pub const MIRRORED: Flags = Flags(1 << 12);
    /// Changes the client connection's state (protocol, user, name, database, all of it
    /// with RESET): it acts exactly between the commands before and after it.
    pub const CONNECTION_STATE: Flags = Flags(1 << 4);
    /// Accepted before authentication (AUTH, HELLO, QUIT, RESET).
    pub const NO_AUTH: Flags = Flags(1 << 5);
    /// Allowed in RESP2 subscriber mode (the subscribe family, PING, QUIT, RESET).
    pub const SUBSCRIBER: Flags = Flags(1 << 6);
    /// Refused inside MULTI, with Redis's text ("Command not allowed inside a
    /// transaction"), as Redis refuses it (SAVE, SHUTDOWN, WATCH inside MULTI ...).
    pub const NO_MULTI: Flags = Flags(1 << 7);
    /// Its keys' positions depend on its arguments in a way the key specs do not capture
    /// (a learned command with an incomplete key spec).
    pub const UNKNOWN_KEYS: Flags = Flags(1 << 8);
    /// Learned from a server's `COMMAND INFO`, not from the built-in table.
    pub const LEARNED: Flags = Flags(1 << 9);
    /// Runs while a node is busy with a script (SCRIPT KILL): sent on a connection of its
    /// own, never queued behind the busy command.
    pub const ALLOW_BUSY: Flags = Flags(1 << 10);

    pub const fn union(self, other: Flags) -> Flags {
        Flags(self.0 | other.0)
    }

    pub const fn without(self, other: Flags) -> Flags {
        Flags(self.0 & !other.0)
    }

    pub const fn contains(self, other: Flags) -> bool {
        self.0 & other.0 == other.0
    }
}

impl std::ops::BitOr for Flags {
    type Output = Flags;
    fn bitor(self, rhs: Flags) -> Flags {
        self.union(rhs)
    }
}

/// How the arguments of a command that may be split per slot group into keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// Every argument after the name is a key (MGET, DEL, ...).
    Keys,
    /// Key/value pairs (MSET).
    Pairs,
}

impl Shape {
    /// Arguments per key.
    pub fn step(self) -> usize {
        match self {
            Shape::Keys => 1,
            Shape::Pairs => 2,
        }
    }
}

/// Where a command is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// The master owning the keys' slot; keys across slots get `CROSSSLOT` (commands that
    /// are atomic across their keys, `MSETNX`, are never split). Keyless requests are spread
    /// over the masters.
    Slot,
    /// As `Slot`, but keys across slots are split into one request per slot, sent in
    /// parallel and combined by the response policy.
    Split(Shape),
    /// Every master; the replies combine by the response policy.
    AllMasters,
    /// One deterministic master for the whole proxy (classic pub/sub: `PUBLISH` and the
    /// `SUBSCRIBE` connections meet there, so counts match one server's).
    PubSubHome,
    /// Answered by slotgate from the client's state.
    Local,
    /// MULTI/EXEC/DISCARD/WATCH/UNWATCH: the transaction's pinned session connection.
    Transaction,
    /// The subscribe family: the client's subscriber connections.
    Subscription,
    /// SCAN-like: one master at a time, the cursor naming the master.
    Scan,
    /// WAIT-like: the masters that took this client's writes.
    Wait,
    /// INFO: a master's answer with slotgate's own sections and summed counters.
    Info,
    /// RANDOMKEY: masters in random order until one has a key.
    RandomKey,
    /// Routed by its subcommand (argument 1), whose entry is `NAME|SUB` in the table.
    Container,
    /// Answered with this fixed error text (the `-` and CRLF added).
    Error(&'static str),
    /// Not forwarded: `-ERR slotgate: 'NAME' <reason>`.
    Refused(&'static str),
}

/// How the replies of a command sent in parts (per slot, or to every master) become one
/// reply. The names follow Redis's `response_policy` tips.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponsePolicy {
    /// One part: its reply unchanged.
    OneReply,
    /// Sum of integer replies (DEL, DBSIZE, `agg_sum`).
    AggSum,
    /// Minimum / maximum of integer replies (`agg_min`, `agg_max`: WAIT-like counts).
    AggMin,
    AggMax,
    /// Element-wise AND / OR of integer arrays (SCRIPT EXISTS).
    AggLogicalAnd,
    AggLogicalOr,
    /// Arrays merged back in the client's key order (MGET).
    CombineArrays,
    /// Arrays concatenated (KEYS).
    Concat,
    /// Arrays concatenated without repeats (PUBSUB CHANNELS).
    ConcatUnique,
    /// Arrays of name/count pairs: counts summed per name, in the first reply's order
    /// (PUBSUB NUMSUB).
    SumPairs,
    /// The first error if any part failed, else the first reply (MSET, FLUSHALL,
    /// `all_succeeded`).
    AllSucceeded,
    /// The first success if any part succeeded, else the first error (SCRIPT KILL,
    /// `one_succeeded`).
    OneSucceeded,
    /// Combined by the command's own code path (INFO, PUBSUB NUMSUB, ...).
    Special,
}

/// Where a blocking command's timeout is, and its unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timeout {
    /// Not a blocking command.
    None,
    /// The last argument, in seconds (BLPOP, BZPOPMIN, BLMOVE ...).
    LastSecs,
    /// Argument `n`, in seconds (BLMPOP, BZMPOP).
    ArgSecs(u8),
    /// Argument `n`, in milliseconds (WAIT, WAITAOF).
    ArgMillis(u8),
    /// After a `BLOCK` option before `STREAMS`, in milliseconds; without it the command
    /// does not block (XREAD, XREADGROUP).
    BlockOption,
    /// A learned blocking command: where its timeout is is not described, so it gets no
    /// deadline (it may block for ever, as its server allows).
    Unknown,
}

/// One command table entry.
#[derive(Debug, Clone, Copy)]
pub struct CmdSpec {
    /// Upper-case name; `PARENT|SUB` for a subcommand.
    pub name: &'static str,
    /// Identity for the modules that treat this command specially.
    pub cmd: Cmd,
    pub flags: Flags,
    pub keys: Keys,
    pub route: Route,
    pub policy: ResponsePolicy,
    pub timeout: Timeout,
}

impl CmdSpec {
    /// An entry routed by its keys' slot, with no flags.
    pub const fn new(name: &'static str, keys: Keys) -> CmdSpec {
        CmdSpec {
            name,
            cmd: Cmd::Plain,
            flags: Flags::NONE,
            keys,
            route: Route::Slot,
            policy: ResponsePolicy::OneReply,
            timeout: Timeout::None,
        }
    }

    pub const fn cmd(mut self, cmd: Cmd) -> CmdSpec {
        self.cmd = cmd;
        self
    }

    pub const fn flag(mut self, flags: Flags) -> CmdSpec {
        self.flags = self.flags.union(flags);
        self
    }

    pub const fn unflag(mut self, flags: Flags) -> CmdSpec {
        self.flags = self.flags.without(flags);
        self
    }

    pub const fn route(mut self, route: Route) -> CmdSpec {
        self.route = route;
        self
    }

    pub const fn policy(mut self, policy: ResponsePolicy) -> CmdSpec {
        self.policy = policy;
        self
    }

    /// A blocking command whose timeout is where `timeout` says; `BlockOption` commands
    /// block only when the request has the option.
    pub const fn blocks(mut self, timeout: Timeout) -> CmdSpec {
        self.timeout = timeout;
        if !matches!(timeout, Timeout::BlockOption) {
            self.flags = self.flags.union(Flags::BLOCKING);
        }
        self
    }

    /// A command that waits up to a timeout without blocking other commands' keys (WAIT).
    pub const fn waits(mut self, timeout: Timeout) -> CmdSpec {
        self.timeout = timeout;
        self
    }

    pub fn is_write(&self) -> bool {
        self.flags.contains(Flags::WRITE)
    }

    pub fn is_readonly(&self) -> bool {
        self.flags.contains(Flags::READONLY)
    }

    /// The name as slotgate's own messages show it (`CONFIG SET`).
    pub fn display_name(&self) -> String {
        self.name.replace('|', " ")
    }

    /// The name as Redis's error messages show it (`config|set`).
    pub fn redis_name(&self) -> String {
        self.name.to_ascii_lowercase()
    }
}
