//! The `slotgate` binary: reads the config file and flags, starts logging, binds the listen
//! address and serves until SIGINT or SIGTERM.

use std::process::ExitCode;

use clap::Parser;
use slotgate::config::Config;
use tracing_subscriber::EnvFilter;

/// A Redis Cluster proxy: standalone-Redis clients use a whole cluster through it.
#[derive(Debug, Parser)]
#[command(name = "slotgate", version)]
struct Cli {
    /// YAML config file (see config/slotgate.yaml); flags override its values.
    #[arg(long, value_name = "FILE")]
    config: Option<String>,
    /// Address to accept clients on.
    #[arg(long, value_name = "HOST:PORT")]
    listen: Option<String>,
    /// Seed nodes of the cluster, comma-separated.
    #[arg(long, value_name = "HOST:PORT[,HOST:PORT...]", value_delimiter = ',')]
    cluster: Option<Vec<String>>,
    /// Password clients must give with AUTH.
    #[arg(long, value_name = "PASS")]
    password: Option<String>,
    /// Log filter when RUST_LOG is not set (error, warn, info, debug, trace).
    #[arg(long, value_name = "LEVEL")]
    log_level: Option<String>,
}

fn load(cli: Cli) -> Result<Config, slotgate::error::ConfigError> {
    let mut config = match &cli.config {
        Some(path) => Config::from_file(path)?,
        None => Config::default(),
    };
    if let Some(listen) = cli.listen {
        config.listen = listen;
    }
    if let Some(seeds) = cli.cluster {
        config.cluster.seeds = seeds.into_iter().filter(|s| !s.is_empty()).collect();
    }
    if let Some(password) = cli.password {
        config.password = Some(password);
    }
    if let Some(level) = cli.log_level {
        config.log_level = level;
    }
    config.validate()
}

fn main() -> ExitCode {
    let config = match load(Cli::parse()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("slotgate: {e}");
            return ExitCode::from(2);
        }
    };
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&config.log_level));
    tracing_subscriber::fmt().with_env_filter(filter).init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("slotgate: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        let listener = match tokio::net::TcpListener::bind(&config.listen).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("slotgate: cannot listen on {}: {e}", config.listen);
                return ExitCode::FAILURE;
            }
        };
        slotgate::server::run(listener, config, shutdown_signal()).await;
        ExitCode::SUCCESS
    })
}

/// Completes on SIGINT (Ctrl-C) or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
