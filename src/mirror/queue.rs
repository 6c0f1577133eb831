//! The durable queue of the async multi-write mode, behind a small trait so other engines
//! (Kafka, NATS JetStream) can be added. The engine here is Redis Streams on a Redis the
//! operator names: `XADD`, read by consumers of one group, trimmed by the consumers only
//! below the oldest entry not acknowledged (`XTRIM MINID`). A stream as long as `maxlen`
//! refuses writes instead of dropping entries.

use std::fmt::Debug;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use bytes::Bytes;
use futures::future::BoxFuture;

use crate::config::{Config, QueueConfig};
use crate::dispatch::{Cluster, ClusterAccess, SendOptions, Target};
use crate::resp::Request;
use crate::resp::reply::bulk_body;
use crate::resp::reply::{elements, integer};

/// How far consumers are behind.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Lag {
    /// Entries in the stream.
    pub length: u64,
    /// Entries not yet delivered to the group.
    pub undelivered: u64,
    /// Entries delivered but not acknowledged.
    pub pending: u64,
    /// Age of the oldest entry not yet acknowledged, in seconds.
    pub seconds: f64,
}

/// A durable, ordered queue of write commands.
pub trait WriteQueue: Send + Sync + Debug {
    /// Appends one command (RESP bytes) of hash slot `slot` (none: keyless); resolves once
    /// the queue has stored it. Commands of one slot keep their order.
    fn push(&self, slot: Option<u16>, command: Bytes) -> BoxFuture<'_, Result<(), String>>;
    /// How far the consumers are behind.
    fn lag(&self) -> BoxFuture<'_, Option<Lag>>;
}

/// The Redis Streams queue.
#[derive(Debug)]
pub struct StreamQueue {
    pub redis: Cluster,
    pub settings: QueueConfig,
    /// The stream was at `maxlen` at the last check: writes are refused.
    full: AtomicBool,
    /// When the length was last checked (Unix ms).
    checked_ms: AtomicU64,
}

/// How often a producer checks the stream's length against `maxlen`.
const LENGTH_CHECK_MS: u64 = 500;

/// Field name of the command in each stream entry.
pub const FIELD: &str = "c";

impl QueueConfig {
    /// The stream holding partition `p`.
    pub fn partition_stream(&self, p: u32) -> String {
        if self.partitions <= 1 {
            self.stream.clone()
        } else {
            format!("{}:{p}", self.stream)
        }
    }

    /// Every partition's stream.
    pub fn streams(&self) -> Vec<String> {
        (0..self.partitions.max(1))
            .map(|p| self.partition_stream(p))
            .collect()
    }

    /// The partition of a command of `slot`.
    pub fn partition_of(&self, slot: Option<u16>) -> u32 {
        slot.map_or(0, |s| u32::from(s) % self.partitions.max(1))
    }
}

impl StreamQueue {
    pub fn connect(settings: &QueueConfig, config: &Config) -> StreamQueue {
        StreamQueue {
            redis: Cluster::connect(
                ClusterAccess {
                    name: "queue".into(),
                    seeds: vec![settings.redis.clone()],
                    standalone: true,
                    username: None,
                    password: settings.password.clone(),
                    tls: None,
                },
                config,
            ),
            settings: settings.clone(),
            full: AtomicBool::new(false),
            checked_ms: AtomicU64::new(0),
        }
    }

    /// Whether the stream is at `maxlen` (checked at most every `LENGTH_CHECK_MS`).
    async fn is_full(&self) -> bool {
        let now = crate::clock::now_ms();
        let last = self.checked_ms.load(Ordering::Relaxed);
        if now.saturating_sub(last) >= LENGTH_CHECK_MS
            && self
                .checked_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            let mut total = 0u64;
            for stream in self.settings.streams() {
                let n = integer(&self.call(&[b"XLEN", stream.as_bytes()], false).await);
                total += n.unwrap_or(0).max(0) as u64;
            }
            self.full
                .store(total >= self.settings.maxlen, Ordering::Relaxed);
        }
        self.full.load(Ordering::Relaxed)
    }

    /// Sends one command to the queue's Redis and returns the reply.
    pub async fn call(&self, args: &[&[u8]], dedicated: bool) -> Bytes {
        self.call_request(Request::from_args(args), dedicated).await
    }

    /// As `call`, for a request already built.
    pub async fn call_request(&self, req: Request, dedicated: bool) -> Bytes {
        let opts = SendOptions {
            dedicated,
            ..SendOptions::internal()
        };
        let flight = self.redis.start(req.raw, Target::Any, opts).await;
        self.redis.finish(flight).await
    }
}

