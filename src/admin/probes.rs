//! Readiness: every slot has an owner and every master answers on a live connection.

use std::time::Duration;

use bytes::Bytes;
use futures::future::join_all;

use crate::shared::Shared;
use crate::slot::SLOT_COUNT;

/// How long a master may take to answer the readiness PING.
const PING_TIMEOUT: Duration = Duration::from_secs(1);

/// `Ok` when slotgate can serve every slot now; else why not. Only masters that own slots
/// count (a failed master that lost its slots to its replica does not).
pub async fn ready(shared: &Shared) -> Result<(), String> {
    if *shared.notices.borrow() {
        return Err("shutting down".into());
    }
    let table = shared.primary.topology.table();
    let assigned = table.assigned_slots();
    if assigned < SLOT_COUNT {
        return Err(format!(
            "{} of {SLOT_COUNT} slots have no known owner",
            SLOT_COUNT - assigned
        ));
    }
    let ping = Bytes::from_static(b"*1\r\n$4\r\nPING\r\n");
    let serving = table
        .masters
        .iter()
        .zip(table.slots_per_master())
        .filter(|(_, slots)| *slots > 0)
        .map(|(m, _)| m);
    let answers = join_all(serving.map(|m| {
        let ping = ping.clone();
        async move {
            let reply = shared
                .primary
                .backends
                .request(&m.addr, ping, PING_TIMEOUT)
                .await;
            (m.addr.clone(), reply)
        }
    }))
    .await;
    for (addr, reply) in answers {
        match reply {
            Ok(r) if r.starts_with(b"+PONG") => {}
            Ok(r) => {
                return Err(format!(
                    "master {addr} answered PING with {}",
                    String::from_utf8_lossy(&r).trim_end()
                ));
            }
            Err(e) => return Err(format!("master {addr} does not answer: {e}")),
        }
    }
    Ok(())
}
