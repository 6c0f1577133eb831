//! The double-write delay probe: every `mirror.probe_interval_ms`, a probe key is written
//! through the same path as a client's write (so it is mirrored like one), then each mirror
//! is polled directly until the value appears. The time from the primary's acknowledgement
//! to its appearance on a mirror is the double-write delay shown in INFO.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tracing::debug;

use crate::dispatch::SendOptions;
use crate::local::ClientState;
use crate::mirror::micros_since;
use crate::plan;
use crate::resp::reply::bulk_body;
use crate::resp::{Proto, Request};
use crate::shared::Shared;

/// Longest a probe waits for a mirror.
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs the probe until the process ends, every `mirror.probe_interval_ms` of the
/// configuration in force, while there are mirrors.
pub async fn run(shared: Arc<Shared>) {
    let mut state = ClientState::new(0, false);
    let key = format!("slotgate:probe:{}", std::process::id());
    let get = crate::command::lookup(b"GET").expect("GET is in the table");
    let opts = SendOptions {
        idempotent: true,
        ..SendOptions::internal()
    };
    loop {
        // Mirrors a reload removed are let go of even while the probe is off.
        state.follow_mirrors(&shared);
        let interval = shared.live().mirror.probe_interval_ms;
        if interval == 0 || state.mirrors.is_none() {
            // Off: look again later (a reload may turn it on).
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        }
        tokio::time::sleep(Duration::from_millis(interval)).await;
        state.follow_mirrors(&shared);
        let Some(mirrors) = state.mirrors.clone() else {
            continue;
        };
        // Unique per probe: the time, and a random part for probes within one millisecond.
        let nonce = format!("{}-{}", crate::clock::now_ms(), rand::random::<u32>());
        let req = Request::from_args(&["SET", key.as_str(), nonce.as_str(), "PX", "60000"]);
        let spec = crate::command::resolve(&req);
        let (step, _) = plan::handle(&shared, &mut state, req, spec).await;
        let reply = plan::complete(&shared, step, Proto::Resp2).await;
        if reply.first() == Some(&b'-') {
            debug!(reply = %String::from_utf8_lossy(&reply).trim_end(), "delay probe write failed");
            continue;
        }
        let acked = Instant::now();
        let read = Request::from_args(&["GET", key.as_str()]);
        for r in mirrors
            .resources
            .iter()
            .filter(|r| r.rules.matches(key.as_bytes()))
        {
            loop {
                let submitted = r.link.cluster.submit(get, &read, opts).await;
                let value = r.link.cluster.wait(submitted).await;
                if bulk_body(&value) == Some(nonce.as_bytes()) {
                    let us = micros_since(acked);
                    r.link.last_delay_us.store(us, Ordering::Relaxed);
                    r.link.delay.record(Duration::from_micros(us));
                    break;
                }
                if acked.elapsed() > PROBE_TIMEOUT {
                    debug!(mirror = %r.name, "delay probe timed out");
                    break;
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
    }
}
