//! Configuration: the YAML file (`config/slotgate.yaml`), its defaults, and validation.
//!
//! Every field has a default, so a file only names what it changes. `validate` checks values
//! and names the offending field in its error, the way an operator wrote it.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::backend::conn::split_addr;
use crate::error::ConfigError;
use crate::resp::Limits;

/// Everything slotgate is configured with.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address clients connect to, `HOST:PORT`.
    pub listen: String,
    /// Password clients must give with AUTH (or HELLO ... AUTH) before anything else; none
    /// means no authentication.
    pub password: Option<String>,
    /// Log filter when `RUST_LOG` is not set: error, warn, info, debug, trace.
    pub log_level: String,
    /// Worker threads; 0 means one per CPU core.
    pub threads: usize,
    pub cluster: ClusterConfig,
    pub limits: LimitsConfig,
    /// Multi-write: extra clusters that receive the writes too.
    pub mirror: MirrorConfig,
    /// The TLS listener for clients.
    pub tls: TlsListenConfig,
    /// The admin HTTP listener (metrics, probes, effective config).
    pub admin: AdminConfig,
    /// What SIGTERM does with the clients (graceful restart).
    pub drain: DrainConfig,
    /// SLOWLOG as slotgate keeps it.
    pub slowlog: SlowlogConfig,
    /// Client-side caching (CLIENT TRACKING).
    pub tracking: TrackingConfig,
}

/// Client-side caching (`tracking.*`).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct TrackingConfig {
    /// Keys one default-mode tracking client may have tracked at once; beyond it its oldest
    /// key is announced as modified and forgotten (Redis's `tracking-table-max-keys`, per
    /// client).
    pub max_keys_per_client: usize,
    /// Keys tracked for all clients together; beyond it some are announced as modified and
    /// forgotten (Redis's `tracking-table-max-keys`); 0: no limit.
    pub table_max_keys: usize,
}

impl Default for TrackingConfig {
    fn default() -> Self {
        TrackingConfig {
            max_keys_per_client: 100_000,
            table_max_keys: 1_000_000,
        }
    }
}

/// The slow log (`slowlog.*`).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct SlowlogConfig {
    /// Commands slower than this end to end, in microseconds, are logged (0: every one).
    pub threshold_us: u64,
    /// Entries kept (0: none).
    pub max_len: usize,
}

impl Default for SlowlogConfig {
    fn default() -> Self {
        SlowlogConfig {
            threshold_us: 10_000,
            max_len: 128,
        }
    }
}

/// Graceful shutdown (`drain.*`).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct DrainConfig {
    /// How long SIGTERM lets clients finish before the process exits, in milliseconds.
    pub timeout_ms: u64,
    /// `HOST:PORT` named in the `MOVING` push sent to clients with maintenance
    /// notifications on; empty: none, so they reconnect to the address they used after half
    /// of `moving_ttl_s` (a Kubernetes Service, or a restart on the same port).
    pub moving_endpoint: String,
    /// The `MOVING` push's time to live, in seconds; a notified client is closed after it.
    pub moving_ttl_s: u64,
}

impl Default for DrainConfig {
    fn default() -> Self {
        DrainConfig {
            timeout_ms: 10_000,
            moving_endpoint: String::new(),
            moving_ttl_s: 2,
        }
    }
}

/// The admin HTTP listener (`admin.*`).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AdminConfig {
    /// `HOST:PORT` of the HTTP listener serving /metrics, /health, /ready and /config;
    /// empty disables it.
    pub listen: String,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            listen: "127.0.0.1:9121".into(),
        }
    }
}

/// A TLS listener beside the plain one (`tls.*`).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Default)]
#[serde(default, deny_unknown_fields)]
pub struct TlsListenConfig {
    /// Address of the TLS listener, `HOST:PORT`; empty: no TLS listener.
    pub listen: String,
    /// The server certificate chain (PEM); reloaded from disk on SIGHUP.
    pub cert_file: String,
    /// The certificate's private key (PEM); reloaded on SIGHUP.
    pub key_file: String,
    /// CA (PEM) client certificates must be signed by: mutual TLS. None: no client
    /// certificate asked.
    pub client_ca_file: Option<String>,
}

impl TlsListenConfig {
    /// The listener's files, when a TLS listener is configured.
    pub fn files(&self) -> Option<crate::tls::ServerFiles> {
        (!self.listen.is_empty()).then(|| crate::tls::ServerFiles {
            cert_file: self.cert_file.clone(),
            key_file: self.key_file.clone(),
            client_ca_file: self.client_ca_file.clone(),
        })
    }
}

