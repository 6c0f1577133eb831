//! One client connection: read requests, dispatch each as soon as it is parsed, and write the
//! replies back strictly in request order.
//!
//! The socket loop: read, scan, push each request into the pipeline (`pipeline.rs`, which
//! holds the ordering rules), move the complete head replies to the output (`output.rs`)
//! and write them with vectored writes, all driven from this one task. Reading pauses while
//! `limits.pipeline_window` requests or `limits.pipeline_window_bytes` request bytes are in
//! flight; a client whose unwritten replies pass `limits.client_output_buffer` is
//! disconnected. A protocol error is answered with `-ERR Protocol error: ...` after the
//! replies before it, then the connection closes. At end of input (a close or a
//! half-close), every reply to what was read is written before the connection closes.

mod output;
mod pipeline;
mod watchdog;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tracing::{debug, info, warn};

use crate::command::{Cmd, CmdSpec, Route, resolve};
use crate::local::ClientState;
use crate::plan::handle;
use crate::pubsub::{Event, Subscriptions};
use crate::resp::encode::error;
use crate::resp::{Proto, Request, RequestScanner};
use crate::shared::Shared;
use output::Output;
use pipeline::{Entry, Meta, ReplyQueue};
use watchdog::{Expired, Watchdog};

/// Serves one plain TCP client until it disconnects, sends QUIT, or breaks the protocol.
pub async fn serve(shared: Arc<Shared>, stream: TcpStream, id: u64) {
    let _ = stream.set_nodelay(true);
    let (peer, local) = (stream.peer_addr().ok(), stream.local_addr().ok());
    let (rd, wr) = stream.into_split();
    serve_halves(shared, rd, wr, peer, local, id, false).await;
}

/// Serves one client over a stream that buffers what is written until flushed (TLS), as
/// `serve` does.
pub async fn serve_stream<S>(
    shared: Arc<Shared>,
    stream: S,
    peer: Option<SocketAddr>,
    local: Option<SocketAddr>,
    id: u64,
) where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (rd, wr) = tokio::io::split(stream);
    serve_halves(shared, rd, wr, peer, local, id, true).await;
}

