//! Restarts clients do not notice: redis-py 8's own clients loop on commands while slotgate
//! is stopped with SIGTERM and a new one takes the same port. RESP3 clients (maintenance
//! notifications on) are told MOVING and reconnect; RESP2 clients are closed at a reply
//! boundary and reconnect; no client sees an error and no acknowledged write is lost.

mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::{Cluster, Running, free_port};

/// Starts slotgate on `port`; `None` if it exited at once (the port still taken).
fn start(seeds: &str, port: u16, log: &std::path::Path) -> Option<Running> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_slotgate"))
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--cluster", seeds])
        .args(["--admin-listen", ""])
        .args(["--log-level", "info"])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if child.try_wait().unwrap().is_some() {
            return None;
        }
        let info = Command::new("redis-cli")
            .args(["-p", &port.to_string(), "info", "slotgate"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        if info.contains("cluster_slots_assigned:16384") {
            return Some(Running(child));
        }
        assert!(Instant::now() < deadline, "slotgate never ready: {info}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn redis_py_clients_do_not_notice_a_restart_on_the_same_port() {
    let python = Command::new("python3")
        .args(["-c", "import redis; print(redis.__version__)"])
        .output()
        .expect("python3 is needed (README, Tests)");
    let version = String::from_utf8_lossy(&python.stdout).trim().to_string();
    assert!(
        python.status.success() && version.starts_with('8'),
        "redis-py 8 is needed: pip install 'redis>=8,<9' (found {version:?}: {})",
        String::from_utf8_lossy(&python.stderr)
    );
    let cluster = Cluster::start();
    let port = free_port();
    let dir = std::env::temp_dir().join(format!("slotgate-restart-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (log_a, log_b) = (dir.join("a.log"), dir.join("b.log"));
    let old = start(&cluster.seeds, port, &log_a).expect("first slotgate");
    let script = support::repo_root().join("tests/python/restart_client.py");
    let (out_file, err_file) = (dir.join("clients.out"), dir.join("clients.err"));
    let mut clients = Running(
        Command::new("python3")
            .arg(&script)
            .arg(port.to_string())
            .arg("8")
            .stdout(std::fs::File::create(&out_file).unwrap())
            .stderr(std::fs::File::create(&err_file).unwrap())
            .spawn()
            .unwrap(),
    );
    std::thread::sleep(Duration::from_secs(2));
    // SIGTERM: the old one stops accepting at once; the new one takes the port.
    let status = Command::new("kill")
        .args(["-TERM", &old.0.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    let new = loop {
        if let Some(r) = start(&cluster.seeds, port, &log_b) {
            break r;
        }
        assert!(Instant::now() < deadline, "the port never came free");
        std::thread::sleep(Duration::from_millis(20));
    };
    let status = clients.0.wait().unwrap();
    let stdout = std::fs::read_to_string(&out_file).unwrap();
    let stderr = std::fs::read_to_string(&err_file).unwrap();
    assert!(status.success(), "{stdout}\n{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{stdout}\n{stderr}");
    for line in lines {
        let field = |name: &str| -> u64 {
            line.split(' ')
                .find_map(|f| f.strip_prefix(&format!("{name}=")))
                .unwrap()
                .parse()
                .unwrap()
        };
        assert_eq!(field("errors"), 0, "{line}");
        assert!(field("ops") > 100, "{line}");
        // Every acknowledged increment is there (a retried one may count twice).
        assert!(field("final") >= field("acked"), "{line}");
    }
    // The old slotgate told the RESP3 clients MOVING before it went.
    let waited = Instant::now();
    let old_log = loop {
        let text = std::fs::read_to_string(&log_a).unwrap();
        if text.contains("shut down") || waited.elapsed() > Duration::from_secs(15) {
            break text;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let moving: u64 = old_log
        .split("moving_sent=")
        .nth(1)
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no shutdown line in the old slotgate's log:\n{old_log}"));
    assert!(moving >= 2, "MOVING sent to {moving} clients:\n{old_log}");
    drop(new);
    drop(old);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Splits `bytes` into whole RESP replies; panics on a partial one at the end.
fn whole_replies(bytes: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        match slotgate::resp::ReplyScanner::new().next(&bytes[at..]) {
            Ok(Some(n)) => {
                out.push(&bytes[at..at + n]);
                at += n;
            }
            other => panic!(
                "a partial or malformed reply before EOF ({other:?}): {:?}",
                String::from_utf8_lossy(&bytes[at..])
            ),
        }
    }
    out
}

#[test]
fn on_sigterm_raw_clients_get_whole_replies_and_resp3_ones_a_moving_push() {
    use std::io::{Read, Write};
    let cluster = Cluster::start_with(3, 0);
    let port = free_port();
    let dir = std::env::temp_dir().join(format!("slotgate-drain-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let proxy = start(&cluster.seeds, port, &dir.join("slotgate.log")).expect("slotgate");

    // A RESP3 client with maintenance notifications on, idle.
    let mut resp3 = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    resp3
        .write_all(
            b"HELLO 3\r\nCLIENT MAINT_NOTIFICATIONS ON moving-endpoint-type none\r\nPING\r\n",
        )
        .unwrap();
    resp3
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut greeting = Vec::new();
    let mut buf = [0u8; 4096];
    while !greeting.ends_with(b"+PONG\r\n") {
        let n = resp3.read(&mut buf).unwrap();
        assert!(n > 0, "closed before the greeting");
        greeting.extend_from_slice(&buf[..n]);
    }
    // A RESP2 client pipelining writes as fast as it can, in another thread, until the
    // connection ends; it keeps every byte it read.
    let writer = std::thread::spawn(move || {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut pipeline = Vec::new();
        for i in 0..10 {
            pipeline.extend_from_slice(format!("SET drain:{i} {i}\r\n").as_bytes());
        }
        let (mut read, mut sent) = (Vec::new(), 0usize);
        let mut buf = [0u8; 65536];
        loop {
            if s.write_all(&pipeline).is_ok() {
                sent += 10;
            }
            match s.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => read.extend_from_slice(&buf[..n]),
            }
        }
        // Drain what is left until EOF.
        while let Ok(n) = s.read(&mut buf) {
            if n == 0 {
                break;
            }
            read.extend_from_slice(&buf[..n]);
        }
        (read, sent)
    });
    std::thread::sleep(Duration::from_millis(500));
    let status = Command::new("kill")
        .args(["-TERM", &proxy.0.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());

    // The RESP3 client is told MOVING (with a null endpoint) before its connection ends.
    let mut after = Vec::new();
    loop {
        match resp3.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => after.extend_from_slice(&buf[..n]),
        }
    }
    let frames = whole_replies(&after);
    assert!(
        frames
            .iter()
            .any(|f| f.starts_with(b">4\r\n$6\r\nMOVING\r\n:") && f.ends_with(b"_\r\n")),
        "no MOVING push: {:?}",
        String::from_utf8_lossy(&after)
    );
    // The RESP2 client got only whole replies, every one OK, then EOF.
    let (read, sent) = writer.join().unwrap();
    let replies = whole_replies(&read);
    assert!(!replies.is_empty() && replies.len() <= sent);
    assert!(replies.iter().all(|r| *r == b"+OK\r\n"), "{replies:?}");
    drop(proxy);
    let _ = std::fs::remove_dir_all(&dir);
}
