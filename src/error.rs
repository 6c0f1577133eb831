//! Typed errors: protocol violations by a peer, backend failures, configuration mistakes.
//!
//! Hot-path errors are small concrete enums so callers classify them by variant, never by
//! message text. Whether a failed backend request may be retried travels with the error.

use std::io;

/// A peer (client or backend) broke the RESP protocol. The connection it came on cannot be
/// trusted to stay in sync and is closed after the error is reported.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    #[error("invalid multibulk length")]
    InvalidMultibulkLength,
    #[error("invalid bulk length")]
    InvalidBulkLength,
    /// More arguments than a client may send before it authenticated.
    #[error("unauthenticated multibulk length")]
    UnauthenticatedMultibulkLength,
    /// A longer bulk than a client may send before it authenticated.
    #[error("unauthenticated bulk length")]
    UnauthenticatedBulkLength,
    #[error("expected '$', got '{}'", char::from(*.0))]
    ExpectedBulk(u8),
    #[error("bulk string not followed by CRLF")]
    MissingCrlf,
    #[error("too big inline request")]
    InlineTooBig,
    #[error("unbalanced quotes in request")]
    UnbalancedQuotes,
    #[error("invalid reply type byte 0x{0:02x}")]
    InvalidReplyType(u8),
    #[error("invalid length in reply")]
    InvalidReplyLength,
}

/// A TLS certificate, key or CA that cannot be used.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {message}")]
    Read { path: String, message: String },
    #[error("TLS setup: {0}")]
    Setup(String),
}

/// Why a request sent to a backend node got no reply.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BackendError {
    /// No connection to the node could be made; the request was never written.
    #[error("cannot connect to {addr}: {reason}")]
    Connect { addr: String, reason: String },
    /// The connection broke. `sent` tells whether the request may have reached the node,
    /// in which case a non-idempotent command must not be retried blindly.
    #[error("connection to {addr} lost")]
    ConnectionLost { addr: String, sent: bool },
    /// The node sent bytes that are not RESP; the connection was dropped.
    #[error("protocol error from {addr}: {error}")]
    Protocol { addr: String, error: ProtocolError },
    /// The node did not answer within the configured time.
    #[error("timeout waiting for {addr}")]
    Timeout { addr: String, sent: bool },
}

impl BackendError {
    /// True when the request may have been executed by the node.
    pub fn maybe_sent(&self) -> bool {
        match self {
            BackendError::Connect { .. } => false,
            BackendError::ConnectionLost { sent, .. } | BackendError::Timeout { sent, .. } => *sent,
            BackendError::Protocol { .. } => true,
        }
    }
}

/// A configuration value or command-line flag is unusable. `field` names it the way the
/// operator wrote it (YAML path or flag), so the message points at what to fix.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: String, source: io::Error },
    #[error("invalid config file {path}: {message}")]
    Parse { path: String, message: String },
    #[error("invalid value for `{field}`: {message}")]
    Invalid {
        field: &'static str,
        message: String,
    },
    /// As `Invalid`, for a field inside a list (`mirror.resources[1].tls`).
    #[error("invalid value for `{field}`: {message}")]
    InvalidAt { field: String, message: String },
}

/// Why slotgate could not start serving.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    Tls(#[from] TlsError),
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: String, source: io::Error },
    #[error("cannot start the worker threads: {0}")]
    Workers(io::Error),
}