async fn serve_halves<R, W>(
    shared: Arc<Shared>,
    mut rd: R,
    mut wr: W,
    peer: Option<SocketAddr>,
    local: Option<SocketAddr>,
    id: u64,
    buffered: bool,
) where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let registration = shared.clients.register(id, peer, local);
    let mut subscriber = SubscriberGauge {
        shared: &shared,
        counted: false,
    };
    // The configuration in force when the client connected: its limits hold for the whole
    // connection; a reload changes where its reads go at once.
    let mut live = shared.live();
    let mut live_generation = crate::reload::generation(&shared);
    let mut watchdog = Watchdog::new(&live.limits);
    let mut state = ClientState::new(id, live.password.is_some());
    state.read_from = live.cluster.read_from;
    state.follow_mirrors(&shared);
    state.entry = Some(registration.entry.clone());
    state.batch.enabled = true;
    let mut scanner = RequestScanner::new(shared.config.request_limits());
    let limits = live.limits.clone();
    let (window, window_bytes) = (limits.pipeline_window, limits.pipeline_window_bytes);
    let mut inbuf = BytesMut::with_capacity(16 * 1024);
    let mut out = Output::new(buffered);
    let mut inflight = ReplyQueue::new();
    // Set once no more requests will be handled: QUIT or a protocol error.
    let mut closing = false;
    // Set at end of input (the client closed or half-closed its side): what was read is
    // still handled and answered, then the connection closes.
    let mut eof = false;
    // A request waiting for every reply before it to be written: its replies bypass the
    // queue (subscribe commands), it must follow acknowledged writes (WAIT), or the command
    // before it ran on another connection (EXEC, a blocking command; see `barrier`).
    let mut deferred: Option<Request> = None;
    // Made when the client subscribes: checks whether its subscriptions' nodes changed.
    let mut follow_check: Option<tokio::time::Interval> = None;
    let mut notices = shared.notices.subscribe();
    // Set once the client was told MOVING: it is closed when this completes.
    let mut moving: Option<std::pin::Pin<Box<tokio::time::Sleep>>> = None;
    // Set once the replies due now waited a scheduler turn for more to join them.
    let mut gathered = false;

    // Set when the client is dropped before every reply was written (it left, or reads too
    // slowly): what is in flight still completes for the mirrors' sake.
    let mut abandoned = false;
    // Whether requests are kept for the slow log.
    let mut keep_raw = live.slowlog.max_len > 0;
    // Set by a reload until the client takes the mirrors in force (after its transaction).
    let mut mirrors_due = false;
    'serve: loop {
        if crate::reload::generation(&shared) != live_generation {
            live = shared.live();
            live_generation = crate::reload::generation(&shared);
            state.read_from = live.cluster.read_from;
            mirrors_due = true;
            keep_raw = live.slowlog.max_len > 0;
        }
        if mirrors_due {
            mirrors_due = !state.follow_mirrors(&shared);
        }
        let mut parsed = 0u64;
        // One clock reading for every request of this read.
        let mut read_at: Option<std::time::Instant> = None;
        while !closing && inflight.len() < window && inflight.bytes() < window_bytes {
            let req = match deferred.take() {
                Some(req) => req,
                None => match scanner.next(&mut inbuf, state.authenticated) {
                    Ok(Some(req)) => {
                        parsed += 1;
                        req
                    }
                    Ok(None) => {
                        watchdog.scanned(!inbuf.is_empty(), parsed > 0);
                        break;
                    }
                    Err(e) => {
                        debug!(error = %e, "protocol error from client");
                        let reply = error(&format!("ERR Protocol error: {e}"));
                        inflight.push(Entry::Ready(reply), 0, Meta::default());
                        closing = true;
                        break;
                    }
                },
            };
            // The command's table entry and the slot table's generation, read once for
            // everything below.
            let spec = resolve(&req);
            let generation = shared.primary.topology.peek().generation;
            if owes_confirmations(&state)
                || (!inflight.is_empty()
                    && (state.barrier
                        || streams_replies(&state, spec)
                        || spec.is_some_and(CmdSpec::changes_connection_state)
                        || inflight.must_wait_for_slot(generation, spec, &req)))
            {
                deferred = Some(req);
                break;
            }
            state.barrier = false;
            state.blocking = false;
            if let Some(spec) = spec
                && crate::hotkeys::sampled()
                && let Some(i) = spec.key_indices(&req).next()
            {
                shared.hotkeys.add(req.arg(i));
            }
            let size = u32::try_from(req.raw.len()).unwrap_or(u32::MAX);
            let raw = keep_raw.then(|| req.raw.clone());
            let silent_by_mode = state.replies.take_for_command();
            if let Some(spec) = spec {
                registration.entry.set_command(spec);
            }
            let (step, close) = handle(&shared, &mut state, req, spec).await;
            let silent = state.silence_this.take().unwrap_or(silent_by_mode);
            let meta = Meta {
                size,
                silent,
                command: crate::command_stats::index_of(spec),
                started: Some(*read_at.get_or_insert_with(std::time::Instant::now)),
                raw,
            };
            inflight.push(Entry::new(&shared, step, state.proto), generation, meta);

            closing = close;
        }
        if state.batch.has_open() {
            state.batch.flush(&shared).await;
        }
        if parsed > 0 {
            shared.stats.total_commands.add(parsed);
            registration.entry.touch();
        }
        let mut done_at = None;
        while let Some((reply, meta)) = inflight.pop_ready() {
            finished(&shared, &live, &state, peer, &meta, &reply, &mut done_at);
            if !meta.silent {
                out.push(reply);
            }
        }
        // Replies are ready but later ones of the same pipeline are still out: let the other
        // tasks of this worker run once (backend connections whose replies have arrived), so
        // one write carries more replies. Costs one scheduler turn, once per write.
        if !out.is_empty() && !inflight.is_empty() && !gathered {
            gathered = true;
            tokio::task::yield_now().await;
            if inflight.advance_now(&shared, &mut state.batch) {
                while let Some((reply, meta)) = inflight.pop_ready() {
                    finished(&shared, &live, &state, peer, &meta, &reply, &mut done_at);
                    if !meta.silent {
                        out.push(reply);
                    }
                }
            }
        }
        let subscribed = state.subs.as_ref().is_some_and(|s| s.has_links());
        subscriber.set(subscribed);
        // A subscriber is bounded by the pub/sub limit, as Redis bounds pubsub clients.
        let out_limit = if subscribed {
            limits.pubsub_output_buffer
        } else {
            limits.client_output_buffer
        };
        // Replies complete behind a head still out count as much as those written next.
        let pending = out.bytes() + inflight.done_bytes();
        if pending > out_limit {
            shared
                .stats
                .output_buffer_closes
                .fetch_add(1, Ordering::Relaxed);
            warn!(
                peer = %display_addr(peer),
                pending,
                limit = out_limit,
                subscriber = subscribed,
                "client's replies passed its output buffer limit (it reads too slowly, or \
                 its pipeline waits behind a slow reply): closing"
            );
            abandoned = true;
            break 'serve;
        }
        inflight.set_done_limit(out_limit - out.bytes());
        if inflight.is_empty() && (closing || (eof && deferred.is_none())) {
            break;
        }
        // Subscribers follow their nodes: shard channels their slots, channels and patterns
        // the pub/sub home master.
        if subscribed && follow_check.is_none() {
            follow_check = Some(tokio::time::interval(FOLLOW_CHECK));
        }
        // A request waits for every earlier reply, and those were all dropped (CLIENT REPLY
        // OFF): nothing is left to wait for or write before it.
        if deferred.is_some() && inflight.is_empty() && !owes_confirmations(&state) {
            continue;
        }
        let room = inflight.len() < window && inflight.bytes() < window_bytes;
        // Confirmations owed are written from the subscriber events, even with no
        // subscriber connection left (an unsubscribe from nothing).
        let owes = owes_confirmations(&state);
        tokio::select! {
            biased;
            written = out.write_some(&mut wr), if out.wants_write() => {
                if written.is_err() {
                    abandoned = true;
                    break 'serve;
                }
                gathered = false;
            }
            _ = inflight.advance(&shared, &mut state.batch), if !inflight.is_empty() => {}
            event = next_event(&mut state.subs), if subscribed || owes => {
                let Some(subs) = state.subs.as_mut() else { continue };
                match subs.on_event(&shared, event).await {
                    Ok(Some(frame)) => {
                        subs.written(frame.len());
                        out.push(frame);
                    }
                    Ok(None) => {}
                    Err(()) => {
                        shared.stats.output_buffer_closes.fetch_add(1, Ordering::Relaxed);
                        warn!(peer = %display_addr(peer), "subscriber too slow: limits.pubsub_output_buffer reached, closing");
                        return;
                    }
                }
            }
            changed = notices.changed(), if !closing && moving.is_none() => {
                // Shutting down (or slotgate's state is gone). A client with maintenance
                // notifications on is told MOVING and served until it reconnects elsewhere
                // (closed after the push's ttl at the latest); any other one gets the
                // replies to what it sent, then is closed. Otherwise a reload: the loop's
                // next turn takes the new configuration.
                if changed.is_err() || *notices.borrow() {
                    if state.maint_notifications && state.proto == Proto::Resp3 {
                        let drain = &shared.live().drain;
                        out.push(crate::drain::moving_frame(drain));
                        shared.stats.moving_sent.fetch_add(1, Ordering::Relaxed);
                        moving = Some(Box::pin(tokio::time::sleep(
                            std::time::Duration::from_secs(drain.moving_ttl_s),
                        )));
                    } else {
                        closing = true;
                    }
                }
            }
            _ = async { moving.as_mut().expect("guarded").await }, if moving.is_some() && !closing => {
                closing = true;
            }
            _ = watchdog.fired() => {
                let idle = inflight.is_empty() && out.is_empty() && !subscribed && !state.blocking
                    && deferred.is_none();
                let reading = !closing && !eof && deferred.is_none() && room;
                match watchdog.check(idle, reading) {
                    Some(Expired::Idle) => {
                        shared.stats.idle_timeouts.fetch_add(1, Ordering::Relaxed);
                        info!(peer = %display_addr(peer), "client idle past limits.client_idle_timeout_s: closing");
                        return;
                    }
                    Some(Expired::SlowRequest) => {
                        shared.stats.read_timeouts.fetch_add(1, Ordering::Relaxed);
                        warn!(peer = %display_addr(peer), "client did not finish its request within limits.request_read_timeout_ms: closing");
                        abandoned = true;
                        break 'serve;
                    }
                    None => {}
                }
            }
            delivery = next_delivery(&mut state.tracking), if state.tracking.as_ref().is_some_and(|t| t.listening()) => {
                let Some(delivery) = delivery else {
                    warn!(peer = %display_addr(peer), "client too slow to take its invalidations: closing");
                    return;
                };
                // After the replies still owed: a read answered before the change was
                // announced reaches the client before its invalidation.
                let proto = state.proto;
                if let Some(frame) = state.tracking.as_mut().and_then(|t| t.receive(delivery, proto)) {
                    inflight.push(Entry::Ready(frame), 0, Meta::default());
                }
            }
            _ = tick(&mut follow_check), if subscribed => {
                if let Some(subs) = state.subs.as_mut() {
                    subs.follow_slot_moves(&shared).await;
                    subs.follow_home(&shared).await;
                    subs.follow_masters(&shared).await;
                }
            }
            read = rd.read_buf(&mut inbuf), if !closing && !eof && deferred.is_none() && room => {
                match read {
                    // End of input: answer everything read so far before closing (a client
                    // that half-closes after its last command still gets every reply).
                    Ok(0) => {
                        eof = true;
                        // A blocked command is abandoned (its connection closes and the
                        // node forgets it), as Redis does when a blocked client goes.
                        if state.blocking {
                            return;
                        }
                    }
                    Err(_) => {
                        abandoned = true;
                        break 'serve;
                    }
                    Ok(_) => {
                        watchdog.input();
                        if inbuf.capacity() - inbuf.len() < 4096 {
                            inbuf.reserve(16 * 1024);
                        }
                    }
                }
            }
        }
    }
    if abandoned {
        if state.mirrors.is_some() {
            finish_unanswered(&shared, &mut inflight, &mut state.batch).await;
        }
        return;
    }
    if out.flush(&mut wr).await.is_ok() {
        let _ = wr.shutdown().await;
    }
}

