//! The accept loop: one task per client, a cap on clients, and graceful shutdown.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tracing::{Instrument, error, info, info_span};

use crate::backend::pool::{Backends, PoolSettings};
use crate::config::Config;
use crate::dispatch::Shared;
use crate::topology::{Topology, TopologySettings};

/// Builds the shared state (backends, topology manager) for `config`.
pub fn build(config: Config) -> Arc<Shared> {
    let auth = config
        .cluster
        .password
        .clone()
        .map(|p| (config.cluster.username.clone(), p));
    let backends = Arc::new(Backends::new(PoolSettings {
        connections_per_node: config.cluster.connections_per_node,
        auth,
        connect_timeout: config.connect_timeout(),
        inbox_capacity: 1024,
        blocking_per_node: config.cluster.max_blocking_per_node,
    }));
    let topology = Topology::start(
        TopologySettings {
            seeds: config
                .cluster
                .seeds
                .iter()
                .map(|s| Arc::from(s.as_str()))
                .collect(),
            refresh_interval: config.refresh_interval(),
            min_refresh_gap: Duration::from_millis(50),
            query_timeout: config.connect_timeout(),
        },
        backends.clone(),
    );
    Arc::new(Shared::new(config, topology, backends))
}

/// Serves clients on `listener` until `shutdown` completes. The first topology refresh runs
/// before the first client is accepted when the cluster answers within the connect timeout.
pub async fn run(listener: TcpListener, config: Config, shutdown: impl Future<Output = ()>) {
    let shared = build(config);
    shared
        .topology
        .refresh_and_wait(None, shared.config.connect_timeout() * 2)
        .await;
    let limit = Arc::new(Semaphore::new(shared.config.limits.max_clients));
    let next_id = AtomicU64::new(1);
    info!(listen = %listener.local_addr().map(|a| a.to_string()).unwrap_or_default(), "slotgate ready");
    tokio::pin!(shutdown);
    let mut backoff = Duration::from_millis(5);
    loop {
        let accepted = tokio::select! {
            _ = &mut shutdown => break,
            a = listener.accept() => a,
        };
        let (mut stream, peer) = match accepted {
            Ok(a) => {
                backoff = Duration::from_millis(5);
                a
            }
            Err(e) => {
                // Out of file descriptors and the like: wait instead of spinning.
                error!(error = %e, "accept failed");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        let stats = &shared.stats;
        stats.total_connections.fetch_add(1, Ordering::Relaxed);
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            stats.rejected_connections.fetch_add(1, Ordering::Relaxed);
            tokio::spawn(async move {
                let _ = stream
                    .write_all(b"-ERR max number of clients reached\r\n")
                    .await;
            });
            continue;
        };
        let id = next_id.fetch_add(1, Ordering::Relaxed);
        let shared = shared.clone();
        let span = info_span!("client", id, peer = %peer);
        tokio::spawn(
            async move {
                shared
                    .stats
                    .connected_clients
                    .fetch_add(1, Ordering::Relaxed);
                crate::client::serve(shared.clone(), stream, id).await;
                shared
                    .stats
                    .connected_clients
                    .fetch_sub(1, Ordering::Relaxed);
                drop(permit);
            }
            .instrument(span),
        );
    }
    info!("shutting down");
}
