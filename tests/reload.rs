//! Live reconfiguration of the slotgate binary: SIGHUP and POST /reload re-read the config
//! file under a running client; what needs a restart is kept and logged; an invalid file is
//! rejected whole and the running configuration stays.

mod support;

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::{Cluster, Running, Standalone, free_port, key_on};

/// One HTTP request on the admin listener: status and body.
fn http(port: u16, method: &str, path: &str) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    (
        head.split(' ').nth(1).unwrap().parse().unwrap(),
        body.to_string(),
    )
}

fn config(seeds: &str, port: u16, admin: u16, extra: &str) -> String {
    let seeds: Vec<String> = seeds.split(',').map(|s| format!("\"{s}\"")).collect();
    format!(
        "listen: 127.0.0.1:{port}\nlog_level: info\nadmin:\n  listen: 127.0.0.1:{admin}\n\
         cluster:\n  seeds: [{}]\n{extra}",
        seeds.join(", ")
    )
}

/// Starts the slotgate binary on `file` (its log in `log`) and waits for its admin listener.
fn start(file: &std::path::Path, log: &std::path::Path, admin: u16) -> Running {
    let proxy = Running(
        Command::new(env!("CARGO_BIN_EXE_slotgate"))
            .args(["--config", file.to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", admin)).is_err() {
        assert!(Instant::now() < deadline, "slotgate did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    proxy
}

/// A directory of its own for one test's config file and log.
fn workdir(test: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("slotgate-{test}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn sighup_and_post_reload_change_the_config_under_a_running_client() {
    let cluster = Cluster::start_with(3, 0);
    let (port, admin) = (free_port(), free_port());
    let dir = workdir("reload");
    let file = dir.join("slotgate.yaml");
    let log = dir.join("slotgate.log");
    std::fs::write(&file, config(&cluster.seeds, port, admin, "")).unwrap();
    let proxy = start(&file, &log, admin);
    // A client that keeps writing while the configuration changes.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let client = redis::Client::open(format!("redis://127.0.0.1:{port}/")).unwrap();
            let mut con = client.get_connection().unwrap();
            let mut n = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let _: () = redis::cmd("SET")
                    .arg(format!("reload:{n}"))
                    .arg(n)
                    .query(&mut con)
                    .expect("a command failed during a reload");
                n += 1;
            }
            n
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    // A malformed request is logged at debug level: not yet.
    let protocol_error = || {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.write_all(b"*x\r\n").unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        assert!(out.starts_with(b"-ERR Protocol error"), "{out:?}");
    };
    let debug_lines = || {
        std::fs::read_to_string(&log)
            .unwrap()
            .matches("protocol error from client")
            .count()
    };
    protocol_error();
    assert_eq!(debug_lines(), 0, "debug lines at log_level info");

    // SIGHUP: log level, limits and read_from change live; listen needs a restart.
    std::fs::write(
        &file,
        config(
            &cluster.seeds,
            free_port(),
            admin,
            "  read_from: prefer_replica\nlimits:\n  max_clients: 77\n",
        )
        .replace("log_level: info", "log_level: debug"),
    )
    .unwrap();
    let status = Command::new("kill")
        .args(["-HUP", &proxy.0.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, body) = http(admin, "GET", "/config");
        if body.contains("max_clients: 77") {
            assert!(body.contains("log_level: debug"), "{body}");
            assert!(body.contains("read_from: prefer_replica"), "{body}");
            assert!(
                body.contains(&format!("listen: 127.0.0.1:{port}")),
                "{body}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "SIGHUP did not reload: {body}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("configuration reloaded"), "{text}");
    // The new level is in force.
    protocol_error();
    let deadline = Instant::now() + Duration::from_secs(5);
    while debug_lines() == 0 {
        assert!(
            Instant::now() < deadline,
            "no debug line after log_level: debug"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        text.contains("need a restart") && text.contains("\"listen\""),
        "{text}"
    );

    // An invalid file is rejected whole, naming the field; the running config stays.
    std::fs::write(
        &file,
        config(&cluster.seeds, port, admin, "limits:\n  max_clients: 0\n")
            .replace("log_level: info", "log_level: warn"),
    )
    .unwrap();
    let (status, body) = http(admin, "POST", "/reload");
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("limits.max_clients"), "{body}");
    let (_, current) = http(admin, "GET", "/config");
    assert!(current.contains("max_clients: 77") && current.contains("log_level: debug"));
    // A good file through POST /reload.
    std::fs::write(
        &file,
        config(&cluster.seeds, port, admin, "limits:\n  max_clients: 55\n"),
    )
    .unwrap();
    let (status, body) = http(admin, "POST", "/reload");
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains("limits") && body.contains("log_level"),
        "{body}"
    );
    let (_, current) = http(admin, "GET", "/config");
    assert!(current.contains("max_clients: 55") && current.contains("log_level: info"));
    // Back at info: debug lines stop.
    let seen = debug_lines();
    protocol_error();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        debug_lines(),
        seen,
        "debug lines after log_level: info again"
    );
    assert_eq!(http(admin, "GET", "/reload").0, 405);

    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let written = writer.join().expect("the client saw an error");
    assert!(written > 100, "{written}");
    drop(proxy);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Writes `SET m:<k> <n>` in pipelines of 10 over 40 keys until `stop`; every reply must be
/// OK. Returns the number of writes.
fn pipelined_writer(
    port: u16,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<u64> {
    std::thread::spawn(move || {
        let client = redis::Client::open(format!("redis://127.0.0.1:{port}/")).unwrap();
        let mut con = client.get_connection().unwrap();
        let mut n = 0u64;
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            let mut pipe = redis::pipe();
            for _ in 0..10 {
                pipe.cmd("SET").arg(format!("m:{}", n % 40)).arg(n);
                n += 1;
            }
            let _: () = pipe
                .query(&mut con)
                .expect("a pipelined write failed during a reload");
        }
        n
    })
}

fn mirror_section(port: u16, mode: &str, keys: &str) -> String {
    format!(
        "mirror:\n  mode: {mode}\n  resources:\n    - name: m1\n      standalone: \"127.0.0.1:{port}\"\n      keys: [{keys}]\n"
    )
}

async fn set(con: &mut redis::aio::MultiplexedConnection, key: &str, value: &str) {
    let _: () = redis::cmd("SET")
        .arg(key)
        .arg(value)
        .query_async(con)
        .await
        .unwrap();
}

async fn get(con: &mut redis::aio::MultiplexedConnection, key: &str) -> Option<String> {
    redis::cmd("GET").arg(key).query_async(con).await.unwrap()
}

/// `INFO clients`' connected_clients of a standalone server.
async fn connected_clients(con: &mut redis::aio::MultiplexedConnection) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("clients")
        .query_async(con)
        .await
        .unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix("connected_clients:"))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirror_mode_resources_key_rules_and_timeouts_change_live_under_pipelining_clients() {
    let cluster = Cluster::start_with(3, 0);
    let mirror = Standalone::start().await;
    let mut on_mirror = mirror.con().await;
    let (port, admin) = (free_port(), free_port());
    let dir = workdir("reload-mirror");
    let file = dir.join("slotgate.yaml");
    let log = dir.join("slotgate.log");
    // The config file: `extra` after the seeds, at `log_level`.
    let write = |extra: &str, log_level: &str| {
        let text = config(&cluster.seeds, port, admin, extra)
            .replace("log_level: info", &format!("log_level: {log_level}"));
        std::fs::write(&file, text).unwrap()
    };
    let mirror_mode = |mode: &str, keys: &str| mirror_section(mirror.port, mode, keys);
    let reload = |what: &str| {
        let (status, body) = http(admin, "POST", "/reload");
        assert_eq!(status, 200, "{what}: {body}");
        body
    };
    write("", "info");
    let proxy = start(&file, &log, admin);
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}/")).unwrap();
    // A client connected before the mirror exists, idle most of the time.
    let mut idle = client.get_multiplexed_async_connection().await.unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = pipelined_writer(port, stop.clone());
    tokio::time::sleep(Duration::from_millis(200)).await;

    // A mirror is added, waited for by the clients (check_error) and taking m:* only.
    write(&mirror_mode("all_resources_check_error", "\"m:*\""), "info");
    assert!(reload("add").contains("mirror"));
    set(&mut idle, "m:idle", "1").await;
    set(&mut idle, "n:skipped", "1").await;
    // check_error: the write is on the mirror when the client has its reply.
    let got = get(&mut on_mirror, "m:idle").await;
    assert_eq!(got.as_deref(), Some("1"), "the added mirror got no write");
    let got = get(&mut on_mirror, "n:skipped").await;
    assert_eq!(got, None, "the key rules were not applied");
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Mode, key rules and log level change while the writer pipelines: the mirror's
    // connections are kept, the writer's writes keep their order on it.
    write(
        &mirror_mode("first_resource_only", "\"m:*\", \"n:*\""),
        "debug",
    );
    let body = reload("mode");
    assert!(
        body.contains("mirror") && body.contains("log_level"),
        "{body}"
    );
    let (_, current) = http(admin, "GET", "/config");
    assert!(
        current.contains("mode: first_resource_only") && current.contains("log_level: debug"),
        "{current}"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let written = tokio::task::spawn_blocking(move || writer.join())
        .await
        .unwrap()
        .expect("the writer saw an error");
    assert!(written > 100, "{written}");
    // Every key ends with the same value on the mirror as on the primary: no write lost or
    // reordered across the two reloads.
    let mut through = client.get_multiplexed_async_connection().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut differ = Vec::new();
        for k in 0..40 {
            let key = format!("m:{k}");
            let primary = get(&mut through, &key).await;
            let mirrored = get(&mut on_mirror, &key).await;
            if primary != mirrored {
                differ.push((key, primary, mirrored));
            }
        }
        if differ.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "mirror differs: {differ:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The command timeout changes live: a write to a master paused for 2 s fails after
    // 300 ms instead of waiting out the pause (the start's timeout is 5 s).
    let timeouts = format!(
        "  command_timeout_ms: 300\n{}",
        mirror_mode("first_resource_only", "\"m:*\", \"n:*\"")
    );
    write(&timeouts, "debug");
    assert!(reload("timeouts").contains("cluster timeouts"));
    let master = cluster.master_ports[0];
    let key = key_on(&cluster, master, "paused:").await;
    cluster.fault(&["pause", &master.to_string(), "2000"]);
    let paused: redis::RedisResult<()> = redis::cmd("SET")
        .arg(&key)
        .arg("1")
        .query_async(&mut through)
        .await;
    let err = paused.expect_err("a write to a paused master outlived the 300 ms timeout");
    assert!(err.to_string().contains("timeout"), "{err}");
    tokio::time::sleep(Duration::from_millis(2000)).await;

    // The mirror is removed: writes stop reaching it, and every connection to it closes,
    // also those of the idle client's feed.
    write("", "debug");
    assert!(reload("remove").contains("mirror"));
    set(&mut through, "m:after", "1").await;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let n = connected_clients(&mut on_mirror).await;
        if n == 1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{n} connections to the removed mirror stay open"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let got = get(&mut on_mirror, "m:after").await;
    assert_eq!(got, None, "a write reached the removed mirror");
    drop(idle);
    drop(proxy);
    let _ = std::fs::remove_dir_all(&dir);
}
