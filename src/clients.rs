//! The clients connected to slotgate, as `CLIENT LIST` and `CLIENT INFO` describe them:
//! slotgate's own connections, not a backend's.
//!
//! Each client task owns its entry and updates it once per read (last command, activity
//! time) with plain atomic stores; names and library details change rarely and sit behind a
//! lock only `CLIENT` commands take.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicPtr, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use dashmap::DashMap;

use crate::command::CmdSpec;

/// One connected client.
#[derive(Debug)]
pub struct ClientEntry {
    pub id: u64,
    pub addr: Option<SocketAddr>,
    pub laddr: Option<SocketAddr>,
    pub connected: Instant,
    /// Milliseconds after `connected` of the last read that carried a command.
    active_ms: AtomicU64,
    /// The last command's table entry (null before the first).
    last: AtomicPtr<CmdSpec>,
    details: Mutex<Details>,
}

/// What CLIENT SETNAME, CLIENT SETINFO and HELLO set.
#[derive(Debug, Clone, Default)]
pub struct Details {
    pub name: Option<Bytes>,
    pub lib_name: Option<Bytes>,
    pub lib_ver: Option<Bytes>,
    pub resp: i64,
    /// The user the client logged in as; `None`: default.
    pub user: Option<std::sync::Arc<str>>,
}

impl ClientEntry {
    /// Records the command being handled.
    pub fn set_command(&self, spec: &'static CmdSpec) {
        self.last
            .store(spec as *const CmdSpec as *mut CmdSpec, Ordering::Relaxed);
    }

    /// Records activity (once per read).
    pub fn touch(&self) {
        self.active_ms.store(
            self.connected.elapsed().as_millis() as u64,
            Ordering::Relaxed,
        );
    }

    pub fn set_details(&self, details: Details) {
        *self.details.lock().unwrap_or_else(|e| e.into_inner()) = details;
    }

    /// One `CLIENT LIST` line (with its newline), as Redis writes it.
    pub fn line(&self) -> String {
        let d = self
            .details
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let last = self.last.load(Ordering::Relaxed);
        // SAFETY: `last` is null or was stored from a `&'static CmdSpec`.
        let cmd = unsafe { last.as_ref() }.map_or_else(|| "NULL".to_string(), CmdSpec::redis_name);
        let age = self.connected.elapsed();
        let idle = age.as_millis() as u64
            - self
                .active_ms
                .load(Ordering::Relaxed)
                .min(age.as_millis() as u64);
        let text = |v: &Option<Bytes>| {
            v.as_deref()
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .unwrap_or_default()
        };
        let addr = |a: &Option<SocketAddr>| a.map(|a| a.to_string()).unwrap_or_default();
        format!(
            "id={} addr={} laddr={} name={} age={} idle={} flags=N db=0 multi=-1 cmd={} user={} resp={} lib-name={} lib-ver={}\n",
            self.id,
            addr(&self.addr),
            addr(&self.laddr),
            text(&d.name),
            age.as_secs(),
            idle / 1000,
            cmd,
            d.user.as_deref().unwrap_or("default"),
            d.resp,
            text(&d.lib_name),
            text(&d.lib_ver),
        )
    }
}

/// Every connected client, by id.
#[derive(Debug, Default)]
pub struct Clients {
    map: DashMap<u64, Arc<ClientEntry>>,
}

/// Removes a client's entry when its task ends, however it ends.
#[derive(Debug)]
pub struct Registration<'a> {
    clients: &'a Clients,
    pub entry: Arc<ClientEntry>,
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        self.clients.map.remove(&self.entry.id);
    }
}

impl Clients {
    /// Adds a client; the entry goes when the returned registration is dropped.
    pub fn register(
        &self,
        id: u64,
        addr: Option<SocketAddr>,
        laddr: Option<SocketAddr>,
    ) -> Registration<'_> {
        let entry = Arc::new(ClientEntry {
            id,
            addr,
            laddr,
            connected: Instant::now(),
            active_ms: AtomicU64::new(0),
            last: AtomicPtr::new(std::ptr::null_mut()),
            details: Mutex::new(Details {
                resp: 2,
                ..Default::default()
            }),
        });
        self.map.insert(id, entry.clone());
        Registration {
            clients: self,
            entry,
        }
    }

    /// `CLIENT LIST` text: every client, by id, or only those in `ids`.
    pub fn list(&self, ids: Option<&[u64]>) -> String {
        let mut entries: Vec<Arc<ClientEntry>> = self
            .map
            .iter()
            .filter(|e| ids.is_none_or(|ids| ids.contains(e.key())))
            .map(|e| e.value().clone())
            .collect();
        entries.sort_by_key(|e| e.id);
        entries.iter().map(|e| e.line()).collect()
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether client `id` is connected.
    pub fn contains(&self, id: u64) -> bool {
        self.map.contains_key(&id)
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_registered_clients_until_they_go() {
        let clients = Clients::default();
        let a = clients.register(7, "127.0.0.1:5000".parse().ok(), None);
        {
            let _b = clients.register(8, None, None);
            a.entry.set_details(Details {
                name: Some(Bytes::from_static(b"app")),
                resp: 3,
                ..Default::default()
            });
            a.entry.set_command(crate::command::lookup(b"GET").unwrap());
            a.entry.touch();
            let list = clients.list(None);
            let lines: Vec<&str> = list.lines().collect();
            assert_eq!(lines.len(), 2);
            assert!(lines[0].starts_with("id=7 addr=127.0.0.1:5000 "), "{list}");
            assert!(lines[0].contains(" name=app ") && lines[0].contains(" cmd=get "));
            assert!(lines[0].contains(" resp=3 "));
            assert!(lines[1].contains(" cmd=NULL "));
            assert_eq!(clients.list(Some(&[8])).lines().count(), 1);
        }
        assert_eq!(clients.len(), 1);
    }
}
