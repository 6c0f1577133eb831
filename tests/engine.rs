//! The request engine under pipelines: mirrored writes in every mode, a slot that moves
//! between two pipelined writes to one key, connection-state commands in the middle of a
//! pipeline, a client that half-closes, and unauthenticated clients that announce huge
//! requests. Each of these broke the first engine.

mod support;

use std::time::Duration;

use redis::AsyncCommands;
use redis::aio::MultiplexedConnection;
use slotgate::config::{MirrorResourceConfig, MultiWriteMode, QueueConfig};
use support::{Cluster, Proxy, RawClient, Standalone, key_on, stop};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The modes in which slotgate writes the mirrors itself.
const DIRECT_MODES: [MultiWriteMode; 3] = [
    MultiWriteMode::FirstResourceOnly,
    MultiWriteMode::AllResourcesNoCheck,
    MultiWriteMode::AllResourcesCheckError,
];

/// A request as RESP bytes.
fn resp(args: &[&str]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n{a}\r\n", a.len()).as_bytes());
    }
    out
}

/// Sends `pipeline` of SETs through one connection in one write and checks every reply.
async fn pipelined_sets(con: &mut MultiplexedConnection, prefix: &str, count: usize) {
    let mut pipe = redis::pipe();
    for i in 0..count {
        pipe.cmd("SET").arg(format!("{prefix}{i}")).arg(i);
    }
    let replies: Vec<String> = tokio::time::timeout(Duration::from_secs(20), pipe.query_async(con))
        .await
        .unwrap_or_else(|_| panic!("{count} pipelined writes ({prefix}) got no reply"))
        .unwrap();
    assert_eq!(replies, vec!["OK".to_string(); count]);
}

async fn dbsize(con: &mut MultiplexedConnection) -> usize {
    redis::cmd("DBSIZE").query_async(con).await.unwrap()
}

