//! The built-in command table: every command slotgate knows without asking a server, with
//! its key positions, flags, route and response policy. It wins over what a server's
//! `COMMAND INFO` says (`learned.rs`), and it is the only place that names commands.

use super::keys::Keys;
use super::spec::{Cmd, CmdSpec, Flags, ResponsePolicy, Route, Shape, Timeout};

/// Reason given for commands that administer a single node.
pub const NODE_ADMIN: &str = "administers a single Redis node; connect to the node directly";
/// Reason given for commands about one node's client connections.
const CLIENT_OF_A_NODE: &str =
    "acts on a node's own client connections, which are slotgate's, not yours";
/// Reason given for commands that only make sense on one standalone server.
const CLUSTER_ONLY_DB0: &str = "is not available: a Redis Cluster has only database 0";
/// slotgate presents a standalone server: CLUSTER is answered as a standalone Redis answers
/// it, so clients that probe for cluster mode stay in standalone mode.
pub const CLUSTER_DISABLED: &str = "ERR This instance has cluster support disabled";

const fn r(first: u8, last: i8, step: u8) -> Keys {
    Keys::Range { first, last, step }
}
const K1: Keys = r(1, 1, 1);
const K2: Keys = r(2, 2, 1);
const K12: Keys = r(1, 2, 1);
const ALL: Keys = r(1, -1, 1);
const PAIRS: Keys = r(1, -1, 2);
const NONE: Keys = Keys::None;
const NK1: Keys = Keys::NumKeys { at: 1, dest: false };
const NK2: Keys = Keys::NumKeys { at: 2, dest: false };
const NK2_DEST: Keys = Keys::NumKeys { at: 2, dest: true };

const fn read(name: &'static str, keys: Keys) -> CmdSpec {
    CmdSpec::new(name, keys).flag(Flags::READONLY)
}
const fn write(name: &'static str, keys: Keys) -> CmdSpec {
    CmdSpec::new(name, keys).flag(Flags::WRITE)
}
/// A write sent to the mirrors as it is, with an identity the async mode's rewrite needs.
const fn typed_write(name: &'static str, keys: Keys, cmd: Cmd) -> CmdSpec {
    write(name, keys).cmd(cmd)
}
/// A write whose mirror copy is made from the primary's reply (the server chose an id or
/// a random member).
const fn from_reply(name: &'static str, keys: Keys, cmd: Cmd) -> CmdSpec {
    write(name, keys).cmd(cmd).flag(Flags::MIRROR_NEEDS_REPLY)
}
/// A write with a relative expiry: sent to the mirrors with the absolute time.
const fn timed(name: &'static str, keys: Keys, cmd: Cmd) -> CmdSpec {
    write(name, keys).cmd(cmd).flag(Flags::MIRROR_ABSOLUTE_TIME)
}
/// A blocking write (BLPOP ...), its timeout where `timeout` says. It is never sent
/// blocking to a mirror: its effect is mirrored from the primary's reply.
const fn blocking(name: &'static str, keys: Keys, cmd: Cmd, timeout: Timeout) -> CmdSpec {
    write(name, keys)
        .blocks(timeout)
        .cmd(cmd)
        .flag(Flags::MIRROR_NEEDS_REPLY)
}
/// Answered by slotgate; changes the connection's state unless said otherwise.
const fn local(name: &'static str, cmd: Cmd) -> CmdSpec {
    CmdSpec::new(name, NONE)
        .cmd(cmd)
        .route(Route::Local)
        .flag(Flags::CONNECTION_STATE)
}
/// Answered by slotgate without changing the connection's state.
const fn answered(name: &'static str, cmd: Cmd) -> CmdSpec {
    CmdSpec::new(name, NONE).cmd(cmd).route(Route::Local)
}
const fn refused(name: &'static str, reason: &'static str) -> CmdSpec {
    CmdSpec::new(name, NONE).route(Route::Refused(reason))
}
/// Sent to every master, the replies combined by `policy`.
const fn all(name: &'static str, policy: ResponsePolicy) -> CmdSpec {
    CmdSpec::new(name, NONE)
        .route(Route::AllMasters)
        .policy(policy)
}
const fn container(name: &'static str) -> CmdSpec {
    CmdSpec::new(name, NONE).route(Route::Container)
}
const fn transaction(name: &'static str, cmd: Cmd) -> CmdSpec {
    CmdSpec::new(name, NONE).cmd(cmd).route(Route::Transaction)
}
const fn subscription(name: &'static str, cmd: Cmd) -> CmdSpec {
    CmdSpec::new(name, NONE)
        .cmd(cmd)
        .route(Route::Subscription)
        .flag(Flags::SUBSCRIBER)
}

