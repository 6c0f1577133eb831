//! Consumer mode (`slotgate consume`): reads the durable queue of the async multi-write mode
//! and applies each command to the mirrors, in order, acknowledging an entry only after every
//! mirror accepted it. Delivery is at least once: after a restart a consumer first re-applies
//! what it had read but not acknowledged, and a consumer claims the entries another left
//! pending for `claim_idle_ms` (that one died). A mirror that cannot be reached (or answers
//! a transient error: CLUSTERDOWN, TRYAGAIN, LOADING, ...) is retried with backoff for as
//! long as it takes; only an entry a mirror rejects for good (WRONGTYPE, a syntax error)
//! goes to the dead-letter stream, after `max_attempts`. The stream is trimmed only below the
//! oldest entry not acknowledged (`XTRIM MINID`).

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
use crate::mirror::queue::{FIELD, StreamQueue, WriteQueue, field, group_fields};
use crate::resp::reply::bulk_body;
use crate::resp::reply::elements;
use crate::resp::{Limits, Request, RequestScanner};

/// One stream entry: its stream, its id and the command it carries.
#[derive(Debug)]
struct Entry {
    stream: Bytes,
    id: Bytes,
    command: Option<Bytes>,
}

/// Parses an `XREADGROUP` reply (RESP2) into entries, stream by stream in reply order.
fn entries(reply: &[u8]) -> Vec<Entry> {
    let mut out = Vec::new();
    for stream in elements(reply).unwrap_or_default() {
        let Some(parts) = elements(stream) else {
            continue;
        };
        let Some(name) = parts.first().and_then(|n| bulk_body(n)) else {
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
            let command = fields
                .get(1)
                .and_then(|f| elements(f))
                .and_then(|kv| field(&kv, FIELD).and_then(bulk_body))
                .map(Bytes::copy_from_slice);
            out.push(Entry {
                stream: Bytes::copy_from_slice(name),
                id: Bytes::copy_from_slice(id),
                command,
            });
        }
    }
    out
}

/// Renews a lease this consumer holds: 1 when renewed, 0 when another consumer has it.
const RENEW: &str = "if redis.call('GET', KEYS[1]) == ARGV[1] then \
    redis.call('PEXPIRE', KEYS[1], ARGV[2]) return 1 end return 0";
/// Gives a lease up, if this consumer holds it.
const RELEASE: &str = "if redis.call('GET', KEYS[1]) == ARGV[1] then \
    return redis.call('DEL', KEYS[1]) end return 0";

/// The partitions this consumer applies: one lease per partition stream, held by one
/// consumer at a time, so each partition (and each slot) is applied in order. Live
/// consumers announce themselves in a sorted set; each holds at most its fair share of the
/// partitions, so a consumer that joins gets some and one that dies leaves its share to
/// the others.
struct Leases {
    /// Where live consumers announce themselves (score: last announcement, Unix ms).
    roster: String,
    streams: Vec<String>,
    owned: Vec<bool>,
    lease_ms: u64,
    renewed: Option<Instant>,
}

impl Leases {
    fn key(stream: &str) -> String {
        format!("{stream}:lease")
    }

