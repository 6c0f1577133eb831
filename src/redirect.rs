//! What to do with a backend's answer: return it, follow a redirect, or retry. A pure
//! function of the answer and the attempts so far, so every branch is unit-tested.

use std::time::Duration;

use bytes::Bytes;

use crate::error::BackendError;
use crate::resp::encode::error;

/// What came back for one attempt.
#[derive(Debug, Clone, Copy)]
pub enum Outcome<'a> {
    /// A reply from the node at `from`.
    Reply { reply: &'a [u8], from: &'a str },
    /// No reply: the connection failed.
    Failed(&'a BackendError),
    /// The slot has no known master.
    NoRoute,
}

/// Attempts used so far for one command.
#[derive(Debug, Clone, Copy, Default)]
pub struct Attempts {
    /// MOVED and ASK redirects followed.
    pub redirects: u32,
    /// Retries after TRYAGAIN, CLUSTERDOWN, connection errors or a missing route.
    pub retries: u32,
}

/// Limits on attempts, from the configuration.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    pub max_redirects: u32,
    pub max_retries: u32,
    /// Wait before the first retry; doubles each time, up to one second.
    pub backoff: Duration,
}

/// The next step for a command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Give the reply to the client as it is.
    Return,
    /// Send again to `addr`. For MOVED (`asking == false`) the slot table is patched first;
    /// for ASK the command is preceded by `ASKING` and the table is left alone.
    Redirect {
        slot: u16,
        addr: String,
        asking: bool,
    },
    /// Wait, then route again from the slot table (refreshed first when `refresh`).
    Retry { wait: Duration, refresh: bool },
    /// Stop and give the client this error.
    Fail(Bytes),
}

/// The error a master gives its blocked clients when it turns into a replica (a failover):
/// the command was not executed, and the connection is closed after it.
const UNBLOCKED_BY_DEMOTION: &[u8] =
    b"UNBLOCKED force unblock from blocking operation, instance state changed";

/// Whether `reply` is the error of a blocked command its master gave up on when it turned
/// into a replica (`UNBLOCKED_BY_DEMOTION`).
pub fn unblocked_by_demotion(reply: &[u8]) -> bool {
    reply
        .strip_prefix(b"-")
        .is_some_and(|r| r.starts_with(UNBLOCKED_BY_DEMOTION))
}

/// Decides the next step. `idempotent` commands may be retried after a connection failure
/// even when they may have reached the node; other commands are never retried blindly.
pub fn decide(
    outcome: Outcome<'_>,
    attempts: Attempts,
    policy: RetryPolicy,
    idempotent: bool,
) -> Decision {
    let wait = policy
        .backoff
        .saturating_mul(1 << attempts.retries.min(10))
        .min(Duration::from_secs(1));
    let can_retry = attempts.retries < policy.max_retries;
    match outcome {
        Outcome::Reply { reply, from } => {
            if reply.first() != Some(&b'-') {
                return Decision::Return;
            }
            let line = trim_line(&reply[1..]);
            if let Some(rest) = line.strip_prefix(b"MOVED ") {
                return redirect(rest, from, false, attempts, policy, line);
            }
            if let Some(rest) = line.strip_prefix(b"ASK ") {
                return redirect(rest, from, true, attempts, policy, line);
            }
            if line.starts_with(b"TRYAGAIN") && can_retry {
                return Decision::Retry {
                    wait,
                    refresh: false,
                };
            }
            if line.starts_with(b"CLUSTERDOWN") && can_retry {
                return Decision::Retry {
                    wait,
                    refresh: true,
                };
            }
            // A blocked command whose master failed over was not executed: it blocks again
            // on the new master (its timeout starts over).
            if line.starts_with(UNBLOCKED_BY_DEMOTION) && can_retry {
                return Decision::Retry {
                    wait,
                    refresh: true,
                };
            }
            Decision::Return
        }
        Outcome::Failed(e) => {
            if e.maybe_sent() && !idempotent {
                return Decision::Fail(error(&format!(
                    "ERR slotgate: {e} after the command was sent; it may or may not have \
                     been executed, so it is not retried"
                )));
            }
            // A node that missed a deadline is stopped or overloaded: a read is retried once
            // (after a refresh, which may route it elsewhere), not for every retry allowed.
            let timed_out = matches!(e, BackendError::Timeout { .. });
            if can_retry && !(timed_out && attempts.retries >= 1) {
                Decision::Retry {
                    wait,
                    refresh: true,
                }
            } else {
                Decision::Fail(error(&format!("ERR slotgate: {e}")))
            }
        }
        Outcome::NoRoute => {
            if can_retry {
                Decision::Retry {
                    wait,
                    refresh: true,
                }
            } else {
                Decision::Fail(crate::replies::slot_not_served())
            }
        }
    }
}