/// The TLS fields of a cluster entry (`cluster.tls*` or a mirror resource's), read as one.
macro_rules! backend_tls_files {
    ($t:ty) => {
        impl $t {
            /// The TLS settings of connections to this cluster, when `tls` is on.
            pub fn tls_files(&self) -> Option<crate::tls::BackendFiles> {
                self.tls.then(|| crate::tls::BackendFiles {
                    ca_file: self.tls_ca_file.clone(),
                    cert_file: self.tls_cert_file.clone(),
                    key_file: self.tls_key_file.clone(),
                    server_name: self.tls_server_name.clone(),
                    insecure_skip_verify: self.tls_insecure_skip_verify,
                })
            }

            /// Checks the TLS fields; `prefix` is where they are in the file.
            fn validate_tls(&self, prefix: &str) -> Result<(), ConfigError> {
                let set = self.tls_ca_file.is_some()
                    || self.tls_cert_file.is_some()
                    || self.tls_key_file.is_some()
                    || self.tls_server_name.is_some()
                    || self.tls_insecure_skip_verify;
                let fail = |message: &str| {
                    Err(ConfigError::InvalidAt {
                        field: format!("{prefix}tls"),
                        message: message.to_string(),
                    })
                };
                if set && !self.tls {
                    return fail("tls_* fields are set but tls is not true");
                }
                if self.tls_cert_file.is_some() != self.tls_key_file.is_some() {
                    return fail("tls_cert_file and tls_key_file go together");
                }
                if self.tls && self.tls_ca_file.is_none() && !self.tls_insecure_skip_verify {
                    return fail(
                        "needs tls_ca_file (the CA of the nodes' certificates; a system \
                         bundle such as /etc/ssl/certs/ca-certificates.crt for public CAs)",
                    );
                }
                Ok(())
            }
        }
    };
}
backend_tls_files!(ClusterConfig);
backend_tls_files!(MirrorResourceConfig);

/// Whom the client waits for when writes are mirrored.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum MultiWriteMode {
    /// Reply when the primary answers; mirrors are written in the background.
    #[default]
    FirstResourceOnly,
    /// Reply when every resource answered, with the primary's reply.
    AllResourcesNoCheck,
    /// Reply when every resource answered; an error naming the resource if any failed.
    AllResourcesCheckError,
    /// Reply when the primary answered and the write is in the durable queue; a slotgate in
    /// consumer mode applies the queue to the mirrors.
    Async,
}

/// What `first_resource_only` does with a mirror write when the client's backlog is full.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum OnFull {
    /// Drop it: counted per resource and its key logged, so an operator can repair it.
    #[default]
    Drop,
    /// Wait for room: the client slows down to the mirrors' pace.
    Block,
}

impl std::str::FromStr for MultiWriteMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "first_resource_only" => Ok(MultiWriteMode::FirstResourceOnly),
            "all_resources_no_check" => Ok(MultiWriteMode::AllResourcesNoCheck),
            "all_resources_check_error" => Ok(MultiWriteMode::AllResourcesCheckError),
            "async" => Ok(MultiWriteMode::Async),
            other => Err(format!(
                "{other:?} is not a mode: use first_resource_only, all_resources_no_check, \
                 all_resources_check_error or async"
            )),
        }
    }
}

/// Multi-write settings.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Default)]
#[serde(default, deny_unknown_fields)]
pub struct MirrorConfig {
    pub mode: MultiWriteMode,
    /// Mirror writes each resource may have waiting (first_resource_only): handed over and
    /// not answered yet, over all clients; beyond it `on_full` decides for that resource
    /// alone. Default 10,000.
    pub backlog: Option<usize>,
    /// A full backlog drops the write (counted, its key logged) or makes the client wait.
    pub on_full: OnFull,
    /// Period of the double-write delay probe, in milliseconds; 0 turns it off.
    pub probe_interval_ms: u64,
    /// Differing keys logged per mirror in compare mode.
    pub compare_log_limit: Option<usize>,
    /// The mirrors.
    pub resources: Vec<MirrorResourceConfig>,
    /// The durable queue of the async mode.
    pub queue: Option<QueueConfig>,
}

/// One mirror: a cluster given by seeds, or a standalone Redis.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Default)]
#[serde(default, deny_unknown_fields)]
pub struct MirrorResourceConfig {
    /// Name used in INFO, logs and errors.
    pub name: String,
    /// Seed nodes of a mirror cluster.
    pub cluster: Vec<String>,
    /// Address of a standalone mirror (instead of `cluster`).
    pub standalone: Option<String>,
    pub username: Option<String>,
    pub password: Option<String>,
    /// Glob patterns: only writes to matching keys go to this mirror; empty means all.
    pub keys: Vec<String>,
    /// Compare this mirror's replies with the primary's and count mismatches.
    pub compare: bool,
    /// Connect to the nodes with TLS.
    pub tls: bool,
    /// PEM file of the CA(s) that signed the nodes' certificates.
    pub tls_ca_file: Option<String>,
    /// Client certificate and key (PEM) for nodes that ask for one.
    pub tls_cert_file: Option<String>,
    pub tls_key_file: Option<String>,
    /// The name checked in the nodes' certificates; by default the host each node is reached
    /// at (an IP address is checked against the certificate's IP addresses).
    pub tls_server_name: Option<String>,
    /// Accept any certificate (logs a warning at start): only for tests and trusted paths.
    pub tls_insecure_skip_verify: bool,
}

