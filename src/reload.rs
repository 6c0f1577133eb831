//! Live reconfiguration: SIGHUP and `POST /reload` re-read the config file (with the
//! command line's flags applied again) and apply it without dropping a client.
//!
//! Applied live: `log_level`, `password`, `limits.*` (connections opened from then on take
//! the new limits; `max_clients` and `auth_failures_per_minute` at once), `cluster.read_from`
//! (every client's next command), `cluster.connect_timeout_ms` and
//! `cluster.command_timeout_ms` (connects started and requests sent from then on, on the
//! primary and the mirrors), `mirror.*` (mode, resources, key rules: each client's next
//! write, after its open transaction; its writes keep their order on the mirrors both
//! configurations have), `slowlog.*`, `drain.*`, `tracking.*` (clients that turn tracking on
//! from then on), and the TLS certificate and key. Every other field needs a restart: a
//! change to one is logged and the running value kept. A file that does not parse or
//! validate is rejected whole, naming the field; the running configuration stays.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::sync::Semaphore;
use tracing::{error, info, warn};

use crate::config::Config;
use crate::error::ConfigError;
use crate::shared::Shared;
use crate::tls::ClientTls;

/// Reads the configuration again, as at start (file, then the flags).
pub type Reread = Box<dyn Fn() -> Result<Config, ConfigError> + Send + Sync>;
/// Sets the log filter (`log_level`); an error when it cannot (RUST_LOG set, bad filter).
pub type SetLogLevel = Box<dyn Fn(&str) -> Result<(), String> + Send + Sync>;

/// Where a reload gets the configuration from and how it changes the log level.
pub struct ReloadSource {
    pub reread: Reread,
    pub set_log_level: Option<SetLogLevel>,
}

/// What a reload did.
#[derive(Debug, Default, PartialEq)]
pub struct Outcome {
    /// Fields whose new value took effect.
    pub applied: Vec<&'static str>,
    /// Fields that changed in the file but need a restart: the running value stays.
    pub kept: Vec<&'static str>,
}

/// Applies reloads; one at a time.
pub struct Reloader {
    source: Option<ReloadSource>,
    shared: Arc<Shared>,
    client_tls: Option<Arc<ClientTls>>,
    /// The client cap, resized when `limits.max_clients` changes.
    clients: Arc<Semaphore>,
    busy: tokio::sync::Mutex<()>,
}

impl Reloader {
    pub fn new(
        source: Option<ReloadSource>,
        shared: Arc<Shared>,
        client_tls: Option<Arc<ClientTls>>,
        clients: Arc<Semaphore>,
    ) -> Reloader {
        Reloader {
            source,
            shared,
            client_tls,
            clients,
            busy: Default::default(),
        }
    }

    /// Re-reads and applies the configuration; `Err` (the running one stays) when the file
    /// is invalid or the TLS files cannot be used.
    pub async fn reload(&self) -> Result<Outcome, String> {
        let _one = self.busy.lock().await;
        let mut outcome = Outcome::default();
        if let Some(tls) = &self.client_tls {
            tls.reload().map_err(|e| e.to_string())?;
            outcome.applied.push("tls certificate");
        }
        let Some(source) = &self.source else {
            return Ok(outcome);
        };
        let new = (source.reread)().map_err(|e| e.to_string())?;
        let old = self.shared.live();
        let (merged, kept) = merge(&old, new);
        outcome.kept = kept;
        // What can fail comes first (the mirrors' TLS files, the log filter), so that a
        // rejected reload changes nothing.
        let mirrors = if merged.mirror != old.mirror {
            let current = self.shared.mirrors();
            let built = crate::mirror::Mirrors::build(&merged, current.as_deref())
                .map_err(|e| format!("mirror: {e}"))?;
            // New resources learn their slots before clients write to them.
            if let Some(m) = &built {
                for r in &m.resources {
                    let kept = current
                        .as_ref()
                        .is_some_and(|c| c.resources.iter().any(|o| Arc::ptr_eq(&o.link, &r.link)));
                    if !kept {
                        r.link
                            .cluster
                            .topology
                            .refresh_and_wait(None, merged.connect_timeout() * 2)
                            .await;
                    }
                }
            }
            Some(built)
        } else {
            None
        };
        if merged.log_level != old.log_level {
            match &source.set_log_level {
                Some(set) => set(&merged.log_level)
                    .map_err(|e| format!("invalid value for `log_level`: {e}"))?,
                None => return Err("`log_level` cannot change: RUST_LOG is set".into()),
            }
            outcome.applied.push("log_level");
        }
        for (field, changed) in [
            ("password", merged.password != old.password),
            ("limits", merged.limits != old.limits),
            (
                "cluster.read_from",
                merged.cluster.read_from != old.cluster.read_from,
            ),
            ("slowlog", merged.slowlog != old.slowlog),
            ("drain", merged.drain != old.drain),
            ("tracking", merged.tracking != old.tracking),
        ] {
            if changed {
                outcome.applied.push(field);
            }
        }
        if let Some(mirrors) = mirrors {
            self.shared.mirrors.store(mirrors);
            outcome.applied.push("mirror");
        }
        if (merged.connect_timeout(), merged.command_timeout())
            != (old.connect_timeout(), old.command_timeout())
        {
            let (connect, command) = (merged.connect_timeout(), merged.command_timeout());
            self.shared.primary.timeouts.set(connect, command);
            if let Some(m) = self.shared.mirrors() {
                for r in &m.resources {
                    r.link.cluster.timeouts.set(connect, command);
                }
            }
            outcome.applied.push("cluster timeouts");
        }
        resize(
            &self.clients,
            old.limits.max_clients,
            merged.limits.max_clients,
        );
        self.shared.set_live(merged);
        Ok(outcome)
    }