/// Counts this client in `subscribers` while it has subscriptions.
struct SubscriberGauge<'a> {
    shared: &'a Shared,
    counted: bool,
}

impl SubscriberGauge<'_> {
    fn set(&mut self, subscribed: bool) {
        if subscribed != self.counted {
            self.counted = subscribed;
            let delta = if subscribed { 1 } else { -1 };
            self.shared
                .stats
                .subscribers
                .fetch_add(delta, Ordering::Relaxed);
        }
    }
}

impl Drop for SubscriberGauge<'_> {
    fn drop(&mut self) {
        self.set(false);
    }
}

/// Counts a command whose reply is ready (per-command figures) and logs it in the slow log
/// when it took longer than `slowlog.threshold_us`; `done_at` is read once per batch of
/// replies.
fn finished(
    shared: &Shared,
    live: &crate::config::Config,
    state: &ClientState,
    peer: Option<SocketAddr>,
    meta: &Meta,
    reply: &[u8],
    done_at: &mut Option<std::time::Instant>,
) {
    let Some(started) = meta.started else { return };
    let now = *done_at.get_or_insert_with(std::time::Instant::now);
    let took = now.saturating_duration_since(started);
    let error = matches!(reply.first(), Some(b'-' | b'!'));
    shared.commands.record(meta.command, error, took);
    let slowlog = &live.slowlog;
    if let Some(raw) = &meta.raw
        && took.as_micros() >= u128::from(slowlog.threshold_us)
    {
        // Parsed once, for the arguments and the node.
        let req = crate::slowlog::parse(raw);
        let node = crate::slowlog::node_for(shared, req.as_ref());
        shared.slowlog.record(
            req.as_ref(),
            took,
            peer,
            state.name.clone(),
            node,
            slowlog.max_len,
        );
    }
}

