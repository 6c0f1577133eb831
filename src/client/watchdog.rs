//! A client's time limits: the idle timeout (`limits.client_idle_timeout_s`) and the
//! request-read deadline (`limits.request_read_timeout_ms`), on one timer per client.
//!
//! The timer is not moved on every read: when it fires, the limits are checked against the
//! times the client last sent something and started its incomplete request, and it is set
//! again for the earliest deadline still ahead.

use std::pin::Pin;
use std::time::Duration;

use tokio::time::{Instant, Sleep};

use crate::config::LimitsConfig;

/// Which limit a client passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expired {
    /// Idle for `client_idle_timeout_s`.
    Idle,
    /// An incomplete request for `request_read_timeout_ms`.
    SlowRequest,
}

/// One client's time limits.
pub struct Watchdog {
    idle: Option<Duration>,
    read: Option<Duration>,
    /// When the client last sent bytes.
    last_input: Instant,
    /// When the incomplete request at the end of the input buffer began, if there is one.
    partial_since: Option<Instant>,
    /// `None` when both limits are off.
    timer: Option<Pin<Box<Sleep>>>,
}

impl Watchdog {
    pub fn new(limits: &LimitsConfig) -> Watchdog {
        let idle = (limits.client_idle_timeout_s > 0)
            .then(|| Duration::from_secs(limits.client_idle_timeout_s));
        let read = (limits.request_read_timeout_ms > 0)
            .then(|| Duration::from_millis(limits.request_read_timeout_ms));
        let now = Instant::now();
        let first = [idle, read].into_iter().flatten().min();
        Watchdog {
            idle,
            read,
            last_input: now,
            partial_since: None,
            timer: first.map(|d| Box::pin(tokio::time::sleep_until(now + d))),
        }
    }

    /// Records bytes read from the client.
    pub fn input(&mut self) {
        if self.timer.is_some() {
            self.last_input = Instant::now();
        }
    }

    /// Records what the input buffer holds after scanning: an incomplete request (`partial`)
    /// and whether a request was completed since the last call.
    pub fn scanned(&mut self, partial: bool, completed: bool) {
        if !partial {
            self.partial_since = None;
        } else if completed || self.partial_since.is_none() {
            self.partial_since = Some(self.last_input);
        }
    }

    /// Waits until a limit may have passed; never completes when both are off.
    pub async fn fired(&mut self) {
        match &mut self.timer {
            Some(t) => t.as_mut().await,
            None => std::future::pending().await,
        }
    }

    /// After `fired`: the limit the client passed, if any, else re-arms the timer.
    /// `idle_allowed`: nothing is in flight, the client neither subscribes nor blocks.
    /// `reading`: slotgate reads from the client now; while it does not (its pipeline window
    /// is full), an incomplete request is not the client's delay and its clock restarts.
    pub fn check(&mut self, idle_allowed: bool, reading: bool) -> Option<Expired> {
        let now = Instant::now();
        let mut next = now + Duration::from_secs(3600);
        if !reading && self.partial_since.is_some() {
            self.partial_since = Some(now);
        }
        if let (Some(limit), Some(since)) = (self.read, self.partial_since) {
            if now >= since + limit {
                return Some(Expired::SlowRequest);
            }
            next = next.min(since + limit);
        }
        if let Some(limit) = self.idle {
            if idle_allowed && now >= self.last_input + limit {
                return Some(Expired::Idle);
            }
            // Not idle now (busy or subscribed): look again a full period later.
            let due = self.last_input + limit;
            next = next.min(if due > now { due } else { now + limit });
        }
        if let Some(t) = &mut self.timer {
            t.as_mut().reset(next);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(idle_s: u64, read_ms: u64) -> LimitsConfig {
        LimitsConfig {
            client_idle_timeout_s: idle_s,
            request_read_timeout_ms: read_ms,
            ..Default::default()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn an_incomplete_request_expires_and_a_completed_one_resets_the_clock() {
        let mut w = Watchdog::new(&limits(0, 1000));
        w.input();
        w.scanned(true, false);
        tokio::time::advance(Duration::from_millis(600)).await;
        assert_eq!(w.check(true, true), None);
        // More bytes of the same request do not reset its clock.
        w.input();
        w.scanned(true, false);
        // The timer fires when the request is 1000 ms old (paused time runs to it).
        w.fired().await;
        assert_eq!(w.check(true, true), Some(Expired::SlowRequest));
        // A request completed and the next one began: a new clock.
        w.input();
        w.scanned(true, true);
        tokio::time::advance(Duration::from_millis(900)).await;
        assert_eq!(w.check(true, true), None);
        w.scanned(false, true);
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(w.check(true, true), None);
        // While slotgate does not read (a full pipeline window), the clock does not run.
        w.scanned(true, true);
        tokio::time::advance(Duration::from_millis(900)).await;
        assert_eq!(w.check(true, false), None);
        tokio::time::advance(Duration::from_millis(900)).await;
        assert_eq!(w.check(true, true), None);
        tokio::time::advance(Duration::from_millis(200)).await;
        assert_eq!(w.check(true, true), Some(Expired::SlowRequest));
    }

    #[tokio::test(start_paused = true)]
    async fn idle_counts_only_when_allowed() {
        let mut w = Watchdog::new(&limits(2, 0));
        tokio::time::advance(Duration::from_secs(3)).await;
        w.fired().await;
        assert_eq!(w.check(false, true), None);
        w.fired().await;
        assert_eq!(w.check(true, true), Some(Expired::Idle));
        w.input();
        assert_eq!(w.check(true, true), None);
    }

    #[tokio::test]
    async fn both_off_never_fires() {
        let mut w = Watchdog::new(&limits(0, 0));
        let fired = tokio::time::timeout(Duration::from_millis(20), w.fired()).await;
        assert!(fired.is_err());
    }
}
