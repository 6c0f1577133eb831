//! The accept loop: one task per client, a cap on clients, and graceful shutdown.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tracing::{Instrument, error, info, info_span};

use crate::config::Config;
use crate::dispatch::{Cluster, ClusterAccess};
use crate::shared::Shared;
use crate::worker::Workers;

/// Builds the shared state (primary cluster and its topology manager) for `config`.
pub fn build(config: Config) -> Arc<Shared> {
    let primary = Cluster::connect(
        ClusterAccess {
            name: "primary".into(),
            seeds: config.cluster.seeds.clone(),
            standalone: false,
            username: config.cluster.username.clone(),
            password: config.cluster.password.clone(),
        },
        &config,
    );
    let mirrors = crate::mirror::Mirrors::build(&config);
    Arc::new(Shared {
        mirrors,
        config,
        primary,
        stats: Default::default(),
        started: std::time::Instant::now(),
        scripts: Default::default(),
        clients: Default::default(),
        draining: tokio::sync::watch::Sender::new(false),
    })
}

/// Serves clients on `listener` until `shutdown` completes with a drain deadline: then no
/// client is accepted any more, connected clients get the replies to what they already sent
/// and are closed, and `run` returns once all are gone or the deadline passed (zero: at
/// once). The first topology refresh runs before the first client is accepted when the
/// cluster answers within the connect timeout.
pub async fn run(listener: TcpListener, config: Config, shutdown: impl Future<Output = Duration>) {
    if !crate::command::route_from_server(&config.cluster.route_from_server) {
        tracing::warn!(
            "cluster.route_from_server is read once per process, before the first command: \
             the list in force is kept"
        );
    }
    let shared = build(config);
    shared
        .primary
        .topology
        .refresh_and_wait(None, shared.config.connect_timeout() * 2)
        .await;
    if shared.mirrors.is_some() {
        tokio::spawn(log_multiwrite(shared.clone()));
    }
    let probe = shared.config.mirror.probe_interval_ms;
    if probe > 0 && shared.mirrors.is_some() {
        tokio::spawn(crate::mirror::probe::run(
            shared.clone(),
            Duration::from_millis(probe),
        ));
    }
    let workers = match Workers::start(shared.config.worker_threads()) {
        Ok(w) => w,
        Err(e) => {
            error!(error = %e, "cannot start the worker threads");
            return;
        }
    };
    let limit = Arc::new(Semaphore::new(shared.config.limits.max_clients));
    let next_id = AtomicU64::new(1);
    info!(
        listen = %listener.local_addr().map(|a| a.to_string()).unwrap_or_default(),
        workers = workers.len(),
        "slotgate ready"
    );
    tokio::pin!(shutdown);
    let mut backoff = Duration::from_millis(5);
    let drain = loop {
        let accepted = tokio::select! {
            drain = &mut shutdown => break drain,
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
        // The client moves to a worker thread, which serves it from then on.
        let stream = match stream.into_std() {
            Ok(s) => s,
            Err(e) => {
                error!(error = %e, "cannot hand a client to a worker");
                continue;
            }
        };
        let shared = shared.clone();
        let span = info_span!("client", id, peer = %peer);
        shared
            .stats
            .connected_clients
            .fetch_add(1, Ordering::Relaxed);
        workers.spawn(
            async move {
                if let Ok(stream) = TcpStream::from_std(stream) {
                    crate::client::serve(shared.clone(), stream, id).await;
                }
                shared
                    .stats
                    .connected_clients
                    .fetch_sub(1, Ordering::Relaxed);
                drop(permit);
            }
            .instrument(span),
        );
    };
    drop(listener);
    let _ = shared.draining.send(true);
    let deadline = tokio::time::Instant::now() + drain;
    let left = || shared.stats.connected_clients.load(Ordering::Relaxed);
    if !drain.is_zero() {
        info!(
            clients = left(),
            "shutting down: finishing the commands in flight"
        );
    }
    while left() > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    info!(clients_cut = left(), "shut down");
    // Clients still connected after the deadline are cut when their worker stops.
    let _ = tokio::task::spawn_blocking(move || workers.stop()).await;
}

/// Logs the multi-write figures (the `# Multiwrite` INFO lines) every 30 seconds.
async fn log_multiwrite(shared: Arc<Shared>) {
    let mut ticker = tokio::time::interval(Duration::from_secs(30));
    ticker.tick().await;
    loop {
        ticker.tick().await;
        let Some(m) = &shared.mirrors else { return };
        let lag = match &m.queue {
            Some(q) => q.lag().await,
            None => None,
        };
        for line in crate::mirror::info_section(m, &shared.primary, lag)
            .lines()
            .skip(1)
        {
            info!(target: "slotgate::multiwrite", "{line}");
        }
    }
}
