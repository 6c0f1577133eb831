//! The `slotgate` binary: flag and config errors exit non-zero with a message naming the
//! field; a good command line serves redis-cli and redis-benchmark in front of a cluster.

mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::{Cluster, Running, free_port, redis_cli};

fn slotgate() -> Command {
    Command::new(env!("CARGO_BIN_EXE_slotgate"))
}

/// Runs the binary expecting it to refuse to start; returns its stderr.
fn refused(args: &[&str]) -> String {
    let out = slotgate().args(args).output().unwrap();
    assert!(!out.status.success(), "{args:?} started");
    String::from_utf8(out.stderr).unwrap()
}

#[test]
fn bad_flags_and_config_are_reported() {
    let err = refused(&["--listen", "127.0.0.1:6399"]);
    assert!(err.contains("cluster.seeds"), "{err}");
    let err = refused(&["--cluster", "127.0.0.1:7000", "--listen", "nonsense"]);
    assert!(err.contains("`listen`"), "{err}");
    let err = refused(&["--cluster", "not-an-address"]);
    assert!(err.contains("cluster.seeds"), "{err}");
    let err = refused(&["--no-such-flag"]);
    assert!(err.contains("--no-such-flag"), "{err}");
    let err = refused(&["--config", "/nonexistent/slotgate.yaml"]);
    assert!(err.contains("/nonexistent/slotgate.yaml"), "{err}");

    let dir = std::env::temp_dir().join(format!("slotgate-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("bad.yaml");
    std::fs::write(
        &bad,
        "cluster:\n  seeds: [127.0.0.1:7000]\n  max_redirects: 0\n",
    )
    .unwrap();
    let err = refused(&["--config", bad.to_str().unwrap()]);
    assert!(err.contains("cluster.max_redirects"), "{err}");
    std::fs::write(&bad, "cluster:\n  seds: []\n").unwrap();
    let err = refused(&["--config", bad.to_str().unwrap()]);
    assert!(err.contains("seds"), "{err}");
    // TLS: a listener without its certificate, and certificate files that cannot be read.
    let err = refused(&[
        "--cluster",
        "127.0.0.1:7000",
        "--tls-listen",
        "127.0.0.1:16390",
    ]);
    assert!(
        err.contains("tls.listen") && err.contains("cert_file"),
        "{err}"
    );
    std::fs::write(
        &bad,
        "cluster:\n  seeds: [127.0.0.1:7000]\ntls:\n  cert_file: /nonexistent/cert.pem\n  key_file: /nonexistent/key.pem\n",
    )
    .unwrap();
    let err = refused(&[
        "--config",
        bad.to_str().unwrap(),
        "--tls-listen",
        "127.0.0.1:16390",
    ]);
    assert!(err.contains("/nonexistent/cert.pem"), "{err}");
    std::fs::write(
        &bad,
        "cluster:\n  seeds: [127.0.0.1:7000]\n  tls: true\n  tls_ca_file: /nonexistent/ca.pem\n",
    )
    .unwrap();
    let err = refused(&["--config", bad.to_str().unwrap()]);
    assert!(err.contains("/nonexistent/ca.pem"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn binary_serves_redis_cli_and_redis_benchmark() {
    let cluster = Cluster::start();
    let port = free_port();
    let admin = free_port();
    let mut proxy = Running(
        slotgate()
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--admin-listen", &format!("127.0.0.1:{admin}")])
            .args(["--cluster", &cluster.seeds])
            .args(["--log-level", "warn"])
            .args(["--threads", "3"])
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "slotgate did not start listening"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(redis_cli(port, &["set", "a", "1"]), "OK");
    assert_eq!(redis_cli(port, &["get", "a"]), "1");
    // `--threads 3`: three worker threads serve the clients.
    let workers = std::fs::read_dir(format!("/proc/{}/task", proxy.0.id()))
        .unwrap()
        .filter(|t| {
            let comm = t.as_ref().unwrap().path().join("comm");
            std::fs::read_to_string(comm).is_ok_and(|c| c.starts_with("slotgate-worker"))
        })
        .count();
    assert_eq!(workers, 3, "worker threads for --threads 3");
    let info = redis_cli(port, &["info", "slotgate"]);
    assert!(info.contains("worker_threads:3"), "{info}");
    // `--admin-listen`: the admin listener answers its probes.
    {
        use std::io::{Read, Write};
        let mut http = std::net::TcpStream::connect(("127.0.0.1", admin)).unwrap();
        http.write_all(b"GET /ready HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut answer = String::new();
        http.read_to_string(&mut answer).unwrap();
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    }

    let out = Command::new("redis-benchmark")
        .args([
            "-p",
            &port.to_string(),
            "-t",
            "set,get",
            "-r",
            "100000",
            "-n",
            "5000",
        ])
        .args(["-c", "20", "--csv"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let csv = String::from_utf8(out.stdout).unwrap();
    for test in ["\"SET\"", "\"GET\""] {
        let line = csv
            .lines()
            .find(|l| l.starts_with(test))
            .unwrap_or_else(|| panic!("{csv}"));
        let rps: f64 = line
            .split(',')
            .nth(1)
            .unwrap()
            .trim_matches('"')
            .parse()
            .unwrap();
        assert!(rps > 0.0, "{line}");
    }
    // Every benchmark request reached the cluster without an error.
    let info = redis_cli(port, &["info", "slotgate"]);
    let commands: u64 = info
        .lines()
        .find_map(|l| l.strip_prefix("total_commands_processed:"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(commands >= 10_000, "{info}");

    // SIGTERM: connected clients are closed once answered, and the process exits cleanly.
    let mut idle = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    let pid = proxy.0.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    // Generous: on a loaded machine the workers may wait a while for a core.
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = proxy.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "slotgate did not exit on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status:?}");
    idle.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut buf = [0u8; 16];
    assert_eq!(std::io::Read::read(&mut idle, &mut buf).unwrap_or(0), 0);
}

#[test]
fn passwords_never_reach_the_log() {
    let cluster = Cluster::start_with(1, 0);
    for port in &cluster.ports {
        redis_cli(
            *port,
            &[
                "acl",
                "setuser",
                "appuser",
                "on",
                ">user-secret-77",
                "~*",
                "+@all",
            ],
        );
    }
    let port = free_port();
    let log_path = std::env::temp_dir().join(format!("slotgate-log-{port}.txt"));
    let log = std::fs::File::create(&log_path).unwrap();
    let mut proxy = Running(
        slotgate()
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--admin-listen", ""])
            .args(["--cluster", &cluster.seeds])
            .args(["--password", "client-secret-42"])
            .args(["--log-level", "debug"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut stream = loop {
        if let Ok(s) = std::net::TcpStream::connect(("127.0.0.1", port)) {
            break s;
        }
        assert!(Instant::now() < deadline, "slotgate did not start");
        std::thread::sleep(Duration::from_millis(50));
    };
    // Wrong and right passwords, for the client password and an ACL user, in both
    // protocols, and a command that fails with NOAUTH first.
    {
        use std::io::{Read, Write};
        stream
            .write_all(
                b"GET k\r\nAUTH wrong-secret-13\r\nAUTH client-secret-42\r\n\
                  AUTH appuser wrong-user-secret-99\r\nAUTH appuser user-secret-77\r\n\
                  HELLO 3 AUTH appuser user-secret-77\r\nSET k v\r\nQUIT\r\n",
            )
            .unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut out = Vec::new();
        let _ = stream.read_to_end(&mut out);
        let out = String::from_utf8_lossy(&out);
        assert!(out.starts_with("-NOAUTH"), "{out}");
        assert!(out.contains("WRONGPASS"), "{out}");
    }
    drop(stream);
    let _ = Command::new("kill")
        .args(["-TERM", &proxy.0.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(20);
    while proxy.0.try_wait().unwrap().is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let text = std::fs::read_to_string(&log_path).unwrap();
    let _ = std::fs::remove_file(&log_path);
    assert!(
        text.contains("DEBUG"),
        "no debug lines were logged:\n{text}"
    );
    assert!(
        text.contains("auth"),
        "the failed logins were not logged:\n{text}"
    );
    for secret in [
        "client-secret-42",
        "wrong-secret-13",
        "wrong-user-secret-99",
        "user-secret-77",
    ] {
        assert!(!text.contains(secret), "{secret} was logged:\n{text}");
    }
}
