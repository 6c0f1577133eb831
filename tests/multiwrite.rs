//! Multi-write with two real clusters: the reply semantics of each mode (mirror healthy,
//! stopped, answering errors), a mixed workload ending identical on both clusters, reads
//! never reaching the mirror, key rules, the async queue with a consumer killed and
//! restarted, and the figures in INFO.

mod support;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;
use redis::{AsyncCommands, Value};
use slotgate::config::{MirrorResourceConfig, MultiWriteMode, QueueConfig};
use support::{Cluster, Proxy, Standalone, dump};

fn mirror_of(cluster: &Cluster, name: &str) -> MirrorResourceConfig {
    mirror_at(&cluster.seeds, name)
}

/// A mirror cluster given by its comma-separated seeds.
fn mirror_at(seeds: &str, name: &str) -> MirrorResourceConfig {
    MirrorResourceConfig {
        name: name.into(),
        cluster: seeds.split(',').map(String::from).collect(),
        ..MirrorResourceConfig::default()
    }
}

/// The modes in which slotgate writes the mirrors itself.
const DIRECT_MODES: [MultiWriteMode; 3] = [
    MultiWriteMode::FirstResourceOnly,
    MultiWriteMode::AllResourcesNoCheck,
    MultiWriteMode::AllResourcesCheckError,
];

async fn info(con: &mut MultiplexedConnection, section: &str) -> String {
    redis::cmd("INFO")
        .arg(section)
        .query_async(con)
        .await
        .unwrap()
}

/// A field of one resource's line in `INFO multiwrite`.
fn resource_field(stats: &str, resource: &str, field: &str) -> u64 {
    stats
        .lines()
        .find(|l| l.starts_with(&format!("resource_{resource}:")))
        .and_then(|l| {
            l.split(&[':', ','][..])
                .find_map(|f| f.strip_prefix(&format!("{field}=")))
        })
        .unwrap()
        .parse()
        .unwrap()
}

