//! One client's tracking: its `CLIENT TRACKING` options, the keys it reads (default mode,
//! bounded), its inbox, and the frames its invalidations are written as.

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::mpsc;

use crate::command::CmdSpec;
use crate::resp::encode::Encoder;
use crate::resp::{Proto, Request};
use crate::tracking::{Delivery, Tracking};

/// The channel RESP2 clients subscribe to for redirected invalidations.
pub const INVALIDATE_CHANNEL: &[u8] = b"__redis__:invalidate";

/// One client's tracking state.
#[derive(Debug)]
pub struct ClientTracking {
    hub: Arc<Tracking>,
    id: u64,
    /// CLIENT TRACKING ON.
    on: bool,
    bcast: bool,
    optin: bool,
    optout: bool,
    noloop: bool,
    redirect: Option<u64>,
    /// The redirect target is gone (shown by TRACKINGINFO).
    redirect_broken: bool,
    prefixes: Vec<Bytes>,
    /// CLIENT CACHING yes|no, for the next command.
    caching: Option<bool>,
    /// Keys this client reads (default mode), oldest first; may hold keys announced since.
    keys: VecDeque<Bytes>,
    max_keys: usize,
    /// Keys the whole table may hold (`tracking.table_max_keys`; 0: no limit).
    table_max_keys: usize,
    /// Flushes up to this number were made before tracking was on: nothing to clear.
    flushed_before: u64,
    /// Its inbox, once it tracks or subscribes to `__redis__:invalidate`.
    inbox: Option<mpsc::Receiver<Delivery>>,
}

impl ClientTracking {
    pub fn new(
        hub: Arc<Tracking>,
        id: u64,
        max_keys: usize,
        table_max_keys: usize,
    ) -> ClientTracking {
        ClientTracking {
            hub,
            id,
            on: false,
            bcast: false,
            optin: false,
            optout: false,
            noloop: false,
            redirect: None,
            redirect_broken: false,
            prefixes: Vec::new(),
            caching: None,
            keys: VecDeque::new(),
            max_keys: max_keys.max(1),
            table_max_keys,
            flushed_before: 0,
            inbox: None,
        }
    }

    /// Whether tracking is on.
    pub fn is_on(&self) -> bool {
        self.on
    }

    /// Whether this client receives invalidations (its inbox is open).
    pub fn listening(&self) -> bool {
        self.inbox.is_some()
    }

    /// Opens the inbox: for a client that subscribes to `__redis__:invalidate`, the target
    /// of other clients' `REDIRECT`.
    pub fn listen(&mut self) {
        if let Some(rx) = self.hub.open_sink(self.id, self.on) {
            self.inbox = Some(rx);
        }
    }

    /// The next invalidation; `None` once the inbox was closed (the client fell behind).
    pub async fn next(&mut self) -> Option<Delivery> {
        match &mut self.inbox {
            Some(rx) => rx.recv().await,
            None => std::future::pending().await,
        }
    }

