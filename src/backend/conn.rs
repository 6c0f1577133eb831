//! One multiplexed, pipelined connection to a backend node, run by its own task.
//!
//! Requests arrive on a bounded inbox; the task writes them in batches (everything waiting
//! goes out in one write) and matches replies to requests in FIFO order. Reading and writing
//! advance together, so replies are drained even while a large write is in progress. Every
//! request has a deadline (`Deadline`): when the oldest one misses it, the connection is
//! closed. When the connection breaks, every request in flight fails with an error (to its
//! own client only). A shared connection then reconnects with backoff (requests arriving
//! while it is down fail at once as "not sent", which callers may retry safely); a session
//! connection (`reconnect: false`) ends, and so does everything queued on it.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tracing::{Instrument, debug, info_span, warn};

use crate::backend::node_stats::{ConnKind, Connected, NodeStats};
use crate::backend::stream::NodeStream;
use crate::error::BackendError;
use crate::resp::{Proto, ReplyScanner, Request};

/// The reply to one request, or why there is none.
pub type ReplyResult = Result<Bytes, BackendError>;

/// The replies to a batch of requests written back to back, in order, or why there are none.
pub type BatchResult = Result<Vec<Bytes>, BackendError>;

/// A request (or a batch of them) waiting to be written to a backend.
#[derive(Debug)]
pub struct Pending {
    /// The RESP request, forwarded as it came from the client.
    pub raw: Bytes,
    /// Send `ASKING` first, on the same connection, and drop its reply (ASK redirect).
    pub asking: bool,
    /// Where the reply goes. A dropped receiver (client gone) is skipped.
    pub reply: ReplyTo,
    /// How long the node may take to answer.
    pub deadline: Deadline,
}

/// How long a node may take to answer one request before its connection is given up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Deadline {
    /// The connection's command timeout (`cluster.command_timeout_ms`).
    #[default]
    Default,
    /// A blocking command that may block this long: the command timeout is added as grace.
    Blocking(Duration),
    /// A command that may block forever (BLPOP with timeout 0): no deadline.
    Never,
}

impl Deadline {
    /// The deadline of a command that may block for `block` (`None`: for ever), as
    /// `CmdSpec::block_time` says.
    pub fn for_block_time(block: Option<Duration>) -> Deadline {
        block.map_or(Deadline::Never, Deadline::Blocking)
    }
}

/// Who waits for the reply of a `Pending`.
#[derive(Debug)]
pub enum ReplyTo {
    /// `raw` is one request.
    One(oneshot::Sender<ReplyResult>),
    /// `raw` is this many requests back to back (one client's pipelined requests for this
    /// node): their replies are delivered together, which saves a channel and a wake-up per
    /// request.
    Many(usize, oneshot::Sender<BatchResult>),
}

impl Pending {
    /// One request.
    pub fn one(raw: Bytes, asking: bool, reply: oneshot::Sender<ReplyResult>) -> Pending {
        Pending {
            raw,
            asking,
            reply: ReplyTo::One(reply),
            deadline: Deadline::Default,
        }
    }

    /// The same request with another deadline.
    pub fn with_deadline(self, deadline: Deadline) -> Pending {
        Pending { deadline, ..self }
    }

    /// Answers the request with an error instead of sending it.
    pub fn fail(self, err: BackendError) {
        match self.reply {
            ReplyTo::One(tx) => {
                let _ = tx.send(Err(err));
            }
            ReplyTo::Many(_, tx) => {
                let _ = tx.send(Err(err));
            }
        }
    }
}

/// How to reach and greet one node.
#[derive(Debug, Clone)]
pub struct ConnSettings {
    /// `host:port`, as the cluster names the node.
    pub addr: Arc<str>,
    /// Protocol spoken on this connection; RESP3 connections are opened with `HELLO 3`.
    pub proto: Proto,
    /// `AUTH` sent after connecting: optional user name and password.
    pub auth: Option<(Option<String>, crate::redact::Secret)>,
    /// Connect and command timeouts (read when needed: a reload changes them).
    pub timeouts: Arc<crate::backend::timeouts::Timeouts>,
    /// Capacity of the inbox; senders wait when it is full.
    pub inbox_capacity: usize,
    /// Send READONLY after the greeting, so a replica serves reads of its master's slots.
    pub readonly: bool,
    /// Reconnect after the connection breaks (shared connections). A session connection
    /// (transactions, blocking commands, WAIT) never does: its server-side state (MULTI,
    /// WATCH, a blocked command) would be silently lost, so it ends and every later request
    /// on it fails.
    pub reconnect: bool,
    /// Start TLS after connecting (`cluster.tls`).
    pub tls: Option<crate::tls::BackendTls>,
    /// The node's figures, shared by every connection to it.
    pub stats: Arc<NodeStats>,
    /// What the connection is for (the `kind` label of its figures).
    pub kind: ConnKind,
}

