//! The invalidation connections: while any client tracks, one RESP3 connection per master
//! serving slots, with `CLIENT TRACKING ON BCAST`, hears every key modified on that master.
//! The manager follows the slot table (new masters, failovers); a connection that
//! (re)connects, and a table in which slots changed owner, flush every tracking client.
//! While a master that had a confirmed connection has none (it broke and the new one is not
//! confirmed yet), changes there go unheard: every tracking client is flushed at the loss
//! and then every `CHECK` until the connection is back, so no client keeps a value longer
//! than that.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tracing::{debug, warn};

use crate::backend::conn::{self, ConnSettings};
use crate::resp::reply::{bulk_body, elements};
use crate::resp::{Proto, ReplyScanner, Request};
use crate::shared::Shared;
use crate::topology::SlotTable;
use crate::tracking::Tracking;

/// How often the manager looks at the slot table and its connections.
const CHECK: Duration = Duration::from_millis(200);

/// Runs the manager until the process ends.
pub async fn run(shared: Arc<Shared>) {
    let hub = shared.tracking.clone();
    // Per master: the connection's task, and whether CLIENT TRACKING was confirmed on it.
    let mut conns: HashMap<Arc<str>, (tokio::task::JoinHandle<()>, Arc<AtomicBool>)> =
        HashMap::new();
    let mut owners: Option<Arc<SlotTable>> = None;
    // Every serving master had a confirmed connection at some point since tracking began:
    // from then on, one missing means changes may go unheard.
    let mut was_ready = false;
    let mut check = tokio::time::interval(CHECK);
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = check.tick() => {}
            _ = hub.wake.notified() => {}
        }
        if hub.clients.load(Ordering::Relaxed) <= 0 {
            for (_, (task, _)) in conns.drain() {
                task.abort();
            }
            owners = None;
            was_ready = false;
            hub.ready.send_replace(false);
            continue;
        }
        let table = shared.primary.topology.table();
        if let Some(before) = &owners
            && before.generation != table.generation
            && !before.same_owners(&table)
        {
            debug!("slots changed owner: every tracking client is flushed");
            hub.flush();
        }
        owners = Some(table.clone());
        let serving = table.serving_masters();
        conns.retain(|addr, (task, _)| {
            let keep = serving.contains(addr) && !task.is_finished();
            if !keep {
                task.abort();
            }
            keep
        });
        for addr in serving {
            if conns.contains_key(&addr) {
                continue;
            }
            let settings = ConnSettings {
                kind: crate::backend::node_stats::ConnKind::Tracking,
                ..shared.primary.backends.conn_settings(
                    &addr,
                    Proto::Resp3,
                    1,
                    crate::backend::users::UserId::SERVICE,
                )
            };
            let confirmed = Arc::new(AtomicBool::new(false));
            let task = tokio::spawn(listen(settings, hub.clone(), confirmed.clone()));
            conns.insert(addr, (task, confirmed));
        }
        let all = !conns.is_empty() && conns.values().all(|(_, c)| c.load(Ordering::Acquire));
        if all {
            was_ready = true;
        } else if was_ready {
            debug!("an invalidation connection is down: every tracking client is flushed");
            hub.flush();
        }
        hub.ready
            .send_if_modified(|r| std::mem::replace(r, all) != all);
    }
}

/// One master's invalidation connection: announces every key it reports until it breaks.
async fn listen(settings: ConnSettings, hub: Arc<Tracking>, up: Arc<AtomicBool>) {
    let stream = match conn::connect(&settings).await {
        Ok(s) => s,
        Err(e) => {
            debug!(node = %settings.addr, error = %e, "invalidation connection failed");
            return;
        }
    };
    let _up = crate::backend::node_stats::Connected::new(&settings.stats, settings.kind);
    let (mut rd, mut wr) = tokio::io::split(stream);
    let on = Request::from_args(&["CLIENT", "TRACKING", "ON", "BCAST"]);
    if wr.write_all(&on.raw).await.is_err() || wr.flush().await.is_err() {
        return;
    }
    let mut buf = BytesMut::with_capacity(16 * 1024);
    let mut scanner = ReplyScanner::new();
    let mut confirmed = false;
    loop {
        match rd.read_buf(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        loop {
            let n = match scanner.next(&buf) {
                Ok(Some(n)) => n,
                Ok(None) => break,
                Err(e) => {
                    warn!(node = %settings.addr, error = %e, "bad frame on the invalidation connection");
                    return;
                }
            };
            let frame = buf.split_to(n).freeze();
            if frame.first() == Some(&b'>') {
                announce(&hub, &frame);
            } else if !confirmed {
                if !frame.starts_with(b"+OK") {
                    warn!(
                        node = %settings.addr,
                        reply = %String::from_utf8_lossy(&frame).trim_end(),
                        "CLIENT TRACKING refused: invalidations from this node are not heard"
                    );
                    return;
                }
                // What was modified before this point was not announced here.
                confirmed = true;
                debug!(node = %settings.addr, "invalidation connection up: flushing tracking clients");
                hub.flush();
                up.store(true, Ordering::Release);
                hub.wake.notify_one();
            }
        }
        if buf.capacity() - buf.len() < 1024 {
            buf.reserve(16 * 1024);
        }
    }
    if confirmed {
        // Changes on this master go unheard from now until a new connection is confirmed.
        warn!(node = %settings.addr, "invalidation connection lost: tracking clients flushed until it is back");
        up.store(false, Ordering::Release);
        hub.flush();
        hub.wake.notify_one();
    } else {
        debug!(node = %settings.addr, "invalidation connection lost");
    }
}

/// An `invalidate` push: its keys, or null (the node flushed its data).
fn announce(hub: &Tracking, frame: &Bytes) {
    let Some(parts) = elements(frame) else {
        return;
    };
    if parts.len() != 2 || bulk_body(parts[0]) != Some(&b"invalidate"[..]) {
        return;
    }
    match elements(parts[1]) {
        Some(keys) => {
            let keys: Vec<Bytes> = keys
                .iter()
                .filter_map(|k| bulk_body(k))
                .map(Bytes::copy_from_slice)
                .collect();
            hub.invalidate(&keys);
        }
        None => hub.flush(),
    }
}
