//! Test support: a real local Redis Cluster started by `integration/cluster.sh`, slotgate
//! running in-process in front of it, and small client helpers.
//!
//! Every cluster is stopped when its guard drops, which also happens when a test panics.
#![allow(dead_code)]

pub mod tls;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use slotgate::config::Config;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

/// The repository root, where `integration/` lives.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A running local cluster; stopped on drop.
pub struct Cluster {
    /// Where the nodes keep their files (`DIR/<port>/`).
    pub dir: PathBuf,
    /// Every node's port, masters first.
    pub ports: Vec<u16>,
    /// Comma-separated master addresses.
    pub seeds: String,
    /// Ports of the masters at start.
    pub master_ports: Vec<u16>,
}

impl Cluster {
    /// Starts 3 masters with one replica each on free loopback ports.
    pub fn start() -> Cluster {
        Cluster::start_with(3, 1)
    }

    pub fn start_with(masters: usize, replicas: usize) -> Cluster {
        Cluster::start_opts(masters, replicas, None)
    }

    /// As `start_with`, the nodes also serving TLS (at port + `tls::TLS_OFFSET`) with the
    /// certificates in `certs` (`ca.crt`, `node.crt`, `node.key`), their cluster bus and
    /// replication over TLS.
    pub fn start_tls(masters: usize, replicas: usize, certs: &std::path::Path) -> Cluster {
        Cluster::start_opts(masters, replicas, Some(certs))
    }

    fn start_opts(masters: usize, replicas: usize, certs: Option<&std::path::Path>) -> Cluster {
        // A start can lose a race for its ports with another test starting at the same
        // moment; the script stops what it started, so trying again is safe.
        let mut failures = Vec::new();
        for _ in 0..3 {
            match Cluster::try_start(masters, replicas, certs) {
                Ok(cluster) => return cluster,
                Err(log) => failures.push(log),
            }
        }
        panic!(
            "cluster.sh start failed three times:\n{}",
            failures.join("\n---\n")
        );
    }

