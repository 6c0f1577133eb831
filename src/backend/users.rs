//! The cluster users clients authenticated as (`AUTH username password`): each gets an id
//! that backend connections are keyed by, so that user's commands run on connections
//! authenticated as that user. An entry lives while a client uses it, then a grace period
//! (`USER_IDLE`), after which its connections are closed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::redact::Secret;

/// Who a backend connection is authenticated as: slotgate's own account
/// (`cluster.username`/`cluster.password`), or a user a client logged in as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct UserId(u32);

impl UserId {
    /// slotgate's own account.
    pub const SERVICE: UserId = UserId(0);

    pub fn is_service(self) -> bool {
        self == UserId::SERVICE
    }
}

/// How long a user's connections stay open after its last client left.
pub const USER_IDLE: Duration = Duration::from_secs(30);

#[derive(Debug)]
struct Entry {
    name: String,
    password: Secret,
    /// Clients logged in as this user with this password.
    clients: usize,
    /// When the last client left.
    idle_since: Option<Instant>,
}

#[derive(Debug, Default)]
struct Inner {
    next: u32,
    by_id: HashMap<UserId, Entry>,
    by_credentials: HashMap<(String, String), UserId>,
}

/// The users clients are logged in as, for one cluster.
#[derive(Debug, Default)]
pub struct Users {
    inner: Mutex<Inner>,
}

/// One client's use of a user id; dropping it ends the use.
#[derive(Debug)]
pub struct UserLease {
    users: Arc<Users>,
    id: UserId,
    name: Arc<str>,
}

impl UserLease {
    pub fn id(&self) -> UserId {
        self.id
    }

    /// The user name, as the client gave it.
    pub fn name(&self) -> &Arc<str> {
        &self.name
    }
}

impl Drop for UserLease {
    fn drop(&mut self) {
        let mut inner = self.users.lock();
        if let Some(e) = inner.by_id.get_mut(&self.id) {
            e.clients = e.clients.saturating_sub(1);
            if e.clients == 0 {
                e.idle_since = Some(Instant::now());
            }
        }
    }
}

impl Users {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A lease on the id of `name` logged in with `password` (the same id for the same
    /// credentials, so clients of one user share its connections).
    pub fn lease(self: &Arc<Self>, name: &str, password: &str) -> UserLease {
        let mut inner = self.lock();
        let key = (name.to_string(), password.to_string());
        let id = match inner.by_credentials.get(&key) {
            Some(id) => *id,
            None => {
                inner.next += 1;
                let id = UserId(inner.next);
                inner.by_id.insert(
                    id,
                    Entry {
                        name: name.to_string(),
                        password: Secret::new(password),
                        clients: 0,
                        idle_since: None,
                    },
                );
                inner.by_credentials.insert(key, id);
                id
            }
        };
        if let Some(e) = inner.by_id.get_mut(&id) {
            e.clients += 1;
            e.idle_since = None;
        }
        UserLease {
            users: self.clone(),
            id,
            name: Arc::from(name),
        }
    }

    /// The credentials of `id` (`None` for the service account or a forgotten id).
    pub fn credentials(&self, id: UserId) -> Option<(String, Secret)> {
        let inner = self.lock();
        inner
            .by_id
            .get(&id)
            .map(|e| (e.name.clone(), e.password.clone()))
    }

    /// Forgets the users nobody used for `idle`; returns their ids, whose connections the
    /// caller closes.
    pub fn take_idle(&self, idle: Duration) -> Vec<UserId> {
        let mut inner = self.lock();
        let now = Instant::now();
        let gone: Vec<UserId> = inner
            .by_id
            .iter()
            .filter(|(_, e)| e.clients == 0 && e.idle_since.is_some_and(|t| now - t >= idle))
            .map(|(id, _)| *id)
            .collect();
        for id in &gone {
            inner.by_id.remove(id);
        }
        inner.by_credentials.retain(|_, id| !gone.contains(id));
        gone
    }

    /// Users known now (logged in, or idle and not yet forgotten).
    pub fn len(&self) -> usize {
        self.lock().by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_credentials_share_an_id_until_idle() {
        let users = Arc::new(Users::default());
        let a = users.lease("alice", "pw");
        let b = users.lease("alice", "pw");
        let other = users.lease("alice", "second-password");
        assert_eq!(a.id(), b.id());
        assert_ne!(a.id(), other.id());
        assert!(!a.id().is_service());
        let (name, pass) = users.credentials(a.id()).unwrap();
        assert_eq!((name.as_str(), pass.expose()), ("alice", "pw"));
        let id = a.id();
        drop(a);
        assert_eq!(users.take_idle(Duration::ZERO), []);
        drop(b);
        assert_eq!(users.take_idle(Duration::from_secs(60)), []);
        assert_eq!(users.take_idle(Duration::ZERO), [id]);
        assert!(users.credentials(id).is_none());
        assert_eq!(users.len(), 1);
    }
}