/// Sends `count` pipelined INCRs of `key` in one write: the replies must count up in
/// request order.
async fn pipelined_incrs(con: &mut MultiplexedConnection, key: &str, count: i64) {
    let mut pipe = redis::pipe();
    for _ in 0..count {
        pipe.incr(key, 1);
    }
    let replies: Vec<i64> = tokio::time::timeout(Duration::from_secs(20), pipe.query_async(con))
        .await
        .unwrap_or_else(|_| panic!("{count} pipelined INCRs of {key} got no reply"))
        .unwrap();
    assert_eq!(replies, (1..=count).collect::<Vec<_>>(), "{key}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_mirrored_writes_finish_in_every_mode() {
    let cluster = Cluster::start_with(3, 0);
    let modes = DIRECT_MODES.into_iter().chain([MultiWriteMode::Async]);
    for (m, mode) in modes.enumerate() {
        let mirror = Standalone::start().await;
        let queue = Standalone::start().await;
        let addr = format!("127.0.0.1:{}", mirror.port);
        let queue_addr = format!("127.0.0.1:{}", queue.port);
        let proxy = Proxy::start_with(&cluster, |c| {
            c.mirror.mode = mode;
            c.mirror.resources = vec![MirrorResourceConfig {
                name: "copy".into(),
                standalone: Some(addr),
                ..MirrorResourceConfig::default()
            }];
            if mode == MultiWriteMode::Async {
                c.mirror.queue = Some(QueueConfig {
                    redis: queue_addr,
                    ..QueueConfig::default()
                });
            }
        })
        .await;
        let mut con = proxy.client(2).await;
        pipelined_sets(&mut con, &format!("two{m}:"), 2).await;
        pipelined_sets(&mut con, &format!("hundred{m}:"), 100).await;
        pipelined_incrs(&mut con, &format!("order{m}"), 100).await;
        let mut writers = Vec::new();
        for w in 0..32 {
            let mut con = proxy.client(2).await;
            writers.push(tokio::spawn(async move {
                pipelined_sets(&mut con, &format!("w{m}:{w}:"), 50).await;
                pipelined_incrs(&mut con, &format!("order{m}:{w}"), 20).await;
            }));
        }
        for w in writers {
            w.await.unwrap();
        }
        let expected = 2 + 100 + 1 + 32 * 51;
        if mode == MultiWriteMode::Async {
            // Every acknowledged write is in the durable queue (the replies above kept their
            // order: the INCRs counted up).
            let mut q = queue.con().await;
            let len: usize = redis::cmd("XLEN")
                .arg("slotgate:mirror")
                .query_async(&mut q)
                .await
                .unwrap();
            assert_eq!(len, 2 + 100 + 100 + 32 * 70, "queued writes");
            continue;
        }
        // Every write reached the mirror too (at once in the modes that wait for it), and the
        // counters ended where the client's replies said.
        let mut copy = mirror.con().await;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let n = dbsize(&mut copy).await;
            let last: Option<i64> = copy.get(format!("order{m}")).await.unwrap();
            if n == expected && last == Some(100) {
                break;
            }
            assert!(
                mode == MultiWriteMode::FirstResourceOnly,
                "{mode:?}: mirror has {n} of {expected} keys and order{m}={last:?} when the client got its replies"
            );
            assert!(
                tokio::time::Instant::now() < deadline,
                "{mode:?}: mirror has {n} of {expected} keys and order{m}={last:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        for w in 0..32 {
            let v: i64 = copy.get(format!("order{m}:{w}")).await.unwrap();
            assert_eq!(v, 20, "{mode:?}: order{m}:{w} on the mirror");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_moved_between_two_pipelined_writes_keeps_their_order() {
    let cluster = Cluster::start_with(3, 0);
    let proxy = Proxy::start_with(&cluster, |c| {
        // Only MOVED replies change slotgate's table during the test.
        c.cluster.refresh_interval_ms = 600_000;
        // The two clients below must not share a backend connection (the paused node holds
        // everything behind the first write on its connection).
        c.cluster.connections_per_node = 2;
    })
    .await;
    let old_owner = cluster.master_ports[0];
    let new_owner = cluster.master_ports[1];
    let key = key_on(&cluster, old_owner, "order:").await;
    let slot = slotgate::slot::slot_of(key.as_bytes());

    // Two clients of slotgate: the writer and the one whose read brings the MOVED. Client
    // ids are consecutive, so with two connections per node they use different ones.
    let mut writer = RawClient::connect(proxy.port).await;
    writer.send(&resp(&["PING"])).await;
    writer.expect(b"+PONG\r\n").await;
    let mut reader = proxy.client(2).await;

    // The old owner holds writes for a while: `SET k 1` is sent there and waits.
    let mut old = cluster.node(old_owner).await;
    let _: () = redis::cmd("CLIENT")
        .arg(&["PAUSE", "3000", "WRITE"])
        .query_async(&mut old)
        .await
        .unwrap();
    writer.send(&resp(&["SET", &key, "1"])).await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Meanwhile the (empty) slot moves, and another client's read brings the MOVED that
    // updates slotgate's table.
    cluster.move_empty_slot(slot, new_owner).await;
    let seen: Option<String> = reader.get(&key).await.unwrap();
    assert_eq!(seen, None);

    // The second write goes out after the table changed; it must still apply second.
    writer.send(&resp(&["SET", &key, "2"])).await;
    let _: () = redis::cmd("CLIENT")
        .arg("UNPAUSE")
        .query_async(&mut old)
        .await
        .unwrap();
    writer.expect(b"+OK\r\n+OK\r\n").await;
    let mut new = cluster.node(new_owner).await;
    let value: String = new.get(&key).await.unwrap();
    assert_eq!(value, "2", "the first write was applied after the second");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_state_commands_act_between_their_neighbours() {
    let cluster = Cluster::start_with(3, 0);
    let proxy = Proxy::start_with(&cluster, |c| c.password = Some("pw".into())).await;
    let a = key_on(&cluster, cluster.master_ports[0], "state:a").await;
    let b = key_on(&cluster, cluster.master_ports[1], "state:b").await;
    let mut c = RawClient::connect(proxy.port).await;

    // Before AUTH a command is refused; after it in the same pipeline, it runs.
    let mut input = resp(&["GET", &a]);
    input.extend(resp(&["AUTH", "pw"]));
    input.extend(resp(&["SET", &a, "va"]));
    input.extend(resp(&["SET", &b, "vb"]));
    c.send(&input).await;
    c.expect(b"-NOAUTH Authentication required.\r\n+OK\r\n+OK\r\n+OK\r\n")
        .await;

    // RESET between two reads of different masters: each reply in its place.
    for _ in 0..20 {
        let mut input = resp(&["GET", &a]);
        input.extend(resp(&["RESET"]));
        input.extend(resp(&["AUTH", "pw"]));
        input.extend(resp(&["GET", &b]));
        c.send(&input).await;
        c.expect(b"$2\r\nva\r\n+RESET\r\n+OK\r\n$2\r\nvb\r\n").await;
    }

    // SELECT 0 and CLIENT SETNAME between reads.
    let mut input = resp(&["GET", &a]);
    input.extend(resp(&["SELECT", "0"]));
    input.extend(resp(&["GET", &b]));
    input.extend(resp(&["CLIENT", "SETNAME", "mid"]));
    input.extend(resp(&["GET", &a]));
    input.extend(resp(&["CLIENT", "GETNAME"]));
    c.send(&input).await;
    c.expect(b"$2\r\nva\r\n+OK\r\n$2\r\nvb\r\n+OK\r\n$2\r\nva\r\n$3\r\nmid\r\n")
        .await;

    // HELLO 3 between reads: the replies before it are RESP2, the ones after it RESP3. Read
    // on a connection of its own, straight from the socket (replies of unknown length).
    let missing = format!("{a}:missing");
    let mut input = resp(&["AUTH", "pw"]);
    input.extend(resp(&["GET", &missing]));
    input.extend(resp(&["HELLO", "3"]));
    input.extend(resp(&["GET", &missing]));
    input.extend(resp(&["HELLO", "2"]));
    input.extend(resp(&["GET", &missing]));
    let mut s = TcpStream::connect(("127.0.0.1", proxy.port)).await.unwrap();
    s.write_all(&input).await.unwrap();
    let mut rest = Vec::new();
    // Complete once HELLO 2's reply and the last GET's are in.
    while !(rest.ends_with(b"$-1\r\n") && String::from_utf8_lossy(&rest).contains("*14\r\n")) {
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut chunk))
            .await
            .unwrap_or_else(|_| {
                panic!("no more replies after {:?}", String::from_utf8_lossy(&rest))
            })
            .unwrap();
        assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&rest));
        rest.extend_from_slice(&chunk[..n]);
    }
    let text = String::from_utf8_lossy(&rest);
    assert!(text.starts_with("+OK\r\n$-1\r\n%"), "{text}");
    let after_hello3 = text.find("_\r\n").expect("a RESP3 null after HELLO 3");
    let hello2 = text.rfind("*14\r\n").expect("HELLO 2's array reply");
    assert!(after_hello3 < hello2, "{text}");
    assert!(text.ends_with("$-1\r\n"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_closed_client_gets_every_reply() {
    let cluster = Cluster::start_with(3, 0);
    let proxy = Proxy::start(&cluster).await;
    let mut s = TcpStream::connect(("127.0.0.1", proxy.port)).await.unwrap();
    let mut input = Vec::new();
    let mut expected = Vec::new();
    for i in 0..10 {
        input.extend(resp(&["SET", &format!("half:{i}"), &i.to_string()]));
        expected.extend_from_slice(b"+OK\r\n");
    }
    for i in 0..10 {
        input.extend(resp(&["GET", &format!("half:{i}")]));
        expected.extend_from_slice(format!("$1\r\n{i}\r\n").as_bytes());
    }
    s.write_all(&input).await.unwrap();
    s.shutdown().await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out))
        .await
        .expect("slotgate did not close after answering")
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out),
        String::from_utf8_lossy(&expected)
    );
}