    /// `CLIENT TRACKING ON|OFF [REDIRECT id] [PREFIX p ...] [BCAST] [OPTIN] [OPTOUT]
    /// [NOLOOP]`; `client_exists` says whether a client id is connected.
    pub fn command(
        &mut self,
        req: &Request,
        client_exists: impl Fn(u64) -> bool,
    ) -> Result<(), String> {
        let on = match req.arg(2) {
            a if a.eq_ignore_ascii_case(b"ON") => true,
            a if a.eq_ignore_ascii_case(b"OFF") => false,
            _ => return Err("ERR syntax error".into()),
        };
        let (mut bcast, mut optin, mut optout, mut noloop) = (false, false, false, false);
        let mut redirect = None;
        let mut prefixes: Vec<Bytes> = Vec::new();
        let mut i = 3;
        while i < req.len() {
            let opt = req.arg(i);
            let value = (i + 1 < req.len()).then(|| req.arg(i + 1));
            if opt.eq_ignore_ascii_case(b"REDIRECT") && value.is_some() {
                let id = crate::resp::request::parse_i64(req.arg(i + 1))
                    .ok_or("ERR value is not an integer or out of range")?;
                redirect = Some(id);
                i += 2;
                continue;
            }
            if opt.eq_ignore_ascii_case(b"PREFIX") && value.is_some() {
                prefixes.push(req.arg_bytes(i + 1));
                i += 2;
                continue;
            }
            if opt.eq_ignore_ascii_case(b"BCAST") {
                bcast = true;
            } else if opt.eq_ignore_ascii_case(b"OPTIN") {
                optin = true;
            } else if opt.eq_ignore_ascii_case(b"OPTOUT") {
                optout = true;
            } else if opt.eq_ignore_ascii_case(b"NOLOOP") {
                noloop = true;
            } else {
                return Err("ERR syntax error".into());
            }
            i += 1;
        }
        if !on {
            self.off();
            return Ok(());
        }
        if !prefixes.is_empty() && !bcast {
            return Err("ERR PREFIX option requires BCAST mode to be enabled".into());
        }
        if self.on && self.bcast != bcast {
            return Err(
                "ERR You can't switch BCAST mode on/off before disabling tracking for \
                        this client, and then re-enabling it with a different mode."
                    .into(),
            );
        }
        if optin && optout {
            return Err("ERR You can't specify both OPTIN mode and OPTOUT mode".into());
        }
        if (optin || optout) && bcast {
            return Err("ERR OPTIN and OPTOUT are not compatible with BCAST".into());
        }
        if self.on && (self.optin != optin || self.optout != optout) {
            return Err(
                "ERR You can't switch OPTIN/OPTOUT mode before disabling tracking for \
                        this client, and then re-enabling it with a different mode."
                    .into(),
            );
        }
        let redirect = match redirect {
            Some(id) if id > 0 && client_exists(id as u64) => Some(id as u64),
            Some(_) => return Err("ERR The client ID you want redirect to does not exist".into()),
            None => None,
        };
        let mut all = self.prefixes.clone();
        for p in prefixes {
            if let Some(other) = all
                .iter()
                .find(|o| **o != p && (o.starts_with(&p) || p.starts_with(o)))
            {
                return Err(format!(
                    "ERR Prefix '{}' overlaps with another provided prefix '{}'. Prefixes for \
                     a single client must not overlap.",
                    String::from_utf8_lossy(&p),
                    String::from_utf8_lossy(other)
                ));
            }
            if !all.contains(&p) {
                all.push(p);
            }
        }
        if !self.on {
            self.hub.started_tracking();
        }
        self.on = true;
        self.bcast = bcast;
        self.optin = optin;
        self.optout = optout;
        self.noloop = noloop;
        self.redirect = redirect;
        self.redirect_broken = false;
        self.prefixes = all;
        // Opens the inbox, or marks the one it has (a redirect target's) as tracking.
        self.listen();
        if bcast {
            self.hub
                .set_broadcast(self.id, Some(Arc::from(self.prefixes.clone())));
        }
        Ok(())
    }

    /// Turns tracking off: every key forgotten, options cleared (the inbox stays for
    /// redirected invalidations).
    fn off(&mut self) {
        if self.on {
            self.hub.stopped_tracking();
        }
        self.forget_keys();
        self.hub.set_broadcast(self.id, None);
        self.hub.set_tracking(self.id, false);
        self.on = false;
        self.bcast = false;
        self.optin = false;
        self.optout = false;
        self.noloop = false;
        self.redirect = None;
        self.redirect_broken = false;
        self.prefixes.clear();
        self.caching = None;
        self.hub.forget_own_writes(self.id);
    }

    /// Flushes made so far (while tracking was being turned on) concern nothing this client
    /// has cached.
    pub fn skip_flushes_so_far(&mut self) {
        self.flushed_before = self.hub.flushes.load(std::sync::atomic::Ordering::Relaxed);
    }

    fn forget_keys(&mut self) {
        for k in self.keys.drain(..) {
            self.hub.untrack(self.id, &k);
        }
    }

    /// `CLIENT CACHING YES|NO`.
    pub fn caching(&mut self, req: &Request) -> Result<(), String> {
        if !self.on || !(self.optin || self.optout) {
            return Err(
                "ERR CLIENT CACHING can be called only when the client is in tracking \
                        mode with OPTIN or OPTOUT mode enabled"
                    .into(),
            );
        }
        let yes = match req.arg(2) {
            a if a.eq_ignore_ascii_case(b"YES") => true,
            a if a.eq_ignore_ascii_case(b"NO") => false,
            _ => return Err("ERR syntax error".into()),
        };
        if yes && !self.optin {
            return Err(
                "ERR CLIENT CACHING YES is only valid when tracking is enabled in OPTIN mode."
                    .into(),
            );
        }
        if !yes && !self.optout {
            return Err(
                "ERR CLIENT CACHING NO is only valid when tracking is enabled in OPTOUT mode."
                    .into(),
            );
        }
        self.caching = Some(yes);
        Ok(())
    }

    /// `CLIENT GETREDIR`: -1 when tracking is off, 0 without a redirect.
    pub fn redirect_id(&self) -> i64 {
        match (self.on, self.redirect) {
            (false, _) => -1,
            (true, None) => 0,
            (true, Some(id)) => id as i64,
        }
    }

