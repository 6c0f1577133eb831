//! What happens to one parsed request: answered locally, forwarded to one slot's master,
//! split across slots, sent to every master, or handled by a special path (SCAN, RANDOMKEY,
//! SCRIPT, FUNCTION). `handle` queues the first attempts in request order; `complete` turns
//! the result into the client's reply.

use bytes::Bytes;

use crate::backend::conn::Deadline;
use futures::future::join_all;
use rand::seq::SliceRandom;

use crate::batch::BatchedCommand;
use crate::command::{CmdSpec, Fan, Handling, Kind, lookup};
use crate::dispatch::{Flight, SendOptions, Submitted, Target};
use crate::info::{self, InfoScope};
use crate::local::{self, ClientState};
use crate::mirror::{self, Ticket};
use crate::multikey::{self, Merge};
use crate::pubsub::{Subscriptions, is_subscription_command};
use crate::resp::encode::error;
use crate::resp::reply::bulk_body;
use crate::resp::{Proto, Request};
use crate::scan::{self, ScanStep};
use crate::shared::Shared;
use crate::transaction::TxReply;
use crate::wait::{self, Written};

/// What to do with a request once it is parsed.
#[derive(Debug)]
pub enum Step {
    /// Answered already.
    Ready(Bytes),
    /// Sent to the cluster; `post` adjusts the reply.
    Remote { flight: Flight, post: Post },
    /// Sent in parts (per slot, or to every master); the replies merge into one.
    FanOut {
        flights: Vec<Flight>,
        merge: Merge,
        post: Post,
    },
    /// RANDOMKEY: masters asked in random order until one has a key.
    RandomKey { opts: SendOptions },
    /// Part of a transaction, on its pinned connection.
    Tx(TxReply),
    /// WAIT / WAITAOF on the masters this client wrote to.
    Wait { req: Request, written: Written },
    /// A plain command queued in this read's batch for its node.
    Batched(BatchedCommand),
    /// A multi-key command split per slot, its parts queued in their nodes' batches.
    BatchedSplit {
        parts: Vec<BatchedCommand>,
        merge: Merge,
    },
    /// A write also sent to the mirrors: the inner step's reply settles the ticket.
    Mirrored { inner: Box<Step>, ticket: Ticket },
}

/// Adjustments to a reply after it arrives.
#[derive(Debug)]
pub enum Post {
    None,
    /// INFO: rewrite for the client (slotgate section, cluster_enabled:0), with the keyspace
    /// section summed from these flights (one per master) when it was asked for.
    Info {
        scope: InfoScope,
        keyspace: Vec<Flight>,
    },
    /// SCAN: replace the node's cursor with the client-facing one.
    Scan {
        step: ScanStep,
        masters: usize,
    },
    /// SCRIPT LOAD: remember the body under the SHA the nodes answered.
    RememberScript(Bytes),
    /// SCRIPT FLUSH: forget remembered bodies once the nodes flushed theirs.
    ForgetScripts,
    /// EVALSHA: on NOSCRIPT, load the remembered body on every master and retry once.
    EvalSha(Request),
}

fn ready(reply: Bytes) -> (Step, bool) {
    (Step::Ready(reply), false)
}

fn remote(flight: Flight, post: Post) -> (Step, bool) {
    (Step::Remote { flight, post }, false)
}