/// Held by each test that measures `rss()`: the tests of this file share one process, so
/// two measuring at once would each see the other's memory.
static RSS_MEASURE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Resident memory of this process (slotgate runs in it), in bytes.
fn rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .unwrap()
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .unwrap();
    kb * 1024
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthenticated_clients_cannot_announce_big_requests() {
    let _measuring = RSS_MEASURE.lock().await;
    let cluster = Cluster::start_with(3, 0);
    let proxy = Proxy::start_with(&cluster, |c| c.password = Some("pw".into())).await;

    // Eleven arguments before AUTH.
    let (out, closed) = support::raw_exchange(
        proxy.port,
        &resp(&["DEL", "1", "2", "3", "4", "5", "6", "7", "8", "9", "10"]),
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(
        String::from_utf8_lossy(&out),
        "-ERR Protocol error: unauthenticated multibulk length\r\n"
    );
    assert!(closed);

    // A 200 MB bulk announced before AUTH: refused from its header, nothing buffered.
    let before = rss();
    let mut s = TcpStream::connect(("127.0.0.1", proxy.port)).await.unwrap();
    s.write_all(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$209715200\r\n")
        .await
        .unwrap();
    let chunk = vec![b'x'; 1 << 20];
    let mut sent = 0;
    for _ in 0..200 {
        match tokio::time::timeout(Duration::from_secs(5), s.write_all(&chunk)).await {
            Ok(Ok(())) => sent += 1,
            _ => break,
        }
    }
    let mut out = Vec::new();
    // The connection ends (a clean EOF, or a reset because the bulk was left unread).
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out))
        .await
        .expect("the connection stayed open after the refused bulk header");
    assert!(
        String::from_utf8_lossy(&out)
            .starts_with("-ERR Protocol error: unauthenticated bulk length\r\n"),
        "{}",
        String::from_utf8_lossy(&out)
    );
    let grown = rss().saturating_sub(before);
    assert!(
        grown < 10 << 20,
        "RSS grew by {grown} bytes ({sent} MB were sent)"
    );
    assert!(sent < 200, "slotgate read the whole 200 MB bulk");

    // After AUTH, big requests are fine.
    let mut c = RawClient::connect(proxy.port).await;
    let mut input = resp(&["AUTH", "pw"]);
    input.extend(resp(&[
        "DEL", "1", "2", "3", "4", "5", "6", "7", "8", "9", "{1}0",
    ]));
    c.send(&input).await;
    c.expect(b"+OK\r\n:0\r\n").await;
}