    /// `CLIENT TRACKINGINFO`.
    pub fn info(&self, proto: Proto) -> Bytes {
        let mut flags: Vec<&str> = Vec::new();
        if !self.on {
            flags.push("off");
        } else {
            flags.push("on");
            if self.bcast {
                flags.push("bcast");
            }
            if self.optin {
                flags.push("optin");
                if self.caching == Some(true) {
                    flags.push("caching-yes");
                }
            }
            if self.optout {
                flags.push("optout");
                if self.caching == Some(false) {
                    flags.push("caching-no");
                }
            }
            if self.noloop {
                flags.push("noloop");
            }
            if self.redirect_broken {
                flags.push("broken_redirect");
            }
        }
        let mut e = Encoder::new(proto);
        match proto {
            Proto::Resp2 => e.array(6),
            Proto::Resp3 => e.raw(b"%3\r\n"),
        };
        e.bulk(b"flags");
        match proto {
            Proto::Resp2 => e.array(flags.len()),
            Proto::Resp3 => e.raw(format!("~{}\r\n", flags.len()).as_bytes()),
        };
        for f in flags {
            e.bulk(f.as_bytes());
        }
        e.bulk(b"redirect");
        e.integer(self.redirect_id());
        e.bulk(b"prefixes");
        e.array(self.prefixes.len());
        for p in &self.prefixes {
            e.bulk(p);
        }
        e.finish()
    }

    /// Before a command is sent: a read of a default-mode client (allowed by CLIENT
    /// CACHING in OPTIN/OPTOUT) tracks its keys; a write of a NOLOOP client is remembered.
    pub fn before_command(&mut self, spec: &CmdSpec, req: &Request) {
        if !self.on || spec.cmd == crate::command::Cmd::ClientCaching {
            return;
        }
        let allowed = if self.optin {
            self.caching == Some(true)
        } else if self.optout {
            self.caching != Some(false)
        } else {
            true
        };
        self.caching = None;
        if self.noloop && spec.is_write() {
            for i in spec.key_indices(req) {
                self.hub.wrote(self.id, Bytes::copy_from_slice(req.arg(i)));
            }
        }
        if self.bcast || !allowed || !spec.is_readonly() {
            return;
        }
        for i in spec.key_indices(req) {
            let key = Bytes::copy_from_slice(req.arg(i));
            if self.hub.track(self.id, &key) {
                self.keys.push_back(key);
            }
        }
        // Full: the oldest keys are announced to this client as if modified.
        let mut evicted = Vec::new();
        while self.keys.len() > self.max_keys {
            if let Some(k) = self.keys.pop_front()
                && self.hub.untrack(self.id, &k)
            {
                evicted.push(k);
            }
        }
        self.hub.evict_over(self.table_max_keys);
        if !evicted.is_empty() {
            self.hub.deliver(
                self.id,
                Delivery {
                    keys: Some(evicted),
                    flush: 0,
                    redirected: false,
                },
            );
        }
    }

    /// What an invalidation becomes for this client: a frame to write (after the replies it
    /// is owed), or nothing (forwarded to its redirect target, RESP2 without one).
    pub fn receive(&mut self, delivery: Delivery, proto: Proto) -> Option<Bytes> {
        if delivery.redirected {
            return Some(frame(&delivery, proto, true));
        }
        if !self.on {
            return None;
        }
        // A flush made before tracking was on, or to a client that has read nothing since,
        // has nothing to clear.
        if delivery.keys.is_none()
            && (delivery.flush <= self.flushed_before || (!self.bcast && self.keys.is_empty()))
        {
            return None;
        }
        let mut delivery = delivery;
        if let Some(target) = self.redirect {
            delivery.redirected = true;
            if self.hub.deliver(target, delivery) {
                return None;
            }
            self.redirect_broken = true;
            return (proto == Proto::Resp3).then(|| redirect_broken(target));
        }
        (proto == Proto::Resp3).then(|| frame(&delivery, proto, false))
    }
}

impl Drop for ClientTracking {
    fn drop(&mut self) {
        self.off();
        self.hub.close_sink(self.id);
    }
}

/// An invalidation as the client reads it: a RESP3 `invalidate` push, or for a redirect
/// target a message of `__redis__:invalidate`; the keys, or null for a flush.
fn frame(delivery: &Delivery, proto: Proto, redirected: bool) -> Bytes {
    let mut e = Encoder::new(proto);
    if redirected {
        e.push(3);
        e.bulk(b"message");
        e.bulk(INVALIDATE_CHANNEL);
    } else {
        e.push(2);
        e.bulk(b"invalidate");
    }
    match &delivery.keys {
        Some(keys) => {
            e.array(keys.len());
            for k in keys {
                e.bulk(k);
            }
        }
        None => {
            // RESP2's null is a null bulk, as Redis writes it there.
            match proto {
                Proto::Resp2 => e.raw(b"$-1\r\n"),
                Proto::Resp3 => e.null(),
            };
        }
    }
    e.finish()
}