/// Decides what to do with one request and queues its first attempts; the bool is true when
/// the connection closes after its reply.
/// `spec` is the request's command-table entry (`command::lookup`).
pub async fn handle(
    shared: &Shared,
    state: &mut ClientState,
    req: Request,
    spec: Option<&'static CmdSpec>,
) -> (Step, bool) {
    let name = spec.map_or("", |s| s.name);
    if !state.authenticated && !matches!(name, "AUTH" | "HELLO" | "QUIT" | "RESET") {
        return ready(error("NOAUTH Authentication required."));
    }
    if let Some(spec) = spec
        && matches!(spec.kind, Kind::Write | Kind::Blocking)
    {
        state
            .written
            .record_keys(spec.key_indices(&req).map(|i| req.arg(i)));
    }
    if let Some(spec) = spec
        && let Some(step) = try_batch(shared, state, spec, &req)
    {
        return (step, false);
    }
    // Anything else may send on the connections the open batches are for: send those first,
    // so the node sees this client's commands in order.
    if state.batch.has_open() && spec.is_none_or(|s| s.handling != Handling::Local) {
        state.batch.flush(shared).await;
    }
    let subscribed = state.subs.as_ref().is_some_and(|s| s.active());
    if subscribed
        && state.proto == Proto::Resp2
        && !(is_subscription_command(name) || matches!(name, "PING" | "QUIT" | "RESET"))
    {
        return ready(error(&format!(
            "ERR Can't execute '{}': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / \
             RESET are allowed in this context",
            String::from_utf8_lossy(req.arg(0)).to_ascii_lowercase()
        )));
    }
    let in_multi = state.txn.takes(spec);
    if !in_multi
        && (is_subscription_command(name)
            || (name == "PING" && subscribed && state.proto == Proto::Resp2))
    {
        let limit = shared.config.limits.pubsub_output_buffer;
        let proto = state.proto;
        let subs = state
            .subs
            .get_or_insert_with(|| Subscriptions::new(proto, limit));
        let reply = subs.command(shared, name, &req).await;
        // Confirmations arrive as frames from the subscriber connections.
        return ready(reply.unwrap_or_default());
    }
    if in_multi && !matches!(name, "QUIT" | "RESET") {
        state.barrier = matches!(name, "EXEC" | "DISCARD");
        let reply = state.txn.handle(shared, state.proto, spec, req).await;
        return (Step::Tx(reply), false);
    }
    let Some(spec) = spec else {
        return ready(unknown_command(&req));
    };
    let opts = client_opts(shared, state, spec);
    match spec.handling_of(&req) {
        Handling::Local => {
            let r = local::answer(spec.name, &req, state, shared);
            (Step::Ready(r.reply), r.close)
        }
        Handling::Refused(reason) => {
            ready(error(&format!("ERR slotgate: '{}' {reason}", spec.name)))
        }
        Handling::Info => {
            let scope = info::scope(&req);
            if scope == InfoScope::SlotgateOnly {
                return ready(info::local_reply(shared, state.proto).await);
            }
            let keyspace = if info::wants_keyspace(&req) {
                let raw = Request::from_args(&["INFO", "keyspace"]).raw;
                shared.primary.start_all(&raw, opts).await
            } else {
                Vec::new()
            };
            let flight = shared.primary.start(req.raw, Target::Any, opts).await;
            remote(flight, Post::Info { scope, keyspace })
        }
        Handling::AllMasters(_) => {
            let submitted = shared.primary.submit(spec, &req, opts).await;
            let step = from_submitted(submitted, Post::None);
            mirror(shared, state, spec, &req, step).await
        }
        Handling::Special => {
            let (mut step, close) = special(shared, spec, req, opts).await;
            if let Step::Wait { written, .. } = &mut step {
                *written = std::mem::take(&mut state.written);
            }
            (step, close)
        }
        Handling::Forward | Handling::Subcommands { .. } => {
            let mirrored = shared.mirrors.is_some() && mirror::mirrored(spec);
            let copy = mirrored.then(|| req.clone());
            let step = forward(shared, state, spec, req, opts).await;
            match copy {
                Some(req) => mirror(shared, state, spec, &req, step).await,
                None => step,
            }
        }
    }
}

fn fan_out(flights: Vec<Flight>, fan: Fan, post: Post) -> (Step, bool) {
    if flights.is_empty() {
        return ready(error("CLUSTERDOWN The cluster is down"));
    }
    let merge = Merge::from(fan);
    (
        Step::FanOut {
            flights,
            merge,
            post,
        },
        false,
    )
}