    /// Renews the held leases and takes the free ones, when a third of the lease time
    /// passed; returns the partitions newly taken (their pending entries are claimed).
    async fn refresh(&mut self, queue: &StreamQueue, consumer: &[u8]) -> Vec<usize> {
        if self
            .renewed
            .is_some_and(|t| t.elapsed() < Duration::from_millis(self.lease_ms / 3))
        {
            return Vec::new();
        }
        self.renewed = Some(Instant::now());
        let ms = self.lease_ms.to_string();
        // Announce this consumer, forget the silent ones, and work out the fair share.
        let now = crate::clock::now_ms();
        let roster = self.roster.as_bytes();
        let _ = queue
            .call(
                &[b"ZADD", roster, now.to_string().as_bytes(), consumer],
                false,
            )
            .await;
        let stale = now.saturating_sub(self.lease_ms).to_string();
        let _ = queue
            .call(
                &[b"ZREMRANGEBYSCORE", roster, b"-inf", stale.as_bytes()],
                false,
            )
            .await;
        let live = crate::resp::reply::integer(&queue.call(&[b"ZCARD", roster], false).await)
            .unwrap_or(1)
            .max(1) as usize;
        let share = self.streams.len().div_ceil(live);
        let mut held_count = 0;
        let mut taken = Vec::new();
        for (p, stream) in self.streams.iter().enumerate() {
            let key = Leases::key(stream);
            let renewed = queue
                .call(
                    &[
                        b"EVAL",
                        RENEW.as_bytes(),
                        b"1",
                        key.as_bytes(),
                        consumer,
                        ms.as_bytes(),
                    ],
                    false,
                )
                .await;
            let mut held = renewed.starts_with(b":1");
            if held && held_count >= share {
                // More than a fair share: leave this one to a consumer that has fewer.
                let _ = queue
                    .call(
                        &[b"EVAL", RELEASE.as_bytes(), b"1", key.as_bytes(), consumer],
                        false,
                    )
                    .await;
                held = false;
            } else if !held && held_count < share {
                let set = queue
                    .call(
                        &[
                            b"SET",
                            key.as_bytes(),
                            consumer,
                            b"NX",
                            b"PX",
                            ms.as_bytes(),
                        ],
                        false,
                    )
                    .await;
                held = set.starts_with(b"+OK");
                if held {
                    taken.push(p);
                }
            }
            if self.owned[p] && !held {
                info!(stream = %stream, "gave a partition up (lease lost or rebalanced)");
            }
            held_count += usize::from(held);
            self.owned[p] = held;
        }
        taken
    }

    fn owned_streams(&self) -> Vec<&str> {
        self.streams
            .iter()
            .zip(&self.owned)
            .filter(|(_, o)| **o)
            .map(|(s, _)| s.as_str())
            .collect()
    }

    async fn release(&self, queue: &StreamQueue, consumer: &[u8]) {
        let _ = queue
            .call(&[b"ZREM", self.roster.as_bytes(), consumer], false)
            .await;
        for stream in self.owned_streams() {
            let key = Leases::key(stream);
            let _ = queue
                .call(
                    &[b"EVAL", RELEASE.as_bytes(), b"1", key.as_bytes(), consumer],
                    false,
                )
                .await;
        }
    }
}

