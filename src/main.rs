//! The `slotgate` binary: reads the config file and flags, starts logging, binds the listen
//! address and serves until SIGINT or SIGTERM.

use std::process::ExitCode;
use std::time::Duration;

use clap::{ArgAction, Parser, Subcommand};
use slotgate::config::{Config, MirrorResourceConfig};
use slotgate::error::ConfigError;
use tracing_subscriber::EnvFilter;

/// A Redis Cluster proxy: standalone-Redis clients use a whole cluster through it.
#[derive(Debug, Parser)]
#[command(name = "slotgate", version)]
struct Cli {
    /// YAML config file (see config/slotgate.yaml); flags override its values.
    #[arg(long, value_name = "FILE", global = true)]
    config: Option<String>,
    /// Address to accept clients on.
    #[arg(long, value_name = "HOST:PORT")]
    listen: Option<String>,
    /// Address to accept TLS clients on (needs tls.cert_file and tls.key_file).
    #[arg(long, value_name = "HOST:PORT")]
    tls_listen: Option<String>,
    /// Address of the admin HTTP listener (/metrics, /health, /ready, /config); an empty
    /// value disables it.
    #[arg(long, value_name = "HOST:PORT")]
    admin_listen: Option<String>,
    /// Seed nodes of the cluster, comma-separated.
    #[arg(long, value_name = "HOST:PORT[,HOST:PORT...]", value_delimiter = ',')]
    cluster: Option<Vec<String>>,
    /// Password clients must give with AUTH.
    #[arg(long, value_name = "PASS")]
    password: Option<String>,
    /// Log filter when RUST_LOG is not set (error, warn, info, debug, trace).
    #[arg(long, value_name = "LEVEL", global = true)]
    log_level: Option<String>,
    /// Worker threads (0 = one per CPU core).
    #[arg(long, value_name = "N")]
    threads: Option<usize>,
    /// A mirror cluster that receives the writes too, by its seed nodes; repeat for several.
    #[arg(long, value_name = "HOST:PORT[,HOST:PORT...]", action = ArgAction::Append)]
    mirror: Vec<String>,
    /// Whom clients wait for when writes are mirrored: first_resource_only,
    /// all_resources_no_check, all_resources_check_error or async.
    #[arg(long, value_name = "MODE")]
    multi_write_mode: Option<String>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Consumer mode: apply the async multi-write queue (mirror.queue) to the mirrors.
    Consume,
}

fn load(cli: &Cli) -> Result<Config, slotgate::error::ConfigError> {
    let mut config = match &cli.config {
        Some(path) => Config::from_file(path)?,
        None => Config::default(),
    };
    if let Some(listen) = &cli.listen {
        config.listen = listen.clone();
    }
    if let Some(listen) = &cli.tls_listen {
        config.tls.listen = listen.clone();
    }
    if let Some(listen) = &cli.admin_listen {
        config.admin.listen = listen.clone();
    }
    if let Some(seeds) = &cli.cluster {
        config.cluster.seeds = seeds.iter().filter(|s| !s.is_empty()).cloned().collect();
    }
    if let Some(password) = &cli.password {
        config.password = Some(password.clone());
    }
    if let Some(threads) = cli.threads {
        config.threads = threads;
    }
    if let Some(level) = &cli.log_level {
        config.log_level = level.clone();
    }
    let first_new = config.mirror.resources.len() + 1;
    for (i, seeds) in cli.mirror.iter().enumerate() {
        config.mirror.resources.push(MirrorResourceConfig {
            name: format!("mirror{}", first_new + i),
            cluster: seeds
                .split(',')
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect(),
            ..MirrorResourceConfig::default()
        });
    }
    if let Some(mode) = &cli.multi_write_mode {
        config.mirror.mode = mode.parse().map_err(|message| ConfigError::Invalid {
            field: "--multi-write-mode",
            message,
        })?;
    }
    match cli.command {
        Some(Command::Consume) => config.validate_consumer(),
        None => config.validate(),
    }
}

fn main() -> ExitCode {
    let cli = std::sync::Arc::new(Cli::parse());
    let config = match load(&cli) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("slotgate: {e}");
            return ExitCode::from(2);
        }
    };
    let set_log_level = init_logging(&config.log_level);
    // SIGHUP and POST /reload read the file and the flags again.
    let reload = {
        let cli = cli.clone();
        slotgate::reload::ReloadSource {
            reread: Box::new(move || load(&cli)),
            set_log_level,
        }
    };
    // This runtime runs the accept loop and background tasks (topology, multi-write log and
    // probe, the consumer); clients are served by the worker threads (`--threads`).
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("slotgate: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(Command::Consume) = cli.command {
        return runtime.block_on(async {
            let stop = async {
                shutdown_signal(Duration::ZERO).await;
            };
            match slotgate::mirror::consumer::run(config, stop).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("slotgate consume: {e}");
                    ExitCode::FAILURE
                }
            }
        });
    }
    if let Err(e) = slotgate::server::preflight(&config) {
        eprintln!("slotgate: {e}");
        return ExitCode::FAILURE;
    }
    runtime.block_on(async {
        let listener = match tokio::net::TcpListener::bind(&config.listen).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("slotgate: cannot listen on {}: {e}", config.listen);
                return ExitCode::FAILURE;
            }
        };
        let drain = Duration::from_millis(config.drain.timeout_ms);
        match slotgate::server::run(listener, config, shutdown_signal(drain), Some(reload)).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("slotgate: {e}");
                ExitCode::FAILURE
            }
        }
    })
}

/// Logs to stderr (colours only on a terminal); the filter is `RUST_LOG` when set, else
/// `log_level`, which a reload can change (the returned setter; none with `RUST_LOG`).
fn init_logging(log_level: &str) -> Option<slotgate::reload::SetLogLevel> {
    use tracing_subscriber::prelude::*;
    // RUST_LOG is checked as log_level is (`is_log_filter`): a bad one is ignored, loudly.
    let from_env = match std::env::var("RUST_LOG") {
        Ok(v) if slotgate::config::is_log_filter(&v) => EnvFilter::try_new(&v).ok(),
        Ok(v) => {
            eprintln!("slotgate: RUST_LOG={v:?} is not a log filter; using log_level");
            None
        }
        Err(_) => None,
    };
    let fixed = from_env.is_some();
    let filter = from_env.unwrap_or_else(|| EnvFilter::new(log_level));
    let (filter, handle) = tracing_subscriber::reload::Layer::new(filter);
    tracing_subscriber::registry()
        .with(filter)
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())),
        )
        .init();
    if fixed {
        return None;
    }
    Some(Box::new(move |level: &str| {
        if !slotgate::config::is_log_filter(level) {
            return Err(format!("{level:?} is not a log filter"));
        }
        let filter = EnvFilter::try_new(level).map_err(|e| e.to_string())?;
        handle.reload(filter).map_err(|e| e.to_string())
    }))
}

/// Completes on SIGTERM (graceful: `drain` as the deadline) or SIGINT (fast: no drain).
async fn shutdown_signal(drain: Duration) -> Duration {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return Duration::ZERO;
                }
            };
        tokio::select! {
            _ = ctrl_c => Duration::ZERO,
            _ = term.recv() => drain,
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
        Duration::ZERO
    }
}