fn reply_error(reply: &[u8]) -> Option<String> {
    (reply.first() == Some(&b'-'))
        .then(|| String::from_utf8_lossy(&reply[1..]).trim_end().to_string())
}

/// The fields of `group` in an `XINFO GROUPS` reply (name/value pairs).
pub fn group_fields<'a>(groups: &'a [u8], group: &[u8]) -> Option<Vec<&'a [u8]>> {
    elements(groups)?
        .into_iter()
        .filter_map(elements)
        .find(|fields| field(fields, "name").and_then(bulk_body) == Some(group))
}

/// A field's raw value among name/value pairs.
pub fn field<'a>(fields: &[&'a [u8]], name: &str) -> Option<&'a [u8]> {
    fields
        .chunks(2)
        .find(|kv| bulk_body(kv[0]) == Some(name.as_bytes()))
        .and_then(|kv| kv.get(1).copied())
}

/// The millisecond part of a stream entry id.
pub fn id_ms(id: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(id).ok()?;
    text.split('-').next()?.parse().ok()
}

impl WriteQueue for StreamQueue {
    fn push(&self, slot: Option<u16>, command: Bytes) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            if self.is_full().await {
                return Err(format!(
                    "the queue holds maxlen ({}) entries: the consumers are behind",
                    self.settings.maxlen
                ));
            }
            let stream = self
                .settings
                .partition_stream(self.settings.partition_of(slot));
            let reply = self
                .call(
                    &[b"XADD", stream.as_bytes(), b"*", FIELD.as_bytes(), &command],
                    false,
                )
                .await;
            match reply_error(&reply) {
                Some(e) => Err(e),
                None => Ok(()),
            }
        })
    }

    fn lag(&self) -> BoxFuture<'_, Option<Lag>> {
        Box::pin(async move {
            // Summed over the partitions; the age is the oldest partition's.
            let mut total: Option<Lag> = None;
            for stream in self.settings.streams() {
                let Some(lag) = self.stream_lag(stream.as_bytes()).await else {
                    continue;
                };
                let t = total.get_or_insert_with(Lag::default);
                t.length += lag.length;
                t.undelivered += lag.undelivered;
                t.pending += lag.pending;
                t.seconds = t.seconds.max(lag.seconds);
            }
            total
        })
    }
}

impl StreamQueue {
    /// How far the consumers are behind on one stream.
    async fn stream_lag(&self, stream: &[u8]) -> Option<Lag> {
        {
            let length = integer(&self.call(&[b"XLEN", stream], false).await)?;
            let groups = self.call(&[b"XINFO", b"GROUPS", stream], false).await;
            // Until a consumer made its group, nothing was delivered: every entry waits.
            let mut lag = Lag {
                length: length as u64,
                undelivered: length as u64,
                ..Lag::default()
            };
            let mut last_delivered = None;
            if let Some(fields) = group_fields(&groups, self.settings.group.as_bytes()) {
                let get = |name: &str| field(&fields, name);
                lag.pending = get("pending").and_then(integer).unwrap_or(0) as u64;
                lag.undelivered = get("lag").and_then(integer).unwrap_or(length) as u64;
                last_delivered = get("last-delivered-id")
                    .and_then(bulk_body)
                    .map(Bytes::copy_from_slice);
            }
            // The oldest entry not acknowledged: the first pending one, else the first after
            // the last delivered.
            let pending = self
                .call(
                    &[b"XPENDING", stream, self.settings.group.as_bytes()],
                    false,
                )
                .await;
            let oldest = elements(&pending)
                .and_then(|p| p.get(1).and_then(|id| bulk_body(id)).and_then(id_ms));
            let oldest = match oldest {
                Some(ms) => Some(ms),
                None if lag.undelivered > 0 => {
                    let start = last_delivered
                        .as_ref()
                        .map(|id| format!("({}", String::from_utf8_lossy(id)))
                        .unwrap_or_else(|| "-".into());
                    let first = self
                        .call(
                            &[b"XRANGE", stream, start.as_bytes(), b"+", b"COUNT", b"1"],
                            false,
                        )
                        .await;
                    elements(&first)
                        .and_then(|e| e.first().and_then(|entry| elements(entry)))
                        .and_then(|entry| {
                            entry.first().and_then(|id| bulk_body(id)).and_then(id_ms)
                        })
                }
                None => None,
            };
            if let Some(ms) = oldest {
                let now = crate::clock::now_ms();
                lag.seconds = now.saturating_sub(ms) as f64 / 1000.0;
            }
            Some(lag)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_ids() {
        assert_eq!(id_ms(b"1700000000000-3"), Some(1_700_000_000_000));
        assert_eq!(id_ms(b"x-1"), None);
    }
}
