//! One client connection: read requests, answer or dispatch each, and write the replies back
//! strictly in request order.
//!
//! Pipelined requests are all in flight at once (to different nodes concurrently) inside a
//! `FuturesOrdered`, which yields replies in the order the requests came. Reading pauses when
//! `pipeline_window` requests are in flight. A protocol error is answered with
//! `-ERR Protocol error: ...` after the replies before it, then the connection closes.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::{Bytes, BytesMut};
use futures::{FutureExt, StreamExt, stream::FuturesOrdered};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tracing::debug;

use crate::dispatch::Shared;
use crate::local::ClientState;
use crate::plan::{Step, complete, handle};
use crate::resp::RequestScanner;
use crate::resp::encode::error;

/// Replies at least this large are written straight from their buffer, not copied.
const DIRECT_WRITE: usize = 16 * 1024;

/// Serves one client until it disconnects, sends QUIT, or breaks the protocol.
pub async fn serve(shared: Arc<Shared>, stream: TcpStream, id: u64) {
    let _ = stream.set_nodelay(true);
    let (mut rd, mut wr) = stream.into_split();
    let mut state = ClientState::new(id, shared.config.password.is_some());
    let mut scanner = RequestScanner::new(shared.config.request_limits());
    let window = shared.config.limits.pipeline_window;
    let mut inbuf = BytesMut::with_capacity(16 * 1024);
    let mut outbuf = BytesMut::with_capacity(16 * 1024);
    let mut inflight = FuturesOrdered::new();
    // Set once no more requests will be read: QUIT, a protocol error, or end of input.
    let mut closing = false;

    loop {
        let mut parsed = 0u64;
        while !closing && inflight.len() < window {
            match scanner.next(&mut inbuf) {
                Ok(Some(req)) => {
                    parsed += 1;
                    let (step, close) = handle(&shared, &mut state, req).await;
                    inflight.push_back(complete(&shared, step, state.proto));
                    closing = close;
                }
                Ok(None) => break,
                Err(e) => {
                    debug!(error = %e, "protocol error from client");
                    let reply = error(&format!("ERR Protocol error: {e}"));
                    inflight.push_back(complete(&shared, Step::Ready(reply), state.proto));
                    closing = true;
                }
            }
        }
        if parsed > 0 {
            shared
                .stats
                .total_commands
                .fetch_add(parsed, Ordering::Relaxed);
        }
        if closing && inflight.is_empty() {
            break;
        }
        tokio::select! {
            biased;
            Some(reply) = inflight.next(), if !inflight.is_empty() => {
                if write_replies(&mut wr, &mut outbuf, reply, &mut inflight).await.is_err() {
                    break;
                }
            }
            read = rd.read_buf(&mut inbuf), if !closing && inflight.len() < window => {
                match read {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        if inbuf.capacity() - inbuf.len() < 4096 {
                            inbuf.reserve(16 * 1024);
                        }
                    }
                }
            }
        }
    }
    let _ = wr.shutdown().await;
}

/// Writes `first` and every other reply already complete, in one write when they are small.
async fn write_replies<F: Future<Output = Bytes>>(
    wr: &mut tokio::net::tcp::OwnedWriteHalf,
    outbuf: &mut BytesMut,
    first: Bytes,
    inflight: &mut FuturesOrdered<F>,
) -> std::io::Result<()> {
    let mut next = Some(first);
    while let Some(reply) = next.take() {
        if reply.len() >= DIRECT_WRITE {
            if !outbuf.is_empty() {
                wr.write_all(outbuf).await?;
                outbuf.clear();
            }
            wr.write_all(&reply).await?;
        } else {
            outbuf.extend_from_slice(&reply);
        }
        if !inflight.is_empty() {
            next = inflight.next().now_or_never().flatten();
        }
    }
    if !outbuf.is_empty() {
        wr.write_all(outbuf).await?;
        outbuf.clear();
    }
    Ok(())
}