/// Every command slotgate knows. Commands not listed here nor learned from a server get
/// `-ERR unknown command`.
pub static COMMANDS: &[CmdSpec] = &[
    // Connection, answered locally.
    local("PING", Cmd::Ping)
        .flag(Flags::SUBSCRIBER)
        .unflag(Flags::CONNECTION_STATE),
    local("ECHO", Cmd::Echo).unflag(Flags::CONNECTION_STATE),
    local("QUIT", Cmd::Quit)
        .flag(Flags::NO_AUTH.union(Flags::SUBSCRIBER))
        .unflag(Flags::CONNECTION_STATE),
    local("SELECT", Cmd::Select),
    local("AUTH", Cmd::Auth).flag(Flags::NO_AUTH),
    local("HELLO", Cmd::Hello).flag(Flags::NO_AUTH),
    container("CLIENT"),
    // CLIENT subcommands concern slotgate's own client connections.
    local("CLIENT|SETNAME", Cmd::ClientSetName),
    local("CLIENT|SETINFO", Cmd::ClientSetInfo),
    answered("CLIENT|GETNAME", Cmd::ClientGetName),
    answered("CLIENT|ID", Cmd::ClientId),
    answered("CLIENT|INFO", Cmd::ClientInfo),
    answered("CLIENT|LIST", Cmd::ClientList),
    local("CLIENT|REPLY", Cmd::ClientReply),
    answered("CLIENT|NO-EVICT", Cmd::ClientNoOp),
    answered("CLIENT|NO-TOUCH", Cmd::ClientNoOp),
    answered("CLIENT|MAINT_NOTIFICATIONS", Cmd::ClientMaintNotifications),
    CmdSpec::new("CLIENT|HELP", NONE),
    refused("CLIENT|KILL", CLIENT_OF_A_NODE),
    refused("CLIENT|PAUSE", NODE_ADMIN),
    refused("CLIENT|UNPAUSE", NODE_ADMIN),
    refused("CLIENT|UNBLOCK", CLIENT_OF_A_NODE),
    local("CLIENT|TRACKING", Cmd::ClientTracking),
    answered("CLIENT|TRACKINGINFO", Cmd::ClientTrackingInfo),
    local("CLIENT|CACHING", Cmd::ClientCaching),
    answered("CLIENT|GETREDIR", Cmd::ClientGetRedir),
    local("READONLY", Cmd::ReadOnly),
    local("READWRITE", Cmd::ReadWrite),
    local("RESET", Cmd::Reset).flag(Flags::NO_AUTH.union(Flags::SUBSCRIBER)),
    refused("SWAPDB", CLUSTER_ONLY_DB0),
    write("MOVE", K1).route(Route::Refused(CLUSTER_ONLY_DB0)),
    // Server, forwarded to any master.
    CmdSpec::new("INFO", NONE)
        .cmd(Cmd::Info)
        .route(Route::Info)
        .policy(ResponsePolicy::Special),
    // COMMAND describes what slotgate accepts: the servers' descriptions of the commands it
    // routes (`command::answer`).
    container("COMMAND").cmd(Cmd::Command),
    answered("COMMAND|COUNT", Cmd::CommandCount),
    answered("COMMAND|INFO", Cmd::CommandInfo),
    CmdSpec::new("COMMAND|LIST", NONE).cmd(Cmd::CommandList),
    CmdSpec::new("COMMAND|DOCS", NONE).cmd(Cmd::CommandDocs),
    CmdSpec::new("COMMAND|GETKEYS", NONE),
    CmdSpec::new("COMMAND|GETKEYSANDFLAGS", NONE),
    CmdSpec::new("COMMAND|HELP", NONE),
    CmdSpec::new("TIME", NONE),
    CmdSpec::new("LASTSAVE", NONE),
    read("LOLWUT", NONE),
    // Strings.
    read("GET", K1),
    timed("SET", K1, Cmd::Set),
    typed_write("SETNX", K1, Cmd::SetNx),
    timed("SETEX", K1, Cmd::SetEx),
    timed("PSETEX", K1, Cmd::PSetEx),
    write("GETSET", K1),
    write("GETDEL", K1),
    timed("GETEX", K1, Cmd::GetEx),
    read("GETRANGE", K1),
    read("SUBSTR", K1),
    write("SETRANGE", K1),
    write("APPEND", K1),
    read("STRLEN", K1),
    typed_write("INCR", K1, Cmd::Incr),
    typed_write("DECR", K1, Cmd::Decr),
    typed_write("INCRBY", K1, Cmd::IncrBy),
    typed_write("DECRBY", K1, Cmd::DecrBy),
    typed_write("INCRBYFLOAT", K1, Cmd::IncrByFloat),
    read("MGET", ALL)
        .route(Route::Split(Shape::Keys))
        .policy(ResponsePolicy::CombineArrays),
    write("MSET", PAIRS)
        .route(Route::Split(Shape::Pairs))
        .policy(ResponsePolicy::AllSucceeded),
    // Atomic across its keys: never split, one slot or CROSSSLOT.
    typed_write("MSETNX", PAIRS, Cmd::MSetNx),
    read("LCS", K12),
    // Generic keyspace.
    write("DEL", ALL)
        .route(Route::Split(Shape::Keys))
        .policy(ResponsePolicy::AggSum),
    write("UNLINK", ALL)
        .route(Route::Split(Shape::Keys))
        .policy(ResponsePolicy::AggSum),
    read("EXISTS", ALL)
        .route(Route::Split(Shape::Keys))
        .policy(ResponsePolicy::AggSum),
    read("TOUCH", ALL)
        .route(Route::Split(Shape::Keys))
        .policy(ResponsePolicy::AggSum),
    timed("EXPIRE", K1, Cmd::Expire),
    timed("PEXPIRE", K1, Cmd::PExpire),
    typed_write("EXPIREAT", K1, Cmd::ExpireAt),
    typed_write("PEXPIREAT", K1, Cmd::PExpireAt),
    read("EXPIRETIME", K1),
    read("PEXPIRETIME", K1),
    read("TTL", K1),
    read("PTTL", K1),
    write("PERSIST", K1),
    read("TYPE", K1),
    write("RENAME", K12),
    write("RENAMENX", K12),
    write("COPY", K12),
    read("DUMP", K1),
    timed("RESTORE", K1, Cmd::Restore),
    read("OBJECT", K2),
    write("SORT", K1),
    read("SORT_RO", K1),
    read("MEMORY", K2),
    // Hashes.
    write("HSET", K1),
    typed_write("HSETNX", K1, Cmd::HSetNx),
    write("HMSET", K1),
    read("HGET", K1),
    read("HMGET", K1),
    write("HDEL", K1),
    read("HLEN", K1),
    read("HSTRLEN", K1),
    typed_write("HINCRBY", K1, Cmd::HIncrBy),
    typed_write("HINCRBYFLOAT", K1, Cmd::HIncrByFloat),
    read("HKEYS", K1),
    read("HVALS", K1),
    read("HGETALL", K1),
    read("HEXISTS", K1),
    read("HRANDFIELD", K1),
    read("HSCAN", K1),
    write("HEXPIRE", K1),
    write("HPEXPIRE", K1),
    write("HEXPIREAT", K1),
    write("HPEXPIREAT", K1),
    write("HPERSIST", K1),
    read("HTTL", K1),
    read("HPTTL", K1),
    read("HEXPIRETIME", K1),
    read("HPEXPIRETIME", K1),
    write("HGETDEL", K1),
    write("HGETEX", K1),
    write("HSETEX", K1),
    // Lists.
    write("LPUSH", K1),
    write("RPUSH", K1),
    write("LPUSHX", K1),
    write("RPUSHX", K1),
    write("LPOP", K1),
    write("RPOP", K1),
    read("LLEN", K1),
    read("LRANGE", K1),
    read("LINDEX", K1),
    write("LSET", K1),
    write("LINSERT", K1),
    write("LREM", K1),
    write("LTRIM", K1),
    read("LPOS", K1),
    write("LMOVE", K12),
    write("RPOPLPUSH", K12),
    write("LMPOP", NK1),
    blocking("BLPOP", r(1, -2, 1), Cmd::BLPop, Timeout::LastSecs),
    blocking("BRPOP", r(1, -2, 1), Cmd::BRPop, Timeout::LastSecs),
    blocking("BLMOVE", K12, Cmd::BLMove, Timeout::LastSecs),
    blocking("BRPOPLPUSH", K12, Cmd::BRPopLPush, Timeout::LastSecs),
    blocking("BLMPOP", NK2, Cmd::BLMPop, Timeout::ArgSecs(1)),
    // Sets.
    write("SADD", K1),
    write("SREM", K1),
    read("SMEMBERS", K1),
    read("SISMEMBER", K1),
    read("SMISMEMBER", K1),
    read("SCARD", K1),
    from_reply("SPOP", K1, Cmd::SPop),
    read("SRANDMEMBER", K1),
    write("SMOVE", K12),
    read("SINTER", ALL),
    read("SUNION", ALL),
    read("SDIFF", ALL),
    write("SINTERSTORE", ALL),
    write("SUNIONSTORE", ALL),
    write("SDIFFSTORE", ALL),
    read("SINTERCARD", NK1),
    read("SSCAN", K1),
    // Sorted sets.
    write("ZADD", K1),
    typed_write("ZINCRBY", K1, Cmd::ZIncrBy),
    write("ZREM", K1),
    read("ZCARD", K1),
    read("ZCOUNT", K1),
    read("ZSCORE", K1),
    read("ZMSCORE", K1),
    read("ZRANK", K1),
    read("ZREVRANK", K1),
    read("ZRANGE", K1),
    read("ZREVRANGE", K1),
    read("ZRANGEBYSCORE", K1),
    read("ZREVRANGEBYSCORE", K1),
    read("ZRANGEBYLEX", K1),
    read("ZREVRANGEBYLEX", K1),
    read("ZLEXCOUNT", K1),
    write("ZREMRANGEBYRANK", K1),
    write("ZREMRANGEBYSCORE", K1),
    write("ZREMRANGEBYLEX", K1),
    write("ZPOPMIN", K1),
    write("ZPOPMAX", K1),
    read("ZRANDMEMBER", K1),
    read("ZSCAN", K1),
    write("ZRANGESTORE", K12),
    write("ZUNIONSTORE", NK2_DEST),
    write("ZINTERSTORE", NK2_DEST),
    write("ZDIFFSTORE", NK2_DEST),
    read("ZUNION", NK1),
    read("ZINTER", NK1),
    read("ZDIFF", NK1),
    read("ZINTERCARD", NK1),
    write("ZMPOP", NK1),
    blocking("BZPOPMIN", r(1, -2, 1), Cmd::BZPopMin, Timeout::LastSecs),
    blocking("BZPOPMAX", r(1, -2, 1), Cmd::BZPopMax, Timeout::LastSecs),
    blocking("BZMPOP", NK2, Cmd::BZMPop, Timeout::ArgSecs(1)),
    // HyperLogLog, geo, bitmaps.
    write("PFADD", K1),
    read("PFCOUNT", ALL),
    write("PFMERGE", ALL),
    write("GEOADD", K1),
    read("GEODIST", K1),
    read("GEOHASH", K1),
    read("GEOPOS", K1),
    write("GEORADIUS", K1),
    write("GEORADIUSBYMEMBER", K1),
    read("GEORADIUS_RO", K1),
    read("GEORADIUSBYMEMBER_RO", K1),
    read("GEOSEARCH", K1),
    write("GEOSEARCHSTORE", K12),
    write("SETBIT", K1),
    read("GETBIT", K1),
    read("BITCOUNT", K1),
    read("BITPOS", K1),
    write("BITFIELD", K1),
    read("BITFIELD_RO", K1),
    write("BITOP", r(2, -1, 1)),
    // Streams.
    from_reply("XADD", K1, Cmd::XAdd),
    read("XLEN", K1),
    read("XRANGE", K1),
    read("XREVRANGE", K1),
    write("XDEL", K1),
    write("XTRIM", K1),
    write("XACK", K1),
    write("XCLAIM", K1),
    write("XAUTOCLAIM", K1),
    read("XPENDING", K1),
    write("XSETID", K1),
    write("XGROUP", K2),
    read("XINFO", K2),
    read("XREAD", Keys::Streams).blocks(Timeout::BlockOption),
    // Mirrored from the primary's reply when it blocks (BLOCK), as it is otherwise.
    blocking(
        "XREADGROUP",
        Keys::Streams,
        Cmd::XReadGroup,
        Timeout::BlockOption,
    ),
    // Scripts and functions.
    write("EVAL", NK2).cmd(Cmd::Eval),
    write("EVALSHA", NK2).cmd(Cmd::EvalSha),
    read("EVAL_RO", NK2).cmd(Cmd::Eval),
    read("EVALSHA_RO", NK2).cmd(Cmd::EvalSha),
    write("FCALL", NK2),
    read("FCALL_RO", NK2),
    container("SCRIPT"),
    all("SCRIPT|LOAD", ResponsePolicy::AllSucceeded).cmd(Cmd::ScriptLoad),
    all("SCRIPT|FLUSH", ResponsePolicy::AllSucceeded).cmd(Cmd::ScriptFlush),
    all("SCRIPT|EXISTS", ResponsePolicy::AggLogicalAnd).cmd(Cmd::ScriptExists),
    all("SCRIPT|KILL", ResponsePolicy::OneSucceeded).flag(Flags::ALLOW_BUSY),
    CmdSpec::new("SCRIPT|HELP", NONE),
    refused("SCRIPT|DEBUG", NODE_ADMIN),
    container("FUNCTION"),
    all("FUNCTION|LOAD", ResponsePolicy::AllSucceeded).flag(Flags::WRITE),
    all("FUNCTION|DELETE", ResponsePolicy::AllSucceeded).flag(Flags::WRITE),
    all("FUNCTION|FLUSH", ResponsePolicy::AllSucceeded).flag(Flags::WRITE),
    all("FUNCTION|RESTORE", ResponsePolicy::AllSucceeded).flag(Flags::WRITE),
    all("FUNCTION|KILL", ResponsePolicy::OneSucceeded).flag(Flags::ALLOW_BUSY),
    CmdSpec::new("FUNCTION|LIST", NONE),
    CmdSpec::new("FUNCTION|DUMP", NONE),
    CmdSpec::new("FUNCTION|STATS", NONE),
    CmdSpec::new("FUNCTION|HELP", NONE),
    // Pub/sub.
    CmdSpec::new("PUBLISH", NONE)
        .cmd(Cmd::Publish)
        .route(Route::PubSubHome)
        .flag(Flags::MIRRORED),
    CmdSpec::new("SPUBLISH", K1).flag(Flags::MIRRORED),
    subscription("SUBSCRIBE", Cmd::Subscribe),
    subscription("PSUBSCRIBE", Cmd::Psubscribe),
    subscription("SSUBSCRIBE", Cmd::Ssubscribe),
    subscription("UNSUBSCRIBE", Cmd::Unsubscribe),
    subscription("PUNSUBSCRIBE", Cmd::Punsubscribe),
    subscription("SUNSUBSCRIBE", Cmd::Sunsubscribe),
    container("PUBSUB"),
    all("PUBSUB|CHANNELS", ResponsePolicy::ConcatUnique),
    all("PUBSUB|SHARDCHANNELS", ResponsePolicy::ConcatUnique),
    all("PUBSUB|NUMSUB", ResponsePolicy::SumPairs).cmd(Cmd::PubsubCount),
    all("PUBSUB|SHARDNUMSUB", ResponsePolicy::SumPairs),
    all("PUBSUB|NUMPAT", ResponsePolicy::AggSum).cmd(Cmd::PubsubCount),
    CmdSpec::new("PUBSUB|HELP", NONE),
    // Transactions.
    transaction("MULTI", Cmd::Multi),
    transaction("EXEC", Cmd::Exec),
    transaction("DISCARD", Cmd::Discard),
    CmdSpec::new("WATCH", ALL)
        .cmd(Cmd::Watch)
        .route(Route::Transaction),
    transaction("UNWATCH", Cmd::Unwatch),
    // Whole-keyspace commands.
    all("KEYS", ResponsePolicy::Concat).flag(Flags::READONLY),
    read("SCAN", NONE)
        .cmd(Cmd::Scan)
        .route(Route::Scan)
        .policy(ResponsePolicy::Special),
    all("DBSIZE", ResponsePolicy::AggSum).flag(Flags::READONLY),
    read("RANDOMKEY", NONE)
        .cmd(Cmd::RandomKey)
        .route(Route::RandomKey)
        .policy(ResponsePolicy::Special),
    all("FLUSHALL", ResponsePolicy::AllSucceeded).flag(Flags::WRITE),
    all("FLUSHDB", ResponsePolicy::AllSucceeded).flag(Flags::WRITE),
    CmdSpec::new("WAIT", NONE)
        .cmd(Cmd::Wait)
        .route(Route::Wait)
        .policy(ResponsePolicy::AggMin)
        .waits(Timeout::ArgMillis(2)),
    CmdSpec::new("WAITAOF", NONE)
        .cmd(Cmd::WaitAof)
        .route(Route::Wait)
        .policy(ResponsePolicy::AggMin)
        .waits(Timeout::ArgMillis(3)),
    // Single-node administration.
    CmdSpec::new("CLUSTER", NONE).route(Route::Error(CLUSTER_DISABLED)),
    container("CONFIG"),
    CmdSpec::new("CONFIG|GET", NONE).cmd(Cmd::ConfigGet),
    CmdSpec::new("CONFIG|HELP", NONE),
    refused("CONFIG|SET", NODE_ADMIN),
    refused("CONFIG|RESETSTAT", NODE_ADMIN),
    refused("CONFIG|REWRITE", NODE_ADMIN),
    refused("MONITOR", NODE_ADMIN),
    refused("SYNC", NODE_ADMIN).flag(Flags::NO_MULTI),
    refused("PSYNC", NODE_ADMIN).flag(Flags::NO_MULTI),
    refused("REPLICAOF", NODE_ADMIN),
    refused("SLAVEOF", NODE_ADMIN),
    refused("DEBUG", NODE_ADMIN),
    refused("SHUTDOWN", NODE_ADMIN).flag(Flags::NO_MULTI),
    refused("MIGRATE", NODE_ADMIN),
    refused("SAVE", NODE_ADMIN).flag(Flags::NO_MULTI),
    refused("BGSAVE", NODE_ADMIN),
    refused("BGREWRITEAOF", NODE_ADMIN),
    refused("FAILOVER", NODE_ADMIN),
    // ACL: who the client is logged in as; the users themselves are managed on the nodes.
    container("ACL"),
    answered("ACL|WHOAMI", Cmd::AclWhoami),
    CmdSpec::new("ACL|HELP", NONE),
    refused("ACL|CAT", NODE_ADMIN),
    refused("ACL|DELUSER", NODE_ADMIN),
    refused("ACL|DRYRUN", NODE_ADMIN),
    refused("ACL|GENPASS", NODE_ADMIN),
    refused("ACL|GETUSER", NODE_ADMIN),
    refused("ACL|LIST", NODE_ADMIN),
    refused("ACL|LOAD", NODE_ADMIN),
    refused("ACL|LOG", NODE_ADMIN),
    refused("ACL|SAVE", NODE_ADMIN),
    refused("ACL|SETUSER", NODE_ADMIN),
    refused("ACL|USERS", NODE_ADMIN),
    refused("MODULE", NODE_ADMIN),
    // SLOWLOG: slotgate's own timing of each command, end to end.
    container("SLOWLOG"),
    answered("SLOWLOG|GET", Cmd::SlowlogGet),
    answered("SLOWLOG|LEN", Cmd::SlowlogLen),
    answered("SLOWLOG|RESET", Cmd::SlowlogReset),
    CmdSpec::new("SLOWLOG|HELP", NONE),
    refused("LATENCY", NODE_ADMIN),
    refused("PFDEBUG", NODE_ADMIN),
    refused("PFSELFTEST", NODE_ADMIN),
    refused("ASKING", NODE_ADMIN),
];
