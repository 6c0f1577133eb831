//! MULTI/EXEC/DISCARD/WATCH/UNWATCH through the proxy.
//!
//! A transaction runs on one backend connection of its own, pinned to the master that owns
//! the slot of its first key (given by WATCH or by the first keyed command after MULTI) and
//! held until EXEC, DISCARD or UNWATCH. Commands without keys that come before the first key
//! are answered `+QUEUED` and sent right after the pin is made. A command whose keys are in
//! another slot is refused with CROSSSLOT and the transaction is marked failed: EXEC then
//! discards it on the backend and answers `-EXECABORT`. A slot that moves while the
//! transaction is queued is handled by `replay`.

mod replay;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use tokio::sync::oneshot;

use crate::backend::conn::{Pending, ReplyResult};
use crate::backend::pool::SessionConn;
use crate::command::{Cmd, CmdSpec, Flags, Route, RouteError};
use crate::resp::encode::error;
use crate::resp::{Proto, Request};
use crate::shared::Shared;

/// The connection a transaction is pinned to.
#[derive(Debug)]
struct Pin {
    addr: Arc<str>,
    /// Slot of the first key; every later key must be in it.
    slot: Option<u16>,
    /// A session connection: it never reconnects, so a transaction whose connection broke
    /// (MULTI, WATCH and queued commands lost on the node) can only fail, never half-apply.
    conn: SessionConn,
}

/// Transaction state of one client connection.
#[derive(Debug, Default)]
pub struct Transaction {
    /// Whom the pinned connection is authenticated as (the client's user), set before
    /// every request.
    pub user: crate::backend::users::UserId,
    pin: Option<Pin>,
    /// Between MULTI and EXEC/DISCARD.
    in_multi: bool,
    /// MULTI was answered locally and still has to be sent once pinned.
    multi_unsent: bool,
    /// Keyless commands queued before the pin, sent after MULTI once pinned.
    buffered: Vec<Bytes>,
    /// Why EXEC must fail (a refused command while queuing).
    failed: Option<String>,
    /// Commands queued since MULTI (the place of the next one's reply in EXEC's).
    queued: usize,
    /// The mirrored writes among them, for the mirrors once EXEC succeeded.
    writes: Vec<crate::mirror::TxWrite>,
    /// Whether the client's writes are mirrored (set before every request).
    pub mirrored: bool,
    /// WATCH went out on the pinned connection.
    watching: bool,
    /// The commands sent to the node since MULTI, for a replay if the slot moves (not kept
    /// while watching).
    sent: Vec<Bytes>,
    /// Set by the reply of any command of the transaction the node refused for its slot.
    refused: Option<Arc<AtomicBool>>,
}

/// A reply to come from the pinned connection, or one known already.
#[derive(Debug)]
pub enum TxReply {
    Ready(Bytes),
    Pinned {
        rx: oneshot::Receiver<ReplyResult>,
        addr: Arc<str>,
        /// Set for WATCH and queued commands: a refusal for the slot is noted for EXEC and
        /// answered with this instead.
        refused: Option<(Arc<AtomicBool>, Bytes)>,
    },
    /// EXEC's reply, finished by `replay` when the slot moved.
    Exec {
        rx: oneshot::Receiver<ReplyResult>,
        addr: Arc<str>,
        retry: Box<replay::Retry>,
    },
}

impl TxReply {
    /// Waits for the reply.
    pub async fn wait(self, shared: &Shared, proto: Proto) -> Bytes {
        match self {
            TxReply::Ready(b) => b,
            TxReply::Pinned { rx, addr, refused } => {
                let reply = received(rx, &addr).await;
                match refused {
                    Some((seen, instead)) if replay::refused_for_slot(shared, &reply, &addr) => {
                        seen.store(true, Ordering::Relaxed);
                        instead
                    }
                    _ => reply,
                }
            }
            TxReply::Exec { rx, addr, retry } => {
                let reply = received(rx, &addr).await;
                retry.after_exec(shared, proto, reply, &addr).await
            }
        }
    }

    /// The reply noted and answered with `instead` when the node refuses it for its slot.
    fn or_on_refusal(self, seen: Arc<AtomicBool>, instead: Bytes) -> TxReply {
        match self {
            TxReply::Pinned { rx, addr, .. } => TxReply::Pinned {
                rx,
                addr,
                refused: Some((seen, instead)),
            },
            other => other,
        }
    }
}

/// A reply from the pinned connection, or the error that replaces it.
async fn received(rx: oneshot::Receiver<ReplyResult>, addr: &str) -> Bytes {
    match rx.await {
        Ok(Ok(reply)) => reply,
        Ok(Err(e)) => error(&format!("ERR slotgate: {e} during a transaction")),
        Err(_) => error(&format!(
            "ERR slotgate: connection to {addr} lost during a transaction"
        )),
    }
}

const QUEUED: Bytes = Bytes::from_static(b"+QUEUED\r\n");

impl Transaction {
    /// The mirrored writes queued in the open transaction, taken before EXEC.
    pub fn take_writes(&mut self) -> Vec<crate::mirror::TxWrite> {
        std::mem::take(&mut self.writes)
    }