/// The push a RESP3 client gets when its redirect target is gone.
fn redirect_broken(target: u64) -> Bytes {
    let mut e = Encoder::new(Proto::Resp3);
    e.push(2);
    e.bulk(b"tracking-redir-broken");
    e.integer(target as i64);
    e.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(k: &[&str]) -> Option<Vec<Bytes>> {
        Some(
            k.iter()
                .map(|k| Bytes::copy_from_slice(k.as_bytes()))
                .collect(),
        )
    }

    #[test]
    fn frames_as_redis_writes_them() {
        let d = Delivery {
            keys: keys(&["k"]),
            flush: 0,
            redirected: false,
        };
        assert_eq!(
            frame(&d, Proto::Resp3, false),
            &b">2\r\n$10\r\ninvalidate\r\n*1\r\n$1\r\nk\r\n"[..]
        );
        assert_eq!(
            frame(&d, Proto::Resp2, true),
            &b"*3\r\n$7\r\nmessage\r\n$20\r\n__redis__:invalidate\r\n*1\r\n$1\r\nk\r\n"[..]
        );
        let flush = Delivery {
            keys: None,
            flush: 1,
            redirected: false,
        };
        assert_eq!(
            frame(&flush, Proto::Resp3, false),
            &b">2\r\n$10\r\ninvalidate\r\n_\r\n"[..]
        );
        assert_eq!(
            frame(&flush, Proto::Resp2, true),
            &b"*3\r\n$7\r\nmessage\r\n$20\r\n__redis__:invalidate\r\n$-1\r\n"[..]
        );
    }

    #[test]
    fn options_are_checked_as_redis_checks_them() {
        let hub = Arc::new(Tracking::default());
        let mut t = ClientTracking::new(hub.clone(), 1, 10, 0);
        let cmd = |s: &str| Request::from_args(&s.split(' ').collect::<Vec<_>>());
        let exists = |id: u64| id == 7;
        for (request, refusal) in [
            ("CLIENT TRACKING on PREFIX a", "requires BCAST"),
            ("CLIENT TRACKING on OPTIN OPTOUT", "both OPTIN"),
            ("CLIENT TRACKING on BCAST OPTIN", "not compatible"),
            ("CLIENT TRACKING on REDIRECT 9", "does not exist"),
            ("CLIENT TRACKING on BCAST PREFIX a PREFIX ab", "overlaps"),
        ] {
            let err = t.command(&cmd(request), exists).unwrap_err();
            assert!(err.contains(refusal), "{request}: {err}");
        }
        assert_eq!(t.redirect_id(), -1);
        t.command(&cmd("CLIENT TRACKING on OPTIN REDIRECT 7"), exists)
            .unwrap();
        assert_eq!(t.redirect_id(), 7);
        assert!(
            t.caching(&cmd("CLIENT CACHING no"))
                .unwrap_err()
                .contains("OPTOUT mode")
        );
        t.caching(&cmd("CLIENT CACHING yes")).unwrap();
        assert_eq!(
            t.info(Proto::Resp2),
            &b"*6\r\n$5\r\nflags\r\n*3\r\n$2\r\non\r\n$5\r\noptin\r\n$11\r\ncaching-yes\r\n\
               $8\r\nredirect\r\n:7\r\n$8\r\nprefixes\r\n*0\r\n"[..]
        );
        assert_eq!(hub.clients.load(std::sync::atomic::Ordering::Relaxed), 1);
        drop(t);
        assert_eq!(hub.clients.load(std::sync::atomic::Ordering::Relaxed), 0);
        assert!(!hub.has_sink(1));
    }

    #[tokio::test]
    async fn the_oldest_key_is_announced_when_the_table_is_full() {
        let hub = Arc::new(Tracking::default());
        let mut t = ClientTracking::new(hub.clone(), 1, 2, 0);
        t.command(&Request::from_args(&["CLIENT", "TRACKING", "on"]), |_| {
            false
        })
        .unwrap();
        let get = crate::command::lookup(b"GET").unwrap();
        for k in ["a", "b", "c"] {
            t.before_command(get, &Request::from_args(&["GET", k]));
        }
        assert_eq!(hub.tracked_keys(), 2);
        let d = t.next().await.unwrap();
        assert_eq!(d.keys, keys(&["a"]));
        assert!(t.receive(d, Proto::Resp3).is_some());
    }
}