/// Makes every entry pending in `stream` this consumer's: taken over from a consumer whose
/// lease ran out (it died or stalled).
async fn claim_all(queue: &StreamQueue, stream: &[u8], group: &[u8], consumer: &[u8]) -> usize {
    let mut start = Bytes::from_static(b"0-0");
    let mut claimed = 0;
    loop {
        let reply = queue
            .call(
                &[
                    b"XAUTOCLAIM",
                    stream,
                    group,
                    consumer,
                    b"0",
                    &start,
                    b"COUNT",
                    b"1000",
                ],
                false,
            )
            .await;
        let Some(parts) = elements(&reply) else {
            return claimed;
        };
        claimed += parts
            .get(1)
            .and_then(|l| elements(l))
            .map_or(0, |l| l.len());
        match parts.first().and_then(|n| bulk_body(n)) {
            Some(next) if next != b"0-0" => start = Bytes::copy_from_slice(next),
            _ => return claimed,
        }
    }
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
    let mirrors = Mirrors::build(&config, None)
        .map_err(|e| e.to_string())?
        .ok_or("no mirrors configured")?;
    let queue = Arc::new(StreamQueue::connect(&settings, &config));
    let group = settings.group.as_bytes();
    let consumer = settings.consumer.as_bytes();
    for stream in settings.streams() {
        let reply = queue
            .call(
                &[
                    b"XGROUP",
                    b"CREATE",
                    stream.as_bytes(),
                    group,
                    b"0",
                    b"MKSTREAM",
                ],
                false,
            )
            .await;
        if reply.first() == Some(&b'-') && !reply.starts_with(b"-BUSYGROUP") {
            return Err(format!(
                "cannot create the consumer group: {}",
                String::from_utf8_lossy(&reply).trim_end()
            ));
        }
    }
    info!(stream = %settings.stream, partitions = settings.partitions, group = %settings.group, consumer = %settings.consumer, "consumer started");
    let batch = settings.batch.to_string();
    let lease_ms = settings.claim_idle_ms.max(300);
    let mut leases = Leases {
        roster: format!("{}:consumers", settings.stream),
        streams: settings.streams(),
        owned: vec![false; settings.streams().len()],
        lease_ms,
        renewed: None,
    };
    // A read blocks at most a third of the lease, so leases are renewed in time.
    let block_ms = (lease_ms / 3).clamp(100, 1000).to_string();
    let retry_max = RETRY_MAX.min(Duration::from_millis(lease_ms / 3));
    let mut attempts: HashMap<Bytes, u32> = HashMap::new();
    let mut last_report = Instant::now();
    let mut last_trim = Instant::now();
    // Wait before retrying after a transient failure; doubles up to a cap.
    let mut backoff = RETRY_FIRST;
    tokio::pin!(shutdown);
    loop {
        for p in leases.refresh(&queue, consumer).await {
            let stream = leases.streams[p].clone();
            let n = claim_all(&queue, stream.as_bytes(), group, consumer).await;
            info!(stream = %stream, claimed = n, "took a partition over");
        }
        let owned: Vec<String> = leases
            .owned_streams()
            .into_iter()
            .map(String::from)
            .collect();
        if owned.is_empty() {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(lease_ms / 3)) => continue,
                _ = &mut shutdown => return Ok(()),
            }
        }
        // First what this consumer read before but did not acknowledge, then new entries.
        let read = |from: &'static [u8], block: Option<&str>| {
            let mut args: Vec<&[u8]> = vec![b"XREADGROUP", b"GROUP", group, consumer];
            args.extend([&b"COUNT"[..], batch.as_bytes()]);
            if let Some(ms) = block {
                args.extend([&b"BLOCK"[..], ms.as_bytes()]);
            }
            args.push(b"STREAMS");
            args.extend(owned.iter().map(|s| s.as_bytes()));
            args.extend(owned.iter().map(|_| from));
            Request::from_args(&args)
        };
        let pending = queue.call_request(read(b"0", None), false).await;
        let mut todo = entries(&pending);
        if todo.is_empty() {
            let read_new = queue.call_request(read(b">", Some(&block_ms)), true);
            let reply = tokio::select! {
                r = read_new => r,
                _ = &mut shutdown => {
                    leases.release(&queue, consumer).await;
                    return Ok(());
                }
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
                None => Err(Failure::Permanent("entry without a command".to_string())),
            };
            let ack = match outcome {
                Ok(()) => {
                    backoff = RETRY_FIRST;
                    true
                }
                Err(Failure::Transient(e)) => {
                    // Never dead-lettered: the mirror will be back; later entries wait, so
                    // order holds.
                    warn!(id = %String::from_utf8_lossy(&entry.id), error = %e, retry_in_ms = backoff.as_millis() as u64, "mirror unavailable; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = &mut shutdown => {
                            leases.release(&queue, consumer).await;
                            return Ok(());
                        }
                    }
                    backoff = (backoff * 2).min(retry_max);
                    break;
                }
                Err(Failure::Permanent(e)) => {
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
                    .call(&[b"XACK", &entry.stream, group, &entry.id], false)
                    .await;
            }
        }
        if last_trim.elapsed() > TRIM_EVERY {
            last_trim = Instant::now();
            for stream in &owned {
                trim_acknowledged(&queue, stream.as_bytes(), group).await;
            }
        }
        if last_report.elapsed() > Duration::from_secs(5) {
            last_report = Instant::now();
            if let Some(lag) = queue.lag().await {
                info!(
                    undelivered = lag.undelivered,
                    pending = lag.pending,
                    lag_seconds = lag.seconds,
                    partitions_owned = owned.len(),
                    "consumer lag"
                );
            }
        }
    }
}

/// First wait after a transient failure, and the longest.
const RETRY_FIRST: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(5);
/// How often acknowledged entries are trimmed from the stream.
const TRIM_EVERY: Duration = Duration::from_secs(1);

/// Why an entry could not be applied.
#[derive(Debug)]
enum Failure {
    /// The mirror cannot take it now (unreachable, CLUSTERDOWN, LOADING, ...): retry.
    Transient(String),
    /// The mirror will never take it (WRONGTYPE, a syntax error): dead-letter it.
    Permanent(String),
}

