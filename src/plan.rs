//! What happens to one parsed request: answered locally, forwarded to one slot's master,
//! split across slots, sent to every master, or handled by a special path (SCAN, RANDOMKEY,
//! SCRIPT, FUNCTION). `handle` queues the first attempts in request order; `complete` turns
//! the result into the client's reply.

use bytes::Bytes;

use crate::backend::conn::Deadline;
use futures::future::join_all;
use rand::seq::SliceRandom;

use crate::batch::BatchedCommand;
use crate::command::{Cmd, CmdSpec, Flags, Route, resolve};
use crate::dispatch::{Flight, SendOptions, Submitted, Target};
use crate::info::{self, InfoScope};
use crate::local::{self, ClientState};
use crate::mirror::{self, Ticket};
use crate::multikey::{self, Merge};
use crate::pubsub::Subscriptions;
use crate::resp::encode::error;
use crate::resp::reply::{bulk_body, elements};
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
    Wait {
        req: Request,
        written: Written,
        user: crate::backend::users::UserId,
    },
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
    /// INFO: rewrite for the client (slotgate section, cluster_enabled:0), with counters
    /// and the keyspace summed over the other masters' replies (`others`).
    Info {
        scope: InfoScope,
        others: Vec<Flight>,
    },
    /// SCRIPT EXISTS: a script slotgate remembers counts as present (EVALSHA through
    /// slotgate loads it wherever it is missing).
    ScriptExists(Request),
    /// SCAN: replace the node's cursor with the client-facing one.
    Scan {
        step: ScanStep,
    },
    /// SCRIPT LOAD: remember the body under the SHA the nodes answered.
    RememberScript(Bytes),
    /// SCRIPT FLUSH: forget remembered bodies once the nodes flushed theirs.
    ForgetScripts,
    /// EVALSHA: on NOSCRIPT, load the remembered body on every master and retry once.
    EvalSha(Request),
    /// PUBSUB NUMSUB / NUMPAT summed over the masters: the keyspace subscriptions slotgate
    /// made on every master counted once (`pubsub::fanned`).
    DiscountFanned,
    /// CONFIG GET: secret values redacted.
    RedactConfig,
    /// COMMAND LIST: only the commands slotgate accepts.
    FilterCommandNames,
    /// COMMAND DOCS: only the commands slotgate accepts.
    FilterCommandDocs,
    /// EVAL: once it ran, its body is cached on that master as SCRIPT LOAD would: remember
    /// it, so SCRIPT EXISTS and EVALSHA find it.
    RememberEval(Bytes),
}

/// Most script bodies remembered from EVAL (beyond it, EVAL bodies are not remembered).
const MAX_REMEMBERED_EVAL_SCRIPTS: usize = 10_000;

fn ready(reply: Bytes) -> (Step, bool) {
    (Step::Ready(reply), false)
}

fn remote(flight: Flight, post: Post) -> (Step, bool) {
    (Step::Remote { flight, post }, false)
}