/// The Redis Streams queue of the async mode.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct QueueConfig {
    /// The Redis (standalone) holding the stream.
    pub redis: String,
    pub password: Option<String>,
    pub stream: String,
    /// Consumer group the consumers read with.
    pub group: String,
    /// This consumer's name within the group (consumer mode).
    pub consumer: String,
    /// Most entries the stream holds: beyond it (the consumers are that far behind) writes
    /// are refused with an error rather than trimming entries no consumer has applied.
    /// Consumers trim only what every consumer acknowledged.
    pub maxlen: u64,
    /// Where entries a mirror rejects for good (`WRONGTYPE`, a syntax error) go.
    pub dead_letter: String,
    /// Attempts before such an entry goes to the dead-letter stream. A mirror that cannot
    /// be reached is retried, with backoff, for as long as it takes.
    pub max_attempts: u32,
    /// How long a consumer's lease on a partition lasts without renewal, in milliseconds:
    /// a consumer that died is replaced after this long, and its pending entries claimed.
    pub claim_idle_ms: u64,
    /// Streams the queue is split into by hash slot (`STREAM:N` when more than one). Each
    /// is applied in order by one consumer at a time, so writes to one slot keep their order
    /// with several consumers; with more partitions, more consumers work at once.
    pub partitions: u32,
    /// Entries read per batch by the consumer.
    pub batch: usize,
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            redis: String::new(),
            password: None,
            stream: "slotgate:mirror".into(),
            group: "slotgate".into(),
            consumer: "consumer-1".into(),
            maxlen: 1_000_000,
            dead_letter: "slotgate:mirror:dead".into(),
            max_attempts: 5,
            claim_idle_ms: 30_000,
            partitions: 1,
            batch: 100,
        }
    }
}

/// The Redis Cluster behind the proxy.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// Nodes to ask for the topology at start, `HOST:PORT` each; any one that answers is
    /// enough.
    pub seeds: Vec<String>,
    /// User name for AUTH on backend connections (Redis 6 ACL); needs `password`.
    pub username: Option<String>,
    /// Password for AUTH on backend connections.
    pub password: Option<String>,
    /// Connect to the nodes with TLS.
    pub tls: bool,
    /// PEM file of the CA(s) that signed the nodes' certificates.
    pub tls_ca_file: Option<String>,
    /// Client certificate and key (PEM) for nodes that ask for one.
    pub tls_cert_file: Option<String>,
    pub tls_key_file: Option<String>,
    /// The name checked in the nodes' certificates; by default the host each node is reached
    /// at (an IP address is checked against the certificate's IP addresses).
    pub tls_server_name: Option<String>,
    /// Accept any certificate (logs a warning at start): only for tests and trusted paths.
    pub tls_insecure_skip_verify: bool,
    /// Period of the `CLUSTER NODES` poll, in milliseconds.
    pub refresh_interval_ms: u64,
    /// Shared connections per node, per protocol and per worker thread.
    pub connections_per_node: usize,
    /// Deadline for connecting to a node and for topology queries, in milliseconds.
    pub connect_timeout_ms: u64,
    /// Deadline for a node's reply to one command, in milliseconds (blocking commands: their
    /// own timeout plus this). A missed deadline closes that connection: reads are retried
    /// once, writes get an error saying they may or may not have been applied.
    pub command_timeout_ms: u64,
    /// Most MOVED/ASK redirects followed for one command.
    pub max_redirects: u32,
    /// Most retries of one command after TRYAGAIN, CLUSTERDOWN or a connection error.
    pub max_retries: u32,
    /// First wait before such a retry, in milliseconds; doubles with each retry.
    pub retry_backoff_ms: u64,
    /// Most connections of their own that blocking commands (BLPOP ...) may hold open to one
    /// node at once; beyond it such commands get an error instead of waiting.
    pub max_blocking_per_node: usize,
    /// Where read-only commands go.
    pub read_from: ReadFrom,
    /// Commands of the built-in table to route by the servers' own `COMMAND INFO`
    /// descriptions instead (key specs, flags, tips), e.g. after a server changed one.
    /// Read once per process, at start.
    pub route_from_server: Vec<String>,
}

/// Where read-only commands of a slot go.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum ReadFrom {
    /// The slot's master (no stale reads).
    #[default]
    Master,
    /// A replica of the slot's master, or the master when it has no replica.
    PreferReplica,
    /// A replica only; with none known, reads of that slot fail.
    Replica,
}

