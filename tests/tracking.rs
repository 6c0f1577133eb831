//! Client-side caching through slotgate on a real cluster: CLIENT TRACKING in RESP3 and
//! with RESP2 REDIRECT, BCAST with prefixes, OPTIN, NOLOOP, on keys of every master, for
//! writes through slotgate and writes made on a node directly.

mod support;

use redis::AsyncCommands;
use support::{Cluster, Proxy, RawClient, key_on};

fn bulk(s: &str) -> String {
    format!("${}\r\n{s}\r\n", s.len())
}

fn keys_array(keys: &[&str]) -> String {
    let mut out = format!("*{}\r\n", keys.len());
    for k in keys {
        out.push_str(&bulk(k));
    }
    out
}

/// A RESP3 `invalidate` push.
fn invalidate(keys: &[&str]) -> Vec<u8> {
    format!(">2\r\n$10\r\ninvalidate\r\n{}", keys_array(keys)).into_bytes()
}

/// A redirected invalidation, as a RESP2 subscriber reads it.
fn redirected(keys: &[&str]) -> Vec<u8> {
    format!(
        "*3\r\n$7\r\nmessage\r\n$20\r\n__redis__:invalidate\r\n{}",
        keys_array(keys)
    )
    .into_bytes()
}

fn get(key: &str) -> Vec<u8> {
    format!("*2\r\n$3\r\nGET\r\n{}", bulk(key)).into_bytes()
}

/// A RESP3 connection through slotgate with tracking turned on with `options`.
async fn tracking_client(port: u16, options: &str) -> RawClient {
    let mut c = RawClient::connect(port).await;
    c.send(b"HELLO 3\r\nPING\r\n").await;
    c.expect_until(b"+PONG\r\n").await;
    c.send(
        format!("CLIENT TRACKING on {options}\r\n")
            .trim_end_matches(' ')
            .as_bytes(),
    )
    .await;
    c.expect(b"+OK\r\n").await;
    c
}