    /// Whether this request belongs to the transaction machinery: a transaction command, or
    /// any command while MULTI is open.
    pub fn takes(&self, spec: Option<&CmdSpec>) -> bool {
        self.in_multi || spec.is_some_and(|s| s.route == Route::Transaction)
    }

    /// Handles one request; `spec` is `None` for an unknown command.
    pub async fn handle(
        &mut self,
        shared: &Shared,
        proto: Proto,
        spec: Option<&'static CmdSpec>,
        req: Request,
    ) -> TxReply {
        match spec.map_or(Cmd::Plain, |s| s.cmd) {
            Cmd::Multi => {
                if self.in_multi {
                    return TxReply::Ready(error("ERR MULTI calls can not be nested"));
                }
                self.in_multi = true;
                self.queued = 0;
                self.writes.clear();
                self.sent.clear();
                if self.pin.is_some() {
                    self.send(req.raw, false).await
                } else {
                    self.multi_unsent = true;
                    TxReply::Ready(crate::resp::encode::OK)
                }
            }
            Cmd::Exec => {
                if !self.in_multi {
                    return TxReply::Ready(error("ERR EXEC without MULTI"));
                }
                let reply = if let Some(reason) = self.failed.take() {
                    if self.pin.is_some() && !self.multi_unsent {
                        let discard = Request::from_args(&["DISCARD"]).raw;
                        let _ = self.send(discard, false).await;
                    }
                    TxReply::Ready(error(&format!(
                        "EXECABORT Transaction discarded because of previous errors: {reason}"
                    )))
                } else {
                    if self.pin.is_none()
                        && let Err(e) = self.pin_to(shared, proto, None).await
                    {
                        self.reset();
                        return TxReply::Ready(e);
                    }
                    let retry = Box::new(replay::Retry {
                        seen: self.refusals(),
                        watching: self.watching,
                        slot: self.pin.as_ref().and_then(|p| p.slot),
                        commands: std::mem::take(&mut self.sent),
                        user: self.user,
                    });
                    match self.send(req.raw, false).await {
                        TxReply::Pinned { rx, addr, .. } => TxReply::Exec { rx, addr, retry },
                        ready => ready,
                    }
                };
                self.reset();
                reply
            }
            Cmd::Discard => {
                if !self.in_multi {
                    return TxReply::Ready(error("ERR DISCARD without MULTI"));
                }
                let reply = if self.pin.is_some() && !self.multi_unsent {
                    self.send(req.raw, false).await
                } else {
                    TxReply::Ready(crate::resp::encode::OK)
                };
                self.reset();
                reply
            }
            Cmd::Watch => {
                if self.in_multi {
                    return TxReply::Ready(error("ERR WATCH inside MULTI is not allowed"));
                }
                let slot = match spec.map(|s| s.slot(&req)) {
                    Some(Ok(Some(slot))) => slot,
                    Some(Err(RouteError::CrossSlot)) => {
                        return TxReply::Ready(crate::replies::crossslot());
                    }
                    _ => {
                        return TxReply::Ready(crate::replies::wrong_args("watch"));
                    }
                };
                if let Err(e) = self.check_or_pin(shared, proto, slot).await {
                    return TxReply::Ready(e);
                }
                self.watching = true;
                let seen = self.refusals();
                self.send(req.raw, false)
                    .await
                    .or_on_refusal(seen, crate::resp::encode::OK)
            }
            Cmd::Unwatch => {
                if self.in_multi {
                    return self.queue(shared, proto, spec, req).await;
                }
                let reply = if self.pin.is_some() {
                    self.send(req.raw, false).await
                } else {
                    TxReply::Ready(crate::resp::encode::OK)
                };
                self.reset();
                reply
            }
            _ => self.queue(shared, proto, spec, req).await,
        }
    }

