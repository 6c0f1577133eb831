//! Commands slotgate answers itself, and the per-connection state they change: protocol
//! version (HELLO), authentication (AUTH), client name and library info (CLIENT ...),
//! database (SELECT), plus PING, ECHO, QUIT, RESET, READONLY/READWRITE.

use bytes::Bytes;

use crate::command::{Cmd, CmdSpec};
use crate::resp::Request;
use crate::resp::encode::{Encoder, OK, PONG, Proto};
use crate::shared::Shared;

/// What slotgate knows about one client connection.
#[derive(Debug)]
pub struct ClientState {
    pub id: u64,
    pub proto: Proto,
    /// False until AUTH succeeds, when a client password is configured.
    pub authenticated: bool,
    /// Set by CLIENT SETNAME or HELLO ... SETNAME.
    pub name: Option<Bytes>,
    /// Set by CLIENT SETINFO LIB-NAME / LIB-VER.
    pub lib_name: Option<Bytes>,
    pub lib_ver: Option<Bytes>,
    /// MULTI/WATCH state and the connection a transaction is pinned to.
    pub txn: crate::transaction::Transaction,
    /// Pub/sub subscriptions and their connections, once the client subscribes.
    pub subs: Option<crate::pubsub::Subscriptions>,
    /// The mirrors this connection's writes go to (multi-write): the ones in force, taken
    /// again after a reload between two of its transactions.
    pub mirrors: Option<std::sync::Arc<crate::mirror::Mirrors>>,
    /// This connection's mirror feed, opened on its first mirrored write.
    pub mirror_feed: crate::mirror::Feed,
    /// CLIENT TRACKING, once the client turns it on or subscribes to
    /// `__redis__:invalidate`.
    pub tracking: Option<Box<crate::tracking::client::ClientTracking>>,
    /// Slots written since the last WAIT, for WAIT/WAITAOF.
    pub written: crate::wait::Written,
    /// This connection's pipelined plain commands, grouped per node.
    pub batch: crate::batch::Batcher,
    /// The last command ran on another connection (EXEC, DISCARD, a blocking command): the
    /// next one waits until it was answered, so it runs after it, as on one Redis connection.
    pub barrier: bool,
    /// The last command sent is a blocking one (BLPOP, XREAD BLOCK ...). At end of input
    /// it is abandoned, as Redis abandons a blocked client whose connection closed.
    pub blocking: bool,
    /// CLIENT REPLY: whether replies are written.
    pub replies: ReplyMode,
    /// Set by CLIENT REPLY for its own reply: written (ON) or not (OFF, SKIP).
    pub silence_this: Option<bool>,
    /// This client's entry in `CLIENT LIST`.
    pub entry: Option<std::sync::Arc<crate::clients::ClientEntry>>,
    /// CLIENT MAINT_NOTIFICATIONS ON (RESP3): told `MOVING` when slotgate shuts down.
    pub maint_notifications: bool,
    /// Where its reads go (`cluster.read_from` in force; a reload changes it).
    pub read_from: crate::config::ReadFrom,
    /// The cluster user the client logged in as (`AUTH username password`); `None`: its
    /// commands run as slotgate's own account.
    pub user: Option<crate::backend::users::UserLease>,
}

/// CLIENT REPLY's modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReplyMode {
    #[default]
    On,
    Off,
    /// The next command's reply is not written.
    Skip,
}

impl ReplyMode {
    /// Whether the reply of the command about to run is dropped, moving past SKIP.
    pub fn take_for_command(&mut self) -> bool {
        match *self {
            ReplyMode::On => false,
            ReplyMode::Off => true,
            ReplyMode::Skip => {
                *self = ReplyMode::On;
                true
            }
        }
    }
}

impl ClientState {
    pub fn new(id: u64, password_required: bool) -> Self {
        ClientState {
            id,
            proto: Proto::Resp2,
            authenticated: !password_required,
            name: None,
            lib_name: None,
            lib_ver: None,
            txn: Default::default(),
            subs: None,
            mirrors: None,
            mirror_feed: Default::default(),
            tracking: None,
            written: Default::default(),
            batch: Default::default(),
            barrier: false,
            blocking: false,
            replies: ReplyMode::On,
            silence_this: None,
            entry: None,
            maint_notifications: false,
            read_from: Default::default(),
            user: None,
        }
    }

