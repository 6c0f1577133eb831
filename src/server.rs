//! The accept loops (plain and TLS): one task per client, a cap on clients, the TLS
//! certificate reloaded on SIGHUP, and graceful shutdown.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tracing::{Instrument, error, info, info_span, warn};

use crate::config::Config;
use crate::dispatch::{Cluster, ClusterAccess};
use crate::error::StartError;
use crate::reload::{ReloadSource, Reloader};
use crate::shared::Shared;
use crate::tls::{BackendTls, ClientTls};
use crate::worker::Workers;

/// Builds the shared state (primary cluster and its topology manager) for `config`; fails
/// when a TLS file cannot be used.
pub fn build(config: Config) -> Result<Arc<Shared>, StartError> {
    let tls = BackendTls::for_cluster(config.cluster.tls_files(), "primary")?;
    let primary = Cluster::connect(
        ClusterAccess {
            name: "primary".into(),
            seeds: config.cluster.seeds.clone(),
            standalone: false,
            username: config.cluster.username.clone(),
            password: config.cluster.password.clone(),
            tls,
        },
        &config,
    );
    let mirrors = arc_swap::ArcSwapOption::new(crate::mirror::Mirrors::build(&config, None)?);
    let commands = crate::command_stats::CommandStats::new(config.worker_threads());
    let hotkeys = crate::hotkeys::HotKeys::new(config.worker_threads());
    Ok(Arc::new(Shared {
        mirrors,
        live: arc_swap::ArcSwap::from_pointee(config.clone()),
        live_generation: Default::default(),
        config,
        primary,
        stats: Default::default(),
        started: std::time::Instant::now(),
        scripts: Default::default(),
        clients: Default::default(),
        tracking: Default::default(),
        fanned: Default::default(),
        auth_failures: Default::default(),
        hotkeys,
        commands,
        slowlog: Default::default(),
        notices: tokio::sync::watch::Sender::new(false),
    }))
}

/// Reads every TLS file the config names (listener, cluster, mirrors), so that a file that
/// cannot be used stops the start before any port is bound.
pub fn preflight(config: &Config) -> Result<(), StartError> {
    if let Some(files) = config.tls.files() {
        ClientTls::load(files)?;
    }
    if let Some(files) = config.cluster.tls_files() {
        BackendTls::build(&files, "primary")?;
    }
    for r in &config.mirror.resources {
        if let Some(files) = r.tls_files() {
            BackendTls::build(&files, &r.name)?;
        }
    }
    Ok(())
}

/// The sockets slotgate serves: the plain client listener and, when configured, the TLS
/// one (`tls.listen`) and the admin HTTP one (`admin.listen`).
pub struct Listeners {
    pub plain: TcpListener,
    pub tls: Option<TcpListener>,
    pub admin: Option<TcpListener>,
}

async fn bind_optional(addr: &str) -> Result<Option<TcpListener>, StartError> {
    if addr.is_empty() {
        return Ok(None);
    }
    TcpListener::bind(addr)
        .await
        .map(Some)
        .map_err(|source| StartError::Bind {
            addr: addr.to_string(),
            source,
        })
}

/// As `run_with`, binding the TLS listener (`tls.listen`) and the admin listener
/// (`admin.listen`) when they are configured.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = Duration>,
    reload: Option<ReloadSource>,
) -> Result<(), StartError> {
    let tls = bind_optional(&config.tls.listen).await?;
    let admin = bind_optional(&config.admin.listen).await?;
    run_with(
        Listeners {
            plain: listener,
            tls,
            admin,
        },
        config,
        shutdown,
        reload,
    )
    .await
}

/// Accepts on whichever listener has a client first.
async fn accept(
    listeners: &Listeners,
) -> (std::io::Result<(TcpStream, std::net::SocketAddr)>, bool) {
    match &listeners.tls {
        Some(tls) => tokio::select! {
            a = listeners.plain.accept() => (a, false),
            a = tls.accept() => (a, true),
        },
        None => (listeners.plain.accept().await, false),
    }
}

/// How long a TLS client may take to finish its handshake.
fn handshake_timeout(config: &Config) -> Duration {
    match config.limits.request_read_timeout_ms {
        0 => Duration::from_secs(10),
        ms => Duration::from_millis(ms),
    }
}

/// Serves clients on `listener` until `shutdown` completes with a drain deadline: then no
/// client is accepted any more, connected clients get the replies to what they already sent
/// and are closed, and `run` returns once all are gone or the deadline passed (zero: at
/// once). The first topology refresh runs before the first client is accepted when the
/// cluster answers within the connect timeout.
pub async fn run_on(
    listeners: Listeners,
    config: Config,
    shutdown: impl Future<Output = Duration>,
) -> Result<(), StartError> {
    run_with(listeners, config, shutdown, None).await
}