/// Commands routed by their keys; multi-key commands across slots are split when they can
/// be, and refused with CROSSSLOT otherwise.
async fn forward(
    shared: &Shared,
    state: &mut ClientState,
    spec: &CmdSpec,
    req: Request,
    opts: SendOptions,
) -> (Step, bool) {
    let dedicated = spec.is_blocking(&req);
    let opts = SendOptions {
        dedicated,
        deadline: if dedicated {
            Deadline::for_block_time(spec.block_time(&req))
        } else {
            Deadline::Default
        },
        ..opts
    };
    state.barrier |= opts.dedicated;
    state.blocking = opts.dedicated;
    let post = if spec.name == "EVALSHA" || spec.name == "EVALSHA_RO" {
        Post::EvalSha(req.clone())
    } else {
        Post::None
    };
    let submitted = shared.primary.submit(spec, &req, opts).await;
    from_submitted(submitted, post)
}

/// How a client's command is sent: its protocol and connection choice; reads may be retried
/// and may go to replicas (`read_from`), everything else goes to masters.
fn client_opts(shared: &Shared, state: &ClientState, spec: &CmdSpec) -> SendOptions {
    let read = spec.kind == Kind::Read;
    SendOptions {
        proto: state.proto,
        session: state.id,
        idempotent: read,
        dedicated: false,
        deadline: Deadline::Default,
        read_from: if read {
            shared.config.cluster.read_from
        } else {
            crate::config::ReadFrom::Master
        },
    }
}

/// Puts a plain forwarded command into this read's batch for its node, when it is one.
fn try_batch(
    shared: &Shared,
    state: &mut ClientState,
    spec: &'static CmdSpec,
    req: &Request,
) -> Option<Step> {
    let plain = state.batch.enabled
        && state.authenticated
        // Reads are never mirrored: with mirrors configured they are batched all the same.
        && (shared.mirrors.is_none() || !mirror::mirrored(spec))
        && spec.handling == Handling::Forward
        && !state.txn.takes(Some(spec))
        && !state.subs.as_ref().is_some_and(|s| s.active())
        && !matches!(spec.name, "EVALSHA" | "EVALSHA_RO")
        && !spec.is_blocking(req);
    if !plain {
        return None;
    }
    let opts = client_opts(shared, state, spec);
    let target = match spec.slot(req) {
        Ok(Some(slot)) => Target::Slot(slot),
        Ok(None) => Target::Any,
        Err(_) => {
            // Keys across slots: the parts of a split command join their nodes' batches.
            let (parts, merge) = multikey::split(spec.name, req)?;
            let mut routed = Vec::with_capacity(parts.len());
            for part in &parts {
                routed.push(shared.primary.route(&Target::Slot(part.slot), &opts)?);
            }
            let parts = parts
                .into_iter()
                .zip(routed)
                .map(|(part, addr)| {
                    state
                        .batch
                        .add(&addr, part.raw, Target::Slot(part.slot), opts)
                })
                .collect();
            return Some(Step::BatchedSplit { parts, merge });
        }
    };
    let batch = &mut state.batch;
    let cmd = shared.primary.route_with(&target, &opts, |addr| {
        batch.add(addr, req.raw.clone(), target.clone(), opts)
    })?;
    Some(Step::Batched(cmd))
}

/// Hands a write to the mirrors, when there are any and the primary did not refuse it
/// before sending (CROSSSLOT and the like are answered at once and not mirrored).
async fn mirror(
    shared: &Shared,
    state: &mut ClientState,
    spec: &'static CmdSpec,
    req: &Request,
    (step, close): (Step, bool),
) -> (Step, bool) {
    let Some(mirrors) = &shared.mirrors else {
        return (step, close);
    };
    if matches!(step, Step::Ready(_)) || !mirror::mirrored(spec) {
        return (step, close);
    }
    match mirrors.submit(&mut state.mirror_feed, spec, req).await {
        Some(ticket) => (
            Step::Mirrored {
                inner: Box::new(step),
                ticket,
            },
            close,
        ),
        None => (step, close),
    }
}

fn from_submitted(submitted: Submitted, post: Post) -> (Step, bool) {
    match submitted {
        Submitted::One(flight) => remote(flight, post),
        Submitted::Many(flights, merge) => (
            Step::FanOut {
                flights,
                merge,
                post,
            },
            false,
        ),
        Submitted::Done(reply) => ready(reply),
    }
}

