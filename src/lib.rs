//! slotgate: a Redis Cluster-aware proxy. Clients written for one standalone Redis connect
//! to it and use a whole Redis Cluster: commands are routed by hash slot, redirects and
//! topology changes are handled here, and replies pass through unchanged.

pub mod admin;
pub mod auth;
pub mod batch;
pub mod backend {
    //! Connections to cluster nodes.
    pub mod conn;
    pub mod node_stats;
    pub mod pool;
    pub mod stream;
    pub mod timeouts;
    pub mod users;
}
pub mod client;
pub mod clients;
pub mod clock;
pub mod command;
pub mod command_stats;
pub mod config;
pub mod counter;
pub mod dispatch;
pub mod drain;
pub mod error;
pub mod fasthash;
#[cfg(test)]
pub mod fixtures;
pub mod histogram;
pub mod hotkeys;
pub mod info;
pub mod local;
pub mod mirror;
pub mod multikey;
pub mod plan;
pub mod pubsub;
pub mod redact;
pub mod redirect;
pub mod reload;
pub mod replies;
pub mod resp;
pub mod scan;
pub mod scripts;
pub mod server;
pub mod shared;
pub mod slot;
pub mod slowlog;
pub mod tls;
pub mod topology;
pub mod tracking;
pub mod transaction;
pub mod wait;
pub mod worker;