    /// A command inside MULTI.
    async fn queue(
        &mut self,
        shared: &Shared,
        proto: Proto,
        spec: Option<&'static CmdSpec>,
        req: Request,
    ) -> TxReply {
        let Some(spec) = spec else {
            let reason = format!("unknown command '{}'", String::from_utf8_lossy(req.arg(0)));
            let reply = error(&format!("ERR {reason}"));
            self.failed.get_or_insert(reason);
            return TxReply::Ready(reply);
        };
        // Redis's own refusals first, in Redis's words.
        let redis_refusal = if spec.flags.contains(Flags::NO_MULTI) {
            Some("ERR Command not allowed inside a transaction".to_string())
        } else {
            match spec.route {
                Route::Error(text) => Some(text.to_string()),
                Route::Container => Some(crate::plan::container_error(spec, &req)),
                _ => None,
            }
        };
        if let Some(text) = redis_refusal {
            self.failed.get_or_insert(text.clone());
            return TxReply::Ready(error(&text));
        }
        let refusal = match spec.route {
            Route::Refused(reason) => Some(reason),
            Route::Local if !matches!(spec.cmd, Cmd::Ping | Cmd::Echo) => {
                Some("changes the connection and cannot be queued in a transaction")
            }
            // INFO in a transaction is the pinned master's, as on that one server.
            Route::AllMasters
            | Route::Scan
            | Route::Wait
            | Route::RandomKey
            | Route::Subscription => Some("needs every master and cannot be part of a transaction"),
            _ => None,
        };
        if let Some(reason) = refusal {
            let reason = format!("'{}' {reason}", spec.display_name());
            let reply = error(&format!("ERR slotgate: {reason}"));
            self.failed.get_or_insert(reason);
            return TxReply::Ready(reply);
        }
        // Kept for the mirrors only when there are any: no copy of every queued write
        // otherwise.
        if self.mirrored && crate::mirror::mirrored(spec) {
            self.writes.push(crate::mirror::TxWrite {
                position: self.queued,
                spec,
                req: req.clone(),
            });
        }
        self.queued += 1;
        match spec.slot(&req) {
            Err(RouteError::CrossSlot) => {
                let reason = crate::replies::CROSSSLOT;
                self.failed.get_or_insert(reason.to_string());
                TxReply::Ready(error(reason))
            }
            Ok(Some(slot)) => {
                if let Err(e) = self.check_or_pin(shared, proto, slot).await {
                    let text = String::from_utf8_lossy(&e[1..]).trim_end().to_string();
                    self.failed.get_or_insert(text);
                    return TxReply::Ready(e);
                }
                self.send_queued(req.raw).await
            }
            Ok(None) => {
                if self.pin.is_some() && !self.multi_unsent {
                    self.send_queued(req.raw).await
                } else {
                    self.buffered.push(req.raw);
                    TxReply::Ready(QUEUED)
                }
            }
        }
    }

    /// Pins to the master of `slot`, or checks that the pin is on that slot.
    async fn check_or_pin(
        &mut self,
        shared: &Shared,
        proto: Proto,
        slot: u16,
    ) -> Result<(), Bytes> {
        match &mut self.pin {
            Some(pin) => match pin.slot {
                Some(s) if s != slot => Err(error(&format!(
                    "{} (a transaction through slotgate must keep all its keys in one slot)",
                    crate::replies::CROSSSLOT
                ))),
                Some(_) => Ok(()),
                None => {
                    pin.slot = Some(slot);
                    Ok(())
                }
            },
            None => self.pin_to(shared, proto, Some(slot)).await,
        }
    }

    /// Opens the pinned connection and sends what was held back (MULTI, keyless commands).
    async fn pin_to(
        &mut self,
        shared: &Shared,
        proto: Proto,
        slot: Option<u16>,
    ) -> Result<(), Bytes> {
        let table = shared.primary.topology.table();
        let master = match slot {
            Some(s) => table.master_for(s),
            None => table.any_master(rand::random()),
        };
        let Some(addr) = master.map(|m| m.addr.clone()) else {
            return Err(crate::replies::slot_not_served());
        };
        let conn = shared
            .primary
            .backends
            .session(&addr, proto, self.user)
            .map_err(|limit| {
                error(&format!(
                    "ERR slotgate: too many transactions and blocking commands in progress on \
                 {addr} (limit {limit}); try again later"
                ))
            })?;
        self.pin = Some(Pin { addr, slot, conn });
        if self.multi_unsent {
            self.multi_unsent = false;
            let _ = self.send(Request::from_args(&["MULTI"]).raw, false).await;
            for raw in std::mem::take(&mut self.buffered) {
                // Already answered +QUEUED; a queuing error makes EXEC answer EXECABORT.
                if !self.watching {
                    self.sent.push(raw.clone());
                }
                let _ = self.send(raw, false).await;
            }
        }
        Ok(())
    }

    /// Sends a command queued after MULTI; kept for a replay.
    async fn send_queued(&mut self, raw: Bytes) -> TxReply {
        if !self.watching {
            self.sent.push(raw.clone());
        }
        let seen = self.refusals();
        self.send(raw, false).await.or_on_refusal(seen, QUEUED)
    }

    /// The flag the replies of this transaction set when the node refuses one for its slot.
    fn refusals(&mut self) -> Arc<AtomicBool> {
        self.refused.get_or_insert_with(Default::default).clone()
    }

    async fn send(&mut self, raw: Bytes, asking: bool) -> TxReply {
        let Some(pin) = &self.pin else {
            return TxReply::Ready(error("ERR slotgate: transaction is not pinned to a node"));
        };
        if pin.conn.is_closed() {
            let reason = format!("connection to {} lost during a transaction", pin.addr);
            let reply = error(&format!("ERR slotgate: {reason}"));
            self.failed.get_or_insert(reason);
            return TxReply::Ready(reply);
        }
        let (tx, rx) = oneshot::channel();
        pin.conn.send(Pending::one(raw, asking, tx)).await;
        TxReply::Pinned {
            rx,
            addr: pin.addr.clone(),
            refused: None,
        }
    }

    /// Ends the transaction (after EXEC, DISCARD or UNWATCH went out on the pinned
    /// connection, which leaves it without MULTI or WATCH) and returns the connection for
    /// reuse.
    fn reset(&mut self) {
        if let Some(pin) = std::mem::take(self).pin {
            pin.conn.release();
        }
    }
}