fn redirect(
    rest: &[u8],
    from: &str,
    asking: bool,
    attempts: Attempts,
    policy: RetryPolicy,
    line: &[u8],
) -> Decision {
    let text = String::from_utf8_lossy(line);
    if attempts.redirects >= policy.max_redirects {
        return Decision::Fail(error(&format!(
            "ERR slotgate: too many cluster redirects (max {}), last: {text}",
            policy.max_redirects
        )));
    }
    let parsed = std::str::from_utf8(rest).ok().and_then(|r| {
        let (slot, addr) = r.split_once(' ')?;
        let slot: u16 = slot.parse().ok()?;
        ((slot as usize) < crate::slot::SLOT_COUNT).then_some((slot, addr.trim()))
    });
    let Some((slot, addr)) = parsed else {
        return Decision::Fail(error(&format!("ERR slotgate: unreadable redirect: {text}")));
    };
    let addr = redirect_addr(addr, from);
    Decision::Redirect { slot, addr, asking }
}

/// The address a MOVED or ASK names, as `host:port`: an empty host (`:6380`) or an unknown
/// one (`?:6380`, `cluster-preferred-endpoint-type unknown-endpoint`) means the host of
/// `from`, the node that answered.
pub fn redirect_addr(addr: &str, from: &str) -> String {
    match addr.strip_prefix(':').or_else(|| addr.strip_prefix("?:")) {
        Some(port) => {
            let host = from.rsplit_once(':').map_or(from, |(h, _)| h);
            format!("{host}:{port}")
        }
        None => addr.to_string(),
    }
}

