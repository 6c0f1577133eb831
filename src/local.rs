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
    /// This connection's mirror feed (multi-write), opened on its first mirrored write.
    pub mirror_feed: Option<tokio::sync::mpsc::Sender<crate::mirror::Job>>,
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
            mirror_feed: None,
            written: Default::default(),
            batch: Default::default(),
            barrier: false,
            blocking: false,
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
    err(&format!(
        "ERR wrong number of arguments for '{}' command",
        name.to_ascii_lowercase()
    ))
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
        Cmd::Auth if n == 2 || n == 3 => {
            let (user, pass) = if n == 2 {
                (None, req.arg(1))
            } else {
                (Some(req.arg(1)), req.arg(2))
            };
            match check_auth(shared, user, pass) {
                Ok(()) => {
                    state.authenticated = true;
                    OK.into()
                }
                Err(e) => e,
            }
        }
        Cmd::Hello => hello(req, state, shared),
        Cmd::Client if n >= 2 => client(req, state),
        Cmd::ReadOnly | Cmd::ReadWrite if n == 1 => OK.into(),
        Cmd::Reset if n == 1 => {
            let enabled = state.batch.enabled;
            *state = ClientState::new(state.id, shared.config.password.is_some());
            state.batch.enabled = enabled;
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

/// Checks AUTH credentials against the configured client password, with Redis's replies.
fn check_auth(shared: &Shared, user: Option<&[u8]>, pass: &[u8]) -> Result<(), LocalReply> {
    let Some(expected) = shared.config.password.as_deref() else {
        return match user {
            // The default user has no password: any password is accepted, as Redis does.
            Some(b"default") => Ok(()),
            Some(_) => Err(err(
                "WRONGPASS invalid username-password pair or user is disabled.",
            )),
            None => Err(err(
                "ERR AUTH <password> called without any password configured for the \
                 default user. Are you sure your configuration is correct?",
            )),
        };
    };
    let user_ok = user.is_none_or(|u| u == b"default");
    if user_ok && pass == expected.as_bytes() {
        Ok(())
    } else {
        Err(err(
            "WRONGPASS invalid username-password pair or user is disabled.",
        ))
    }
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
    let mut auth = None;
    let mut setname = None;
    while i < req.len() {
        let opt = req.arg(i);
        if opt.eq_ignore_ascii_case(b"AUTH") && i + 2 < req.len() {
            auth = Some((req.arg(i + 1), req.arg(i + 2)));
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
    if let Some((user, pass)) = auth {
        if let Err(e) = check_auth(shared, Some(user), pass) {
            return e;
        }
        state.authenticated = true;
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

/// `CLIENT` subcommands that concern this connection only.
fn client(req: &Request, state: &mut ClientState) -> LocalReply {
    let sub = req.arg(1).to_ascii_uppercase();
    let n = req.len();
    match (&sub[..], n) {
        (b"SETNAME", 3) => {
            let name = req.arg_bytes(2);
            if !valid_name(&name) {
                return err(
                    "ERR Client names cannot contain spaces, newlines or special characters.",
                );
            }
            state.name = (!name.is_empty()).then_some(name);
            OK.into()
        }
        (b"GETNAME", 2) => {
            let mut e = Encoder::new(state.proto);
            match &state.name {
                Some(name) => e.bulk(name),
                None => e.null(),
            };
            e.finish().into()
        }
        (b"ID", 2) => {
            let mut e = Encoder::new(state.proto);
            e.integer(state.id as i64);
            e.finish().into()
        }
        (b"SETINFO", 4) => {
            let attr = req.arg(2).to_ascii_uppercase();
            let value = req.arg_bytes(3);
            if !valid_name(&value) && !value.is_empty() {
                return err(
                    "ERR lib-name and lib-ver cannot contain spaces, newlines or special characters.",
                );
            }
            match &attr[..] {
                b"LIB-NAME" => state.lib_name = Some(value),
                b"LIB-VER" => state.lib_ver = Some(value),
                _ => {
                    return err(&format!(
                        "ERR Unrecognized option '{}'",
                        String::from_utf8_lossy(req.arg(2))
                    ));
                }
            }
            OK.into()
        }
        (b"INFO", 2) => {
            let line = format!(
                "id={} name={} resp={} lib-name={} lib-ver={}\n",
                state.id,
                lossy(&state.name),
                state.proto.version(),
                lossy(&state.lib_name),
                lossy(&state.lib_ver),
            );
            let mut e = Encoder::new(state.proto);
            e.verbatim_text(line.as_bytes());
            e.finish().into()
        }
        // Per-connection eviction/LRU hints have no meaning for a proxied connection whose
        // backend connections are shared; accept them as no-ops.
        (b"NO-EVICT" | b"NO-TOUCH", 3) => OK.into(),
        (b"SETNAME" | b"GETNAME" | b"ID" | b"SETINFO" | b"INFO" | b"NO-EVICT" | b"NO-TOUCH", _) => {
            err(&format!(
                "ERR wrong number of arguments for 'client|{}' command",
                String::from_utf8_lossy(&sub).to_ascii_lowercase()
            ))
        }
        _ => err(&format!(
            "ERR slotgate does not support 'CLIENT {}': only SETNAME, GETNAME, ID, SETINFO, \
             INFO, NO-EVICT and NO-TOUCH are answered",
            String::from_utf8_lossy(req.arg(1))
        )),
    }
}

fn lossy(v: &Option<Bytes>) -> String {
    v.as_deref()
        .map(|b| String::from_utf8_lossy(b).into_owned())
        .unwrap_or_default()
}