/// A client's address for a log line.
fn display_addr(addr: Option<SocketAddr>) -> String {
    addr.map_or_else(|| "unknown".into(), |a| a.to_string())
}

/// Lets the requests of a client that left complete without answering it, so that mirrored
/// writes waiting for the primary's reply (`XADD *`, `SPOP`, pops) still reach the mirrors;
/// bounded by the command deadline.
async fn finish_unanswered<'a>(
    shared: &'a Shared,
    inflight: &mut ReplyQueue<'a>,
    batch: &mut crate::batch::Batcher,
) {
    let limit = shared.primary.timeouts.command() + std::time::Duration::from_secs(1);
    let _ = tokio::time::timeout(limit, async {
        while !inflight.is_empty() {
            inflight.advance(shared, batch).await;
            while inflight.pop_ready().is_some() {}
        }
    })
    .await;
}

/// How often a subscriber's nodes are checked against the slot table.
const FOLLOW_CHECK: std::time::Duration = std::time::Duration::from_millis(500);

async fn tick(interval: &mut Option<tokio::time::Interval>) {
    match interval {
        Some(i) => {
            i.tick().await;
        }
        None => std::future::pending().await,
    }
}

/// The next invalidation for the client; `None` once its inbox was closed.
async fn next_delivery(
    tracking: &mut Option<Box<crate::tracking::client::ClientTracking>>,
) -> Option<crate::tracking::Delivery> {
    match tracking {
        Some(t) => t.next().await,
        None => std::future::pending().await,
    }
}

/// The next event from the client's subscriber connections.
async fn next_event(subs: &mut Option<Subscriptions>) -> Event {
    match subs {
        Some(s) => s.events.recv().await.unwrap_or(Event::Overflow),
        None => std::future::pending().await,
    }
}

/// Whether subscription confirmations are still owed to the client: its next request waits
/// for them (keyspace subscriptions are confirmed once every master has).
fn owes_confirmations(state: &ClientState) -> bool {
    state.subs.as_ref().is_some_and(|s| s.owes_confirmations())
}

/// Whether the replies before this request must be written first: its replies bypass the
/// ordered reply queue (subscribe-family commands, PING in RESP2 subscriber mode), or it must
/// see every earlier write acknowledged (WAIT, WAITAOF).
fn streams_replies(state: &ClientState, spec: Option<&CmdSpec>) -> bool {
    let Some(spec) = spec else {
        return false;
    };
    matches!(spec.route, Route::Subscription | Route::Wait)
        || (spec.cmd == Cmd::Ping
            && state.proto == Proto::Resp2
            && state.subs.as_ref().is_some_and(|s| s.active()))
}
