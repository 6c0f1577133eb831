//! Client login: `AUTH [username] password` and `HELLO ... AUTH username password`, checked
//! against the configured client password or against the cluster's own users; failed
//! attempts counted and rate-limited per client address.
//!
//! A user of the cluster is checked with an `AUTH` on a new connection to a master, the
//! node's reply passed to the client as it is (`WRONGPASS ...`). Once logged in, the
//! client's commands run on connections authenticated as that user (`backend::users`), so
//! the cluster's ACL rules decide what it may do.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tracing::{info, warn};

use crate::backend::conn::{self, ConnectError};
use crate::backend::users::{UserId, UserLease};
use crate::command::Cmd;
use crate::local::ClientState;
use crate::redact::Secret;
use crate::resp::Request;
use crate::resp::encode::error;
use crate::shared::Shared;

/// Redis's reply to wrong credentials.
pub const WRONGPASS: &str = "WRONGPASS invalid username-password pair or user is disabled.";

/// The credentials in an `AUTH` or `HELLO` request: (user name, password). `None` when it
/// carries none, or is malformed (the local handler answers the syntax error).
pub fn credentials(cmd: Cmd, req: &Request) -> Option<(Option<&[u8]>, &[u8])> {
    match cmd {
        Cmd::Auth if req.len() == 2 => Some((None, req.arg(1))),
        Cmd::Auth if req.len() == 3 => Some((Some(req.arg(1)), req.arg(2))),
        Cmd::Hello => {
            let mut i = 2;
            let mut found = None;
            while i < req.len() {
                let opt = req.arg(i);
                if opt.eq_ignore_ascii_case(b"AUTH") && i + 2 < req.len() {
                    found = Some((Some(req.arg(i + 1)), req.arg(i + 2)));
                    i += 3;
                } else if opt.eq_ignore_ascii_case(b"SETNAME") && i + 1 < req.len() {
                    i += 2;
                } else {
                    return None;
                }
            }
            found
        }
        _ => None,
    }
}

/// Logs the client in, or answers why not (the reply to send). A failed attempt leaves the
/// client as it was.
pub async fn login(
    shared: &Shared,
    state: &mut ClientState,
    user: Option<&[u8]>,
    pass: &[u8],
) -> Result<(), Bytes> {
    let peer = state.entry.as_ref().and_then(|e| e.addr).map(|a| a.ip());
    let limit = shared.live().limits.auth_failures_per_minute;
    if let Some(ip) = peer
        && shared.auth_failures.blocked(ip, limit)
    {
        shared
            .stats
            .auth_rate_limited
            .fetch_add(1, Ordering::Relaxed);
        warn!(peer = %ip, limit, "AUTH refused unchecked: too many failed attempts from this address");
        return Err(error(
            "ERR too many failed authentication attempts from this address; try again later",
        ));
    }
    match check(shared, user, pass).await {
        Ok(lease) => {
            state.authenticated = true;
            state.user = lease;
            state.publish_details();
            Ok(())
        }
        Err(Refusal::Credentials(reply)) => {
            shared.stats.auth_failures.fetch_add(1, Ordering::Relaxed);
            if let Some(ip) = peer {
                shared.auth_failures.record(ip);
            }
            info!(
                peer = %peer.map_or_else(|| "unknown".to_string(), |p| p.to_string()),
                user = %String::from_utf8_lossy(user.unwrap_or(b"default")),
                "AUTH failed"
            );
            Err(reply)
        }
        Err(Refusal::Unchecked(reply)) => Err(reply),
    }
}

/// Why a login did not happen.
enum Refusal {
    /// The credentials are wrong: counted against the address.
    Credentials(Bytes),
    /// They could not be checked (no node answered).
    Unchecked(Bytes),
}

/// Checks the credentials; the lease of the cluster user they log in as, or `None` for
/// slotgate's own account.
async fn check(
    shared: &Shared,
    user: Option<&[u8]>,
    pass: &[u8],
) -> Result<Option<UserLease>, Refusal> {
    // The configured client password stands for the default user, as `requirepass` does.
    let live = shared.live();
    if let Some(expected) = &live.password
        && user.is_none_or(|u| u == b"default")
    {
        return if same_secret(pass, expected.as_bytes()) {
            Ok(None)
        } else {
            Err(Refusal::Credentials(error(WRONGPASS)))
        };
    }
    let name = user.map(|u| String::from_utf8_lossy(u).into_owned());
    let password = String::from_utf8_lossy(pass).into_owned();
    ask_cluster(shared, name.as_deref(), &password).await?;
    let name = name.unwrap_or_else(|| "default".into());
    // slotgate's own credentials: its own connections serve.
    let c = &shared.config.cluster;
    let own_user = c.username.as_deref().unwrap_or("default");
    if let Some(own_pass) = &c.password
        && own_user == name
        && same_secret(own_pass.as_bytes(), password.as_bytes())
    {
        return Ok(None);
    }
    Ok(Some(
        shared.primary.backends.users().lease(&name, &password),
    ))
}