    /// Takes the mirrors in force when a reload replaced them (not inside a transaction,
    /// whose writes go to the mirrors of its start: false then, and nothing changes); the
    /// feed to the old ones is retired.
    pub fn follow_mirrors(&mut self, shared: &Shared) -> bool {
        if self.txn.takes(None) {
            return false;
        }
        let now = shared.mirrors.load();
        let same = match (&*now, &self.mirrors) {
            (Some(a), Some(b)) => std::sync::Arc::ptr_eq(a, b),
            (None, None) => true,
            _ => false,
        };
        if !same {
            self.mirrors = now.clone();
            self.mirror_feed.retire();
        }
        true
    }

    /// This client's tracking state, made on first use.
    pub fn tracking_mut(
        &mut self,
        shared: &Shared,
    ) -> &mut crate::tracking::client::ClientTracking {
        let id = self.id;
        self.tracking.get_or_insert_with(|| {
            Box::new(crate::tracking::client::ClientTracking::new(
                shared.tracking.clone(),
                id,
                shared.live().tracking.max_keys_per_client,
                shared.live().tracking.table_max_keys,
            ))
        })
    }

    /// Whether this client tracks keys (its reads go to masters, which announce changes).
    pub fn tracks(&self) -> bool {
        self.tracking.as_ref().is_some_and(|t| t.is_on())
    }

    /// Whom this client's backend connections are authenticated as.
    pub fn user_id(&self) -> crate::backend::users::UserId {
        self.user
            .as_ref()
            .map_or(crate::backend::users::UserId::SERVICE, |u| u.id())
    }

    /// The user name `ACL WHOAMI` answers.
    pub fn user_name(&self) -> &str {
        self.user.as_ref().map_or("default", |u| u.name())
    }

    /// Copies name, library and protocol to this client's `CLIENT LIST` entry.
    pub fn publish_details(&self) {
        if let Some(entry) = &self.entry {
            entry.set_details(crate::clients::Details {
                name: self.name.clone(),
                lib_name: self.lib_name.clone(),
                lib_ver: self.lib_ver.clone(),
                resp: self.proto.version(),
                user: self.user.as_ref().map(|u| u.name().clone()),
            });
        }
    }
}

/// A local answer and whether the connection closes after it.
#[derive(Debug)]
pub struct LocalReply {
    pub reply: Bytes,
    pub close: bool,
}

impl From<Bytes> for LocalReply {
    fn from(reply: Bytes) -> Self {
        LocalReply {
            reply,
            close: false,
        }
    }
}

fn err(msg: &str) -> LocalReply {
    crate::resp::encode::error(msg).into()
}

fn wrong_args(name: &str) -> LocalReply {
    crate::replies::wrong_args(name).into()
}

/// Answers a command whose table entry says `Route::Local`.
pub fn answer(
    spec: &CmdSpec,
    req: &Request,
    state: &mut ClientState,
    shared: &Shared,
) -> LocalReply {
    let n = req.len();
    let name = spec.name;
    match spec.cmd {
        Cmd::Ping => match n {
            1 => PONG.into(),
            2 => bulk(state.proto, req.arg(1)),
            _ => wrong_args(name),
        },
        Cmd::Echo if n == 2 => bulk(state.proto, req.arg(1)),
        Cmd::Quit => LocalReply {
            reply: OK,
            close: true,
        },
        Cmd::Select if n == 2 => match crate::resp::request::parse_i64(req.arg(1)) {
            Some(0) => OK.into(),
            Some(_) => err("ERR DB index is out of range (a Redis Cluster has only database 0)"),
            None => err("ERR value is not an integer or out of range"),
        },
        // The credentials were checked before (`auth::login`): only the reply is left.
        Cmd::Auth if n == 2 || n == 3 => OK.into(),
        Cmd::AclWhoami if n == 2 => bulk(state.proto, state.user_name().as_bytes()),
        Cmd::SlowlogGet if n == 2 => shared.slowlog.get(None, state.proto).into(),
        Cmd::SlowlogGet if n == 3 => match crate::resp::request::parse_i64(req.arg(2)) {
            Some(c) if c >= -1 => shared.slowlog.get(Some(c), state.proto).into(),
            _ => err("ERR count should be greater than or equal to -1"),
        },
        Cmd::SlowlogLen if n == 2 => {
            let mut e = Encoder::new(state.proto);
            e.integer(shared.slowlog.len() as i64);
            e.finish().into()
        }
        Cmd::SlowlogReset if n == 2 => {
            shared.slowlog.reset();
            OK.into()
        }
        Cmd::Hello => hello(req, state, shared),
        Cmd::ClientSetName
        | Cmd::ClientSetInfo
        | Cmd::ClientGetName
        | Cmd::ClientId
        | Cmd::ClientInfo
        | Cmd::ClientList
        | Cmd::ClientReply
        | Cmd::ClientNoOp
        | Cmd::ClientMaintNotifications => client(spec, req, state, shared),
        Cmd::ClientTracking if n >= 3 => {
            let result = state
                .tracking_mut(shared)
                .command(req, |id| shared.clients.contains(id));
            match result {
                Ok(()) => OK.into(),
                Err(e) => err(&e),
            }
        }
        Cmd::ClientCaching if n == 3 => match state.tracking_mut(shared).caching(req) {
            Ok(()) => OK.into(),
            Err(e) => err(&e),
        },
        Cmd::ClientTrackingInfo if n == 2 => {
            let proto = state.proto;
            state.tracking_mut(shared).info(proto).into()
        }
        Cmd::ClientGetRedir if n == 2 => {
            let id = state.tracking.as_ref().map_or(-1, |t| t.redirect_id());
            let mut e = Encoder::new(state.proto);
            e.integer(id);
            e.finish().into()
        }
        Cmd::CommandCount if n == 2 => match crate::command::answer::count() {
            Some(c) => {
                let mut e = Encoder::new(state.proto);
                e.integer(c);
                e.finish().into()
            }
            None => err("ERR slotgate: no server has described its commands yet"),
        },
        Cmd::CommandInfo | Cmd::Command => {
            let reply = if n <= 2 {
                crate::command::answer::all(state.proto)
            } else {
                crate::command::answer::info((2..n).map(|i| req.arg(i)), state.proto)
            };
            reply
                .map(LocalReply::from)
                .unwrap_or_else(|| err("ERR slotgate: no server has described its commands yet"))
        }
        Cmd::ReadOnly | Cmd::ReadWrite if n == 1 => OK.into(),
        Cmd::Reset if n == 1 => {
            let enabled = state.batch.enabled;
            let entry = state.entry.take();
            let read_from = state.read_from;
            *state = ClientState::new(state.id, shared.live().password.is_some());
            state.read_from = read_from;
            state.batch.enabled = enabled;
            state.entry = entry;
            state.publish_details();
            let mut e = Encoder::new(Proto::Resp2);
            e.simple("RESET");
            e.finish().into()
        }
        _ => wrong_args(name),
    }
}