/// One key per master (prefix `prefix`), each set to `v0` through `w`.
async fn keys_of_every_master(
    cluster: &Cluster,
    w: &mut redis::aio::MultiplexedConnection,
    prefix: &str,
) -> Vec<String> {
    let mut keys = Vec::new();
    for &m in &cluster.master_ports {
        let k = key_on(cluster, m, prefix).await;
        let _: () = w.set(&k, "v0").await.unwrap();
        keys.push(k);
    }
    keys
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tracking_in_every_mode_on_keys_of_every_master() {
    let cluster = Cluster::start_with(3, 0);
    let proxy = Proxy::start(&cluster).await;
    let mut w = proxy.client(2).await;
    let keys = keys_of_every_master(&cluster, &mut w, "t:").await;

    // RESP3, default mode: a key read is announced when another client writes it, on
    // every master, once.
    let mut c = tracking_client(proxy.port, "").await;
    for k in &keys {
        c.send(&get(k)).await;
        c.expect(bulk("v0").as_bytes()).await;
    }
    for k in &keys {
        let _: () = w.set(k, "v1").await.unwrap();
        c.expect(&invalidate(&[k])).await;
    }
    // A write made on the node itself, not through slotgate, is announced too.
    c.send(&get(&keys[0])).await;
    c.expect(bulk("v1").as_bytes()).await;
    let mut node = cluster.node(cluster.master_ports[0]).await;
    let _: () = node.set(&keys[0], "v2").await.unwrap();
    c.expect(&invalidate(&[&keys[0]])).await;
    // Announced once: not read again, not announced again.
    let _: () = w.set(&keys[0], "v3").await.unwrap();
    c.send(b"CLIENT GETREDIR\r\nCLIENT TRACKINGINFO\r\n").await;
    c.expect(b":0\r\n%3\r\n$5\r\nflags\r\n~1\r\n$2\r\non\r\n$8\r\nredirect\r\n:0\r\n$8\r\nprefixes\r\n*0\r\n")
        .await;

    // RESP2 with REDIRECT: the target, subscribed to __redis__:invalidate, hears them.
    let (mut target, id) = redirect_target(proxy.port).await;
    let mut r2 = RawClient::connect(proxy.port).await;
    r2.send(format!("CLIENT TRACKING on REDIRECT {id}\r\nCLIENT GETREDIR\r\n").as_bytes())
        .await;
    r2.expect(format!("+OK\r\n:{id}\r\n").as_bytes()).await;
    r2.send(&get(&keys[1])).await;
    r2.expect(bulk("v1").as_bytes()).await;
    let _: () = w.set(&keys[1], "v4").await.unwrap();
    target.expect(&redirected(&[&keys[1]])).await;
    r2.send(b"CLIENT TRACKING on REDIRECT 999999\r\n").await;
    r2.expect(b"-ERR The client ID you want redirect to does not exist\r\n")
        .await;

    // BCAST with a prefix: keys under it are announced without being read, others not.
    let mut b = tracking_client(proxy.port, "BCAST PREFIX bc:").await;
    let _: () = w.set("zz:1", "x").await.unwrap();
    let _: () = w.set("bc:1", "x").await.unwrap();
    b.expect(&invalidate(&["bc:1"])).await;

    // OPTIN: only a read after CLIENT CACHING yes is tracked.
    let mut o = tracking_client(proxy.port, "OPTIN").await;
    o.send(&get(&keys[0])).await;
    o.expect(bulk("v3").as_bytes()).await;
    o.send(b"CLIENT CACHING yes\r\n").await;
    o.send(&get(&keys[2])).await;
    o.expect(format!("+OK\r\n{}", bulk("v1")).as_bytes()).await;
    let _: () = w.set(&keys[0], "v5").await.unwrap();
    let _: () = w.set(&keys[2], "v5").await.unwrap();
    o.expect(&invalidate(&[&keys[2]])).await;

    // NOLOOP: the client's own write is not announced to it; another client's is.
    let mut n = tracking_client(proxy.port, "NOLOOP").await;
    let k = &keys[1];
    n.send(&get(k)).await;
    n.send(format!("*3\r\n$3\r\nSET\r\n{}$3\r\nown\r\n", bulk(k)).as_bytes())
        .await;
    n.send(&get(k)).await;
    n.expect(format!("{}+OK\r\n{}", bulk("v4"), bulk("own")).as_bytes())
        .await;
    let _: () = w.set(k, "other").await.unwrap();
    n.expect(&invalidate(&[k])).await;

    // Nothing else reached any of them.
    for client in [&mut c, &mut b, &mut o, &mut n, &mut target] {
        client
            .expect_silence(std::time::Duration::from_millis(300))
            .await;
    }
    // INFO counts them.
    let info: String = redis::cmd("INFO")
        .arg("slotgate")
        .query_async(&mut w)
        .await
        .unwrap();
    assert!(info.contains("tracking_clients:5"), "{info}");

    // FLUSHALL through slotgate empties every master: a tracking client that read keys
    // is flushed.
    let _: () = redis::cmd("FLUSHALL").query_async(&mut w).await.unwrap();
    c.expect_until(b">2\r\n$10\r\ninvalidate\r\n_\r\n").await;

    // RESP3 with REDIRECT: once the target is gone, the client is told so.
    let mut gone = RawClient::connect(proxy.port).await;
    gone.send(b"CLIENT ID\r\n").await;
    let gone_id: u64 = gone.line().await.trim_start_matches(':').parse().unwrap();
    gone.send(b"SUBSCRIBE __redis__:invalidate\r\n").await;
    gone.expect_until(b":1\r\n").await;
    let mut rb = tracking_client(proxy.port, &format!("REDIRECT {gone_id}")).await;
    rb.send(&get(&keys[2])).await;
    rb.expect(b"_\r\n").await;
    drop(gone);
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let list: String = redis::cmd("CLIENT")
            .arg("LIST")
            .query_async(&mut w)
            .await
            .unwrap();
        if !list.contains(&format!("id={gone_id} ")) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{list}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let _: () = w.set(&keys[2], "after").await.unwrap();
    rb.expect(format!(">2\r\n$21\r\ntracking-redir-broken\r\n:{gone_id}\r\n").as_bytes())
        .await;
    rb.send(b"CLIENT TRACKINGINFO\r\n").await;
    rb.expect_until(b"broken_redirect").await;
    drop(rb);
    // One invalidation connection per master while clients track (flag t on the node)...
    let mut master = cluster.node(cluster.master_ports[1]).await;
    assert_eq!(tracking_connections(&mut master).await, 1);

    // ...and none once they are gone: their keys are forgotten, the connections closed.
    drop((c, b, o, n, r2, target));
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let info: String = redis::cmd("INFO")
            .arg("slotgate")
            .query_async(&mut w)
            .await
            .unwrap();
        let gone = info.contains("tracking_clients:0") && info.contains("tracking_keys:0");
        if gone && tracking_connections(&mut master).await == 0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "tracking state left behind: {info}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Connections of a node with tracking on (`t` in CLIENT LIST's flags).
async fn tracking_connections(node: &mut redis::aio::MultiplexedConnection) -> usize {
    tracking_connection_ids(node).await.len()
}

/// Ids of the node's connections with tracking on.
async fn tracking_connection_ids(node: &mut redis::aio::MultiplexedConnection) -> Vec<String> {
    support::client_list(node)
        .await
        .into_iter()
        .filter(|c| c.get("flags").is_some_and(|f| f.contains('t')))
        .filter_map(|c| c.get("id").cloned())
        .collect()
}

#[test]
fn redis_py_cache_stays_coherent_across_writes_and_a_failover() {
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};
    let cluster = Cluster::start();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (proxy, keys, counter) = rt.block_on(async {
        let proxy = Proxy::start(&cluster).await;
        let mut keys = Vec::new();
        for &m in &cluster.master_ports {
            keys.push(key_on(&cluster, m, "py:").await);
        }
        let counter = key_on(&cluster, cluster.master_ports[0], "counter:").await;
        (proxy, keys, counter)
    });
    let dir = std::env::temp_dir().join(format!("slotgate-tracking-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let stop = dir.join("stop");
    let (out, err) = (dir.join("out"), dir.join("err"));
    let mut script = support::Running(
        Command::new("python3")
            .arg(support::repo_root().join("tests/python/tracking_cache.py"))
            .arg(proxy.port.to_string())
            .arg(cluster.master_ports[0].to_string())
            .arg(keys.join(","))
            .arg(&counter)
            .arg(&stop)
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(std::fs::File::create(&err).unwrap())
            .stdin(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let report = || {
        format!(
            "{}\n{}",
            std::fs::read_to_string(&out).unwrap_or_default(),
            std::fs::read_to_string(&err).unwrap_or_default()
        )
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while !std::fs::read_to_string(&out)
        .unwrap_or_default()
        .contains("ready")
    {
        assert!(
            script.0.try_wait().unwrap().is_none(),
            "the cached client failed: {}",
            report()
        );
        assert!(Instant::now() < deadline, "never ready: {}", report());
        std::thread::sleep(Duration::from_millis(50));
    }
    let flushes = || -> u64 {
        rt.block_on(async {
            let mut con = proxy.client(2).await;
            support::slotgate_counter(&mut con, "tracking_flushes").await
        })
    };
    // The counter's master fails over while the reader reads through its cache.
    std::thread::sleep(Duration::from_millis(500));
    let flushes_before = flushes();
    let replica = cluster.replica_of(cluster.master_ports[0]);
    rt.block_on(async {
        cluster.fail_over_to(replica).await;
        let mut con = proxy.client(2).await;
        support::wait_for_slotgate_info(&mut con, &format!("addr=127.0.0.1:{replica},")).await;
    });
    std::thread::sleep(Duration::from_secs(1));
    // The slots that changed owner flushed every tracking client.
    assert!(flushes() > flushes_before, "no flush after the failover");
    std::fs::write(&stop, b"").unwrap();
    let status = script.0.wait().unwrap();
    let text = report();
    eprintln!("redis-py cached client: {text}");
    assert!(status.success(), "{text}");
    let field = |name: &str| -> u64 {
        text.split_whitespace()
            .find_map(|f| f.strip_prefix(&format!("{name}=")))
            .unwrap_or_else(|| panic!("no {name} in {text}"))
            .parse()
            .unwrap()
    };
    assert!(field("reads") > 50, "{text}");
    assert!(field("acked") > 10, "{text}");
    assert!(
        field("cache_hits") > 0,
        "the cache never served a read: {text}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_invalidation_connection_flushes_tracking_clients_until_it_is_back() {
    let cluster = Cluster::start_with(3, 0);
    let proxy = Proxy::start(&cluster).await;
    let port = cluster.master_ports[1];
    let key = key_on(&cluster, port, "lost:").await;
    let mut w = proxy.client(2).await;
    let _: () = w.set(&key, "v1").await.unwrap();
    let mut c = tracking_client(proxy.port, "").await;
    c.send(&get(&key)).await;
    c.expect(b"$2\r\nv1\r\n").await;

    // slotgate's invalidation connection to that master is killed, and the node then holds
    // every client for 3 s, so a new one cannot be confirmed meanwhile: changes made there
    // would go unheard, so the client must not keep its cache that long.
    let mut node = cluster.node(port).await;
    let ids = tracking_connection_ids(&mut node).await;
    assert_eq!(ids.len(), 1, "{ids:?}");
    let started = tokio::time::Instant::now();
    let mut pipe = redis::pipe();
    pipe.cmd("CLIENT").arg(&["KILL", "ID", &ids[0]]).ignore();
    pipe.cmd("CLIENT").arg(&["PAUSE", "3000", "ALL"]).ignore();
    let _: () = pipe.query_async(&mut node).await.unwrap();
    let flush = b">2\r\n$10\r\ninvalidate\r\n_\r\n";
    // A flush at once, and again while the connection is still not back.
    c.expect(flush).await;
    c.expect(flush).await;
    assert!(
        started.elapsed() < std::time::Duration::from_secs(2),
        "flushes came only after {:?}",
        started.elapsed()
    );
    // Once the node answers again, tracking goes on as before.
    tokio::time::sleep(std::time::Duration::from_millis(3000)).await;
    let _ = c.collect(std::time::Duration::from_millis(700)).await;
    c.send(&get(&key)).await;
    c.expect_until(b"$2\r\nv1\r\n").await;
    let _: () = w.set(&key, "v2").await.unwrap();
    c.expect_until(&invalidate(&[&key])).await;
}

/// A RESP2 connection subscribed to `__redis__:invalidate`, and its client id.
async fn redirect_target(port: u16) -> (RawClient, u64) {
    let mut target = RawClient::connect(port).await;
    target.send(b"CLIENT ID\r\n").await;
    let id: u64 = target.line().await.trim_start_matches(':').parse().unwrap();
    target.send(b"SUBSCRIBE __redis__:invalidate\r\n").await;
    target
        .expect(b"*3\r\n$9\r\nsubscribe\r\n$20\r\n__redis__:invalidate\r\n:1\r\n")
        .await;
    (target, id)
}

/// A RESP2 connection tracking with `options`, its invalidations redirected to `target`.
async fn redirecting_client(port: u16, target: u64, options: &str) -> RawClient {
    let mut c = RawClient::connect(port).await;
    c.send(format!("CLIENT TRACKING on REDIRECT {target} {options}\r\n").as_bytes())
        .await;
    c.expect(b"+OK\r\n").await;
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resp2_redirect_optout_noloop_and_several_prefixes() {
    let cluster = Cluster::start_with(3, 0);
    let proxy = Proxy::start(&cluster).await;
    let mut w = proxy.client(2).await;
    let keys = keys_of_every_master(&cluster, &mut w, "r2:").await;

    // RESP2 REDIRECT, default mode, keys of every master: writes through slotgate and
    // writes made on the nodes themselves reach the target.
    let (mut target, id) = redirect_target(proxy.port).await;
    let mut r = redirecting_client(proxy.port, id, "").await;
    for k in &keys {
        r.send(&get(k)).await;
        r.expect(bulk("v0").as_bytes()).await;
    }
    let _: () = w.set(&keys[0], "v1").await.unwrap();
    target.expect(&redirected(&[&keys[0]])).await;
    for (i, &m) in cluster.master_ports.iter().enumerate().skip(1) {
        let mut node = cluster.node(m).await;
        let _: () = node.set(&keys[i], "direct").await.unwrap();
        target.expect(&redirected(&[&keys[i]])).await;
    }

    // NOLOOP: the client's own write is not announced to its target; another's is.
    let (mut t2, id2) = redirect_target(proxy.port).await;
    let mut n = redirecting_client(proxy.port, id2, "NOLOOP").await;
    n.send(&get(&keys[0])).await;
    n.send(format!("*3\r\n$3\r\nSET\r\n{}$3\r\nown\r\n", bulk(&keys[0])).as_bytes())
        .await;
    n.expect(format!("{}+OK\r\n", bulk("v1")).as_bytes()).await;
    t2.expect_silence(std::time::Duration::from_millis(300))
        .await;
    n.send(&get(&keys[0])).await;
    n.expect(bulk("own").as_bytes()).await;
    let _: () = w.set(&keys[0], "theirs").await.unwrap();
    t2.expect(&redirected(&[&keys[0]])).await;

    // BCAST with two prefixes, redirected: keys under either are announced unread.
    let (mut t3, id3) = redirect_target(proxy.port).await;
    let _b = redirecting_client(proxy.port, id3, "BCAST PREFIX pa: PREFIX pb:").await;
    let _: () = w.set("pc:1", "x").await.unwrap();
    let _: () = w.set("pa:1", "x").await.unwrap();
    t3.expect(&redirected(&["pa:1"])).await;
    let _: () = w.set("pb:2", "x").await.unwrap();
    t3.expect(&redirected(&["pb:2"])).await;

    // OPTOUT over RESP3: reads are tracked unless CLIENT CACHING no comes first.
    let mut o = tracking_client(proxy.port, "OPTOUT").await;
    o.send(&get(&keys[1])).await;
    o.expect(bulk("direct").as_bytes()).await;
    o.send(b"CLIENT CACHING no\r\n").await;
    o.send(&get(&keys[2])).await;
    o.expect(format!("+OK\r\n{}", bulk("direct")).as_bytes())
        .await;
    let _: () = w.set(&keys[2], "v9").await.unwrap();
    let _: () = w.set(&keys[1], "v9").await.unwrap();
    o.expect(&invalidate(&[&keys[1]])).await;

    // Nothing else reached any of them.
    for client in [&mut target, &mut t2, &mut t3, &mut o] {
        client
            .expect_silence(std::time::Duration::from_millis(300))
            .await;
    }
}