/// Sends `AUTH [user] password` on a new connection to a master.
async fn ask_cluster(shared: &Shared, user: Option<&str>, password: &str) -> Result<(), Refusal> {
    let Some(addr) = shared
        .primary
        .topology
        .peek()
        .any_master(rand::random())
        .map(|m| m.addr.clone())
    else {
        return Err(Refusal::Unchecked(crate::replies::cluster_down()));
    };
    let mut settings =
        shared
            .primary
            .backends
            .conn_settings(&addr, crate::resp::Proto::Resp2, 1, UserId::SERVICE);
    settings.auth = Some((user.map(String::from), Secret::new(password)));
    settings.readonly = false;
    settings.reconnect = false;
    match conn::connect(&settings).await {
        Ok(_stream) => Ok(()),
        Err(ConnectError::Refused(text)) => Err(Refusal::Credentials(error(&text))),
        Err(ConnectError::Failed(reason)) => Err(Refusal::Unchecked(error(&format!(
            "ERR slotgate: cannot check the credentials with the cluster ({addr}: {reason})"
        )))),
    }
}

/// Compares two secrets in a time that does not depend on where they differ: both are
/// hashed first, then every byte of the digests is compared.
pub fn same_secret(a: &[u8], b: &[u8]) -> bool {
    let (da, db) = (
        sha1_smol::Sha1::from(a).digest().bytes(),
        sha1_smol::Sha1::from(b).digest().bytes(),
    );
    let diff = da
        .iter()
        .zip(db.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// How long failed attempts of one address are counted together.
const FAILURE_WINDOW: Duration = Duration::from_secs(60);
/// Most addresses tracked at once; beyond it, windows that ended are dropped first.
const MAX_TRACKED: usize = 100_000;

/// Failed logins per client address, in one-minute windows.
#[derive(Debug, Default)]
pub struct AuthFailures {
    windows: Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

impl AuthFailures {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, (Instant, u32)>> {
        self.windows.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether `ip` failed `limit` times (0: no limit) within its current window.
    pub fn blocked(&self, ip: IpAddr, limit: u32) -> bool {
        if limit == 0 {
            return false;
        }
        self.lock()
            .get(&ip)
            .is_some_and(|(start, n)| start.elapsed() < FAILURE_WINDOW && *n >= limit)
    }

    /// Counts a failed attempt of `ip`.
    pub fn record(&self, ip: IpAddr) {
        let mut windows = self.lock();
        if windows.len() >= MAX_TRACKED && !windows.contains_key(&ip) {
            windows.retain(|_, (start, _)| start.elapsed() < FAILURE_WINDOW);
            if windows.len() >= MAX_TRACKED {
                return;
            }
        }
        let entry = windows.entry(ip).or_insert((Instant::now(), 0));
        if entry.0.elapsed() >= FAILURE_WINDOW {
            *entry = (Instant::now(), 0);
        }
        entry.1 = entry.1.saturating_add(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_compare_by_content_only() {
        assert!(same_secret(b"s3cret", b"s3cret"));
        assert!(!same_secret(b"s3cret", b"s3cre"));
        assert!(!same_secret(b"s3cret", b"S3cret"));
        assert!(same_secret(b"", b""));
    }

    #[test]
    fn an_address_is_blocked_after_its_limit_within_the_window() {
        let f = AuthFailures::default();
        let ip: IpAddr = "10.1.2.3".parse().unwrap();
        let other: IpAddr = "10.1.2.4".parse().unwrap();
        for _ in 0..3 {
            assert!(!f.blocked(ip, 3));
            f.record(ip);
        }
        assert!(f.blocked(ip, 3));
        assert!(!f.blocked(ip, 0), "0 means no limit");
        assert!(!f.blocked(other, 3));
        // A window that ended starts again.
        f.lock().get_mut(&ip).unwrap().0 -= FAILURE_WINDOW;
        assert!(!f.blocked(ip, 3));
        f.record(ip);
        assert_eq!(f.lock()[&ip].1, 1);
    }

    #[test]
    fn credentials_are_found_in_auth_and_hello() {
        let auth = Request::from_args(&["AUTH", "pw"]);
        assert_eq!(credentials(Cmd::Auth, &auth), Some((None, &b"pw"[..])));
        let auth = Request::from_args(&["AUTH", "alice", "pw"]);
        assert_eq!(
            credentials(Cmd::Auth, &auth),
            Some((Some(&b"alice"[..]), &b"pw"[..]))
        );
        let hello = Request::from_args(&["HELLO", "3", "SETNAME", "x", "AUTH", "bob", "pw2"]);
        assert_eq!(
            credentials(Cmd::Hello, &hello),
            Some((Some(&b"bob"[..]), &b"pw2"[..]))
        );
        assert_eq!(
            credentials(Cmd::Hello, &Request::from_args(&["HELLO", "3"])),
            None
        );
        assert_eq!(
            credentials(
                Cmd::Hello,
                &Request::from_args(&["HELLO", "3", "AUTH", "u"])
            ),
            None
        );
    }
}