    fn try_start(
        masters: usize,
        replicas: usize,
        certs: Option<&std::path::Path>,
    ) -> Result<Cluster, String> {
        let dir = std::env::temp_dir().join(format!(
            "slotgate-test-{}-{}",
            std::process::id(),
            rand_suffix()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let mut command = Command::new("bash");
        if let Some(certs) = certs {
            command.env("TLS_CERTS", certs);
        }
        let out = command
            .arg(repo_root().join("integration/cluster.sh"))
            .arg("start")
            .arg(&dir)
            .arg("auto")
            .arg(masters.to_string())
            .arg(replicas.to_string())
            .output()
            .unwrap();
        // Build the guard first so a failed start still stops whatever did start.
        let mut cluster = Cluster {
            dir,
            ports: Vec::new(),
            seeds: String::new(),
            master_ports: Vec::new(),
        };
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        let stdout = String::from_utf8(out.stdout).unwrap();
        cluster.seeds = stdout.lines().last().unwrap().trim().to_string();
        cluster.master_ports = cluster
            .seeds
            .split(',')
            .map(|a| a.rsplit_once(':').unwrap().1.parse().unwrap())
            .collect();
        let base = cluster.master_ports[0];
        cluster.ports = (base..base + (masters * (1 + replicas)) as u16).collect();
        Ok(cluster)
    }

    /// Runs `integration/faults.sh` with `args`; returns its output.
    pub fn fault(&self, args: &[&str]) -> String {
        let out = Command::new("bash")
            .arg(repo_root().join("integration/faults.sh"))
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "faults.sh {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }

    /// The replica whose master listens on `master_port`.
    pub fn replica_of(&self, master_port: u16) -> u16 {
        *self
            .ports
            .iter()
            .find(|p| {
                !self.master_ports.contains(p)
                    && self.fault(&["master-of", &p.to_string()]) == master_port.to_string()
            })
            .unwrap()
    }

    /// A direct connection to the node on `port` (no proxy).
    pub async fn node(&self, port: u16) -> MultiplexedConnection {
        connect(port, 2).await
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(repo_root().join("integration/cluster.sh"))
            .arg("stop")
            .arg(&self.dir)
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as u64;
    nanos * 1000 + N.fetch_add(1, Ordering::Relaxed)
}

/// A child process (the slotgate binary, a script) killed when dropped, even if the test
/// fails.
pub struct Running(pub std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A loopback port free now, for a process that binds it itself.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Worker threads of the slotgate the tests start: `SLOTGATE_TEST_THREADS` (README's test
/// command runs the suite with 1 and with 2), else one per core.
pub fn test_threads() -> usize {
    std::env::var("SLOTGATE_TEST_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// slotgate serving in this process on a free port; stops when dropped.
pub struct Proxy {
    pub port: u16,
    /// The TLS listener's port, when one is configured.
    pub tls_port: Option<u16>,
    /// The admin listener's port, when a test configures one.
    pub admin_port: Option<u16>,
    /// The client password, when one is configured.
    password: Option<String>,
    stop: Option<oneshot::Sender<()>>,
}

impl Proxy {
    /// Starts slotgate in front of `cluster` with default settings.
    pub async fn start(cluster: &Cluster) -> Proxy {
        Proxy::start_with(cluster, |_| {}).await
    }

    /// Starts slotgate with the config adjusted by `tweak`.
    pub async fn start_with(cluster: &Cluster, tweak: impl FnOnce(&mut Config)) -> Proxy {
        let proxy = Proxy::start_unready(cluster, tweak).await;
        proxy.wait_ready().await;
        proxy
    }

    /// As `start_with`, without waiting for slotgate to see the cluster. A TLS listener
    /// (when `tweak` sets `tls.listen`) is bound on a free port: `tls_port`.
    pub async fn start_unready(cluster: &Cluster, tweak: impl FnOnce(&mut Config)) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let mut config = Config {
            listen: format!("127.0.0.1:{port}"),
            ..Config::default()
        };
        config.cluster.seeds = cluster.seeds.split(',').map(String::from).collect();
        config.threads = test_threads();
        // Many proxies run at once: the admin listener only where a test asks for it, on a
        // free port (`admin_port`).
        config.admin.listen = String::new();
        tweak(&mut config);
        let admin = if config.admin.listen.is_empty() {
            None
        } else {
            Some(TcpListener::bind("127.0.0.1:0").await.unwrap())
        };
        let admin_port = admin.as_ref().map(|l| l.local_addr().unwrap().port());
        if let Some(p) = admin_port {
            config.admin.listen = format!("127.0.0.1:{p}");
        }
        let tls = if config.tls.listen.is_empty() {
            None
        } else {
            Some(TcpListener::bind("127.0.0.1:0").await.unwrap())
        };
        let tls_port = tls.as_ref().map(|l| l.local_addr().unwrap().port());
        if let Some(p) = tls_port {
            config.tls.listen = format!("127.0.0.1:{p}");
        }
        let config = config.validate().unwrap();
        let (stop, stopped) = oneshot::channel();
        let password = config.password.clone();
        let listeners = slotgate::server::Listeners {
            plain: listener,
            tls,
            admin,
        };
        tokio::spawn(async move {
            let run = slotgate::server::run_on(listeners, config, async {
                let _ = stopped.await;
                Duration::ZERO
            });
            if let Err(e) = run.await {
                panic!("slotgate did not start: {e}");
            }
        });
        Proxy {
            port,
            tls_port,
            admin_port,
            password,
            stop: Some(stop),
        }
    }

    /// Waits until slotgate knows the owner of every slot, so tests start from a steady state.
    pub async fn wait_ready(&self) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        let mut con = self.client(2).await;
        if let Some(p) = &self.password {
            let _: () = redis::cmd("AUTH")
                .arg(p)
                .query_async(&mut con)
                .await
                .unwrap();
        }
        loop {
            let info: String = redis::cmd("INFO")
                .arg("slotgate")
                .query_async(&mut con)
                .await
                .unwrap();
            if info.contains("cluster_slots_assigned:16384") {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "slotgate never saw the whole cluster: {info}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// A `redis` crate connection through the proxy, RESP2 or RESP3.
    pub async fn client(&self, resp: u8) -> MultiplexedConnection {
        connect(self.port, resp).await
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

/// Connects the `redis` crate to a loopback port in RESP2 or RESP3.
pub async fn connect(port: u16, resp: u8) -> MultiplexedConnection {
    let url = if resp == 3 {
        format!("redis://127.0.0.1:{port}/?protocol=resp3")
    } else {
        format!("redis://127.0.0.1:{port}/")
    };
    let client = redis::Client::open(url).unwrap();
    tokio::time::timeout(
        Duration::from_secs(10),
        client.get_multiplexed_async_connection(),
    )
    .await
    .unwrap()
    .unwrap()
}

/// Runs `redis-cli` with `args` against `port` and returns its trimmed output.
pub fn redis_cli(port: u16, args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .arg("-p")
        .arg(port.to_string())
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "redis-cli failed: {out:?}");
    String::from_utf8(out.stdout)
        .unwrap()
        .trim_end()
        .to_string()
}

/// Sends raw bytes on a new connection and returns everything read until the proxy closes
/// it (or `wait` passes).
pub async fn raw_exchange(port: u16, input: &[u8], wait: Duration) -> (Vec<u8>, bool) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    s.write_all(input).await.unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let closed = loop {
        match tokio::time::timeout(wait, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break true,
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            Err(_) => break false,
        }
    };
    (out, closed)
}

/// A key whose slot is served by the master on `port`, according to that node.
pub async fn key_on(cluster: &Cluster, port: u16, prefix: &str) -> String {
    let mut node = cluster.node(port).await;
    let slots: Vec<Vec<redis::Value>> = redis::cmd("CLUSTER")
        .arg("SLOTS")
        .query_async(&mut node)
        .await
        .unwrap();
    let owned: Vec<(u16, u16)> = slots
        .iter()
        .filter(|r| {
            matches!(&r[2], redis::Value::Array(a) if matches!(&a[1], redis::Value::Int(p) if *p as u16 == port))
        })
        .map(|r| match (&r[0], &r[1]) {
            (redis::Value::Int(a), redis::Value::Int(b)) => (*a as u16, *b as u16),
            _ => panic!("bad CLUSTER SLOTS row"),
        })
        .collect();
    (0..)
        .map(|i| format!("{prefix}{i}"))
        .find(|k| {
            let s = slotgate::slot::slot_of(k.as_bytes());
            owned.iter().any(|&(a, b)| a <= s && s <= b)
        })
        .unwrap()
}

/// A raw RESP connection for checking exact bytes, including pushed frames.
pub struct RawClient {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl RawClient {
    pub async fn connect(port: u16) -> RawClient {
        RawClient {
            stream: TcpStream::connect(("127.0.0.1", port)).await.unwrap(),
            buf: Vec::new(),
        }
    }

    /// Connects from the loopback address `from` (127.0.0.2, ...): another client address.
    pub async fn connect_from(from: std::net::Ipv4Addr, port: u16) -> RawClient {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind((from, 0).into()).unwrap();
        RawClient {
            stream: socket
                .connect((std::net::Ipv4Addr::LOCALHOST, port).into())
                .await
                .unwrap(),
            buf: Vec::new(),
        }
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.unwrap();
    }

    /// Reads until exactly `expected` has arrived (or fails after 5 s with what came).
    pub async fn expect(&mut self, expected: &[u8]) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while self.buf.len() < expected.len() && self.read_more(deadline).await {}
        let got: Vec<u8> = self
            .buf
            .drain(..expected.len().min(self.buf.len()))
            .collect();
        assert_eq!(
            String::from_utf8_lossy(&got),
            String::from_utf8_lossy(expected),
            "unexpected bytes from slotgate"
        );
    }

    /// Reads until `expected` arrives (within 5 s), dropping it and everything before it.
    pub async fn expect_until(&mut self, expected: &[u8]) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        if !self.seen_until(expected, deadline).await {
            panic!(
                "never got {:?}; got {:?}",
                String::from_utf8_lossy(expected),
                String::from_utf8_lossy(&self.buf)
            );
        }
    }

    /// Reads one more chunk into the buffer; false at the deadline, end of stream or an error.
    async fn read_more(&mut self, deadline: tokio::time::Instant) -> bool {
        let mut chunk = [0u8; 4096];
        match tokio::time::timeout_at(deadline, self.stream.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => {
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
            _ => false,
        }
    }

    /// Whether `expected` arrives before `deadline` (dropping it and everything before it).
    async fn seen_until(&mut self, expected: &[u8], deadline: tokio::time::Instant) -> bool {
        loop {
            if let Some(at) = self.buf.windows(expected.len()).position(|w| w == expected) {
                self.buf.drain(..at + expected.len());
                return true;
            }
            if !self.read_more(deadline).await {
                return false;
            }
        }
    }

    /// The next line (without its CRLF), within 5 s.
    pub async fn line(&mut self) -> String {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            if let Some(at) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line: Vec<u8> = self.buf.drain(..at + 2).collect();
                return String::from_utf8_lossy(&line[..at]).into_owned();
            }
            if !self.read_more(deadline).await {
                panic!("no line; got {:?}", String::from_utf8_lossy(&self.buf));
            }
        }
    }

    /// Whether `expected` arrives within `wait` (dropping it and everything before it).
    pub async fn seen_within(&mut self, expected: &[u8], wait: Duration) -> bool {
        self.seen_until(expected, tokio::time::Instant::now() + wait)
            .await
    }

    /// Everything that arrives within `wait` (with what was already buffered).
    pub async fn collect(&mut self, wait: Duration) -> Vec<u8> {
        let deadline = tokio::time::Instant::now() + wait;
        while self.read_more(deadline).await {}
        std::mem::take(&mut self.buf)
    }

    /// The underlying stream, for reads of unknown length.
    pub fn stream_mut(&mut self) -> &mut TcpStream {
        &mut self.stream
    }

    /// Asserts nothing more arrives within `wait`.
    pub async fn expect_silence(&mut self, wait: Duration) {
        let mut chunk = [0u8; 4096];
        if let Ok(Ok(n)) = tokio::time::timeout(wait, self.stream.read(&mut chunk)).await {
            assert_eq!(
                n,
                0,
                "unexpected: {:?}",
                String::from_utf8_lossy(&chunk[..n])
            );
        }
        assert!(
            self.buf.is_empty(),
            "unexpected: {:?}",
            String::from_utf8_lossy(&self.buf)
        );
    }
}

/// A standalone `redis-server` on a free port (a standalone mirror, the async queue);
/// stopped on drop.
pub struct Standalone {
    pub port: u16,
    child: std::process::Child,
    dir: PathBuf,
}

impl Standalone {
    pub async fn start() -> Standalone {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = std::env::temp_dir().join(format!(
            "slotgate-standalone-{}-{}",
            std::process::id(),
            rand_suffix()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .arg("--dir")
            .arg(&dir)
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let s = Standalone { port, child, dir };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).await.is_err() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "redis-server did not start"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        s
    }

    pub async fn con(&self) -> MultiplexedConnection {
        connect(self.port, 2).await
    }

    /// Stops the server with SIGSTOP until the returned guard is dropped (SIGCONT), even when
    /// the test fails.
    pub fn pause(&self) -> StandalonePause {
        let pid = self.child.id().to_string();
        let status = Command::new("kill").args(["-STOP", &pid]).status().unwrap();
        assert!(status.success(), "kill -STOP {pid}");
        StandalonePause { pid }
    }
}

/// A standalone server stopped by `Standalone::pause`.
pub struct StandalonePause {
    pid: String,
}

impl Drop for StandalonePause {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-CONT", &self.pid]).status();
    }
}

impl Drop for Standalone {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Every key of a cluster with a printable form of its value (and whether it has a TTL),
/// read from each master directly.
pub async fn dump(cluster: &Cluster) -> std::collections::BTreeMap<String, String> {
    // A node stopped earlier by the test may leave the cluster marked down for a moment
    // (TYPE then answers CLUSTERDOWN): wait until every master says the cluster is ok.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    for port in &cluster.master_ports {
        let mut node = cluster.node(*port).await;
        loop {
            let info: String = redis::cmd("CLUSTER")
                .arg("INFO")
                .query_async(&mut node)
                .await
                .unwrap();
            if info.contains("cluster_state:ok") {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "cluster still down on {port}: {info}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let mut out = std::collections::BTreeMap::new();
    for port in &cluster.master_ports {
        let mut node = cluster.node(*port).await;
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg("*")
            .query_async(&mut node)
            .await
            .unwrap();
        for k in keys {
            if k.starts_with("slotgate:probe") {
                continue;
            }
            let t: String = redis::cmd("TYPE")
                .arg(&k)
                .query_async(&mut node)
                .await
                .unwrap();
            let v: redis::Value = match t.as_str() {
                "string" => redis::cmd("GET")
                    .arg(&k)
                    .query_async(&mut node)
                    .await
                    .unwrap(),
                "hash" => redis::cmd("HGETALL")
                    .arg(&k)
                    .query_async(&mut node)
                    .await
                    .unwrap(),
                "list" => redis::cmd("LRANGE")
                    .arg(&k)
                    .arg(0)
                    .arg(-1)
                    .query_async(&mut node)
                    .await
                    .unwrap(),
                "set" => redis::cmd("SORT")
                    .arg(&k)
                    .arg("ALPHA")
                    .query_async(&mut node)
                    .await
                    .unwrap(),
                "zset" => redis::cmd("ZRANGE")
                    .arg(&k)
                    .arg(0)
                    .arg(-1)
                    .arg("WITHSCORES")
                    .query_async(&mut node)
                    .await
                    .unwrap(),
                other => redis::Value::SimpleString(other.to_string()),
            };
            let ttl: i64 = redis::cmd("PTTL")
                .arg(&k)
                .query_async(&mut node)
                .await
                .unwrap();
            out.insert(k, format!("{t} {v:?} ttl={}", ttl > 0));
        }
    }
    out
}

/// A numeric field of slotgate's own INFO sections.
pub async fn slotgate_counter(con: &mut MultiplexedConnection, name: &str) -> u64 {
    info_counter(con, "slotgate", name).await
}

/// The number `name` of `INFO section` on `con` (slotgate or a node).
pub async fn info_counter(con: &mut MultiplexedConnection, section: &str, name: &str) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg(section)
        .query_async(con)
        .await
        .unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}:")))
        .unwrap_or_else(|| panic!("no {name} in INFO {section}: {info}"))
        .trim()
        .parse()
        .unwrap()
}

/// How many times the node on `port` ran `command` (lower case), from INFO commandstats.
pub async fn command_calls(port: u16, command: &str) -> u64 {
    let mut node = connect(port, 2).await;
    let stats: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut node)
        .await
        .unwrap();
    stats
        .lines()
        .find(|l| l.starts_with(&format!("cmdstat_{command}:")))
        .and_then(|l| l.split(&[':', '=', ','][..]).nth(2))
        .map_or(0, |c| c.parse().unwrap())
}

impl Cluster {
    /// The cluster node id of the node on `port`.
    pub async fn node_id(&self, port: u16) -> String {
        let mut n = self.node(port).await;
        redis::cmd("CLUSTER")
            .arg("MYID")
            .query_async(&mut n)
            .await
            .unwrap()
    }

    /// Moves an empty `slot` to the master on `port` at once (no migration): the new owner
    /// claims it with a fresh config epoch, then every master is told.
    pub async fn move_empty_slot(&self, slot: u16, port: u16) {
        let id = self.node_id(port).await;
        let mut n = self.node(port).await;
        let _: () = redis::cmd("CLUSTER")
            .arg(&["SETSLOT", &slot.to_string(), "NODE", &id])
            .query_async(&mut n)
            .await
            .unwrap();
        let _: String = redis::cmd("CLUSTER")
            .arg("BUMPEPOCH")
            .query_async(&mut n)
            .await
            .unwrap();
        self.assign_slot(slot, &id).await;
    }

    /// Makes the replica on `replica` take over from its master (CLUSTER FAILOVER, asked
    /// again when an election did not complete) and waits until it is master.
    pub async fn fail_over_to(&self, replica: u16) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(40);
        loop {
            self.fault(&["failover", &replica.to_string()]);
            let asked = tokio::time::Instant::now();
            while asked.elapsed() < Duration::from_secs(8) {
                if self.fault(&["role", &replica.to_string()]) == "master" {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{replica} never took over"
            );
        }
    }

    /// Hands `slot` to the node `node_id` on every master (CLUSTER SETSLOT ... NODE); a
    /// first master that became a replica in a failover is skipped.
    pub async fn assign_slot(&self, slot: u16, node_id: &str) {
        for port in &self.master_ports {
            let mut n = self.node(*port).await;
            let set: redis::RedisResult<()> = redis::cmd("CLUSTER")
                .arg(&["SETSLOT", &slot.to_string(), "NODE", node_id])
                .query_async(&mut n)
                .await;
            if let Err(e) = set
                && !e.to_string().contains("only with masters")
            {
                panic!("CLUSTER SETSLOT on {port}: {e}");
            }
        }
    }
}

/// A node stopped with SIGSTOP (`stop`): sent SIGCONT when dropped, even when the test
/// fails.
pub struct Resume<'a> {
    cluster: &'a Cluster,
    port: u16,
}

impl Drop for Resume<'_> {
    fn drop(&mut self) {
        let _ = std::process::Command::new("bash")
            .arg(repo_root().join("integration/faults.sh"))
            .arg("resume")
            .arg(&self.cluster.dir)
            .arg(self.port.to_string())
            .output();
    }
}

/// Stops the node on `port` with SIGSTOP until the returned guard is dropped.
pub fn stop(cluster: &Cluster, port: u16) -> Resume<'_> {
    cluster.fault(&["stop", cluster.dir.to_str().unwrap(), &port.to_string()]);
    Resume { cluster, port }
}

/// Waits (up to 20 s) until slotgate's `INFO slotgate` contains `needle`, such as
/// `addr=127.0.0.1:PORT,` once it routes to a promoted replica.
pub async fn wait_for_slotgate_info(con: &mut MultiplexedConnection, needle: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let info: String = redis::cmd("INFO")
            .arg("slotgate")
            .query_async(con)
            .await
            .unwrap();
        if info.contains(needle) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "INFO slotgate never showed {needle:?}: {info}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

impl Cluster {
    /// The port of the master serving `slot`, as the first master sees it.
    pub async fn owner_of(&self, slot: u16) -> u16 {
        self.owner_seen_by(self.master_ports[0], slot)
            .await
            .expect("the first master knows no owner")
    }

    /// The port of the master serving `slot`, as the node on `port` sees it.
    pub async fn owner_seen_by(&self, port: u16, slot: u16) -> Option<u16> {
        let mut node = self.node(port).await;
        let nodes: String = redis::cmd("CLUSTER")
            .arg("NODES")
            .query_async(&mut node)
            .await
            .unwrap();
        let (view, _) = slotgate::topology::nodes::parse_nodes(&nodes, "127.0.0.1");
        let owner = view
            .iter()
            .find(|n| n.flags.master && n.slots.iter().any(|&(a, b)| a <= slot && slot <= b))
            .and_then(|n| n.addr.clone())?;
        owner.rsplit_once(':')?.1.parse().ok()
    }

    /// Waits until every node sees `owner` serving `slot` (gossip reached them all).
    pub async fn wait_until_all_see(&self, slot: u16, owner: u16) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        for &port in &self.ports {
            while self.owner_seen_by(port, slot).await != Some(owner) {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "node {port} never saw slot {slot} on {owner}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

impl Cluster {
    /// Starts one more node (a free port of its own, its directory under the cluster's, so
    /// it is stopped with the cluster), adds it with `redis-cli --cluster add-node` and waits
    /// until it has joined; it serves no slot yet. Returns its port.
    pub async fn add_empty_master(&self) -> u16 {
        // A free port (and bus port) of its own: the one after this cluster's last node may
        // belong to another test's cluster. Another test may take the port between the check
        // and the bind: then try another.
        let mut port = 0;
        for _ in 0..5 {
            let candidate: u16 = {
                let out = std::process::Command::new("bash")
                    .arg(repo_root().join("integration/cluster.sh"))
                    .args(["free-base", "1"])
                    .output()
                    .unwrap();
                String::from_utf8(out.stdout)
                    .unwrap()
                    .trim()
                    .parse()
                    .unwrap()
            };
            let dir = self.dir.join(candidate.to_string());
            std::fs::create_dir_all(&dir).unwrap();
            let status = std::process::Command::new("redis-server")
                .args([
                    "--port",
                    &candidate.to_string(),
                    "--bind",
                    "127.0.0.1",
                    "--cluster-enabled",
                    "yes",
                ])
                .args([
                    "--cluster-node-timeout",
                    "2000",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--daemonize",
                    "yes",
                ])
                .arg("--dir")
                .arg(&dir)
                .arg("--pidfile")
                .arg(dir.join("redis.pid"))
                .arg("--logfile")
                .arg(dir.join("redis.log"))
                .status()
                .unwrap();
            assert!(status.success());
            // Up when the node on that port is this one (its directory is ours), not another
            // test's that took the port first.
            let up = std::time::Instant::now() + Duration::from_secs(3);
            let ours = dir.canonicalize().unwrap();
            while std::time::Instant::now() < up {
                let answer = std::process::Command::new("redis-cli")
                    .args(["-p", &candidate.to_string(), "CONFIG", "GET", "dir"])
                    .output()
                    .unwrap();
                let text = String::from_utf8_lossy(&answer.stdout).to_string();
                if text.lines().nth(1).map(std::path::PathBuf::from) == Some(ours.clone()) {
                    port = candidate;
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            if port != 0 {
                break;
            }
        }
        assert_ne!(port, 0, "no free port for the added node");
        let seed = format!("127.0.0.1:{}", self.master_ports[0]);
        // redis-cli refuses while the nodes do not agree on the configuration yet (right after
        // the failover above): try again for a while.
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let out = std::process::Command::new("redis-cli")
                .args(["--cluster", "add-node", &format!("127.0.0.1:{port}"), &seed])
                .output()
                .unwrap();
            if out.status.success() {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{}",
                String::from_utf8_lossy(&out.stdout)
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let mut node = self.node(port).await;
            let info: String = redis::cmd("CLUSTER")
                .arg("INFO")
                .query_async(&mut node)
                .await
                .unwrap();
            if info.contains("cluster_state:ok")
                && info.contains(&format!("cluster_known_nodes:{}", self.ports.len() + 1))
            {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "new node did not join: {info}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        port
    }
}

/// The node's clients as `CLIENT LIST` describes them: one map of fields per client.
pub async fn client_list(
    node: &mut MultiplexedConnection,
) -> Vec<std::collections::HashMap<String, String>> {
    let list: String = redis::cmd("CLIENT")
        .arg("LIST")
        .query_async(node)
        .await
        .unwrap();
    list.lines()
        .map(|l| {
            l.split(' ')
                .filter_map(|f| f.split_once('='))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        })
        .collect()
}