/// Closes every client connection of the node on `port` except the caller's own (slotgate's
/// shared connections reconnect; its session connections must not).
async fn kill_clients(cluster: &Cluster, port: u16) {
    let mut node = cluster.node(port).await;
    let _: i64 = redis::cmd("CLIENT")
        .arg(&["KILL", "TYPE", "normal", "SKIPME", "yes"])
        .query_async(&mut node)
        .await
        .unwrap();
    // Let slotgate see the connections close.
    tokio::time::sleep(Duration::from_millis(200)).await;
}

async fn query(con: &mut MultiplexedConnection, args: &[&str]) -> redis::RedisResult<redis::Value> {
    redis::cmd(args[0]).arg(&args[1..]).query_async(con).await
}

async fn connections_received(cluster: &Cluster, port: u16) -> u64 {
    let mut node = cluster.node(port).await;
    support::info_counter(&mut node, "stats", "total_connections_received").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_whose_connection_breaks_never_half_applies() {
    let cluster = Cluster::start_with(3, 0);
    let proxy = Proxy::start(&cluster).await;
    let port = cluster.master_ports[0];
    let k = key_on(&cluster, port, "tx:").await;
    let k2 = format!("{{{k}}}:other");

    // After WATCH: another client's change in between must make EXEC fail, even though
    // the connection that watched is gone.
    let mut a = proxy.client(2).await;
    query(&mut a, &["WATCH", &k]).await.unwrap();
    kill_clients(&cluster, port).await;
    let mut node = cluster.node(port).await;
    let _: () = node.set(&k, "other").await.unwrap();
    let _ = query(&mut a, &["MULTI"]).await;
    let _ = query(&mut a, &["SET", &k, "mine"]).await;
    let exec = query(&mut a, &["EXEC"]).await;
    assert!(
        matches!(exec, Err(_) | Ok(redis::Value::Nil)),
        "EXEC after a lost WATCH: {exec:?}"
    );
    let v: String = node.get(&k).await.unwrap();
    assert_eq!(v, "other");

    // After MULTI (pinned by WATCH first): the next command must not run outside the
    // transaction.
    let mut a = proxy.client(2).await;
    query(&mut a, &["WATCH", &k2]).await.unwrap();
    query(&mut a, &["MULTI"]).await.unwrap();
    kill_clients(&cluster, port).await;
    assert!(query(&mut a, &["SET", &k2, "half"]).await.is_err());
    assert!(query(&mut a, &["EXEC"]).await.is_err());
    let mut node = cluster.node(port).await;
    let v: Option<String> = node.get(&k2).await.unwrap();
    assert_eq!(v, None, "a command ran outside its transaction");

    // After a queued command: neither it nor the next one is applied.
    let mut a = proxy.client(2).await;
    query(&mut a, &["MULTI"]).await.unwrap();
    query(&mut a, &["SET", &k2, "first"]).await.unwrap();
    kill_clients(&cluster, port).await;
    assert!(query(&mut a, &["SET", &k2, "second"]).await.is_err());
    assert!(query(&mut a, &["EXEC"]).await.is_err());
    let mut node = cluster.node(port).await;
    let v: Option<String> = node.get(&k2).await.unwrap();
    assert_eq!(v, None, "part of a transaction was applied");

    // The client's connection is usable afterwards, and a new transaction works.
    query(&mut a, &["MULTI"]).await.unwrap();
    query(&mut a, &["SET", &k2, "whole"]).await.unwrap();
    query(&mut a, &["EXEC"]).await.unwrap();
    let v: String = node.get(&k2).await.unwrap();
    assert_eq!(v, "whole");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_connections_are_reused() {
    let cluster = Cluster::start_with(3, 0);
    let proxy = Proxy::start(&cluster).await;
    let port = cluster.master_ports[0];
    let k = key_on(&cluster, port, "reuse:").await;
    let mut a = proxy.client(2).await;
    // Warm up: one of each opens its connection.
    query(&mut a, &["MULTI"]).await.unwrap();
    query(&mut a, &["INCR", &k]).await.unwrap();
    query(&mut a, &["EXEC"]).await.unwrap();
    query(&mut a, &["WAIT", "0", "0"]).await.unwrap();
    let _ = query(&mut a, &["BLPOP", &format!("{{{k}}}:list"), "0.01"]).await;
    let _: () = a.rpush(format!("{{{k}}}:list"), "x").await.unwrap();
    let _: String = a.lpop(format!("{{{k}}}:list"), None).await.unwrap();
    let before = connections_received(&cluster, port).await;
    for i in 0..50 {
        query(&mut a, &["WATCH", &k]).await.unwrap();
        query(&mut a, &["MULTI"]).await.unwrap();
        query(&mut a, &["INCR", &k]).await.unwrap();
        query(&mut a, &["EXEC"]).await.unwrap();
        let list = format!("{{{k}}}:list");
        let _: () = a.rpush(&list, i).await.unwrap();
        let popped: (String, String) = a.blpop(&list, 1.0).await.unwrap();
        assert_eq!(popped.1, i.to_string());
        let acked: i64 = redis::cmd("WAIT")
            .arg(0)
            .arg(0)
            .query_async(&mut a)
            .await
            .unwrap();
        assert_eq!(acked, 0);
    }
    let opened = connections_received(&cluster, port).await - before;
    // The direct connection this check makes itself, and slotgate's topology connection to
    // this node if a refresh asks it for the first time meanwhile; without reuse it is 151.
    assert!(
        opened <= 3,
        "{opened} connections opened for 50 transactions and pops"
    );
    let v: i64 = a.get(&k).await.unwrap();
    assert_eq!(v, 51);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_node_costs_a_deadline_not_a_hang() {
    let cluster = Cluster::start();
    let proxy = Proxy::start_with(&cluster, |c| {
        c.cluster.command_timeout_ms = 1500;
        c.cluster.refresh_interval_ms = 300;
    })
    .await;
    let mut con = proxy.client(2).await;

    // A stopped replica, which the topology manager asks like any node: slot moves are
    // still learned.
    let replica = cluster.replica_of(cluster.master_ports[1]);
    {
        let _stopped = stop(&cluster, replica);
        let generation = support::slotgate_counter(&mut con, "topology_generation").await;
        let slot = slotgate::slot::slot_of(
            key_on(&cluster, cluster.master_ports[1], "mv:")
                .await
                .as_bytes(),
        );
        cluster.move_empty_slot(slot, cluster.master_ports[2]).await;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while support::slotgate_counter(&mut con, "topology_generation").await == generation {
            assert!(
                tokio::time::Instant::now() < deadline,
                "slot move not learned while a node is stopped"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    // A stopped master: its clients get an error within the deadline, other masters serve
    // meanwhile, and writes come back soon after its replica is promoted.
    let victim = cluster.master_ports[0];
    let replica = cluster.replica_of(victim);
    let a = key_on(&cluster, victim, "stall:a").await;
    let b = key_on(&cluster, cluster.master_ports[2], "stall:b").await;
    let _: () = con.set(&a, "before").await.unwrap();
    let _stopped = stop(&cluster, victim);

    let mut stalled = proxy.client(2).await;
    let key = a.clone();
    let write = tokio::spawn(async move {
        let started = tokio::time::Instant::now();
        let r: redis::RedisResult<()> = stalled.set(&key, "during").await;
        (r, started.elapsed())
    });
    let mut other = proxy.client(2).await;
    for i in 0..20 {
        let started = tokio::time::Instant::now();
        let _: () = other.set(&b, i).await.unwrap();
        let v: i64 = other.get(&b).await.unwrap();
        assert_eq!(v, i);
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "another master was slow while one is stopped"
        );
    }
    let (result, took) = tokio::time::timeout(Duration::from_secs(10), write)
        .await
        .expect("a write to a stopped master hung")
        .unwrap();
    let err = result.expect_err("a write to a stopped master succeeded");
    assert!(
        err.to_string().contains("may or may not"),
        "unexpected error: {err}"
    );
    assert!(took < Duration::from_millis(3000), "error after {took:?}");

    // Promotion (cluster-node-timeout is 2 s in cluster.sh).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while cluster.fault(&["role", &replica.to_string()]) != "master" {
        assert!(
            tokio::time::Instant::now() < deadline,
            "replica never promoted"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let promoted = tokio::time::Instant::now();
    let mut writer = proxy.client(2).await;
    loop {
        let r: redis::RedisResult<()> = writer.set(&a, "after").await;
        if r.is_ok() {
            break;
        }
        assert!(
            promoted.elapsed() < Duration::from_secs(4),
            "writes not back 4 s after the promotion: {r:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(promoted.elapsed() < Duration::from_secs(4));
    let mut new_master = cluster.node(replica).await;
    let v: String = new_master.get(&a).await.unwrap();
    assert_eq!(v, "after");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_cut_at_its_output_bound() {
    let _measuring = RSS_MEASURE.lock().await;
    let cluster = Cluster::start_with(3, 0);
    let proxy = Proxy::start_with(&cluster, |c| {
        c.limits.client_output_buffer = 4 << 20;
    })
    .await;
    let mut con = proxy.client(2).await;
    let big = "x".repeat(1 << 20);
    let _: () = con.set("big", &big).await.unwrap();

    let before = rss();
    let mut s = TcpStream::connect(("127.0.0.1", proxy.port)).await.unwrap();
    let mut input = Vec::new();
    for _ in 0..300 {
        input.extend(resp(&["GET", "big"]));
    }
    s.write_all(&input).await.unwrap();
    // Never read: slotgate must close the connection instead of holding 300 MB of replies.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let grown = rss().saturating_sub(before);
    let mut total = 0usize;
    let mut buf = vec![0u8; 1 << 20];
    let closed = loop {
        match tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break true,
            Ok(Ok(n)) => total += n,
            Err(_) => break false,
        }
    };
    assert!(closed, "the connection stayed open after {total} bytes");
    assert!(
        total < 300 << 20,
        "every reply was delivered ({total} bytes)"
    );
    assert!(grown < 64 << 20, "RSS grew by {grown} bytes");
    // Other clients are fine.
    let v: String = con.get("big").await.unwrap();
    assert_eq!(v.len(), 1 << 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replies_behind_a_stalled_head_count_toward_the_output_bound() {
    let _measuring = RSS_MEASURE.lock().await;
    let cluster = Cluster::start_with(3, 0);
    let proxy = Proxy::start_with(&cluster, |c| {
        c.limits.client_output_buffer = 4 << 20;
        c.cluster.command_timeout_ms = 20_000;
    })
    .await;
    let mut con = proxy.client(2).await;
    let (stalled, other) = (cluster.master_ports[0], cluster.master_ports[1]);
    let head = key_on(&cluster, stalled, "head:").await;
    let big_key = key_on(&cluster, other, "big:").await;
    let big = "x".repeat(1 << 20);
    let _: () = con.set(&big_key, &big).await.unwrap();

    // The head of the pipeline waits on a paused node; the client goes on pipelining reads
    // of 1 MB (one group per read), whose replies complete behind the head: 300 MB, were
    // they all held until it answers.
    cluster.fault(&["pause", &stalled.to_string(), "5000"]);
    let before = rss();
    let mut peak = 0;
    let mut s = TcpStream::connect(("127.0.0.1", proxy.port)).await.unwrap();
    s.write_all(&resp(&["GET", &head])).await.unwrap();
    let mut ten = Vec::new();
    for _ in 0..10 {
        ten.extend(resp(&["GET", &big_key]));
    }
    for _ in 0..30 {
        if s.write_all(&ten).await.is_err() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(30)).await;
        peak = peak.max(rss().saturating_sub(before));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    peak = peak.max(rss().saturating_sub(before));
    let mut buf = vec![0u8; 1 << 20];
    let closed = loop {
        match tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break true,
            Ok(Ok(_)) => {}
            Err(_) => break false,
        }
    };
    assert!(closed, "the connection stayed open");
    assert!(peak < 64 << 20, "RSS grew by {peak} bytes");
    let info: String = redis::cmd("INFO")
        .arg("slotgate")
        .query_async(&mut con)
        .await
        .unwrap();
    assert!(
        info.contains("output_buffer_closes:1\r\n"),
        "not counted: {info}"
    );
    // Other clients are fine.
    let v: String = con.get(&big_key).await.unwrap();
    assert_eq!(v.len(), 1 << 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_node_asked_first_for_the_topology_costs_a_deadline() {
    // No periodic refresh during the test: only the MOVED below asks for one, and it asks
    // the stopped node first.
    let cluster = Cluster::start();
    let proxy = Proxy::start_with(&cluster, |c| {
        c.cluster.command_timeout_ms = 1500;
        c.cluster.connect_timeout_ms = 500;
        c.cluster.refresh_interval_ms = 600_000;
    })
    .await;
    let mut con = proxy.client(2).await;
    let [m0, m1, m2] = [
        cluster.master_ports[0],
        cluster.master_ports[1],
        cluster.master_ports[2],
    ];
    let hinted = key_on(&cluster, m1, "hint:").await;
    let learned = key_on(&cluster, m0, "learn:").await;
    let _: () = con.set(&learned, "v").await.unwrap();
    let _: () = con.del(&learned).await.unwrap();
    // The refreshes of slotgate's start are over before the slots move.
    let mut seen = support::slotgate_counter(&mut con, "topology_generation").await;
    loop {
        tokio::time::sleep(Duration::from_millis(700)).await;
        let now = support::slotgate_counter(&mut con, "topology_generation").await;
        if now == seen {
            break;
        }
        seen = now;
    }
    // Both slots move while slotgate is not looking, and every node learns it (so that any
    // node the refresh asks tells the same); then the new owner of the first stops.
    let (s1, s2) = (
        slotgate::slot::slot_of(hinted.as_bytes()),
        slotgate::slot::slot_of(learned.as_bytes()),
    );
    cluster.move_empty_slot(s1, m2).await;
    cluster.move_empty_slot(s2, m1).await;
    cluster.wait_until_all_see(s1, m2).await;
    cluster.wait_until_all_see(s2, m1).await;
    let _stopped = stop(&cluster, m2);
    let before = support::slotgate_counter(&mut con, "topology_generation").await;
    let redirects = support::slotgate_counter(&mut con, "redirects_moved").await;
    // m1 answers MOVED to m2: slotgate applies it (one generation) and asks m2 first for the
    // topology; m2 does not answer, so the refresh must go on to another node.
    let mut stalled = proxy.client(2).await;
    let key = hinted.clone();
    let write = tokio::spawn(async move {
        let r: redis::RedisResult<()> = stalled.set(&key, "x").await;
        r
    });
    let deadline = tokio::time::Instant::now() + Duration::from_secs(6);
    while support::slotgate_counter(&mut con, "redirects_moved").await == redirects {
        assert!(
            tokio::time::Instant::now() < deadline,
            "slotgate knew the move before m1 sent MOVED: the refresh was not hinted"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    while support::slotgate_counter(&mut con, "topology_generation").await < before + 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the refresh that asked the stopped node first never completed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The refresh learned the other move: no MOVED is needed for it.
    let moved = support::slotgate_counter(&mut con, "redirects_moved").await;
    let v: Option<String> = con.get(&learned).await.unwrap();
    assert_eq!(v, None);
    assert_eq!(
        support::slotgate_counter(&mut con, "redirects_moved").await,
        moved,
        "the second move was learned from a MOVED, not from the refresh"
    );
    let r = tokio::time::timeout(Duration::from_secs(10), write)
        .await
        .expect("a write to a stopped master hung")
        .unwrap();
    assert!(r.is_err(), "a write to a stopped master succeeded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_after_a_blocking_command_runs_after_it() {
    let cluster = Cluster::start_with(3, 0);
    let proxy = Proxy::start(&cluster).await;
    let list = key_on(&cluster, cluster.master_ports[1], "after-block:").await;
    // One write: the BLPOP must time out before the RPUSH behind it runs, as on one Redis
    // connection; had the RPUSH gone first, the BLPOP would have taken its element.
    let mut c = RawClient::connect(proxy.port).await;
    let mut input = resp(&["BLPOP", &list, "0.3"]);
    input.extend(resp(&["RPUSH", &list, "x"]));
    input.extend(resp(&["LLEN", &list]));
    c.send(&input).await;
    c.expect(b"*-1\r\n:1\r\n:1\r\n").await;
}

/// The bytes waiting in the query buffers of the node's clients, at most.
async fn largest_query_buffer(node: &mut MultiplexedConnection) -> usize {
    support::client_list(node)
        .await
        .iter()
        .filter_map(|c| c.get("qbuf")?.parse().ok())
        .max()
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pipeline_window_bounds_requests_in_flight_by_count_and_by_bytes() {
    let cluster = Cluster::start_with(3, 0);
    let master = cluster.master_ports[0];
    let value = "x".repeat(1000);
    let key = key_on(&cluster, master, "window:").await;
    let set = resp(&["SET", &key, &value]);
    type Tweak = fn(&mut slotgate::config::Config);
    let bounds: [(&str, Tweak); 2] = [
        ("pipeline_window 3", |c| c.limits.pipeline_window = 3),
        ("pipeline_window_bytes 2500", |c| {
            c.limits.pipeline_window_bytes = 2500
        }),
    ];
    for (bound, tweak) in bounds {
        let proxy = Proxy::start_with(&cluster, tweak).await;
        let mut c = RawClient::connect(proxy.port).await;
        c.send(&resp(&["PING"])).await;
        c.expect(b"+PONG\r\n").await;
        // The master holds writes: what slotgate sent waits in its query buffer.
        let mut node = cluster.node(master).await;
        let _: () = redis::cmd("CLIENT")
            .arg(&["PAUSE", "5000", "WRITE"])
            .query_async(&mut node)
            .await
            .unwrap();
        c.send(&set.repeat(10)).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        // Three in flight: one held by the pause, two behind it (ten without a bound).
        let waiting = largest_query_buffer(&mut node).await;
        let _: () = redis::cmd("CLIENT")
            .arg("UNPAUSE")
            .query_async(&mut node)
            .await
            .unwrap();
        assert!(
            waiting >= set.len() && waiting <= 2 * set.len(),
            "{bound}: {waiting} bytes sent ahead ({} per SET)",
            set.len()
        );
        c.expect(&b"+OK\r\n".repeat(10)).await;
    }
}