/// Decides what to do with one request and queues its first attempts; the bool is true when
/// the connection closes after its reply.
/// `spec` is the request's resolved command entry (`command::resolve`).
pub async fn handle(
    shared: &Shared,
    state: &mut ClientState,
    req: Request,
    spec: Option<&'static CmdSpec>,
) -> (Step, bool) {
    let cmd = spec.map_or(Cmd::Plain, |s| s.cmd);
    let flags = spec.map_or(Flags::NONE, |s| s.flags);
    if !state.authenticated && !flags.contains(Flags::NO_AUTH) {
        return ready(error("NOAUTH Authentication required."));
    }
    // AUTH and HELLO ... AUTH log in first (a check against the cluster may take a round
    // trip); the local handler then answers the rest of the command.
    if matches!(cmd, Cmd::Auth | Cmd::Hello)
        && !state.txn.takes(spec)
        && let Some((user, pass)) = crate::auth::credentials(cmd, &req)
        && let Err(reply) = Box::pin(crate::auth::login(shared, state, user, pass)).await
    {
        return ready(reply);
    }
    if let Some(spec) = spec
        && spec.is_write()
    {
        state
            .written
            .record_keys(spec.key_indices(&req).map(|i| req.arg(i)));
    }
    if let Some(tracking) = state.tracking.as_mut()
        && let Some(spec) = spec
    {
        tracking.before_command(spec, &req);
    }
    if let Some(spec) = spec
        && let Some(step) = try_batch(shared, state, spec, &req)
    {
        // A mirrored write is handed to the mirrors as it is sent to the primary.
        return mirror(state, spec, &req, (step, false)).await;
    }
    // Anything else may send on the connections the open batches are for: send those first,
    // so the node sees this client's commands in order.
    if state.batch.has_open() && spec.is_none_or(|s| s.route != Route::Local) {
        state.batch.flush(shared).await;
    }
    let subscribed = state.subs.as_ref().is_some_and(|s| s.active());
    if subscribed && state.proto == Proto::Resp2 && !flags.contains(Flags::SUBSCRIBER) {
        return ready(error(&format!(
            "ERR Can't execute '{}': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / \
             RESET are allowed in this context",
            String::from_utf8_lossy(req.arg(0)).to_ascii_lowercase()
        )));
    }
    let in_multi = state.txn.takes(spec);
    if let Some(spec) = spec
        && !in_multi
        && (spec.route == Route::Subscription
            || (cmd == Cmd::Ping && subscribed && state.proto == Proto::Resp2))
    {
        if cmd == Cmd::Subscribe
            && (1..req.len()).any(|i| req.arg(i) == crate::tracking::client::INVALIDATE_CHANNEL)
        {
            // The target of other clients' REDIRECT: slotgate writes their invalidations.
            state.tracking_mut(shared).listen();
        }
        let limit = shared.live().limits.pubsub_output_buffer;
        let proto = state.proto;
        let user = state.user_id();
        let subs = state
            .subs
            .get_or_insert_with(|| Subscriptions::new(proto, limit, user, shared.fanned.clone()));
        let reply = subs.command(shared, spec, &req).await;
        // Confirmations arrive as frames from the subscriber connections.
        return ready(reply.unwrap_or_default());
    }
    if in_multi && !matches!(cmd, Cmd::Quit | Cmd::Reset) {
        state.barrier = matches!(cmd, Cmd::Exec | Cmd::Discard);
        // A transaction's writes reach the mirrors as one transaction, once EXEC succeeded.
        let writes = match (&state.mirrors, cmd) {
            (Some(_), Cmd::Exec) => state.txn.take_writes(),
            _ => Vec::new(),
        };
        state.txn.user = state.user_id();
        state.txn.mirrored = state.mirrors.is_some();
        let reply = state.txn.handle(shared, state.proto, spec, req).await;
        let step = Step::Tx(reply);
        if let Some(mirrors) = &state.mirrors
            && let Some(ticket) = mirrors
                .submit_transaction(&mut state.mirror_feed, writes)
                .await
        {
            return (
                Step::Mirrored {
                    inner: Box::new(step),
                    ticket,
                },
                false,
            );
        }
        return (step, false);
    }
    let Some(spec) = spec else {
        return ready(unknown_command(&req));
    };
    let opts = client_opts(state, spec);
    let described = crate::command::learned::has_any;
    match spec.route {
        // Until a server described its commands, COMMAND is the server's own answer.
        Route::Local if matches!(cmd, Cmd::CommandCount | Cmd::CommandInfo) && !described() => {
            forward(shared, state, spec, req, opts).await
        }
        Route::Container if cmd == Cmd::Command && req.len() == 1 && !described() => {
            forward(shared, state, spec, req, opts).await
        }
        Route::Container if cmd == Cmd::Command && req.len() == 1 => {
            let r = local::answer(spec, &req, state, shared);
            (Step::Ready(r.reply), r.close)
        }
        Route::Local => {
            let was_tracking = state.tracks();
            let r = local::answer(spec, &req, state, shared);
            if cmd == Cmd::ClientTracking && !was_tracking && state.tracks() {
                // Answered once every master announces its changes to slotgate; the
                // flushes made meanwhile concern nothing this client cached.
                shared
                    .tracking
                    .wait_ready(shared.primary.timeouts.connect())
                    .await;
                state.tracking_mut(shared).skip_flushes_so_far();
            }
            (Step::Ready(r.reply), r.close)
        }
        Route::Refused(reason) => ready(error(&format!(
            "ERR slotgate: '{}' {reason}",
            spec.display_name()
        ))),
        Route::Error(text) => ready(error(text)),
        Route::Container => ready(error(&container_error(spec, &req))),
        Route::Info => {
            let scope = info::scope(&req);
            if scope == InfoScope::SlotgateOnly {
                return ready(info::local_reply(shared, state.proto).await);
            }
            // Every master answers; the first's text carries the others' counters summed.
            let mut flights = shared.primary.start_all(&req.raw, opts).await;
            if flights.is_empty() {
                return ready(crate::replies::cluster_down());
            }
            let first = flights.remove(0);
            remote(
                first,
                Post::Info {
                    scope,
                    others: flights,
                },
            )
        }
        Route::AllMasters => {
            let post = match cmd {
                Cmd::ScriptLoad if req.len() == 3 => Post::RememberScript(req.arg_bytes(2)),
                Cmd::ScriptFlush => Post::ForgetScripts,
                Cmd::ScriptExists => Post::ScriptExists(req.clone()),
                Cmd::PubsubCount => Post::DiscountFanned,
                _ => Post::None,
            };
            // SCRIPT KILL and FUNCTION KILL must reach a master busy with a script: on a
            // connection of their own, not behind the busy command.
            let opts = SendOptions {
                dedicated: spec.flags.contains(Flags::ALLOW_BUSY),
                ..opts
            };
            let submitted = shared.primary.submit(spec, &req, opts).await;
            let step = from_submitted(submitted, post);
            mirror(state, spec, &req, step).await
        }
        Route::Scan => scan(shared, req, opts).await,
        Route::RandomKey if req.len() == 1 => (Step::RandomKey { opts }, false),
        Route::Wait if matches!((cmd, req.len()), (Cmd::Wait, 3) | (Cmd::WaitAof, 4)) => (
            Step::Wait {
                req,
                written: std::mem::take(&mut state.written),
                user: state.user_id(),
            },
            false,
        ),
        Route::RandomKey | Route::Wait => ready(crate::replies::wrong_args(spec.name)),
        Route::PubSubHome => {
            let target = shared
                .primary
                .topology
                .peek()
                .pubsub_home()
                .map_or(Target::Any, |m| Target::Node(m.addr.clone()));
            let copy = (state.mirrors.is_some() && mirror::mirrored(spec)).then(|| req.clone());
            let flight = shared.primary.start(req.raw, target, opts).await;
            let step = remote(flight, Post::None);
            match copy {
                Some(req) => mirror(state, spec, &req, step).await,
                None => step,
            }
        }
        Route::Slot | Route::Split(_) | Route::Transaction | Route::Subscription => {
            let mirrored = state.mirrors.is_some() && mirror::mirrored(spec);
            let copy = mirrored.then(|| req.clone());
            let step = forward(shared, state, spec, req, opts).await;
            match copy {
                Some(req) => mirror(state, spec, &req, step).await,
                None => step,
            }
        }
    }
}