/// SCAN, RANDOMKEY, SCRIPT and FUNCTION.
async fn special(shared: &Shared, spec: &CmdSpec, req: Request, opts: SendOptions) -> (Step, bool) {
    let sub = (req.len() > 1).then(|| req.arg(1).to_ascii_uppercase());
    match (spec.name, sub.as_deref()) {
        ("SCAN", _) => {
            let masters = shared.primary.serving_masters();
            let table = shared.primary.topology.table();
            let master_of_slot = |slot| {
                let addr = &table.master_for(slot)?.addr;
                masters.iter().position(|m| m == addr)
            };
            match scan::plan(&req, masters.len(), master_of_slot) {
                Err(e) => ready(e),
                Ok(step) => {
                    let target = Target::Node(masters[step.master].clone());
                    let flight = shared.primary.start(step.raw.clone(), target, opts).await;
                    remote(
                        flight,
                        Post::Scan {
                            step,
                            masters: masters.len(),
                        },
                    )
                }
            }
        }
        ("RANDOMKEY", _) if req.len() == 1 => (Step::RandomKey { opts }, false),
        ("WAIT", _) if req.len() == 3 => (
            Step::Wait {
                req,
                written: Default::default(),
            },
            false,
        ),
        ("WAITAOF", _) if req.len() == 4 => (
            Step::Wait {
                req,
                written: Default::default(),
            },
            false,
        ),
        ("SCRIPT", Some(b"LOAD")) if req.len() == 3 => {
            let flights = shared.primary.start_all(&req.raw, opts).await;
            fan_out(flights, Fan::First, Post::RememberScript(req.arg_bytes(2)))
        }
        ("SCRIPT", Some(b"FLUSH")) => {
            let flights = shared.primary.start_all(&req.raw, opts).await;
            fan_out(flights, Fan::First, Post::ForgetScripts)
        }
        ("SCRIPT", Some(b"EXISTS")) => {
            let flights = shared.primary.start_all(&req.raw, opts).await;
            fan_out(flights, Fan::AllOf, Post::None)
        }
        ("SCRIPT", Some(b"KILL"))
        | ("FUNCTION", Some(b"LOAD" | b"DELETE" | b"FLUSH" | b"RESTORE" | b"KILL")) => {
            let flights = shared.primary.start_all(&req.raw, opts).await;
            fan_out(flights, Fan::First, Post::None)
        }
        ("FUNCTION", Some(b"LIST" | b"DUMP" | b"STATS" | b"HELP")) | ("SCRIPT", Some(b"HELP")) => {
            let flight = shared.primary.start(req.raw, Target::Any, opts).await;
            remote(flight, Post::None)
        }
        // Read-only topology questions get a standalone server's answer, so clients that
        // probe for cluster mode stay in standalone mode; cluster administration is refused.
        (
            "CLUSTER",
            Some(
                b"INFO" | b"NODES" | b"SLOTS" | b"SHARDS" | b"MYID" | b"MYSHARDID" | b"LINKS"
                | b"KEYSLOT" | b"COUNTKEYSINSLOT" | b"GETKEYSINSLOT" | b"REPLICAS" | b"SLAVES",
            ),
        ) => ready(error(&format!("ERR {}", crate::command::CLUSTER_DISABLED))),
        ("CLUSTER", Some(other)) => ready(error(&format!(
            "ERR slotgate: 'CLUSTER {}' {}",
            String::from_utf8_lossy(other),
            crate::command::NODE_ADMIN
        ))),
        ("SCRIPT" | "FUNCTION", Some(other)) => ready(error(&format!(
            "ERR slotgate does not support '{} {}'",
            spec.name,
            String::from_utf8_lossy(other)
        ))),
        _ => ready(error(&format!(
            "ERR wrong number of arguments for '{}' command",
            spec.name.to_ascii_lowercase()
        ))),
    }
}

/// Turns a step into the client's reply.
pub async fn complete(shared: &Shared, step: Step, proto: Proto) -> Bytes {
    match step {
        Step::Mirrored { inner, ticket } => {
            let reply = complete_one(shared, *inner, proto).await;
            ticket.settle(reply).await
        }
        other => complete_one(shared, other, proto).await,
    }
}