    /// Reloads and logs what happened (SIGHUP).
    pub async fn reload_and_log(&self, why: &str) -> Result<Outcome, String> {
        let result = self.reload().await;
        match &result {
            Ok(o) => {
                info!(trigger = why, applied = ?o.applied, "configuration reloaded");
                if !o.kept.is_empty() {
                    warn!(
                        trigger = why,
                        fields = ?o.kept,
                        "these fields need a restart to change: the running values stay"
                    );
                }
            }
            Err(e) => {
                error!(trigger = why, error = %e, "reload rejected: the running configuration stays")
            }
        }
        result
    }
}

/// Grows or shrinks the client cap (connected clients beyond a lower cap stay).
fn resize(clients: &Semaphore, old: usize, new: usize) {
    if new > old {
        clients.add_permits(new - old);
    } else if new < old {
        clients.forget_permits(old - new);
    }
}

/// The configuration to run: `new`, with the fields that need a restart kept from `old`;
/// their names when they differed.
fn merge(old: &Config, mut new: Config) -> (Config, Vec<&'static str>) {
    let mut kept = Vec::new();
    macro_rules! keep {
        ($($field:ident).+, $name:literal) => {
            if new.$($field).+ != old.$($field).+ {
                kept.push($name);
                new.$($field).+ = old.$($field).+.clone();
            }
        };
    }
    keep!(listen, "listen");
    keep!(threads, "threads");
    keep!(tls, "tls");
    keep!(admin, "admin");
    // Of the cluster, only read_from and the timeouts change live.
    let live = (
        new.cluster.read_from,
        new.cluster.connect_timeout_ms,
        new.cluster.command_timeout_ms,
    );
    new.cluster.read_from = old.cluster.read_from;
    new.cluster.connect_timeout_ms = old.cluster.connect_timeout_ms;
    new.cluster.command_timeout_ms = old.cluster.command_timeout_ms;
    keep!(cluster, "cluster");
    (
        new.cluster.read_from,
        new.cluster.connect_timeout_ms,
        new.cluster.command_timeout_ms,
    ) = live;
    (new, kept)
}

/// Runs a reload on every SIGHUP until the task is dropped.
pub fn on_sighup(reloader: Arc<Reloader>) -> Option<tokio::task::JoinHandle<()>> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut hup = match signal(SignalKind::hangup()) {
            Ok(s) => s,
            Err(e) => {
                error!(error = %e, "cannot watch SIGHUP: the configuration will not reload");
                return None;
            }
        };
        Some(tokio::spawn(async move {
            while hup.recv().await.is_some() {
                let _ = reloader.reload_and_log("SIGHUP").await;
            }
        }))
    }
    #[cfg(not(unix))]
    {
        let _ = reloader;
        None
    }
}

/// The live configuration's generation counter, for clients to notice a reload.
pub fn generation(shared: &Shared) -> u64 {
    shared.live_generation.load(Ordering::Acquire)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_that_need_a_restart_are_kept() {
        let old = Config::from_yaml("cluster:\n  seeds: [127.0.0.1:7000]\n").unwrap();
        let mut new = old.clone();
        new.listen = "127.0.0.1:7777".into();
        new.threads = 9;
        new.cluster.read_from = crate::config::ReadFrom::PreferReplica;
        new.cluster.max_redirects = 9;
        new.cluster.command_timeout_ms = 700;
        new.mirror.mode = crate::config::MultiWriteMode::AllResourcesCheckError;
        new.limits.max_clients = 5;
        new.log_level = "debug".into();
        let (merged, kept) = merge(&old, new);
        assert_eq!(kept, ["listen", "threads", "cluster"]);
        assert_eq!(merged.listen, old.listen);
        assert_eq!(merged.threads, old.threads);
        assert_eq!(merged.cluster.max_redirects, old.cluster.max_redirects);
        assert_eq!(
            merged.cluster.read_from,
            crate::config::ReadFrom::PreferReplica
        );
        assert_eq!(merged.cluster.command_timeout_ms, 700);
        assert_eq!(
            merged.mirror.mode,
            crate::config::MultiWriteMode::AllResourcesCheckError
        );
        assert_eq!(merged.limits.max_clients, 5);
        assert_eq!(merged.log_level, "debug");
    }

    #[test]
    fn the_client_cap_grows_and_shrinks() {
        let s = Semaphore::new(3);
        resize(&s, 3, 5);
        assert_eq!(s.available_permits(), 5);
        resize(&s, 5, 2);
        assert_eq!(s.available_permits(), 2);
    }
}
