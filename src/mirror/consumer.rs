//! Consumer mode (`slotgate consume`): reads the durable queue of the async multi-write mode
//! and applies each command to the mirrors, in order, acknowledging an entry only after every
//! mirror accepted it. A crash of either side loses nothing (delivery is at least once: after
//! a restart the consumer first re-applies what it had read but not acknowledged). An entry a
//! mirror keeps rejecting goes to the dead-letter stream after `max_attempts`.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tracing::{info, warn};

use crate::command::resolve;
use crate::config::Config;
use crate::dispatch::SendOptions;
use crate::mirror::Mirrors;
use crate::mirror::queue::{FIELD, StreamQueue, WriteQueue};
use crate::resp::reply::bulk_body;
use crate::resp::reply::elements;
use crate::resp::{Limits, RequestScanner};

/// One stream entry: its id and the command it carries.
#[derive(Debug)]
struct Entry {
    id: Bytes,
    command: Option<Bytes>,
}

/// Parses an `XREADGROUP` reply (RESP2) into entries.
fn entries(reply: &[u8]) -> Vec<Entry> {
    let mut out = Vec::new();
    for stream in elements(reply).unwrap_or_default() {
        let Some(parts) = elements(stream) else {
            continue;
        };
        let Some(list) = parts.get(1).and_then(|l| elements(l)) else {
            continue;
        };
        for e in list {
            let Some(fields) = elements(e) else { continue };
            let Some(id) = fields.first().and_then(|i| bulk_body(i)) else {
                continue;
            };
            let command = fields.get(1).and_then(|f| elements(f)).and_then(|kv| {
                kv.chunks(2)
                    .find(|c| bulk_body(c[0]) == Some(FIELD.as_bytes()))
                    .and_then(|c| c.get(1).and_then(|v| bulk_body(v)))
                    .map(Bytes::copy_from_slice)
            });
            out.push(Entry {
                id: Bytes::copy_from_slice(id),
                command,
            });
        }
    }
    out
}

/// Runs the consumer until `shutdown` completes.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> Result<(), String> {
    let settings = config
        .mirror
        .queue
        .clone()
        .ok_or("consumer mode needs mirror.queue in the config")?;
    if config.mirror.resources.is_empty() {
        return Err("consumer mode needs at least one mirror in mirror.resources".into());
    }
    let mirrors = Mirrors::build(&config).ok_or("no mirrors configured")?;
    let queue = Arc::new(StreamQueue::connect(&settings, &config));
    let stream = settings.stream.as_bytes();
    let group = settings.group.as_bytes();
    let consumer = settings.consumer.as_bytes();
    let reply = queue
        .call(
            &[b"XGROUP", b"CREATE", stream, group, b"0", b"MKSTREAM"],
            false,
        )
        .await;
    if reply.first() == Some(&b'-') && !reply.starts_with(b"-BUSYGROUP") {
        return Err(format!(
            "cannot create the consumer group: {}",
            String::from_utf8_lossy(&reply).trim_end()
        ));
    }
    info!(stream = %settings.stream, group = %settings.group, consumer = %settings.consumer, "consumer started");
    let batch = settings.batch.to_string();
    let mut attempts: HashMap<Bytes, u32> = HashMap::new();
    let mut last_report = Instant::now();
    tokio::pin!(shutdown);
    loop {
        // First what this consumer read before but did not acknowledge, then new entries.
        let pending = queue
            .call(
                &[
                    b"XREADGROUP",
                    b"GROUP",
                    group,
                    consumer,
                    b"COUNT",
                    batch.as_bytes(),
                    b"STREAMS",
                    stream,
                    b"0",
                ],
                false,
            )
            .await;
        let mut todo = entries(&pending);
        if todo.is_empty() {
            let args: [&[u8]; 11] = [
                b"XREADGROUP",
                b"GROUP",
                group,
                consumer,
                b"COUNT",
                batch.as_bytes(),
                b"BLOCK",
                b"1000",
                b"STREAMS",
                stream,
                b">",
            ];
            let read = queue.call(&args, true);
            let reply = tokio::select! {
                r = read => r,
                _ = &mut shutdown => return Ok(()),
            };
            if reply.first() == Some(&b'-') {
                warn!(reply = %String::from_utf8_lossy(&reply).trim_end(), "queue read failed");
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
            todo = entries(&reply);
        }
        for entry in todo {
            let outcome = match &entry.command {
                Some(c) => apply(&mirrors, c).await,
                None => Err("entry without a command".to_string()),
            };
            let ack = match outcome {
                Ok(()) => true,
                Err(e) => {
                    let n = attempts.entry(entry.id.clone()).or_insert(0);
                    *n += 1;
                    if *n >= settings.max_attempts {
                        warn!(id = %String::from_utf8_lossy(&entry.id), error = %e, "moving entry to the dead-letter stream");
                        let cmd = entry.command.clone().unwrap_or_default();
                        let _ = queue
                            .call(
                                &[
                                    b"XADD",
                                    settings.dead_letter.as_bytes(),
                                    b"*",
                                    FIELD.as_bytes(),
                                    &cmd,
                                    b"error",
                                    e.as_bytes(),
                                    b"id",
                                    &entry.id,
                                ],
                                false,
                            )
                            .await;
                        true
                    } else {
                        warn!(id = %String::from_utf8_lossy(&entry.id), attempt = *n, error = %e, "mirror rejected entry; will retry");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        // Later entries wait: order matters more than throughput here.
                        break;
                    }
                }
            };
            if ack {
                attempts.remove(&entry.id);
                let _ = queue
                    .call(&[b"XACK", stream, group, &entry.id], false)
                    .await;
            }
        }
        if last_report.elapsed() > Duration::from_secs(5) {
            last_report = Instant::now();
            if let Some(lag) = queue.lag().await {
                info!(
                    undelivered = lag.undelivered,
                    pending = lag.pending,
                    lag_seconds = lag.seconds,
                    "consumer lag"
                );
            }
        }
    }
}

/// Applies one queued command to every mirror whose rules take it.
async fn apply(mirrors: &Mirrors, command: &Bytes) -> Result<(), String> {
    let mut scanner = RequestScanner::new(Limits::default());
    let mut buf = BytesMut::from(&command[..]);
    let req = scanner
        .next(&mut buf, true)
        .map_err(|e| e.to_string())?
        .ok_or("truncated command")?;
    let spec = resolve(&req).ok_or("unknown command")?;
    let opts = SendOptions::internal();
    for r in &mirrors.resources {
        let Some(filtered) = r.filter(spec, &req) else {
            continue;
        };
        let submitted = r.cluster.submit(spec, &filtered, opts).await;
        let reply = r.cluster.wait(submitted).await;
        if reply.first() == Some(&b'-') {
            return Err(format!(
                "mirror '{}' answered {}",
                r.name,
                String::from_utf8_lossy(&reply).trim_end()
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_xreadgroup_replies() {
        let reply = b"*1\r\n*2\r\n$1\r\ns\r\n*2\r\n*2\r\n$3\r\n1-0\r\n*2\r\n$1\r\nc\r\n$4\r\nPING\r\n*2\r\n$3\r\n2-0\r\n*2\r\n$1\r\nx\r\n$1\r\ny\r\n";
        let e = entries(reply);
        assert_eq!(e.len(), 2);
        assert_eq!(&e[0].id[..], b"1-0");
        assert_eq!(e[0].command.as_deref(), Some(&b"PING"[..]));
        assert_eq!(e[1].command, None);
        assert!(entries(b"*-1\r\n").is_empty());
    }
}