async fn complete_one(shared: &Shared, step: Step, proto: Proto) -> Bytes {
    match step {
        Step::Mirrored { .. } => error("ERR slotgate: nested mirrored write"),
        Step::Batched(_) | Step::BatchedSplit { .. } => {
            error("ERR slotgate: a batched command outside its connection")
        }
        Step::Ready(reply) => reply,
        Step::Remote { flight, post } => {
            let reply = shared.primary.finish(flight).await;
            apply(shared, post, reply, proto).await
        }
        Step::FanOut {
            flights,
            merge,
            post,
        } => {
            let replies = join_all(flights.into_iter().map(|f| shared.primary.finish(f))).await;
            let reply = multikey::merge(&merge, &replies);
            apply(shared, post, reply, proto).await
        }
        Step::RandomKey { opts } => random_key(shared, opts).await,
        Step::Tx(reply) => reply.wait().await,
        Step::Wait { req, mut written } => wait::run(shared, &mut written, req, proto).await,
    }
}

async fn apply(shared: &Shared, post: Post, reply: Bytes, proto: Proto) -> Bytes {
    match post {
        Post::None => reply,
        Post::Info { scope, keyspace } => {
            let keyspace = if keyspace.is_empty() {
                None
            } else {
                let replies =
                    join_all(keyspace.into_iter().map(|f| shared.primary.finish(f))).await;
                Some(info::sum_keyspace(&replies))
            };
            info::rewrite(reply, shared, proto, scope, keyspace).await
        }
        Post::Scan { step, masters } => scan::rewrite(&reply, &step, masters),
        Post::RememberScript(body) => {
            if let Some(sha) = bulk_body(&reply) {
                shared
                    .scripts
                    .insert(Bytes::copy_from_slice(&sha.to_ascii_lowercase()), body);
            }
            reply
        }
        Post::ForgetScripts => {
            if reply.first() != Some(&b'-') {
                shared.scripts.clear();
            }
            reply
        }
        Post::EvalSha(req) => {
            if !reply.starts_with(b"-NOSCRIPT") || req.len() < 2 {
                return reply;
            }
            let sha = req.arg(1).to_ascii_lowercase();
            let Some(body) = shared.scripts.get(&sha[..]).map(|b| b.clone()) else {
                return reply;
            };
            let opts = SendOptions {
                proto,
                ..SendOptions::internal()
            };
            let load = Request::from_args(&[&b"SCRIPT"[..], b"LOAD", &body]);
            let loads = shared.primary.start_all(&load.raw, opts).await;
            join_all(loads.into_iter().map(|f| shared.primary.finish(f))).await;
            let spec = lookup(req.arg(0)).expect("EVALSHA is in the table");
            let target = match spec.slot(&req) {
                Ok(Some(slot)) => Target::Slot(slot),
                _ => Target::Any,
            };
            let flight = shared.primary.start(req.raw, target, opts).await;
            shared.primary.finish(flight).await
        }
    }
}

/// RANDOMKEY: ask masters in random order until one returns a key; nil when all are empty.
async fn random_key(shared: &Shared, opts: SendOptions) -> Bytes {
    let mut masters = shared.primary.serving_masters();
    masters.shuffle(&mut rand::thread_rng());
    let raw = Request::from_args(&["RANDOMKEY"]).raw;
    let mut last = None;
    for addr in masters {
        let flight = shared
            .primary
            .start(raw.clone(), Target::Node(addr), opts)
            .await;
        let reply = shared.primary.finish(flight).await;
        let empty = matches!(&reply[..], b"$-1\r\n" | b"_\r\n");
        if !empty {
            return reply;
        }
        last = Some(reply);
    }
    last.unwrap_or_else(|| error("CLUSTERDOWN The cluster is down"))
}

/// Redis's reply for a command it does not know, naming the command and its first args.
fn unknown_command(req: &Request) -> Bytes {
    let mut msg = format!(
        "ERR unknown command '{}', with args beginning with: ",
        String::from_utf8_lossy(&req.arg(0)[..req.arg(0).len().min(128)])
    );
    for i in 1..req.len().min(4) {
        let a = req.arg(i);
        msg.push_str(&format!(
            "'{}' ",
            String::from_utf8_lossy(&a[..a.len().min(128)])
        ));
    }
    error(&msg)
}
