//! The backend timeouts (`cluster.connect_timeout_ms`, `cluster.command_timeout_ms`) as
//! values every connection of a cluster reads when it needs them, so a reload changes them
//! under running connections.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// A cluster's connect and command timeouts, in milliseconds.
#[derive(Debug)]
pub struct Timeouts {
    connect_ms: AtomicU64,
    command_ms: AtomicU64,
}

impl Timeouts {
    pub fn new(connect: Duration, command: Duration) -> Arc<Timeouts> {
        let t = Arc::new(Timeouts {
            connect_ms: AtomicU64::new(0),
            command_ms: AtomicU64::new(0),
        });
        t.set(connect, command);
        t
    }

    /// How long a connect, a TLS handshake, a greeting or a topology query may take.
    pub fn connect(&self) -> Duration {
        Duration::from_millis(self.connect_ms.load(Ordering::Relaxed))
    }

    /// How long a node may take to answer one request.
    pub fn command(&self) -> Duration {
        Duration::from_millis(self.command_ms.load(Ordering::Relaxed))
    }

    /// Puts new timeouts in force: connects started and requests sent from now on get them.
    pub fn set(&self, connect: Duration, command: Duration) {
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        self.connect_ms.store(ms(connect), Ordering::Relaxed);
        self.command_ms.store(ms(command), Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_change_is_seen_by_every_holder() {
        let t = Timeouts::new(Duration::from_millis(100), Duration::from_secs(5));
        let held = t.clone();
        t.set(Duration::from_millis(250), Duration::from_millis(700));
        assert_eq!(held.connect(), Duration::from_millis(250));
        assert_eq!(held.command(), Duration::from_millis(700));
    }
}