/// Bounds that protect the proxy from a single client.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Most client connections at once; further ones are told so and closed.
    pub max_clients: usize,
    /// Longest bulk string in a request, in bytes (Redis: 512 MB).
    pub max_bulk_len: usize,
    /// Most arguments in one request.
    pub max_array_len: usize,
    /// Longest inline command line, in bytes.
    pub max_inline_len: usize,
    /// Most requests of one client in flight; reading from the client pauses beyond it.
    pub pipeline_window: usize,
    /// Most bytes of one client's requests in flight; reading pauses beyond it (one request
    /// larger than this still goes through, alone).
    pub pipeline_window_bytes: usize,
    /// Most bytes of replies waiting to be written to one client; a client that reads
    /// slower is disconnected (with a log line). Redis leaves normal clients unlimited;
    /// slotgate does not, since a proxy holds every client's backlog in one process.
    pub client_output_buffer: usize,
    /// Most bytes of pub/sub messages waiting to be written to one subscriber; a client that
    /// reads slower is disconnected (Redis: the pubsub client-output-buffer-limit).
    pub pubsub_output_buffer: usize,
    /// Seconds a client may stay idle (nothing sent, nothing in flight) before it is
    /// disconnected, as Redis's `timeout`; 0 disables it. Subscribers and clients blocked in
    /// a command are never idle.
    pub client_idle_timeout_s: u64,
    /// Milliseconds a client may take to send the rest of a request it started: a client
    /// that trickles a request (slow loris) is disconnected. Counts only while a request is
    /// incomplete; 0 disables it.
    pub request_read_timeout_ms: u64,
    /// Failed AUTH attempts allowed per client address in a minute; further attempts from
    /// that address are refused without checking until the minute is over. 0: no limit.
    pub auth_failures_per_minute: u32,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: "127.0.0.1:6380".into(),
            password: None,
            log_level: "info".into(),
            threads: 0,
            cluster: ClusterConfig::default(),
            limits: LimitsConfig::default(),
            mirror: MirrorConfig::default(),
            tls: TlsListenConfig::default(),
            admin: AdminConfig::default(),
            drain: DrainConfig::default(),
            slowlog: SlowlogConfig::default(),
            tracking: TrackingConfig::default(),
        }
    }
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            seeds: Vec::new(),
            username: None,
            password: None,
            refresh_interval_ms: 1000,
            connections_per_node: 1,
            connect_timeout_ms: 1000,
            command_timeout_ms: 5000,
            max_redirects: 5,
            max_retries: 5,
            retry_backoff_ms: 50,
            max_blocking_per_node: 256,
            read_from: ReadFrom::Master,
            route_from_server: Vec::new(),
            tls: false,
            tls_ca_file: None,
            tls_cert_file: None,
            tls_key_file: None,
            tls_server_name: None,
            tls_insecure_skip_verify: false,
        }
    }
}

impl Default for LimitsConfig {
    fn default() -> Self {
        let l = Limits::default();
        LimitsConfig {
            max_clients: 10_000,
            max_bulk_len: l.max_bulk_len,
            max_array_len: l.max_array_len,
            max_inline_len: l.max_inline_len,
            pipeline_window: 1024,
            pipeline_window_bytes: 64 * 1024 * 1024,
            client_output_buffer: 256 * 1024 * 1024,
            pubsub_output_buffer: 32 * 1024 * 1024,
            client_idle_timeout_s: 0,
            request_read_timeout_ms: 30_000,
            auth_failures_per_minute: 20,
        }
    }
}

impl Config {
    /// The configuration as YAML with every password replaced by `<redacted>`
    /// (`GET /config`).
    pub fn redacted_yaml(&self) -> String {
        let mut c = self.clone();
        let hide = |p: &mut Option<String>| {
            if p.is_some() {
                *p = Some("<redacted>".into());
            }
        };
        hide(&mut c.password);
        hide(&mut c.cluster.password);
        for r in &mut c.mirror.resources {
            hide(&mut r.password);
        }
        if let Some(q) = &mut c.mirror.queue {
            hide(&mut q.password);
        }
        serde_yaml::to_string(&c).unwrap_or_else(|e| format!("# cannot show the config: {e}\n"))
    }