async fn wait_until_equal(a: &Cluster, b: &Cluster) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (da, db) = (dump(a).await, dump(b).await);
        if da == db {
            return;
        }
        if Instant::now() > deadline {
            let only_a: Vec<_> = da
                .iter()
                .filter(|(k, v)| db.get(*k) != Some(v))
                .take(5)
                .collect();
            let only_b: Vec<_> = db
                .iter()
                .filter(|(k, v)| da.get(*k) != Some(v))
                .take(5)
                .collect();
            panic!("clusters differ: primary {only_a:?} mirror {only_b:?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn modes_with_a_healthy_a_failing_and_a_dead_mirror() {
    let primary = Cluster::start_with(3, 0);
    let mirror = Cluster::start_with(3, 0);
    for mode in DIRECT_MODES {
        let proxy = Proxy::start_with(&primary, |c| {
            c.mirror.mode = mode;
            c.mirror.resources = vec![mirror_of(&mirror, "b")];
            c.cluster.max_retries = 2;
        })
        .await;
        let mut con = proxy.client(2).await;
        let key = format!("{mode:?}:k");
        let _: () = con.set(&key, "v").await.unwrap();
        // The mirror has it at once in the waiting modes, soon in the other.
        let mirror_proxy = Proxy::start(&mirror).await;
        let mut m = mirror_proxy.client(2).await;
        let deadline = Instant::now() + Duration::from_secs(5);
        while m.get::<_, Option<String>>(&key).await.unwrap().is_none() {
            assert!(
                mode == MultiWriteMode::FirstResourceOnly && Instant::now() < deadline,
                "{mode:?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // A WRONGTYPE only on the mirror.
        let list = format!("{mode:?}:list");
        let _: () = m.set(&list, "a string on the mirror only").await.unwrap();
        let r = redis::cmd("LPUSH")
            .arg(&list)
            .arg("x")
            .query_async::<i64>(&mut con)
            .await;
        match mode {
            MultiWriteMode::AllResourcesCheckError => {
                let e = r.unwrap_err().to_string();
                assert!(e.contains("mirror 'b'") && e.contains("WRONGTYPE"), "{e}");
            }
            _ => assert_eq!(r.unwrap(), 1),
        }
        let stats = info(&mut con, "multiwrite").await;
        assert!(stats.contains("resource_b:requests="), "{stats}");
    }

    // A dead mirror.
    let dead = {
        let c = Cluster::start_with(3, 0);
        let seeds = c.seeds.clone();
        drop(c);
        seeds
    };
    for mode in DIRECT_MODES {
        let proxy = Proxy::start_with(&primary, |c| {
            c.mirror.mode = mode;
            c.mirror.resources = vec![mirror_at(&dead, "gone")];
            c.cluster.max_retries = 2;
        })
        .await;
        let mut con = proxy.client(2).await;
        let started = Instant::now();
        let r = con.set::<_, _, ()>(format!("dead:{mode:?}"), "v").await;
        match mode {
            MultiWriteMode::AllResourcesCheckError => {
                let e = r.unwrap_err().to_string();
                assert!(e.contains("mirror 'gone'"), "{e}");
            }
            _ => r.unwrap(),
        }
        if mode == MultiWriteMode::FirstResourceOnly {
            // Never slowed by the mirror.
            assert!(
                started.elapsed() < Duration::from_millis(500),
                "{:?}",
                started.elapsed()
            );
            for i in 0..200 {
                let _: () = con.set(format!("dead:more:{i}"), i).await.unwrap();
            }
            assert!(
                started.elapsed() < Duration::from_secs(3),
                "{:?}",
                started.elapsed()
            );
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut errors = resource_field(&info(&mut con, "multiwrite").await, "gone", "errors");
        while errors == 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
            errors = resource_field(&info(&mut con, "multiwrite").await, "gone", "errors");
        }
        assert!(errors > 0, "failed mirror writes are counted");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_workload_ends_identical_and_reads_stay_on_the_primary() {
    let primary = Cluster::start_with(3, 0);
    let mirror = Cluster::start_with(3, 0);
    let proxy = Proxy::start_with(&primary, |c| {
        c.mirror.resources = vec![MirrorResourceConfig {
            compare: true,
            ..mirror_of(&mirror, "b")
        }];
        c.mirror.probe_interval_ms = 100;
    })
    .await;
    let mut con = proxy.client(2).await;
    let mut n = 0;
    for round in 0..200 {
        let mut pipe = redis::pipe();
        for i in 0..10 {
            let k = format!("w:{}", (round * 10 + i) % 500);
            pipe.set(format!("{k}:s"), round).ignore();
            pipe.incr(format!("{k}:c"), 1).ignore();
            pipe.cmd("INCRBYFLOAT")
                .arg(format!("{k}:f"))
                .arg(0.5)
                .ignore();
            pipe.hset(format!("{k}:h"), "f", round).ignore();
            pipe.cmd("HINCRBY")
                .arg(format!("{k}:h"))
                .arg("n")
                .arg(2)
                .ignore();
            pipe.lpush(format!("{k}:l"), round).ignore();
            pipe.sadd(format!("{k}:set"), round % 7).ignore();
            pipe.cmd("ZINCRBY")
                .arg(format!("{k}:z"))
                .arg(1)
                .arg("m")
                .ignore();
            pipe.cmd("SET")
                .arg(format!("{k}:ttl"))
                .arg(round)
                .arg("EX")
                .arg(1000)
                .ignore();
            pipe.cmd("MSET")
                .arg(format!("{k}:m1"))
                .arg(round)
                .arg(format!("{k}:m2"))
                .arg(round)
                .ignore();
            n += 10;
        }
        let mut pipe2 = redis::pipe();
        pipe2
            .cmd("SPOP")
            .arg(format!("w:{}:set", round % 500))
            .ignore();
        pipe2.del(format!("w:{}:s", (round * 7) % 500)).ignore();
        pipe2
            .cmd("EXPIRE")
            .arg(format!("w:{}:c", round % 500))
            .arg(500)
            .ignore();
        n += 3;
        let _: () = pipe.query_async(&mut con).await.unwrap();
        let _: () = pipe2.query_async(&mut con).await.unwrap();
    }
    assert!(n >= 20_000, "{n}");
    wait_until_equal(&primary, &mirror).await;

    // Reads never reach the mirror.
    let mirror_gets = || async {
        let mut total = 0;
        for port in &mirror.master_ports {
            total += support::command_calls(*port, "get").await;
        }
        total
    };
    let gets_before = mirror_gets().await;
    for i in 0..500 {
        let _: Option<String> = con.get(format!("w:{i}:s")).await.unwrap();
        let _: Vec<Option<String>> = con
            .mget(&[format!("w:{i}:m1"), format!("w:{i}:m2")])
            .await
            .unwrap();
    }
    let gets_after = mirror_gets().await;
    // Only the delay probe reads the mirror (directly), never a client's GET.
    assert!(
        gets_after - gets_before < 100,
        "{gets_before} -> {gets_after}"
    );

    // INFO shows latency histograms, the delay figure, and no divergence.
    let stats = info(&mut con, "multiwrite").await;
    let line = stats
        .lines()
        .find(|l| l.starts_with("resource_b:"))
        .unwrap()
        .to_string();
    assert!(line.contains("latency_p99_us="), "{line}");
    assert!(line.contains(",mismatches=0,"), "{line}");
    assert!(resource_field(&stats, "b", "delay_probes") > 0, "{line}");
    assert!(stats.contains("resource_primary:requests="), "{stats}");
    // Every write handed over was answered: the backlog drains to zero.
    let deadline = Instant::now() + Duration::from_secs(5);
    while resource_field(&info(&mut con, "multiwrite").await, "b", "backlog") != 0 {
        assert!(
            Instant::now() < deadline,
            "the mirror backlog never drained"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_rules_choose_the_mirror() {
    let primary = Cluster::start_with(3, 0);
    let mirror = Cluster::start_with(3, 0);
    let proxy = Proxy::start_with(&primary, |c| {
        c.mirror.mode = MultiWriteMode::AllResourcesCheckError;
        c.mirror.resources = vec![MirrorResourceConfig {
            keys: vec!["user:*".into()],
            ..mirror_of(&mirror, "users")
        }];
    })
    .await;
    let mut con = proxy.client(2).await;
    let _: () = con.set("user:1", "a").await.unwrap();
    let _: () = con.set("other:1", "b").await.unwrap();
    let _: () = redis::cmd("MSET")
        .arg(&["user:2", "c", "other:2", "d"])
        .query_async(&mut con)
        .await
        .unwrap();
    let keys: Vec<String> = dump(&mirror).await.into_keys().collect();
    assert_eq!(keys, ["user:1", "user:2"]);
    assert_eq!(dump(&primary).await.len(), 4);
}

/// Runs `slotgate consume` with `config` until dropped.
struct Consumer(Child);

impl Consumer {
    fn start(config: &std::path::Path) -> Consumer {
        Consumer(
            Command::new(env!("CARGO_BIN_EXE_slotgate"))
                .arg("consume")
                .arg("--config")
                .arg(config)
                .arg("--log-level")
                .arg("warn")
                .stdout(Stdio::null())
                .spawn()
                .unwrap(),
        )
    }
}

impl Drop for Consumer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_mode_survives_a_consumer_restart() {
    let primary = Cluster::start_with(3, 0);
    let mirror = Cluster::start_with(3, 0);
    let queue = Standalone::start().await;
    let queue_config = QueueConfig {
        redis: format!("127.0.0.1:{}", queue.port),
        ..QueueConfig::default()
    };
    let proxy = Proxy::start_with(&primary, |c| {
        c.mirror.mode = MultiWriteMode::Async;
        c.mirror.resources = vec![mirror_of(&mirror, "b")];
        c.mirror.queue = Some(queue_config.clone());
    })
    .await;
    let dir = std::env::temp_dir().join(format!("slotgate-consumer-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config_path = dir.join("consumer.yaml");
    std::fs::write(
        &config_path,
        format!(
            "mirror:\n  resources:\n    - name: b\n      cluster: [{}]\n  queue:\n    redis: 127.0.0.1:{}\n",
            mirror.seeds, queue.port
        ),
    )
    .unwrap();

    let mut con = proxy.client(2).await;
    let mut consumer = Some(Consumer::start(&config_path));
    for batch in 0..20 {
        let mut pipe = redis::pipe();
        for i in 0..100 {
            let k = format!("a:{}", batch * 100 + i);
            pipe.set(&k, i).ignore();
            pipe.incr(format!("{k}:n"), 2).ignore();
        }
        let _: () = pipe.query_async(&mut con).await.unwrap();
        if batch == 8 {
            // Killed mid-stream, once it has applied part of the queue.
            let deadline = Instant::now() + Duration::from_secs(10);
            while dump(&mirror).await.is_empty() {
                assert!(Instant::now() < deadline, "consumer applied nothing");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            consumer = None;
            assert!(dump(&mirror).await.len() < 4000);
        }
        if batch == 14 {
            consumer = Some(Consumer::start(&config_path));
        }
    }
    // The queue holds the writes the consumer has not applied yet.
    let stats = info(&mut con, "multiwrite").await;
    assert!(stats.contains("queue_lag_entries:"), "{stats}");
    wait_until_equal(&primary, &mirror).await;
    assert_eq!(dump(&mirror).await.len(), 4000);
    drop(consumer);
    let mut q = queue.con().await;
    let dead: i64 = redis::cmd("XLEN")
        .arg("slotgate:mirror:dead")
        .query_async(&mut q)
        .await
        .unwrap();
    assert_eq!(dead, 0);
    let _ = std::fs::remove_dir_all(&dir);
    let _: Value = redis::cmd("PING").query_async(&mut q).await.unwrap();
}

/// A proxy in front of `cluster` without mirrors: writes that only that cluster gets.
async fn direct(cluster: &Cluster) -> (Proxy, MultiplexedConnection) {
    let proxy = Proxy::start(cluster).await;
    let con = proxy.client(2).await;
    (proxy, con)
}

async fn wait_for_value(con: &mut MultiplexedConnection, key: &str, want: &str, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let v: Option<String> = con.get(key).await.unwrap();
        if v.as_deref() == Some(want) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: {key} is {v:?}, not {want}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_modes_write_every_resource_verbatim_and_at_once() {
    let primary = Cluster::start_with(3, 0);
    let mirror = Cluster::start_with(3, 0);
    let (_p, mut only_primary) = direct(&primary).await;
    let (_m, mut only_mirror) = direct(&mirror).await;
    for mode in DIRECT_MODES {
        let proxy = Proxy::start_with(&primary, |c| {
            c.mirror.mode = mode;
            c.mirror.resources = vec![mirror_of(&mirror, "b")];
        })
        .await;
        let mut con = proxy.client(2).await;

        // A write the primary refuses (WRONGTYPE) still reaches the mirror.
        let wt = format!("{mode:?}:wt");
        let _: () = only_primary.rpush(&wt, "x").await.unwrap();
        let e = con.incr::<_, _, i64>(&wt, 1).await.unwrap_err();
        assert_eq!(e.code(), Some("WRONGTYPE"), "{mode:?}");
        wait_for_value(&mut only_mirror, &wt, "1", "refused on the primary").await;

        // Only the mirror holds another type: check_error says so, naming it.
        let ml = format!("{mode:?}:ml");
        let _: () = only_mirror.rpush(&ml, "x").await.unwrap();
        let r = con.incr::<_, _, i64>(&ml, 1).await;
        match mode {
            MultiWriteMode::AllResourcesCheckError => {
                let e = r.unwrap_err().to_string();
                assert!(e.contains("mirror 'b'") && e.contains("WRONGTYPE"), "{e}");
            }
            _ => assert_eq!(r.unwrap(), 1),
        }

        // At once: with the primary's writes paused, the mirror already has the write
        // (one round trip in the waiting modes, not two in series).
        for port in &primary.master_ports {
            let mut node = primary.node(*port).await;
            let _: () = redis::cmd("CLIENT")
                .arg(&["PAUSE", "1500", "WRITE"])
                .query_async(&mut node)
                .await
                .unwrap();
        }
        let rt = format!("{mode:?}:rt");
        let mut writer = proxy.client(2).await;
        let key = rt.clone();
        let write = tokio::spawn(async move { writer.set::<_, _, ()>(key, "v").await });
        wait_for_value(&mut only_mirror, &rt, "v", "while the primary is paused").await;
        assert!(!write.is_finished(), "{mode:?}: the primary was paused");
        write.await.unwrap().unwrap();
        // Relative expiries reach the mirror as absolute times: the same deadline.
        let ttl = format!("{mode:?}:ttl");
        let _: () = redis::cmd("SET")
            .arg(&[&ttl, "v", "EX", "1000"])
            .query_async(&mut con)
            .await
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        let (p, m) = loop {
            let p: i64 = redis::cmd("PEXPIRETIME")
                .arg(&ttl)
                .query_async(&mut only_primary)
                .await
                .unwrap();
            let m: i64 = redis::cmd("PEXPIRETIME")
                .arg(&ttl)
                .query_async(&mut only_mirror)
                .await
                .unwrap();
            if m > 0 || Instant::now() > deadline {
                break (p, m);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert!((p - m).abs() < 1000, "{mode:?}: expiries {p} and {m}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_counters_and_collections_converge_in_every_mode() {
    let primary = Cluster::start_with(3, 0);
    let mirror = Cluster::start_with(3, 0);
    let (_p, mut on_primary) = direct(&primary).await;
    let (_m, mut on_mirror) = direct(&mirror).await;
    let queue = Standalone::start().await;
    let dir = std::env::temp_dir().join(format!("slotgate-converge-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for mode in DIRECT_MODES.into_iter().chain([MultiWriteMode::Async]) {
        let proxy = Proxy::start_with(&primary, |c| {
            c.mirror.mode = mode;
            c.mirror.resources = vec![mirror_of(&mirror, "b")];
            if mode == MultiWriteMode::Async {
                c.mirror.queue = Some(QueueConfig {
                    redis: format!("127.0.0.1:{}", queue.port),
                    ..QueueConfig::default()
                });
            }
        })
        .await;
        // The async mode's writes reach the mirror through a consumer.
        let _consumer = (mode == MultiWriteMode::Async)
            .then(|| Consumer::start(&consumer_config(&dir, &mirror, queue.port, "converge")));
        let p = format!("{mode:?}");
        let mut clients = Vec::new();
        for c in 0..16 {
            let mut con = proxy.client(2).await;
            let p = p.clone();
            clients.push(tokio::spawn(async move {
                for round in 0..20 {
                    let mut pipe = redis::pipe();
                    for i in 0..10 {
                        let k = format!("{p}:{}", i % 5);
                        pipe.incr(format!("{k}:n"), 1).ignore();
                        pipe.cmd("HINCRBY")
                            .arg(format!("{k}:h"))
                            .arg("f")
                            .arg(2)
                            .ignore();
                        pipe.rpush(format!("{k}:l"), format!("{c}-{round}-{i}"))
                            .ignore();
                        pipe.sadd(format!("{k}:s"), (c * round + i) % 13).ignore();
                    }
                    let _: () = pipe.query_async(&mut con).await.unwrap();
                }
            }));
        }
        for c in clients {
            c.await.unwrap();
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        for i in 0..5 {
            let k = format!("{p}:{i}");
            loop {
                let n_p: i64 = on_primary.get(format!("{k}:n")).await.unwrap();
                let n_m: Option<i64> = on_mirror.get(format!("{k}:n")).await.unwrap();
                let h_p: i64 = on_primary.hget(format!("{k}:h"), "f").await.unwrap();
                let h_m: Option<i64> = on_mirror.hget(format!("{k}:h"), "f").await.unwrap();
                let mut l_p: Vec<String> =
                    on_primary.lrange(format!("{k}:l"), 0, -1).await.unwrap();
                let mut l_m: Vec<String> = on_mirror.lrange(format!("{k}:l"), 0, -1).await.unwrap();
                let mut s_p: Vec<String> = on_primary.smembers(format!("{k}:s")).await.unwrap();
                let mut s_m: Vec<String> = on_mirror.smembers(format!("{k}:s")).await.unwrap();
                // Concurrent clients interleave differently on two clusters: the lists hold
                // the same elements, each client's in its own order.
                l_p.sort();
                l_m.sort();
                s_p.sort();
                s_m.sort();
                let same = Some(n_p) == n_m && Some(h_p) == h_m && l_p == l_m && s_p == s_m;
                if same {
                    assert_eq!(n_p, 16 * 20 * 2, "{mode:?}");
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "{mode:?} {k}: counter {n_p}/{n_m:?}, hash {h_p}/{h_m:?}, lists {}/{}, sets {s_p:?}/{s_m:?}",
                    l_p.len(),
                    l_m.len()
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_leaves_without_reading_loses_no_mirror_write() {
    use tokio::io::AsyncWriteExt;
    let primary = Cluster::start_with(3, 0);
    let mirror = Cluster::start_with(3, 0);
    let proxy = Proxy::start_with(&primary, |c| {
        c.mirror.resources = vec![mirror_of(&mirror, "b")];
    })
    .await;
    // 200 writes in one go, among them ids the primary chooses, then gone.
    let mut raw = Vec::new();
    for i in 0..200 {
        let (k, v) = (format!("left:{i}"), i.to_string());
        raw.extend_from_slice(
            format!(
                "*3\r\n$3\r\nSET\r\n${}\r\n{k}\r\n${}\r\n{v}\r\n",
                k.len(),
                v.len()
            )
            .as_bytes(),
        );
        raw.extend_from_slice(
            b"*5\r\n$4\r\nXADD\r\n$9\r\nleft:{st}\r\n$1\r\n*\r\n$1\r\nf\r\n$1\r\nv\r\n",
        );
    }
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", proxy.port))
        .await
        .unwrap();
    s.write_all(&raw).await.unwrap();
    drop(s);
    let (_m, mut on_mirror) = direct(&mirror).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut missing = 0;
        for i in 0..200 {
            let v: Option<String> = on_mirror.get(format!("left:{i}")).await.unwrap();
            missing += usize::from(v.is_none());
        }
        let entries: i64 = redis::cmd("XLEN")
            .arg("left:{st}")
            .query_async(&mut on_mirror)
            .await
            .unwrap();
        let (_p, mut on_primary) = direct(&primary).await;
        let on_p: i64 = redis::cmd("XLEN")
            .arg("left:{st}")
            .query_async(&mut on_primary)
            .await
            .unwrap();
        if missing == 0 && entries == on_p {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{missing} keys and {} of {on_p} stream entries missing on the mirror",
            on_p - entries
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_mirror_drops_only_its_own_writes_at_its_backlog_bound() {
    let primary = Cluster::start_with(3, 0);
    let good = Standalone::start().await;
    let slow = Standalone::start().await;
    let standalone = |name: &str, s: &Standalone| MirrorResourceConfig {
        name: name.into(),
        standalone: Some(format!("127.0.0.1:{}", s.port)),
        ..MirrorResourceConfig::default()
    };
    let proxy = Proxy::start_with(&primary, |c| {
        c.mirror.mode = MultiWriteMode::FirstResourceOnly;
        c.mirror.backlog = Some(50);
        c.mirror.resources = vec![standalone("good", &good), standalone("slow", &slow)];
        // The stalled mirror's writes stay unanswered for the whole test.
        c.cluster.command_timeout_ms = 60_000;
    })
    .await;
    let paused = slow.pause();
    // Four clients, 100 writes each (one at a time, so the healthy mirror's backlog stays
    // short): every reply comes from the primary, none waits for the stalled mirror.
    let mut writers = Vec::new();
    for w in 0..4 {
        let mut con = proxy.client(2).await;
        writers.push(tokio::spawn(async move {
            for i in 0..100 {
                tokio::time::timeout(
                    Duration::from_secs(2),
                    con.set::<_, _, ()>(format!("stall:{w}:{i}"), i),
                )
                .await
                .expect("a first_resource_only client waited for a stalled mirror")
                .unwrap();
            }
        }));
    }
    for w in writers {
        w.await.unwrap();
    }
    // The healthy mirror has every write, and dropped none.
    let mut g = good.con().await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let n: usize = redis::cmd("DBSIZE").query_async(&mut g).await.unwrap();
        if n == 400 {
            break;
        }
        if Instant::now() >= deadline {
            let mut con = proxy.client(2).await;
            panic!(
                "the healthy mirror has {n} of 400 keys: {}",
                info(&mut con, "multiwrite").await
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut con = proxy.client(2).await;
    let stats = info(&mut con, "multiwrite").await;
    assert_eq!(resource_field(&stats, "good", "dropped"), 0, "{stats}");
    assert_eq!(resource_field(&stats, "good", "backlog"), 0, "{stats}");
    // The stalled one holds at most its bound, over all clients; the rest was dropped.
    assert_eq!(resource_field(&stats, "slow", "backlog"), 50, "{stats}");
    assert_eq!(resource_field(&stats, "slow", "dropped"), 350, "{stats}");
    // Once it answers again, its backlog drains: it has exactly the writes it took.
    drop(paused);
    let deadline = Instant::now() + Duration::from_secs(10);
    while resource_field(&info(&mut con, "multiwrite").await, "slow", "backlog") != 0 {
        assert!(
            Instant::now() < deadline,
            "the resumed mirror's backlog never drained"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut s = slow.con().await;
    let n: usize = redis::cmd("DBSIZE").query_async(&mut s).await.unwrap();
    assert_eq!(n, 50);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_full_block_makes_writes_wait_for_a_stalled_mirror_and_drops_none() {
    let primary = Cluster::start_with(3, 0);
    let slow = Standalone::start().await;
    let proxy = Proxy::start_with(&primary, |c| {
        c.mirror.mode = MultiWriteMode::FirstResourceOnly;
        c.mirror.backlog = Some(20);
        c.mirror.on_full = slotgate::config::OnFull::Block;
        c.mirror.resources = vec![MirrorResourceConfig {
            name: "slow".into(),
            standalone: Some(format!("127.0.0.1:{}", slow.port)),
            ..MirrorResourceConfig::default()
        }];
        c.cluster.command_timeout_ms = 60_000;
    })
    .await;
    let paused = slow.pause();
    let mut con = proxy.client(2).await;
    // The bound's worth of writes is answered at once...
    for i in 0..20 {
        tokio::time::timeout(
            Duration::from_secs(2),
            con.set::<_, _, ()>(format!("blk:{i}"), i),
        )
        .await
        .expect("a write within the backlog bound waited")
        .unwrap();
    }
    // ...the next one waits for room while the mirror is stalled...
    let waiting = tokio::spawn(async move {
        let _: () = con.set("blk:20", 20).await.unwrap();
        con
    });
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert!(
        !waiting.is_finished(),
        "a write beyond the bound did not wait"
    );
    // ...and goes through once the mirror answers again; nothing was dropped.
    drop(paused);
    let mut con = tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .expect("the waiting write never went through")
        .unwrap();
    let stats = info(&mut con, "multiwrite").await;
    assert_eq!(resource_field(&stats, "slow", "dropped"), 0, "{stats}");
    let mut s = slow.con().await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let n: usize = redis::cmd("DBSIZE").query_async(&mut s).await.unwrap();
        if n == 21 {
            break;
        }
        assert!(Instant::now() < deadline, "the mirror has {n} of 21 keys");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mirrored_blocking_command_never_blocks_a_mirror_connection() {
    let primary = Cluster::start_with(3, 0);
    let mirror = Cluster::start_with(3, 0);
    // One worker: every client's mirror writes share its connection to each mirror node.
    let proxy = Proxy::start_with(&primary, |c| {
        c.threads = 1;
        c.mirror.mode = MultiWriteMode::AllResourcesNoCheck;
        c.mirror.resources = vec![mirror_of(&mirror, "b")];
    })
    .await;
    let mut con = proxy.client(2).await;
    // The same writes without a blocked command beside them: how long they take here.
    let mut baseline = Duration::ZERO;
    for i in 0..20 {
        for key in [format!("{{bl}}k{i}"), format!("other{i}")] {
            let started = Instant::now();
            let _: () = con.set(key, i).await.unwrap();
            baseline = baseline.max(started.elapsed());
        }
    }
    let mut blocker = proxy.client(2).await;
    let blocked = tokio::spawn(async move {
        redis::cmd("BLMPOP")
            .arg(&["3", "1", "{bl}list", "LEFT"])
            .query_async::<Value>(&mut blocker)
            .await
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Writes to the same mirror nodes as the blocked command's key, and to others.
    let mut slowest = Duration::ZERO;
    for i in 0..20 {
        for key in [format!("{{bl}}k{i}"), format!("other{i}")] {
            let started = Instant::now();
            let _: () = con.set(key, i).await.unwrap();
            slowest = slowest.max(started.elapsed());
        }
    }
    // Each write waits for the mirror here: none waits for the blocked pop (3 s), and none
    // is delayed by more than 100 ms beyond the slowest of the same writes without it.
    assert!(
        slowest < baseline + Duration::from_millis(100),
        "a mirrored write took {slowest:?} beside a blocked BLMPOP, {baseline:?} without"
    );
    eprintln!("slowest mirrored write beside a blocked BLMPOP: {slowest:?} ({baseline:?} without)");
    // The blocked pop ends with its timeout and mirrors nothing; a pop that gets an element
    // mirrors its effect.
    assert_eq!(blocked.await.unwrap().unwrap(), Value::Nil);
    let _: () = con.rpush("{bl}list", &["a", "b"]).await.unwrap();
    let popped: Value = redis::cmd("BLMPOP")
        .arg(&["1", "1", "{bl}list", "LEFT"])
        .query_async(&mut con)
        .await
        .unwrap();
    assert!(format!("{popped:?}").contains('a'), "{popped:?}");
    wait_until_equal(&primary, &mirror).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_are_mirrored_as_one_transaction_once_exec_succeeded() {
    let primary = Cluster::start_with(3, 0);
    let mirror = Cluster::start_with(3, 0);
    let (_p, mut on_primary) = direct(&primary).await;
    let (_m, mut on_mirror) = direct(&mirror).await;
    let execs = || async {
        let mut n = 0;
        for port in &mirror.master_ports {
            n += support::command_calls(*port, "exec").await;
        }
        n
    };
    for mode in DIRECT_MODES {
        let proxy = Proxy::start_with(&primary, |c| {
            c.mirror.mode = mode;
            c.mirror.resources = vec![mirror_of(&mirror, "b")];
        })
        .await;
        let mut con = proxy.client(2).await;
        let t = format!("{{t{mode:?}}}");
        let before = execs().await;
        // Committed: the mirror runs the writes as one MULTI/EXEC, XADD with the same id.
        let ((), _, id): ((), i64, String) = redis::pipe()
            .atomic()
            .set(format!("{t}a"), "1")
            .incr(format!("{t}n"), 5)
            .cmd("XADD")
            .arg(format!("{t}s"))
            .arg("*")
            .arg("f")
            .arg("v")
            .get(format!("{t}a"))
            .ignore()
            .query_async(&mut con)
            .await
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let n: Option<i64> = on_mirror.get(format!("{t}n")).await.unwrap();
            if n == Some(5) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{mode:?}: transaction not mirrored"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let a: String = on_mirror.get(format!("{t}a")).await.unwrap();
        assert_eq!(a, "1");
        let ids: Value = redis::cmd("XRANGE")
            .arg(format!("{t}s"))
            .arg("-")
            .arg("+")
            .query_async(&mut on_mirror)
            .await
            .unwrap();
        assert!(
            format!("{ids:?}").contains(&id),
            "{mode:?}: {ids:?} lacks {id}"
        );
        assert_eq!(
            execs().await,
            before + 1,
            "{mode:?}: one EXEC on the mirror"
        );

        // Discarded: nothing mirrored.
        let _: () = redis::cmd("MULTI").query_async(&mut con).await.unwrap();
        let _: () = con.set(format!("{t}discarded"), 1).await.unwrap();
        let _: () = redis::cmd("DISCARD").query_async(&mut con).await.unwrap();
        // Aborted by WATCH: nothing mirrored.
        let _: () = redis::cmd("WATCH")
            .arg(format!("{t}w"))
            .query_async(&mut con)
            .await
            .unwrap();
        let _: () = on_primary.set(format!("{t}w"), "changed").await.unwrap();
        let _: () = redis::cmd("MULTI").query_async(&mut con).await.unwrap();
        let _: () = con.set(format!("{t}watched"), 1).await.unwrap();
        let aborted: Value = redis::cmd("EXEC").query_async(&mut con).await.unwrap();
        assert_eq!(aborted, Value::Nil);
        // A marker written after both proves the mirror has seen everything before it.
        let _: () = con.set(format!("{t}marker"), 1).await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while on_mirror
            .get::<_, Option<String>>(format!("{t}marker"))
            .await
            .unwrap()
            .is_none()
        {
            assert!(Instant::now() < deadline, "{mode:?}: marker not mirrored");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        for k in ["discarded", "watched"] {
            let v: Option<String> = on_mirror.get(format!("{t}{k}")).await.unwrap();
            assert_eq!(v, None, "{mode:?}: {k} transaction mirrored");
        }
        assert_eq!(execs().await, before + 1, "{mode:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_reaches_subscribers_of_every_resource() {
    let primary = Cluster::start_with(3, 0);
    let mirror = Cluster::start_with(3, 0);
    let proxy = Proxy::start_with(&primary, |c| {
        c.mirror.resources = vec![mirror_of(&mirror, "b")];
    })
    .await;
    // Subscribers of the mirror cluster (any node: classic pub/sub is cluster-wide).
    let mut on_mirror = support::RawClient::connect(mirror.master_ports[1]).await;
    on_mirror.send(b"SUBSCRIBE news\r\n").await;
    on_mirror
        .expect(b"*3\r\n$9\r\nsubscribe\r\n$4\r\nnews\r\n:1\r\n")
        .await;
    let mut con = proxy.client(2).await;
    let _: i64 = con.publish("news", "hello").await.unwrap();
    on_mirror
        .expect(b"*3\r\n$7\r\nmessage\r\n$4\r\nnews\r\n$5\r\nhello\r\n")
        .await;

    // A shard channel: on the mirror, the master of its slot hears SPUBLISH.
    let owner = mirror.owner_of(slotgate::slot::slot_of(b"shardnews")).await;
    let mut shard_sub = support::RawClient::connect(owner).await;
    shard_sub.send(b"SSUBSCRIBE shardnews\r\n").await;
    shard_sub
        .expect(b"*3\r\n$10\r\nssubscribe\r\n$9\r\nshardnews\r\n:1\r\n")
        .await;
    let _: i64 = redis::cmd("SPUBLISH")
        .arg(&["shardnews", "sharded hello"])
        .query_async(&mut con)
        .await
        .unwrap();
    shard_sub
        .expect(b"*3\r\n$8\r\nsmessage\r\n$9\r\nshardnews\r\n$13\r\nsharded hello\r\n")
        .await;
}

/// A consumer config for `mirror` and the queue on `queue_port`.
fn consumer_config(
    dir: &std::path::Path,
    mirror: &Cluster,
    queue_port: u16,
    name: &str,
) -> std::path::PathBuf {
    let path = dir.join(format!("{name}.yaml"));
    std::fs::write(
        &path,
        format!(
            "mirror:\n  resources:\n    - name: b\n      cluster: [{}]\n  queue:\n    redis: 127.0.0.1:{queue_port}\n    consumer: {name}\n    max_attempts: 2\n    claim_idle_ms: 1000\n",
            mirror.seeds
        ),
    )
    .unwrap();
    path
}

async fn stream_len(q: &mut MultiplexedConnection, stream: &str) -> i64 {
    redis::cmd("XLEN").arg(stream).query_async(q).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_mode_loses_nothing_across_a_dead_consumer_and_a_mirror_outage() {
    let primary = Cluster::start_with(3, 0);
    let mirror = Cluster::start_with(3, 0);
    let queue = Standalone::start().await;
    let proxy = Proxy::start_with(&primary, |c| {
        c.mirror.mode = MultiWriteMode::Async;
        c.mirror.resources = vec![mirror_of(&mirror, "b")];
        c.mirror.queue = Some(QueueConfig {
            redis: format!("127.0.0.1:{}", queue.port),
            ..QueueConfig::default()
        });
    })
    .await;
    let mut con = proxy.client(2).await;
    for batch in 0..5 {
        let mut pipe = redis::pipe();
        for i in 0..100 {
            pipe.set(format!("q:{}", batch * 100 + i), i).ignore();
        }
        let _: () = pipe.query_async(&mut con).await.unwrap();
    }
    // Nothing applied yet: nothing trimmed.
    let mut q = queue.con().await;
    assert_eq!(stream_len(&mut q, "slotgate:mirror").await, 500);

    // A mirror master goes down for 30 s; a consumer starts, meets the outage, and dies.
    let victim = mirror.master_ports[1];
    mirror.fault(&["kill", mirror.dir.to_str().unwrap(), &victim.to_string()]);
    let dir = std::env::temp_dir().join(format!("slotgate-consumers-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let down = Instant::now();
    let first = Consumer::start(&consumer_config(&dir, &mirror, queue.port, "consumer-1"));
    tokio::time::sleep(Duration::from_secs(2)).await;
    drop(first);
    // Another consumer takes over and keeps retrying while the mirror stays down 30 s.
    let _second = Consumer::start(&consumer_config(&dir, &mirror, queue.port, "consumer-2"));
    tokio::time::sleep(Duration::from_secs(30).saturating_sub(down.elapsed())).await;
    assert_eq!(
        stream_len(&mut q, "slotgate:mirror:dead").await,
        0,
        "an outage dead-letters nothing"
    );
    mirror.fault(&["restart", mirror.dir.to_str().unwrap(), &victim.to_string()]);
    wait_until_equal(&primary, &mirror).await;
    assert_eq!(dump(&mirror).await.len(), 500);
    // The outage was retried, never dead-lettered; applied entries are trimmed.
    assert_eq!(stream_len(&mut q, "slotgate:mirror:dead").await, 0);
    let deadline = Instant::now() + Duration::from_secs(10);
    while stream_len(&mut q, "slotgate:mirror").await > 0 {
        assert!(
            Instant::now() < deadline,
            "acknowledged entries never trimmed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_refuses_writes_instead_of_trimming_unapplied_ones() {
    let primary = Cluster::start_with(3, 0);
    let queue = Standalone::start().await;
    let proxy = Proxy::start_with(&primary, |c| {
        c.mirror.mode = MultiWriteMode::Async;
        c.mirror.queue = Some(QueueConfig {
            redis: format!("127.0.0.1:{}", queue.port),
            maxlen: 20,
            ..QueueConfig::default()
        });
    })
    .await;
    let mut con = proxy.client(2).await;
    let (mut accepted, mut refused) = (0, 0);
    for i in 0..60 {
        match con.set::<_, _, ()>(format!("full:{i}"), i).await {
            Ok(()) => accepted += 1,
            Err(e) => {
                assert!(e.to_string().contains("maxlen"), "{e}");
                refused += 1;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(refused > 0, "a full queue refuses writes");
    // Every accepted write is in the stream: none was trimmed to make room.
    let mut q = queue.con().await;
    assert_eq!(stream_len(&mut q, "slotgate:mirror").await, accepted);

    // A queue that cannot be reached: the client is told, never left believing the write
    // was recorded for the mirrors.
    drop(q);
    drop(queue);
    let started = Instant::now();
    let err = con
        .set::<_, _, ()>("unqueued", 1)
        .await
        .expect_err("a write the queue did not take was acknowledged");
    assert!(err.to_string().contains("queue"), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the error took {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_consumers_share_partitions_and_keep_each_slot_in_order() {
    let primary = Cluster::start_with(3, 0);
    let mirror = Cluster::start_with(3, 0);
    let queue = Standalone::start().await;
    let queue_config = QueueConfig {
        redis: format!("127.0.0.1:{}", queue.port),
        partitions: 4,
        ..QueueConfig::default()
    };
    let proxy = Proxy::start_with(&primary, |c| {
        c.mirror.mode = MultiWriteMode::Async;
        c.mirror.resources = vec![mirror_of(&mirror, "b")];
        c.mirror.queue = Some(queue_config.clone());
    })
    .await;
    let dir = std::env::temp_dir().join(format!("slotgate-partitions-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = |name: &str| {
        let path = dir.join(format!("{name}.yaml"));
        std::fs::write(
            &path,
            format!(
                "mirror:\n  resources:\n    - name: b\n      cluster: [{}]\n  queue:\n    redis: 127.0.0.1:{}\n    consumer: {name}\n    partitions: 4\n    claim_idle_ms: 1500\n",
                mirror.seeds, queue.port
            ),
        )
        .unwrap();
        path
    };
    let _one = Consumer::start(&config("consumer-1"));
    let _two = Consumer::start(&config("consumer-2"));
    // Both consumers end up holding partitions.
    let mut q = queue.con().await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut holders = std::collections::HashSet::new();
        for p in 0..4 {
            let h: Option<String> = q.get(format!("slotgate:mirror:{p}:lease")).await.unwrap();
            holders.extend(h);
        }
        if holders.len() == 2 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "partitions not shared: {holders:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Writes to the same keys, in order: each key's last value must win on the mirror.
    let mut con = proxy.client(2).await;
    for round in 0..50 {
        let mut pipe = redis::pipe();
        for k in 0..40 {
            pipe.set(format!("part:{k}"), round).ignore();
            pipe.rpush(format!("part:{k}:l"), round).ignore();
        }
        let _: () = pipe.query_async(&mut con).await.unwrap();
    }
    wait_until_equal(&primary, &mirror).await;
    let _ = std::fs::remove_dir_all(&dir);
}
