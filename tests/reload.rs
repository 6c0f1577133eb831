//! Live reconfiguration of the slotgate binary: SIGHUP and POST /reload re-read the config
//! file under a running client; what needs a restart is kept and logged; an invalid file is
//! rejected whole and the running configuration stays.

mod support;

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::{Cluster, Running, free_port};

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

#[test]
fn sighup_and_post_reload_change_the_config_under_a_running_client() {
    let cluster = Cluster::start_with(3, 0);
    let (port, admin) = (free_port(), free_port());
    let dir = std::env::temp_dir().join(format!("slotgate-reload-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("slotgate.yaml");
    let log = dir.join("slotgate.log");
    std::fs::write(&file, config(&cluster.seeds, port, admin, "")).unwrap();
    let proxy = Running(
        Command::new(env!("CARGO_BIN_EXE_slotgate"))
            .args(["--config", file.to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", admin)).is_err() {
        assert!(Instant::now() < deadline, "slotgate did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
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
    assert_eq!(http(admin, "GET", "/reload").0, 405);

    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let written = writer.join().expect("the client saw an error");
    assert!(written > 100, "{written}");
    drop(proxy);
    let _ = std::fs::remove_dir_all(&dir);
}