    /// Reads and parses a YAML file (not yet validated).
    pub fn from_file(path: &str) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_string(),
            source,
        })?;
        Config::from_yaml(&text).map_err(|e| match e {
            ConfigError::Parse { message, .. } => ConfigError::Parse {
                path: path.to_string(),
                message,
            },
            other => other,
        })
    }

    /// Parses YAML text (not yet validated). An empty document gives the defaults.
    pub fn from_yaml(text: &str) -> Result<Config, ConfigError> {
        if text.trim().is_empty() {
            return Ok(Config::default());
        }
        serde_yaml::from_str(text).map_err(|e| ConfigError::Parse {
            path: "<yaml>".into(),
            message: e.to_string(),
        })
    }

    /// Checks the values consumer mode uses (the mirrors and the queue; no primary).
    pub fn validate_consumer(mut self) -> Result<Config, ConfigError> {
        if self.mirror.queue.is_none() {
            return Err(ConfigError::Invalid {
                field: "mirror.queue",
                message: "consumer mode needs the queue it reads".into(),
            });
        }
        if self.mirror.resources.is_empty() {
            return Err(ConfigError::Invalid {
                field: "mirror.resources",
                message: "consumer mode needs at least one mirror to apply the queue to".into(),
            });
        }
        self.mirror.mode = MultiWriteMode::Async;
        if self.cluster.seeds.is_empty() {
            // No primary in consumer mode; a placeholder keeps the shared checks simple.
            self.cluster.seeds = vec![
                self.mirror
                    .queue
                    .as_ref()
                    .map_or(String::new(), |q| q.redis.clone()),
            ];
        }
        self.validate()
    }

    /// Checks every value; the error names the field to fix.
    pub fn validate(self) -> Result<Config, ConfigError> {
        let invalid = |field, message: &str| {
            Err(ConfigError::Invalid {
                field,
                message: message.to_string(),
            })
        };
        if !is_host_port(&self.listen) {
            return invalid("listen", &format!("{:?} is not HOST:PORT", self.listen));
        }
        if self.threads > 1024 {
            return invalid("threads", "must be at most 1024 (0 = one per core)");
        }
        if let Some(bad) = self.cluster.route_from_server.iter().find(|n| {
            !crate::command::COMMANDS
                .iter()
                .any(|c| c.name.eq_ignore_ascii_case(n))
                || n.contains('|')
        }) {
            return invalid(
                "cluster.route_from_server",
                &format!("{bad:?} is not a command of the built-in table"),
            );
        }
        if self.cluster.seeds.is_empty() {
            return invalid(
                "cluster.seeds",
                "at least one seed node is needed (config file or --cluster HOST:PORT)",
            );
        }
        if let Some(bad) = self.cluster.seeds.iter().find(|s| !is_host_port(s)) {
            return invalid("cluster.seeds", &format!("{bad:?} is not HOST:PORT"));
        }
        self.cluster.validate_tls("cluster.")?;
        for (i, r) in self.mirror.resources.iter().enumerate() {
            r.validate_tls(&format!("mirror.resources[{i}]."))?;
        }
        if !self.admin.listen.is_empty() && !is_host_port(&self.admin.listen) {
            return invalid(
                "admin.listen",
                &format!(
                    "{:?} is not HOST:PORT (empty disables it)",
                    self.admin.listen
                ),
            );
        }
        if !self.drain.moving_endpoint.is_empty() && !is_host_port(&self.drain.moving_endpoint) {
            return invalid(
                "drain.moving_endpoint",
                &format!(
                    "{:?} is not HOST:PORT (empty: none)",
                    self.drain.moving_endpoint
                ),
            );
        }
        if self.drain.moving_ttl_s == 0 || self.drain.moving_ttl_s > 3600 {
            return invalid("drain.moving_ttl_s", "must be between 1 and 3600");
        }
        if !self.tls.listen.is_empty() {
            if !is_host_port(&self.tls.listen) {
                return invalid(
                    "tls.listen",
                    &format!("{:?} is not HOST:PORT", self.tls.listen),
                );
            }
            if self.tls.cert_file.is_empty() || self.tls.key_file.is_empty() {
                return invalid("tls.listen", "needs tls.cert_file and tls.key_file");
            }
        }
        if self.cluster.username.is_some() && self.cluster.password.is_none() {
            return invalid("cluster.username", "needs cluster.password as well");
        }
        if self.password.as_deref() == Some("") {
            return invalid(
                "password",
                "must not be empty (leave it out to disable AUTH)",
            );
        }
        let c = &self.cluster;
        if c.refresh_interval_ms == 0 {
            return invalid("cluster.refresh_interval_ms", "must be at least 1");
        }
        if !(1..=64).contains(&c.connections_per_node) {
            return invalid("cluster.connections_per_node", "must be between 1 and 64");
        }
        if c.connect_timeout_ms == 0 {
            return invalid("cluster.connect_timeout_ms", "must be at least 1");
        }
        if c.command_timeout_ms == 0 {
            return invalid("cluster.command_timeout_ms", "must be at least 1");
        }
        if !(1..=32).contains(&c.max_redirects) {
            return invalid("cluster.max_redirects", "must be between 1 and 32");
        }
        if c.max_blocking_per_node == 0 {
            return invalid("cluster.max_blocking_per_node", "must be at least 1");
        }
        if c.max_retries > 100 {
            return invalid("cluster.max_retries", "must be at most 100");
        }
        let l = &self.limits;
        if l.max_clients == 0 {
            return invalid("limits.max_clients", "must be at least 1");
        }
        if l.max_bulk_len == 0 {
            return invalid("limits.max_bulk_len", "must be at least 1");
        }
        if l.max_array_len == 0 {
            return invalid("limits.max_array_len", "must be at least 1");
        }
        if l.max_inline_len < 16 {
            return invalid("limits.max_inline_len", "must be at least 16");
        }
        if l.pubsub_output_buffer < 1024 {
            return invalid("limits.pubsub_output_buffer", "must be at least 1024");
        }
        if l.pipeline_window == 0 {
            return invalid("limits.pipeline_window", "must be at least 1");
        }
        if l.pipeline_window_bytes < 1024 {
            return invalid("limits.pipeline_window_bytes", "must be at least 1024");
        }
        if l.client_output_buffer < 1024 {
            return invalid("limits.client_output_buffer", "must be at least 1024");
        }
        self.validate_mirror()?;
        if self.tracking.max_keys_per_client == 0 {
            return invalid("tracking.max_keys_per_client", "must be at least 1");
        }
        if !is_log_filter(&self.log_level) {
            return invalid(
                "log_level",
                &format!("{:?} is not a log filter", self.log_level),
            );
        }
        Ok(self)
    }

    fn validate_mirror(&self) -> Result<(), ConfigError> {
        let invalid = |field, message: String| Err(ConfigError::Invalid { field, message });
        let m = &self.mirror;
        let mut names = std::collections::HashSet::new();
        for r in &m.resources {
            if r.name.is_empty() || r.name == "primary" {
                return invalid(
                    "mirror.resources.name",
                    format!("{:?} is not a usable name", r.name),
                );
            }
            if !names.insert(&r.name) {
                return invalid(
                    "mirror.resources.name",
                    format!("{:?} is used twice", r.name),
                );
            }
            match (&r.standalone, r.cluster.is_empty()) {
                (Some(a), true) if is_host_port(a) => {}
                (None, false) if r.cluster.iter().all(|s| is_host_port(s)) => {}
                (Some(_), false) | (None, true) => {
                    return invalid(
                        "mirror.resources.cluster",
                        format!(
                            "mirror {:?} needs either cluster seeds or a standalone address",
                            r.name
                        ),
                    );
                }
                _ => {
                    return invalid(
                        "mirror.resources.cluster",
                        format!("mirror {:?} has an address that is not HOST:PORT", r.name),
                    );
                }
            }
        }
        if m.backlog == Some(0) {
            return invalid("mirror.backlog", "must be at least 1".into());
        }
        if m.mode == MultiWriteMode::Async {
            let Some(q) = &m.queue else {
                return invalid("mirror.queue", "the async mode needs a queue".into());
            };
            if !is_host_port(&q.redis) {
                return invalid(
                    "mirror.queue.redis",
                    format!("{:?} is not HOST:PORT", q.redis),
                );
            }
            if q.stream.is_empty()
                || q.group.is_empty()
                || q.dead_letter.is_empty()
                || q.consumer.is_empty()
            {
                return invalid(
                    "mirror.queue",
                    "stream, group, consumer and dead_letter must not be empty".into(),
                );
            }
            if q.max_attempts == 0 || q.batch == 0 {
                return invalid(
                    "mirror.queue",
                    "max_attempts and batch must be at least 1".into(),
                );
            }
        }
        Ok(())
    }

    /// Request-scanner limits.
    pub fn request_limits(&self) -> Limits {
        Limits {
            max_bulk_len: self.limits.max_bulk_len,
            max_array_len: self.limits.max_array_len,
            max_inline_len: self.limits.max_inline_len,
            unauthenticated: false,
        }
    }

    pub fn refresh_interval(&self) -> Duration {
        Duration::from_millis(self.cluster.refresh_interval_ms)
    }

    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.cluster.connect_timeout_ms)
    }

    /// Worker threads to run: `threads`, or one per core when it is 0.
    pub fn worker_threads(&self) -> usize {
        crate::worker::resolve(self.threads)
    }

    pub fn command_timeout(&self) -> Duration {
        Duration::from_millis(self.cluster.command_timeout_ms)
    }
}