/// Redis's error for a container command without a subcommand, or with one it does not
/// have.
pub fn container_error(spec: &CmdSpec, req: &Request) -> String {
    if req.len() < 2 {
        return crate::replies::wrong_args_text(spec.name);
    }
    format!(
        "ERR unknown subcommand '{}'. Try {} HELP.",
        String::from_utf8_lossy(&req.arg(1)[..req.arg(1).len().min(128)]),
        spec.name
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
    let post = match spec.cmd {
        Cmd::ConfigGet => Post::RedactConfig,
        Cmd::CommandList => Post::FilterCommandNames,
        Cmd::CommandDocs => Post::FilterCommandDocs,
        Cmd::EvalSha => Post::EvalSha(req.clone()),
        Cmd::Eval if req.len() > 1 => Post::RememberEval(req.arg_bytes(1)),
        _ => Post::None,
    };
    let submitted = shared.primary.submit(spec, &req, opts).await;
    from_submitted(submitted, post)
}

/// How a client's command is sent: its protocol and connection choice; reads may be retried
/// and may go to replicas (`read_from`), everything else goes to masters.
fn client_opts(state: &ClientState, spec: &CmdSpec) -> SendOptions {
    let read = spec.is_readonly();
    SendOptions {
        proto: state.proto,
        session: state.id,
        user: state.user_id(),
        idempotent: read,
        dedicated: false,
        deadline: Deadline::Default,
        // A tracking client reads from masters: they announce the changes it must hear of.
        read_from: if read && !state.tracks() {
            state.read_from
        } else {
            crate::config::ReadFrom::Master
        },
    }
}

/// Whether a forwarded command's reply is adjusted after it arrives (`forward`'s `Post`).
fn adjusts_reply(cmd: Cmd) -> bool {
    matches!(
        cmd,
        Cmd::ConfigGet | Cmd::CommandList | Cmd::CommandDocs | Cmd::Eval | Cmd::EvalSha
    )
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
        && matches!(spec.route, Route::Slot | Route::Split(_))
        && !adjusts_reply(spec.cmd)
        && !state.txn.takes(Some(spec))
        && !state.subs.as_ref().is_some_and(|s| s.active())
        && !spec.is_blocking(req);
    if !plain {
        return None;
    }
    let opts = client_opts(state, spec);
    let target = match spec.slot(req) {
        Ok(Some(slot)) => Target::Slot(slot),
        Ok(None) => Target::Any,
        Err(_) => {
            // Keys across slots: the parts of a split command join their nodes' batches.
            let (parts, merge) = multikey::split(spec, req)?;
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
    state: &mut ClientState,
    spec: &'static CmdSpec,
    req: &Request,
    (step, close): (Step, bool),
) -> (Step, bool) {
    let Some(mirrors) = &state.mirrors else {
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

/// SCAN: one master at a time, the cursor naming the master.
async fn scan(shared: &Shared, req: Request, opts: SendOptions) -> (Step, bool) {
    let table = shared.primary.topology.table();
    match scan::plan(&req, &table) {
        Err(e) => ready(e),
        Ok(step) => {
            let target = Target::Node(step.addr.clone());
            let flight = shared.primary.start(step.raw.clone(), target, opts).await;
            remote(flight, Post::Scan { step })
        }
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
        Step::Tx(reply) => reply.wait(shared, proto).await,
        Step::Wait {
            req,
            mut written,
            user,
        } => wait::run(shared, &mut written, req, proto, user).await,
    }
}

/// `PUBSUB NUMPAT` (an integer) or `NUMSUB` (name/count pairs) summed over the masters, with
/// the keyspace subscriptions slotgate made on each master counted once, as one server
/// would count them.
fn discount_fanned(shared: &Shared, reply: Bytes, proto: Proto) -> Bytes {
    let masters = shared.primary.serving_masters().len();
    if let Some(n) = crate::resp::reply::integer(&reply) {
        let mut e = crate::resp::Encoder::new(proto);
        e.integer(shared.fanned.numpat(n, masters));
        return e.finish();
    }
    let Some(pairs) = crate::resp::reply::pair_elements(&reply) else {
        return reply;
    };
    let mut e = crate::resp::Encoder::new(proto);
    if reply.first() == Some(&b'%') {
        e.map(pairs.len() / 2);
    } else {
        e.array(pairs.len());
    }
    for pair in pairs.chunks(2) {
        let (name, count) = (pair[0], pair[1]);
        match (
            crate::resp::reply::bulk_body(name),
            crate::resp::reply::integer(count),
        ) {
            (Some(channel), Some(n)) => {
                e.raw(name)
                    .integer(shared.fanned.numsub(channel, n, masters));
            }
            _ => {
                e.raw(name).raw(count);
            }
        }
    }
    e.finish()
}

async fn apply(shared: &Shared, post: Post, reply: Bytes, proto: Proto) -> Bytes {
    match post {
        Post::None => reply,
        Post::Info { scope, others } => {
            let others = join_all(others.into_iter().map(|f| shared.primary.finish(f))).await;
            info::rewrite(reply, &others, shared, proto, scope).await
        }
        Post::ScriptExists(req) => {
            let Some(found) = elements(&reply) else {
                return reply;
            };
            let mut e = crate::resp::Encoder::new(proto);
            e.array(found.len());
            for (i, f) in found.iter().enumerate() {
                let remembered = shared
                    .scripts
                    .contains_key(&req.arg(i + 2).to_ascii_lowercase()[..]);
                if remembered {
                    e.integer(1);
                } else {
                    e.raw(f);
                }
            }
            e.finish()
        }
        Post::Scan { step } => scan::rewrite(&reply, &step, &shared.primary.topology.table()),
        Post::RememberScript(body) => {
            if let Some(sha) = bulk_body(&reply) {
                shared
                    .scripts
                    .insert(Bytes::copy_from_slice(&sha.to_ascii_lowercase()), body);
            }
            reply
        }
        Post::DiscountFanned => discount_fanned(shared, reply, proto),
        Post::RedactConfig => crate::redact::config_get(reply, proto),
        Post::FilterCommandNames => crate::command::answer::filter_names(reply, proto),
        Post::FilterCommandDocs => crate::command::answer::filter_docs(reply, proto),
        Post::RememberEval(body) => {
            // Bounded: an application that sends ever new EVAL bodies must not grow
            // slotgate without limit (SCRIPT LOAD bodies are always remembered).
            if !reply.starts_with(b"-ERR Error compiling script")
                && shared.scripts.len() < MAX_REMEMBERED_EVAL_SCRIPTS
            {
                let sha = crate::scripts::sha1_hex(&body);
                shared
                    .scripts
                    .entry(Bytes::from(sha.into_bytes()))
                    .or_insert(body);
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
            let spec = resolve(&req).expect("EVALSHA is in the table");
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
    last.unwrap_or_else(crate::replies::cluster_down)
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