impl ConnSettings {
    /// How long the node may take to answer a request (`Deadline::Default`): the command
    /// timeout, or for a topology query (a control connection) the connect timeout.
    pub fn command_timeout(&self) -> Duration {
        match self.kind {
            ConnKind::Control => self.timeouts.connect(),
            _ => self.timeouts.command(),
        }
    }
}

const ASKING: &[u8] = b"*1\r\n$6\r\nASKING\r\n";
/// Requests larger than this are written straight from their buffer instead of being
/// copied into the batch.
const COPY_LIMIT: usize = 16 * 1024;
/// Most bytes gathered into one batch before writing.
const BATCH_BYTES: usize = 256 * 1024;
const MIN_BACKOFF: Duration = Duration::from_millis(20);
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// Starts the connection task and returns its inbox.
pub fn spawn(settings: ConnSettings) -> mpsc::Sender<Pending> {
    let (tx, rx) = mpsc::channel(settings.inbox_capacity);
    let span = info_span!("backend", backend = %settings.addr, proto = settings.proto.version());
    tokio::spawn(supervise(settings, rx).instrument(span));
    tx
}

/// Connects, serves, reconnects; ends when every sender of the inbox is gone.
async fn supervise(settings: ConnSettings, mut inbox: mpsc::Receiver<Pending>) {
    let mut backoff = MIN_BACKOFF;
    loop {
        match connect(&settings).await {
            Ok(stream) => {
                backoff = MIN_BACKOFF;
                debug!("connected");
                let up = Connected::new(&settings.stats, settings.kind);
                let ended = serve(stream, &mut inbox, &settings).await;
                drop(up);
                match ended {
                    Ended::InboxClosed => return,
                    Ended::Broken(reason) if !settings.reconnect => {
                        debug!(%reason, "session connection lost");
                        fail_waiting(
                            inbox,
                            BackendError::ConnectionLost {
                                addr: settings.addr.to_string(),
                                sent: false,
                            },
                        )
                        .await;
                        return;
                    }
                    Ended::Broken(reason) => warn!(%reason, "backend connection lost"),
                }
            }
            Err(reason) => {
                warn!(%reason, "cannot connect to backend");
                let err = BackendError::Connect {
                    addr: settings.addr.to_string(),
                    reason: reason.to_string(),
                };
                if !settings.reconnect {
                    fail_waiting(inbox, err).await;
                    return;
                }
                // While down, fail new requests at once so clients are not left waiting.
                let sleep = tokio::time::sleep(backoff);
                tokio::pin!(sleep);
                settings.stats.down(settings.kind, true);
                let inbox_closed = loop {
                    tokio::select! {
                        _ = &mut sleep => break false,
                        p = inbox.recv() => match p {
                            Some(p) => p.fail(err.clone()),
                            None => break true,
                        },
                    }
                };
                settings.stats.down(settings.kind, false);
                if inbox_closed {
                    return;
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

/// Closes the inbox of a connection that will not serve again and fails what waits in it.
async fn fail_waiting(mut inbox: mpsc::Receiver<Pending>, err: BackendError) {
    inbox.close();
    while let Some(p) = inbox.recv().await {
        p.fail(err.clone());
    }
}

/// Idle time before the first keepalive probe on a backend connection.
const KEEPALIVE_IDLE: Duration = Duration::from_secs(30);
/// Time between keepalive probes.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);

/// Why a connection could not be opened.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ConnectError {
    /// The node refused the greeting (AUTH, HELLO, READONLY) with this error line.
    #[error("greeting refused: {0}")]
    Refused(String),
    /// No connection: refused, unreachable, timed out, TLS failed, closed.
    #[error("{0}")]
    Failed(String),
}

impl From<String> for ConnectError {
    fn from(reason: String) -> Self {
        ConnectError::Failed(reason)
    }
}

impl From<&str> for ConnectError {
    fn from(reason: &str) -> Self {
        ConnectError::Failed(reason.to_string())
    }
}

/// Opens the connection (TCP, then TLS when configured) and runs the greeting (AUTH,
/// HELLO 3).
pub(crate) async fn connect(settings: &ConnSettings) -> Result<NodeStream, ConnectError> {
    let (host, port) = split_addr(&settings.addr).ok_or("bad address")?;
    let connect_timeout = settings.timeouts.connect();
    let stream = tokio::time::timeout(connect_timeout, TcpStream::connect((host, port)))
        .await
        .map_err(|_| "connect timed out".to_string())?
        .map_err(|e| e.to_string())?;
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    // TCP keepalive finds a node that vanished without closing (host down, network cut)
    // even on a connection that carries no requests.
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(KEEPALIVE_IDLE)
        .with_interval(KEEPALIVE_INTERVAL);
    socket2::SockRef::from(&stream)
        .set_tcp_keepalive(&keepalive)
        .map_err(|e| e.to_string())?;
    let mut stream = match &settings.tls {
        Some(tls) => {
            let tls_stream = tokio::time::timeout(connect_timeout, tls.connect(host, stream))
                .await
                .map_err(|_| "TLS handshake timed out".to_string())?
                .map_err(|e| format!("TLS handshake failed: {e}"))?;
            NodeStream::Tls(Box::new(tls_stream))
        }
        None => NodeStream::Tcp(stream),
    };
    let greeting = match (&settings.proto, &settings.auth) {
        (Proto::Resp3, Some((user, pass))) => Some(Request::from_args(&[
            "HELLO",
            "3",
            "AUTH",
            user.as_deref().unwrap_or("default"),
            pass.expose(),
        ])),
        (Proto::Resp3, None) => Some(Request::from_args(&["HELLO", "3"])),
        (Proto::Resp2, Some((Some(user), pass))) => {
            Some(Request::from_args(&["AUTH", user.as_str(), pass.expose()]))
        }
        (Proto::Resp2, Some((None, pass))) => Some(Request::from_args(&["AUTH", pass.expose()])),
        (Proto::Resp2, None) => None,
    };
    let readonly = settings.readonly.then(|| Request::from_args(&["READONLY"]));
    for greeting in greeting.into_iter().chain(readonly) {
        let reply = tokio::time::timeout(connect_timeout, round_trip(&mut stream, &greeting.raw))
            .await
            .map_err(|_| "greeting timed out".to_string())??;
        if reply.first() == Some(&b'-') {
            return Err(ConnectError::Refused(
                String::from_utf8_lossy(&reply[1..]).trim_end().to_string(),
            ));
        }
    }
    Ok(stream)
}

/// Splits `host:port` at the last ':' (IPv6 hosts contain ':').
pub fn split_addr(addr: &str) -> Option<(&str, u16)> {
    let (host, port) = addr.rsplit_once(':')?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    Some((host, port.parse().ok()?))
}

/// Writes one request and reads its single reply (connection set-up only).
async fn round_trip<S>(stream: &mut S, request: &[u8]) -> Result<Bytes, String>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    stream.write_all(request).await.map_err(|e| e.to_string())?;
    stream.flush().await.map_err(|e| e.to_string())?;
    let mut buf = BytesMut::with_capacity(512);
    let mut scanner = ReplyScanner::new();
    loop {
        if let Some(n) = scanner.next(&buf).map_err(|e| e.to_string())? {
            return Ok(buf.split_to(n).freeze());
        }
        if stream.read_buf(&mut buf).await.map_err(|e| e.to_string())? == 0 {
            return Err("closed during greeting".into());
        }
    }
}

enum Ended {
    /// Every sender is gone and every reply was delivered: the node left the topology.
    InboxClosed,
    Broken(String),
}

/// A request (or batch) written and awaiting its replies.
enum InFlight {
    /// The reply to an `ASKING`, dropped.
    Discard,
    One(oneshot::Sender<ReplyResult>),
    Many {
        tx: oneshot::Sender<BatchResult>,
        expect: usize,
        got: Vec<Bytes>,
    },
}

impl InFlight {
    /// Whether nobody waits for this reply any more.
    fn abandoned(&self) -> bool {
        match self {
            InFlight::Discard => true,
            InFlight::One(tx) => tx.is_closed(),
            InFlight::Many { tx, .. } => tx.is_closed(),
        }
    }

    fn fail(self, err: BackendError) {
        match self {
            InFlight::Discard => {}
            InFlight::One(tx) => {
                let _ = tx.send(Err(err));
            }
            InFlight::Many { tx, .. } => {
                let _ = tx.send(Err(err));
            }
        }
    }
}

/// A written request: who waits for its reply and when the node must have answered.
struct Sent {
    to: InFlight,
    /// `None`: no deadline (a command that may block forever).
    due: Option<Instant>,
    /// When it was written, on the first request of one write in 8 (latency figures).
    written_at: Option<Instant>,
}

impl Sent {
    fn abandoned(&self) -> bool {
        self.to.abandoned()
    }
}

/// Whether this write is the one in 8 whose first request is timed (counted per thread,
/// apart from the command sampling so the two do not fall into step).
fn timed_write() -> bool {
    thread_local! {
        static WRITES: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
    }
    WRITES.with(|c| {
        let n = c.get().wrapping_add(1);
        c.set(n);
        n.is_multiple_of(8)
    })
}

/// How often the oldest request's deadline is checked: a tenth of the command timeout,
/// within 10-250 ms (an idle connection wakes up at most 4 times a second).
fn deadline_check_period(command_timeout: Duration) -> Duration {
    (command_timeout / 10).clamp(Duration::from_millis(10), Duration::from_millis(250))
}

/// Runs one live connection until it breaks or the inbox closes.
async fn serve(
    stream: NodeStream,
    inbox: &mut mpsc::Receiver<Pending>,
    settings: &ConnSettings,
) -> Ended {
    match stream {
        NodeStream::Tcp(s) => {
            let (rd, wr) = s.into_split();
            serve_halves(rd, wr, inbox, settings).await
        }
        NodeStream::Tls(s) => {
            let (rd, wr) = tokio::io::split(*s);
            serve_halves(rd, wr, inbox, settings).await
        }
    }
}

async fn serve_halves<R, W>(
    mut rd: R,
    mut wr: W,
    inbox: &mut mpsc::Receiver<Pending>,
    settings: &ConnSettings,
) -> Ended
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let addr: &str = &settings.addr;
    let stats = &settings.stats;
    // Shared by the reader and writer halves below, which run in this one task: the mutex is
    // never contended, it only makes the borrow across awaits acceptable to the compiler.
    let fifo: Mutex<VecDeque<Sent>> = Mutex::new(VecDeque::new());
    let queue = || -> MutexGuard<'_, VecDeque<Sent>> {
        fifo.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    };
    let inbox_closed = AtomicBool::new(false);

    let reader = async {
        let mut buf = BytesMut::with_capacity(16 * 1024);
        let mut scanner = ReplyScanner::new();
        loop {
            if inbox_closed.load(Ordering::Relaxed) && queue().is_empty() {
                return Ended::InboxClosed;
            }
            if buf.capacity() - buf.len() < 4096 {
                buf.reserve(16 * 1024);
            }
            match rd.read_buf(&mut buf).await {
                Ok(0) => return Ended::Broken("closed by peer".into()),
                Ok(_) => {}
                Err(e) => return Ended::Broken(e.to_string()),
            }
            loop {
                let n = match scanner.next(&buf) {
                    Ok(Some(n)) => n,
                    Ok(None) => break,
                    Err(e) => return Ended::Broken(format!("protocol error: {e}")),
                };
                let frame = buf.split_to(n).freeze();
                if frame[0] == b'>' {
                    // Out-of-band push (RESP3); not a reply to any request.
                    continue;
                }
                stats.replies.add(1);
                if matches!(frame[0], b'-' | b'!') {
                    stats.errors.add(1);
                }
                let mut q = queue();
                let done = match q.front_mut().map(|s| &mut s.to) {
                    Some(InFlight::Many { tx, expect, got }) => {
                        // A client that left (or was cut at its output limit) wants none
                        // of them: keep count only, not the bytes.
                        got.push(if tx.is_closed() { Bytes::new() } else { frame });
                        if got.len() == *expect
                            && let Some(sent) = q.pop_front()
                        {
                            let written_at = sent.written_at;
                            if let InFlight::Many { tx, got, .. } = sent.to {
                                let _ = tx.send(Ok(got));
                            }
                            written_at
                        } else {
                            None
                        }
                    }
                    Some(_) => match q.pop_front() {
                        Some(sent) => {
                            if let InFlight::One(tx) = sent.to {
                                let _ = tx.send(Ok(frame));
                            }
                            sent.written_at
                        }
                        None => None,
                    },
                    None => return Ended::Broken("reply without a request".into()),
                };
                if let Some(t) = done {
                    stats.latency.record(t.elapsed());
                }
            }
        }
    };

    let writer = async {
        let mut batch = BytesMut::with_capacity(16 * 1024);
        loop {
            let Some(first) = inbox.recv().await else {
                inbox_closed.store(true, Ordering::Relaxed);
                return None;
            };
            // Let the other tasks that are ready run first (client tasks about to queue
            // requests here): one write then carries all of them, which saves a system call
            // per request under load and costs one scheduler turn when idle.
            if inbox.is_empty() {
                tokio::task::yield_now().await;
            }
            let mut next = Some(first);
            // One clock read for every request of this batch; one batch in 8 is timed from
            // its first request.
            let now = Instant::now();
            let command_timeout = settings.command_timeout();
            let mut written_at = timed_write().then_some(now);
            while let Some(p) = next.take() {
                let due = match p.deadline {
                    Deadline::Default => Some(now + command_timeout),
                    Deadline::Blocking(d) => Some(now + d + command_timeout),
                    Deadline::Never => None,
                };
                if p.asking {
                    queue().push_back(Sent {
                        to: InFlight::Discard,
                        due,
                        written_at: written_at.take(),
                    });
                    batch.put_slice(ASKING);
                }
                let to = match p.reply {
                    ReplyTo::One(tx) => InFlight::One(tx),
                    ReplyTo::Many(expect, tx) => InFlight::Many {
                        tx,
                        expect,
                        got: Vec::with_capacity(expect),
                    },
                };
                queue().push_back(Sent {
                    to,
                    due,
                    written_at: written_at.take(),
                });
                if p.raw.len() > COPY_LIMIT {
                    if !batch.is_empty()
                        && let Err(e) = wr.write_all(&batch).await
                    {
                        return Some(e.to_string());
                    }
                    batch.clear();
                    if let Err(e) = wr.write_all(&p.raw).await {
                        return Some(e.to_string());
                    }
                } else {
                    batch.put_slice(&p.raw);
                }
                if batch.len() < BATCH_BYTES {
                    next = inbox.try_recv().ok();
                }
            }
            if !batch.is_empty() {
                if let Err(e) = wr.write_all(&batch).await {
                    return Some(e.to_string());
                }
                batch.clear();
            }
            // A TLS stream may hold the end of the batch until flushed (TCP: nothing to do).
            if let Err(e) = wr.flush().await {
                return Some(e.to_string());
            }
        }
    };

    tokio::pin!(reader, writer);
    let mut writer_done = false;
    let mut abandoned_check = tokio::time::interval(Duration::from_millis(100));
    let mut deadline_check =
        tokio::time::interval(deadline_check_period(settings.command_timeout()));
    deadline_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut timed_out = false;
    let ended = loop {
        tokio::select! {
            biased;
            ended = &mut reader => break ended,
            // The oldest request is answered first (replies come in order): once it is past
            // its deadline, the node is stopped or stuck, and so is everything behind it.
            _ = deadline_check.tick() => {
                let overdue = queue()
                    .front()
                    .and_then(|s| s.due)
                    .is_some_and(|due| Instant::now() >= due);
                if overdue {
                    timed_out = true;
                    break Ended::Broken("the node did not answer in time".into());
                }
            }
            failed = &mut writer, if !writer_done => match failed {
                Some(reason) => break Ended::Broken(reason),
                // Inbox closed: keep reading until the replies in flight are delivered.
                None => {
                    writer_done = true;
                    if queue().is_empty() {
                        break Ended::InboxClosed;
                    }
                }
            },
            // With no new requests coming, stop waiting for replies nobody wants any more
            // (a client left while its command blocks): closing unblocks the node.
            _ = abandoned_check.tick(), if writer_done => {
                if queue().iter().all(Sent::abandoned) {
                    break Ended::InboxClosed;
                }
            }
        }
    };
    if let Ended::Broken(_) = &ended {
        if timed_out {
            stats.timeouts.add(queue().len() as u64);
        }
        for entry in queue().drain(..) {
            let addr = addr.to_string();
            entry.to.fail(if timed_out {
                BackendError::Timeout { addr, sent: true }
            } else {
                BackendError::ConnectionLost { addr, sent: true }
            });
        }
    }
    ended
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        assert_eq!(split_addr("127.0.0.1:7000"), Some(("127.0.0.1", 7000)));
        assert_eq!(split_addr("2001:db8::1:7000"), Some(("2001:db8::1", 7000)));
        assert_eq!(split_addr("[::1]:7000"), Some(("::1", 7000)));
        assert_eq!(split_addr("host"), None);
        assert_eq!(split_addr("host:x"), None);
    }
}