/// Whether `s` is a log filter: comma-separated directives, each a level (`info`), a target
/// (`slotgate`) or `target=level` (`slotgate::client=debug`). Span and field filters are not
/// accepted: tracing-subscriber 0.3's parser panics on some non-ASCII input and compiles
/// field filters into regular expressions that can take gigabytes (both found by the
/// `config` fuzz target), so only this plain grammar reaches it.
pub fn is_log_filter(s: &str) -> bool {
    let level = |l: &str| {
        ["error", "warn", "info", "debug", "trace", "off"]
            .iter()
            .any(|k| k.eq_ignore_ascii_case(l))
    };
    let target = |t: &str| {
        !t.is_empty()
            && t.len() <= 128
            && t.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | ':' | '.' | '-'))
    };
    let directive = |d: &str| match d.trim().split_once('=') {
        Some((t, l)) => target(t.trim()) && level(l.trim()),
        None => d.trim().is_empty() || level(d.trim()) || target(d.trim()),
    };
    !s.trim().is_empty()
        && s.len() <= 1024
        && s.split(',').all(directive)
        && tracing_subscriber::EnvFilter::try_new(s).is_ok()
}

fn is_host_port(s: &str) -> bool {
    split_addr(s).is_some_and(|(host, port)| !host.is_empty() && port != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(yaml: &str) -> Result<Config, ConfigError> {
        Config::from_yaml(yaml)?.validate()
    }

    fn invalid_field(yaml: &str) -> &'static str {
        match check(yaml) {
            Err(ConfigError::Invalid { field, .. }) => field,
            other => panic!("expected an invalid field, got {other:?}"),
        }
    }

    #[test]
    fn tls_fields_are_checked_where_they_are() {
        let seeds = "cluster:\n  seeds: [127.0.0.1:7000]\n";
        let at = |yaml: &str| match check(yaml) {
            Err(ConfigError::InvalidAt { field, message }) => (field, message),
            Err(ConfigError::Invalid { field, message }) => (field.to_string(), message),
            other => panic!("expected an invalid field, got {other:?}"),
        };
        let (field, message) = at(&format!("{seeds}  tls_ca_file: /ca.pem\n"));
        assert_eq!(field, "cluster.tls");
        assert!(message.contains("tls is not true"), "{message}");
        let (_, message) = at(&format!("{seeds}  tls: true\n"));
        assert!(message.contains("tls_ca_file"), "{message}");
        let (_, message) = at(&format!(
            "{seeds}  tls: true\n  tls_ca_file: /ca.pem\n  tls_cert_file: /c.pem\n"
        ));
        assert!(message.contains("go together"), "{message}");
        let (field, _) = at(&format!(
            "{seeds}mirror:\n  resources:\n    - name: b\n      cluster: [127.0.0.1:8000]\n      tls: true\n"
        ));
        assert_eq!(field, "mirror.resources[0].tls");
        assert_eq!(
            invalid_field(&format!("{seeds}tls:\n  listen: 127.0.0.1:6390\n")),
            "tls.listen"
        );
        assert_eq!(
            invalid_field(&format!(
                "{seeds}tls:\n  listen: nowhere\n  cert_file: a\n  key_file: b\n"
            )),
            "tls.listen"
        );
        let ok = check(&format!(
            "{seeds}  tls: true\n  tls_insecure_skip_verify: true\ntls:\n  listen: 127.0.0.1:6390\n  cert_file: a\n  key_file: b\n"
        ))
        .unwrap();
        assert!(ok.cluster.tls_files().unwrap().insecure_skip_verify);
        assert_eq!(ok.tls.files().unwrap().cert_file, "a");
    }

    #[test]
    fn defaults_with_seeds_are_valid() {
        let c = check("cluster:\n  seeds: [127.0.0.1:7000]\n").unwrap();
        assert_eq!(c.listen, "127.0.0.1:6380");
        assert_eq!(c.cluster.max_redirects, 5);
        assert_eq!(c.cluster.refresh_interval_ms, 1000);
        assert_eq!(c.limits.max_bulk_len, 512 * 1024 * 1024);
    }

    #[test]
    fn mirror_on_full_reads_drop_or_block() {
        let seeds = "cluster:\n  seeds: [127.0.0.1:7000]\n";
        let c = check(&format!("{seeds}mirror:\n  on_full: block\n")).unwrap();
        assert_eq!(c.mirror.on_full, OnFull::Block);
        assert_eq!(check(seeds).unwrap().mirror.on_full, OnFull::Drop);
        assert!(Config::from_yaml(&format!("{seeds}mirror:\n  on_full: wait\n")).is_err());
    }

    #[test]
    fn the_shipped_config_file_is_valid() {
        let c = Config::from_file(concat!(env!("CARGO_MANIFEST_DIR"), "/config/slotgate.yaml"))
            .unwrap()
            .validate()
            .unwrap();
        assert!(!c.cluster.seeds.is_empty());
    }

    #[test]
    fn each_rule_names_its_field() {
        let seeds = "cluster:\n  seeds: [127.0.0.1:7000]\n";
        assert_eq!(invalid_field(""), "cluster.seeds");
        assert_eq!(
            invalid_field("cluster:\n  seeds: [nope]\n"),
            "cluster.seeds"
        );
        assert_eq!(invalid_field(&format!("listen: foo\n{seeds}")), "listen");
        assert_eq!(invalid_field(&format!("listen: 'h:0'\n{seeds}")), "listen");
        assert_eq!(invalid_field(&format!("password: ''\n{seeds}")), "password");
        assert_eq!(
            invalid_field(&format!("log_level: 'a=b=c'\n{seeds}")),
            "log_level"
        );
        // Found by the config fuzz target: a non-ASCII filter made tracing-subscriber panic.
        assert_eq!(
            invalid_field(&format!("log_level: '-a€=info'\n{seeds}")),
            "log_level"
        );
        // Also found by it: field filters compile into regular expressions that can take
        // gigabytes. Only levels and targets are accepted.
        assert_eq!(
            invalid_field(&format!("log_level: 'a[{{b=c}}]'\n{seeds}")),
            "log_level"
        );
        for good in [
            "info",
            "slotgate=debug,warn",
            "slotgate::client=TRACE, info",
            "off",
        ] {
            assert!(is_log_filter(good), "{good}");
        }
        for (field, yaml) in [
            ("cluster.refresh_interval_ms", "  refresh_interval_ms: 0\n"),
            (
                "cluster.connections_per_node",
                "  connections_per_node: 0\n",
            ),
            ("cluster.connect_timeout_ms", "  connect_timeout_ms: 0\n"),
            ("cluster.command_timeout_ms", "  command_timeout_ms: 0\n"),
            ("cluster.max_redirects", "  max_redirects: 0\n"),
            ("cluster.max_retries", "  max_retries: 1000\n"),
            ("cluster.username", "  username: u\n"),
            (
                "cluster.route_from_server",
                "  route_from_server: [NOSUCHCOMMAND]\n",
            ),
            (
                "cluster.route_from_server",
                "  route_from_server: ['CONFIG|GET']\n",
            ),
            (
                "cluster.max_blocking_per_node",
                "  max_blocking_per_node: 0\n",
            ),
        ] {
            assert_eq!(invalid_field(&format!("{seeds}{yaml}")), field);
        }
        for (field, yaml) in [
            ("limits.max_clients", "max_clients: 0"),
            ("limits.max_bulk_len", "max_bulk_len: 0"),
            ("limits.max_array_len", "max_array_len: 0"),
            ("limits.max_inline_len", "max_inline_len: 3"),
            ("limits.pipeline_window", "pipeline_window: 0"),
            ("limits.pubsub_output_buffer", "pubsub_output_buffer: 10"),
        ] {
            assert_eq!(invalid_field(&format!("{seeds}limits:\n  {yaml}\n")), field);
        }
    }

    #[test]
    fn mirror_rules() {
        let seeds = "cluster:\n  seeds: [127.0.0.1:7000]\n";
        let ok = check(&format!(
            "{seeds}mirror:\n  mode: all_resources_check_error\n  resources:\n    - name: b\n      cluster: [127.0.0.1:7100]\n      keys: ['user:*']\n    - name: c\n      standalone: 127.0.0.1:6390\n"
        ))
        .unwrap();
        assert_eq!(ok.mirror.mode, MultiWriteMode::AllResourcesCheckError);
        assert_eq!(ok.mirror.resources.len(), 2);
        for (field, yaml) in [
            (
                "mirror.resources.name",
                "  resources:\n    - cluster: [127.0.0.1:7100]\n",
            ),
            (
                "mirror.resources.name",
                "  resources:\n    - {name: a, cluster: [127.0.0.1:1]}\n    - {name: a, cluster: [127.0.0.1:2]}\n",
            ),
            ("mirror.resources.cluster", "  resources:\n    - name: a\n"),
            (
                "mirror.resources.cluster",
                "  resources:\n    - {name: a, cluster: [nope]}\n",
            ),
            ("mirror.queue", "  mode: async\n"),
            (
                "mirror.queue.redis",
                "  mode: async\n  queue: {redis: nope}\n",
            ),
            ("mirror.backlog", "  backlog: 0\n"),
        ] {
            assert_eq!(
                invalid_field(&format!("{seeds}mirror:\n{yaml}")),
                field,
                "{yaml}"
            );
        }
        assert!(matches!(
            Config::from_yaml("mirror:\n  mode: sometimes\n"),
            Err(ConfigError::Parse { .. })
        ));
        assert_eq!("async".parse::<MultiWriteMode>(), Ok(MultiWriteMode::Async));
        assert!("x".parse::<MultiWriteMode>().is_err());
    }

    #[test]
    fn unknown_fields_and_bad_types_are_parse_errors() {
        assert!(matches!(
            Config::from_yaml("lisen: x\n"),
            Err(ConfigError::Parse { .. })
        ));
        assert!(matches!(
            Config::from_yaml("cluster:\n  max_redirects: many\n"),
            Err(ConfigError::Parse { .. })
        ));
    }
}