fn trim_line(b: &[u8]) -> &[u8] {
    let end = b
        .iter()
        .position(|&c| c == b'\r' || c == b'\n')
        .unwrap_or(b.len());
    &b[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: RetryPolicy = RetryPolicy {
        max_redirects: 5,
        max_retries: 3,
        backoff: Duration::from_millis(10),
    };

    fn reply(r: &'static [u8]) -> Outcome<'static> {
        Outcome::Reply {
            reply: r,
            from: "10.0.0.1:7000",
        }
    }

    fn fresh() -> Attempts {
        Attempts::default()
    }

    /// Every retry `POLICY` allows already made.
    fn spent() -> Attempts {
        Attempts {
            redirects: 0,
            retries: POLICY.max_retries,
        }
    }

    #[test]
    fn a_command_unblocked_by_a_failover_blocks_again_after_a_refresh() {
        let unblocked = reply(
            b"-UNBLOCKED force unblock from blocking operation, instance state changed \
              (master -> replica?)\r\n",
        );
        assert_eq!(
            decide(unblocked, fresh(), POLICY, false),
            Decision::Retry {
                wait: Duration::from_millis(10),
                refresh: true
            }
        );
        let spent = spent();
        assert_eq!(decide(unblocked, spent, POLICY, false), Decision::Return);
        // CLIENT UNBLOCK ... ERROR on the node is an answer, not a failover.
        let asked = reply(b"-UNBLOCKED client unblocked via CLIENT UNBLOCK\r\n");
        assert_eq!(decide(asked, fresh(), POLICY, false), Decision::Return);
        assert!(unblocked_by_demotion(
            b"-UNBLOCKED force unblock from blocking operation, instance state changed (master -> replica?)\r\n"
        ));
        assert!(!unblocked_by_demotion(b"+OK\r\n"));
    }

    #[test]
    fn ordinary_replies_and_errors_return() {
        for r in [
            &b"+OK\r\n"[..],
            b"$1\r\na\r\n",
            b"-ERR wrong type\r\n",
            b"-NOREPLICAS x\r\n",
        ] {
            assert_eq!(decide(reply(r), fresh(), POLICY, false), Decision::Return);
        }
    }

    #[test]
    fn moved_and_ask() {
        assert_eq!(
            decide(
                reply(b"-MOVED 3999 127.0.0.1:6381\r\n"),
                fresh(),
                POLICY,
                false
            ),
            Decision::Redirect {
                slot: 3999,
                addr: "127.0.0.1:6381".into(),
                asking: false
            }
        );
        assert_eq!(
            decide(
                reply(b"-ASK 3999 node-b.local:6381\r\n"),
                fresh(),
                POLICY,
                false
            ),
            Decision::Redirect {
                slot: 3999,
                addr: "node-b.local:6381".into(),
                asking: true
            }
        );
    }

    #[test]
    fn unknown_host_means_the_sender() {
        assert_eq!(redirect_addr("?:6390", "10.0.0.1:7000"), "10.0.0.1:6390");
        assert_eq!(redirect_addr("h:1", "10.0.0.1:7000"), "h:1");
    }

    #[test]
    fn empty_host_means_the_sender() {
        assert_eq!(
            decide(reply(b"-MOVED 1 :6390\r\n"), fresh(), POLICY, false),
            Decision::Redirect {
                slot: 1,
                addr: "10.0.0.1:6390".into(),
                asking: false
            }
        );
    }

    #[test]
    fn redirects_are_capped() {
        let spent = Attempts {
            redirects: 5,
            retries: 0,
        };
        match decide(reply(b"-MOVED 1 a:1\r\n"), spent, POLICY, false) {
            Decision::Fail(e) => {
                assert!(e.starts_with(b"-ERR slotgate: too many cluster redirects"))
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn unreadable_redirect_fails() {
        assert!(matches!(
            decide(reply(b"-MOVED x\r\n"), fresh(), POLICY, false),
            Decision::Fail(_)
        ));
        assert!(matches!(
            decide(reply(b"-MOVED 99999 a:1\r\n"), fresh(), POLICY, false),
            Decision::Fail(_)
        ));
    }

    #[test]
    fn tryagain_backs_off_then_returns() {
        assert_eq!(
            decide(
                reply(b"-TRYAGAIN Multiple keys\r\n"),
                fresh(),
                POLICY,
                false
            ),
            Decision::Retry {
                wait: Duration::from_millis(10),
                refresh: false
            }
        );
        let later = Attempts {
            redirects: 0,
            retries: 2,
        };
        assert_eq!(
            decide(reply(b"-TRYAGAIN x\r\n"), later, POLICY, false),
            Decision::Retry {
                wait: Duration::from_millis(40),
                refresh: false
            }
        );
        let spent = spent();
        assert_eq!(
            decide(reply(b"-TRYAGAIN x\r\n"), spent, POLICY, false),
            Decision::Return
        );
    }

    #[test]
    fn clusterdown_refreshes_then_returns() {
        assert_eq!(
            decide(
                reply(b"-CLUSTERDOWN The cluster is down\r\n"),
                fresh(),
                POLICY,
                false
            ),
            Decision::Retry {
                wait: Duration::from_millis(10),
                refresh: true
            }
        );
        let spent = spent();
        assert_eq!(
            decide(reply(b"-CLUSTERDOWN x\r\n"), spent, POLICY, false),
            Decision::Return
        );
    }

    #[test]
    fn a_timed_out_read_is_retried_once() {
        let timeout = BackendError::Timeout {
            addr: "a:1".into(),
            sent: true,
        };
        assert!(matches!(
            decide(Outcome::Failed(&timeout), fresh(), POLICY, true),
            Decision::Retry { refresh: true, .. }
        ));
        let once = Attempts {
            redirects: 0,
            retries: 1,
        };
        match decide(Outcome::Failed(&timeout), once, POLICY, true) {
            Decision::Fail(e) => assert!(e.starts_with(b"-ERR slotgate: timeout waiting for a:1")),
            other => panic!("{other:?}"),
        }
        match decide(Outcome::Failed(&timeout), fresh(), POLICY, false) {
            Decision::Fail(e) => {
                assert!(String::from_utf8_lossy(&e).contains("may or may not have been executed"))
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn connection_failures() {
        let not_sent = BackendError::Connect {
            addr: "a:1".into(),
            reason: "refused".into(),
        };
        let maybe_sent = BackendError::ConnectionLost {
            addr: "a:1".into(),
            sent: true,
        };
        // Never written: retry even a write.
        assert!(matches!(
            decide(Outcome::Failed(&not_sent), fresh(), POLICY, false),
            Decision::Retry { refresh: true, .. }
        ));
        // Maybe executed: a read is retried, a write is not.
        assert!(matches!(
            decide(Outcome::Failed(&maybe_sent), fresh(), POLICY, true),
            Decision::Retry { refresh: true, .. }
        ));
        match decide(Outcome::Failed(&maybe_sent), fresh(), POLICY, false) {
            Decision::Fail(e) => assert!(e.starts_with(b"-ERR slotgate: connection to a:1 lost")),
            other => panic!("{other:?}"),
        }
        let spent = spent();
        assert!(matches!(
            decide(Outcome::Failed(&not_sent), spent, POLICY, false),
            Decision::Fail(_)
        ));
    }

    #[test]
    fn no_route_refreshes_then_clusterdown() {
        assert!(matches!(
            decide(Outcome::NoRoute, fresh(), POLICY, false),
            Decision::Retry { refresh: true, .. }
        ));
        let spent = spent();
        assert_eq!(
            decide(Outcome::NoRoute, spent, POLICY, false),
            Decision::Fail(crate::replies::slot_not_served())
        );
    }
}