/// Whether a mirror's error reply may go away by itself.
fn transient(reply: &[u8]) -> bool {
    const PASSING: &[&[u8]] = &[
        // slotgate's own: the node could not be reached or did not answer in time.
        b"-ERR slotgate",
        b"-CLUSTERDOWN",
        b"-TRYAGAIN",
        b"-LOADING",
        b"-MASTERDOWN",
        b"-BUSY",
        b"-NOREPLICAS",
        b"-READONLY",
        b"-OOM",
        b"-MOVED",
        b"-ASK",
    ];
    PASSING.iter().any(|p| reply.starts_with(p))
}

/// Removes the entries every consumer acknowledged: those below the oldest pending entry,
/// or, with none pending, up to the last one delivered. Never an entry not yet applied.
async fn trim_acknowledged(queue: &StreamQueue, stream: &[u8], group: &[u8]) {
    let summary = queue.call(&[b"XPENDING", stream, group], false).await;
    let oldest_pending = elements(&summary).and_then(|p| {
        p.get(1)
            .and_then(|id| bulk_body(id))
            .map(Bytes::copy_from_slice)
    });
    let minid = match oldest_pending {
        Some(id) => id,
        None => {
            let groups = queue.call(&[b"XINFO", b"GROUPS", stream], false).await;
            let last = group_fields(&groups, group)
                .and_then(|fields| field(&fields, "last-delivered-id").and_then(bulk_body));
            // Everything up to and including the last delivered entry: MINID is exclusive
            // of what it keeps, so the next possible id.
            let Some(next) = last.and_then(next_id) else {
                return;
            };
            Bytes::from(next)
        }
    };
    let _ = queue
        .call(&[b"XTRIM", stream, b"MINID", &minid], false)
        .await;
}

/// The smallest stream id after `id` (`ms-seq` to `ms-(seq+1)`).
fn next_id(id: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(id).ok()?;
    let (ms, seq) = text.split_once('-')?;
    let ms: u64 = ms.parse().ok()?;
    let seq: u64 = seq.parse().ok()?;
    Some(match seq.checked_add(1) {
        Some(s) => format!("{ms}-{s}"),
        None => format!("{}-0", ms + 1),
    })
}

/// Applies one queued command to every mirror whose rules take it.
async fn apply(mirrors: &Mirrors, command: &Bytes) -> Result<(), Failure> {
    let mut scanner = RequestScanner::new(Limits::default());
    let mut buf = BytesMut::from(&command[..]);
    let req = scanner
        .next(&mut buf, true)
        .map_err(|e| Failure::Permanent(e.to_string()))?
        .ok_or_else(|| Failure::Permanent("truncated command".into()))?;
    let spec = resolve(&req).ok_or_else(|| Failure::Permanent("unknown command".into()))?;
    let opts = SendOptions::internal();
    for r in &mirrors.resources {
        let Some(filtered) = r.filter(spec, &req) else {
            continue;
        };
        let submitted = r.link.cluster.submit(spec, &filtered, opts).await;
        let reply = r.link.cluster.wait(submitted).await;
        if reply.first() == Some(&b'-') {
            let text = format!(
                "mirror '{}' answered {}",
                r.name,
                String::from_utf8_lossy(&reply).trim_end()
            );
            return Err(if transient(&reply) {
                Failure::Transient(text)
            } else {
                Failure::Permanent(text)
            });
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

    #[test]
    fn ids_and_failures() {
        assert_eq!(next_id(b"1700-3").as_deref(), Some("1700-4"));
        assert_eq!(
            next_id(format!("5-{}", u64::MAX).as_bytes()).as_deref(),
            Some("6-0")
        );
        assert_eq!(next_id(b"x"), None);
        assert!(transient(b"-CLUSTERDOWN The cluster is down\r\n"));
        assert!(transient(
            b"-ERR slotgate: connection to 127.0.0.1:1 refused\r\n"
        ));
        assert!(!transient(b"-WRONGTYPE Operation against a key\r\n"));
        assert!(!transient(b"-ERR syntax error\r\n"));
    }
}