fn bulk(proto: Proto, v: &[u8]) -> LocalReply {
    let mut e = Encoder::new(proto);
    e.bulk(v);
    e.finish().into()
}

/// `HELLO [protover [AUTH username password] [SETNAME clientname]]`.
fn hello(req: &Request, state: &mut ClientState, shared: &Shared) -> LocalReply {
    let mut proto = state.proto;
    let mut i = 1;
    if req.len() > 1 {
        proto = match crate::resp::request::parse_i64(req.arg(1)) {
            Some(2) => Proto::Resp2,
            Some(3) => Proto::Resp3,
            Some(_) => return err("NOPROTO unsupported protocol version"),
            None => return err("ERR Protocol version is not an integer or out of range"),
        };
        i = 2;
    }
    // AUTH's credentials were checked before (`auth::login`).
    let mut setname = None;
    while i < req.len() {
        let opt = req.arg(i);
        if opt.eq_ignore_ascii_case(b"AUTH") && i + 2 < req.len() {
            i += 3;
        } else if opt.eq_ignore_ascii_case(b"SETNAME") && i + 1 < req.len() {
            setname = Some(req.arg_bytes(i + 1));
            i += 2;
        } else {
            return err(&format!(
                "ERR Syntax error in HELLO option '{}'",
                String::from_utf8_lossy(opt)
            ));
        }
    }
    if !state.authenticated {
        return err(
            "NOAUTH HELLO must be called with the client already authenticated, \
                    otherwise the HELLO <proto> AUTH <user> <pass> option can be used to \
                    authenticate the client and select the RESP protocol version at the \
                    same time",
        );
    }
    if let Some(name) = setname {
        if !valid_name(&name) {
            return err("ERR Client names cannot contain spaces, newlines or special characters.");
        }
        state.name = (!name.is_empty()).then_some(name);
    }
    state.proto = proto;
    state.publish_details();
    let version = shared
        .primary
        .topology
        .redis_version()
        .map_or_else(|| "7.0.0".to_string(), |v| v.to_string());
    let mut e = Encoder::new(proto);
    e.map(7)
        .bulk(b"server")
        .bulk(b"redis")
        .bulk(b"version")
        .bulk(version.as_bytes())
        .bulk(b"proto")
        .integer(proto.version())
        .bulk(b"id")
        .integer(state.id as i64)
        .bulk(b"mode")
        .bulk(b"standalone")
        .bulk(b"role")
        .bulk(b"master")
        .bulk(b"modules")
        .array(0);
    e.finish().into()
}

fn valid_name(name: &[u8]) -> bool {
    name.iter().all(|&c| (b'!'..=b'~').contains(&c))
}

