//! SLOWLOG answered by slotgate: commands that took longer than `slowlog.threshold_us` end to
//! end (from reading the request to its reply being ready), with their arguments, the client
//! and the node that serves their slot, newest first, at most `slowlog.max_len`.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;

use crate::resp::{Encoder, Limits, Proto, Request, RequestScanner};

/// Arguments kept per entry, as Redis keeps them.
const MAX_ARGS: usize = 32;
/// Bytes kept per argument, as Redis keeps them.
const MAX_ARG_LEN: usize = 128;

/// One slow command.
#[derive(Debug, Clone)]
pub struct SlowEntry {
    pub id: u64,
    /// Unix seconds when it finished.
    pub unix_s: u64,
    pub micros: u64,
    pub args: Vec<Bytes>,
    pub client: String,
    pub client_name: Bytes,
    /// The node serving the command's slot when it was logged (`-` for keyless commands).
    pub node: String,
}

#[derive(Debug, Default)]
struct Inner {
    next_id: u64,
    entries: VecDeque<SlowEntry>,
}

/// The slow log.
#[derive(Debug, Default)]
pub struct SlowLog {
    inner: Mutex<Inner>,
}

/// The request in `raw` (kept by the pipeline as it was read), parsed again for a slow
/// entry; `None` if it does not scan.
pub fn parse(raw: &Bytes) -> Option<Request> {
    let mut scanner = RequestScanner::new(Limits::default());
    let mut buf = bytes::BytesMut::from(&raw[..]);
    scanner.next(&mut buf, true).ok().flatten()
}

/// The arguments of a request, truncated as Redis's SLOWLOG truncates them.
fn args_of(req: Option<&Request>) -> Vec<Bytes> {
    let Some(req) = req else {
        return vec![Bytes::from_static(b"(unreadable)")];
    };
    let mut args = Vec::with_capacity(req.len().min(MAX_ARGS));
    for i in 0..req.len() {
        if args.len() + 1 == MAX_ARGS && req.len() > MAX_ARGS {
            args.push(Bytes::from(format!(
                "... ({} more arguments)",
                req.len() - i
            )));
            break;
        }
        let a = req.arg(i);
        if a.len() > MAX_ARG_LEN {
            let mut s = a[..MAX_ARG_LEN].to_vec();
            s.extend_from_slice(format!("... ({} more bytes)", a.len() - MAX_ARG_LEN).as_bytes());
            args.push(Bytes::from(s));
        } else {
            args.push(Bytes::copy_from_slice(a));
        }
    }
    args
}

/// The node serving the slot of `req` now (`-` for a keyless or unreadable command).
pub fn node_for(shared: &crate::shared::Shared, req: Option<&Request>) -> String {
    let Some(req) = req else {
        return "-".into();
    };
    let slot = crate::command::resolve(req).and_then(|spec| spec.slot(req).ok().flatten());
    slot.and_then(|s| {
        shared
            .primary
            .topology
            .peek()
            .master_for(s)
            .map(|m| m.addr.to_string())
    })
    .unwrap_or_else(|| "-".into())
}

impl SlowLog {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Logs a command that took `took`; keeps the newest `max_len`.
    #[allow(clippy::too_many_arguments)]
    pub fn record(
        &self,
        req: Option<&Request>,
        took: Duration,
        client: Option<SocketAddr>,
        client_name: Option<Bytes>,
        node: String,
        max_len: usize,
    ) {
        if max_len == 0 {
            return;
        }
        let args = args_of(req);
        let mut inner = self.lock();
        let id = inner.next_id;
        inner.next_id += 1;
        inner.entries.push_front(SlowEntry {
            id,
            unix_s: crate::clock::now_ms() / 1000,
            micros: u64::try_from(took.as_micros()).unwrap_or(u64::MAX),
            args,
            client: client.map(|a| a.to_string()).unwrap_or_default(),
            client_name: client_name.unwrap_or_default(),
            node,
        });
        inner.entries.truncate(max_len);
    }

    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn reset(&self) {
        self.lock().entries.clear();
    }

    /// `SLOWLOG GET [count]`: the newest `count` entries (10 by default, -1: all), each as
    /// Redis writes one (id, time, microseconds, arguments, client address, client name)
    /// followed by the node that serves the command's slot.
    pub fn get(&self, count: Option<i64>, proto: Proto) -> Bytes {
        let entries: Vec<SlowEntry> = {
            let inner = self.lock();
            let n = match count {
                Some(n) if n < 0 => inner.entries.len(),
                Some(n) => n as usize,
                None => 10,
            };
            inner.entries.iter().take(n).cloned().collect()
        };
        let mut e = Encoder::new(proto);
        e.array(entries.len());
        for s in &entries {
            e.array(7);
            e.integer(s.id as i64);
            e.integer(s.unix_s as i64);
            e.integer(s.micros as i64);
            e.array(s.args.len());
            for a in &s.args {
                e.bulk(a);
            }
            e.bulk(s.client.as_bytes());
            e.bulk(&s.client_name);
            e.bulk(s.node.as_bytes());
        }
        e.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_newest_with_redis_truncation() {
        let log = SlowLog::default();
        let long = "x".repeat(200);
        let raw = crate::resp::Request::from_args(&["SET", "k", long.as_str()]).raw;
        for _ in 0..3 {
            log.record(
                parse(&raw).as_ref(),
                Duration::from_millis(20),
                None,
                None,
                "n:1".into(),
                2,
            );
        }
        assert_eq!(log.len(), 2);
        let entries = log.lock().entries.clone();
        assert_eq!(entries[0].id, 2);
        assert_eq!(entries[0].micros, 20_000);
        assert_eq!(&entries[0].args[1][..], b"k");
        assert!(entries[0].args[2].ends_with(b"... (72 more bytes)"));
        let many: Vec<String> = (0..40).map(|i| i.to_string()).collect();
        let mut args = vec!["DEL".to_string()];
        args.extend(many);
        let raw = crate::resp::Request::from_args(&args).raw;
        log.record(
            parse(&raw).as_ref(),
            Duration::from_millis(1),
            None,
            None,
            "-".into(),
            2,
        );
        let first = log.lock().entries[0].clone();
        assert_eq!(first.args.len(), 32);
        assert_eq!(&first.args[31][..], b"... (10 more arguments)");
        let reply = log.get(Some(1), Proto::Resp2);
        assert!(reply.starts_with(b"*1\r\n*7\r\n:3\r\n"), "{reply:?}");
        log.reset();
        assert!(log.is_empty());
    }
}