/// As `run_on`; SIGHUP and `POST /reload` re-read the configuration from `reload` (without
/// one, they reload the TLS certificate only).
pub async fn run_with(
    mut listeners: Listeners,
    config: Config,
    shutdown: impl Future<Output = Duration>,
    reload: Option<ReloadSource>,
) -> Result<(), StartError> {
    let client_tls = match config.tls.files() {
        Some(files) => Some(Arc::new(ClientTls::load(files)?)),
        None => None,
    };
    if !crate::command::route_from_server(&config.cluster.route_from_server) {
        tracing::warn!(
            "cluster.route_from_server is read once per process, before the first command: \
             the list in force is kept"
        );
    }
    let shared = build(config)?;
    shared
        .primary
        .topology
        .refresh_and_wait(None, shared.config.connect_timeout() * 2)
        .await;
    // The first two look at the mirrors in force each time: a reload may add or remove
    // them. All three stop with the server.
    let background = [
        tokio::spawn(log_multiwrite(shared.clone())),
        tokio::spawn(crate::mirror::probe::run(shared.clone())),
        tokio::spawn(crate::tracking::listener::run(shared.clone())),
    ];
    let workers = Workers::start(shared.config.worker_threads()).map_err(StartError::Workers)?;
    let handshake = handshake_timeout(&shared.config);
    let limit = Arc::new(Semaphore::new(shared.config.limits.max_clients));
    let reloader = Arc::new(Reloader::new(
        reload,
        shared.clone(),
        client_tls.clone(),
        limit.clone(),
    ));
    let sighup = crate::reload::on_sighup(reloader.clone());
    let admin = listeners
        .admin
        .take()
        .map(|l| tokio::spawn(crate::admin::serve(l, shared.clone(), reloader.clone())));
    let next_id = AtomicU64::new(1);
    info!(
        listen = %listeners.plain.local_addr().map(|a| a.to_string()).unwrap_or_default(),
        tls_listen = %listeners.tls.as_ref().and_then(|l| l.local_addr().ok()).map(|a| a.to_string()).unwrap_or_default(),
        workers = workers.len(),
        "slotgate ready"
    );
    tokio::pin!(shutdown);
    let mut backoff = Duration::from_millis(5);
    let drain = loop {
        let (accepted, over_tls) = tokio::select! {
            drain = &mut shutdown => break drain,
            a = accept(&listeners) => a,
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
            warn!(
                peer = %peer,
                limit = shared.live().limits.max_clients,
                "limits.max_clients reached: client refused"
            );
            if over_tls {
                // No TLS session to carry the error: the connection is closed.
                continue;
            }
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
        let acceptor = if over_tls {
            client_tls.as_ref().map(|t| t.acceptor())
        } else {
            None
        };
        workers.spawn(
            async move {
                if let Ok(stream) = TcpStream::from_std(stream) {
                    match acceptor {
                        Some(acceptor) => {
                            serve_tls(shared.clone(), &acceptor, stream, id, handshake).await
                        }
                        None => crate::client::serve(shared.clone(), stream, id).await,
                    }
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
    drop(listeners);
    if let Some(r) = sighup {
        r.abort();
    }
    if let Some(a) = admin {
        a.abort();
    }
    shared.notices.send_replace(true);
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
    info!(
        clients_cut = left(),
        moving_sent = shared.stats.moving_sent.load(Ordering::Relaxed),
        "shut down"
    );
    for task in background {
        task.abort();
    }
    // Clients still connected after the deadline are cut when their worker stops.
    let _ = tokio::task::spawn_blocking(move || workers.stop()).await;
    Ok(())
}

/// Runs the TLS handshake, then serves the client; a handshake that fails or takes longer
/// than `limit` is logged and the connection closed.
async fn serve_tls(
    shared: Arc<Shared>,
    acceptor: &tokio_rustls::TlsAcceptor,
    stream: TcpStream,
    id: u64,
    limit: Duration,
) {
    let _ = stream.set_nodelay(true);
    let (peer, local) = (stream.peer_addr().ok(), stream.local_addr().ok());
    match tokio::time::timeout(limit, acceptor.accept(stream)).await {
        Ok(Ok(tls)) => crate::client::serve_stream(shared, tls, peer, local, id).await,
        Ok(Err(e)) => {
            shared
                .stats
                .tls_handshake_failures
                .fetch_add(1, Ordering::Relaxed);
            warn!(peer = ?peer, error = %e, "TLS handshake failed");
        }
        Err(_) => {
            shared
                .stats
                .tls_handshake_failures
                .fetch_add(1, Ordering::Relaxed);
            warn!(peer = ?peer, "TLS handshake timed out");
        }
    }
}

/// Logs the multi-write figures (the `# Multiwrite` INFO lines) every 30 seconds.
async fn log_multiwrite(shared: Arc<Shared>) {
    let mut ticker = tokio::time::interval(Duration::from_secs(30));
    ticker.tick().await;
    loop {
        ticker.tick().await;
        let Some(m) = &shared.mirrors() else {
            continue;
        };
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