/// `CLIENT` subcommands: they concern this connection, or slotgate's clients.
fn client(spec: &CmdSpec, req: &Request, state: &mut ClientState, shared: &Shared) -> LocalReply {
    let n = req.len();
    let wrong = || wrong_args(spec.name);
    match spec.cmd {
        Cmd::ClientSetName if n == 3 => {
            let name = req.arg_bytes(2);
            if !valid_name(&name) {
                return err(
                    "ERR Client names cannot contain spaces, newlines or special characters.",
                );
            }
            state.name = (!name.is_empty()).then_some(name);
            state.publish_details();
            OK.into()
        }
        Cmd::ClientGetName if n == 2 => {
            let mut e = Encoder::new(state.proto);
            match &state.name {
                Some(name) => e.bulk(name),
                None => e.null(),
            };
            e.finish().into()
        }
        Cmd::ClientId if n == 2 => {
            let mut e = Encoder::new(state.proto);
            e.integer(state.id as i64);
            e.finish().into()
        }
        Cmd::ClientSetInfo if n == 4 => {
            let attr = req.arg(2);
            let value = req.arg_bytes(3);
            if !valid_name(&value) && !value.is_empty() {
                return err(
                    "ERR lib-name and lib-ver cannot contain spaces, newlines or special characters.",
                );
            }
            if attr.eq_ignore_ascii_case(b"LIB-NAME") {
                state.lib_name = Some(value);
            } else if attr.eq_ignore_ascii_case(b"LIB-VER") {
                state.lib_ver = Some(value);
            } else {
                return err(&format!(
                    "ERR Unrecognized option '{}'",
                    String::from_utf8_lossy(attr)
                ));
            }
            state.publish_details();
            OK.into()
        }
        Cmd::ClientInfo if n == 2 => {
            let line = match &state.entry {
                Some(entry) => entry.line(),
                None => format!("id={}\n", state.id),
            };
            let mut e = Encoder::new(state.proto);
            e.verbatim_text(line.as_bytes());
            e.finish().into()
        }
        Cmd::ClientList => {
            let ids = match n {
                2 => None,
                _ if n > 3 && req.arg(2).eq_ignore_ascii_case(b"ID") => {
                    let mut ids = Vec::with_capacity(n - 3);
                    for i in 3..n {
                        match crate::resp::request::parse_i64(req.arg(i)).filter(|&v| v > 0) {
                            Some(v) => ids.push(v as u64),
                            None => return err("ERR Invalid client ID"),
                        }
                    }
                    Some(ids)
                }
                // TYPE normal lists everyone: slotgate's clients are all normal ones.
                4 if req.arg(2).eq_ignore_ascii_case(b"TYPE")
                    && req.arg(3).eq_ignore_ascii_case(b"NORMAL") =>
                {
                    None
                }
                4 if req.arg(2).eq_ignore_ascii_case(b"TYPE") => Some(Vec::new()),
                _ => return err("ERR syntax error"),
            };
            let text = shared.clients.list(ids.as_deref());
            let mut e = Encoder::new(state.proto);
            e.verbatim_text(text.as_bytes());
            e.finish().into()
        }
        Cmd::ClientReply if n == 3 => {
            let mode = req.arg(2);
            let (mode, silent) = if mode.eq_ignore_ascii_case(b"ON") {
                (ReplyMode::On, false)
            } else if mode.eq_ignore_ascii_case(b"OFF") {
                (ReplyMode::Off, true)
            } else if mode.eq_ignore_ascii_case(b"SKIP") {
                (ReplyMode::Skip, true)
            } else {
                return err("ERR syntax error");
            };
            // OFF and SKIP are not answered; ON is, even after OFF.
            state.replies = mode;
            state.silence_this = Some(silent);
            OK.into()
        }
        // Per-connection eviction/LRU hints have no meaning for a proxied connection whose
        // backend connections are shared; accept them as no-ops.
        Cmd::ClientNoOp if n == 3 => OK.into(),
        // redis-py 8 asks every RESP3 connection for maintenance push notifications: none
        // come from slotgate, whose clients never see a node move.
        Cmd::ClientMaintNotifications if n >= 3 => match state.proto {
            Proto::Resp3 => {
                // ON asks for the MOVING push slotgate sends when it shuts down (`drain`).
                state.maint_notifications = req.arg(2).eq_ignore_ascii_case(b"ON");
                OK.into()
            }
            Proto::Resp2 => {
                err("ERR CLIENT MAINT_NOTIFICATIONS requires the RESP3 protocol (HELLO 3)")
            }
        },
        _ => wrong(),
    }
}
