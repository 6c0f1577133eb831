//! Command coverage through slotgate on a real cluster: multi-key commands split across
//! slots, cluster-wide commands (SCAN, KEYS, DBSIZE, RANDOMKEY, FLUSHALL), scripts, and
//! blocking commands on connections of their own.

mod support;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;
use redis::{AsyncCommands, Value};
use support::{Cluster, Proxy, key_on, slotgate_counter};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_key_commands_split_and_merge_in_order() {
    let cluster = Cluster::start();
    let proxy = Proxy::start(&cluster).await;
    for resp in [2, 3] {
        let mut con = proxy.client(resp).await;
        let p = format!("r{resp}:");
        let keys: Vec<String> = (0..20).map(|i| format!("{p}k{i}")).collect();
        let mut mset = redis::cmd("MSET");
        for (i, k) in keys.iter().enumerate() {
            mset.arg(k).arg(format!("v{i}"));
        }
        let ok: String = mset.query_async(&mut con).await.unwrap();
        assert_eq!(ok, "OK");
        // Values come back in the client's key order, with nils where keys are missing.
        let mut asked = keys.clone();
        asked.insert(3, format!("{p}missing"));
        asked.push(keys[0].clone());
        let values: Vec<Option<String>> = con.mget(&asked).await.unwrap();
        let mut expected: Vec<Option<String>> = (0..20).map(|i| Some(format!("v{i}"))).collect();
        expected.insert(3, None);
        expected.push(Some("v0".into()));
        assert_eq!(values, expected);
        // Counts are summed; duplicates count as on a standalone server.
        let dup = [&keys[0], &keys[0], &keys[5], &format!("{p}missing")];
        assert_eq!(con.exists::<_, i64>(&dup[..]).await.unwrap(), 3);
        let n: i64 = redis::cmd("TOUCH")
            .arg(&keys[..10])
            .query_async(&mut con)
            .await
            .unwrap();
        assert_eq!(n, 10);
        assert_eq!(con.del::<_, i64>(&keys[..5]).await.unwrap(), 5);
        let n: i64 = redis::cmd("UNLINK")
            .arg(&keys[..10])
            .query_async(&mut con)
            .await
            .unwrap();
        assert_eq!(n, 5);
        assert_eq!(con.exists::<_, i64>(&keys[..]).await.unwrap(), 10);
        // MSETNX cannot be atomic across slots.
        let err = redis::cmd("MSETNX")
            .arg(&[&keys[0], "x", &keys[1], "y"])
            .query_async::<Value>(&mut con)
            .await
            .unwrap_err();
        assert_eq!(err.code(), Some("CROSSSLOT"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_multi_key_requests() {
    let cluster = Cluster::start();
    let proxy = Proxy::start(&cluster).await;
    let mut con = proxy.client(2).await;
    let keys: Vec<String> = (0..10_000).map(|i| format!("big:{i}")).collect();
    let mut mset = redis::cmd("MSET");
    for k in &keys {
        mset.arg(k).arg(k);
    }
    let _: () = mset.query_async(&mut con).await.unwrap();
    let values: Vec<String> = con.mget(&keys).await.unwrap();
    assert_eq!(values, keys);

    let big = vec![b'x'; 10 * 1024 * 1024];
    let _: () = redis::cmd("MSET")
        .arg("huge:a")
        .arg(&big[..])
        .arg("huge:b")
        .arg(&big[..])
        .query_async(&mut con)
        .await
        .unwrap();
    let got: Vec<Vec<u8>> = con.mget(&["huge:b", "huge:a"]).await.unwrap();
    assert!(got.iter().all(|v| v == &big));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_wide_commands() {
    let cluster = Cluster::start();
    let proxy = Proxy::start(&cluster).await;
    let mut con = proxy.client(2).await;
    let mut pipe = redis::pipe();
    for i in 0..10_000 {
        pipe.set(format!("scan:{i}"), i).ignore();
    }
    let _: () = pipe.query_async(&mut con).await.unwrap();
    let _: () = con.set("{tagged}a", 1).await.unwrap();
    let _: () = con.set("{tagged}b", 1).await.unwrap();

    assert_eq!(
        redis::cmd("DBSIZE")
            .query_async::<i64>(&mut con)
            .await
            .unwrap(),
        10_002
    );
    // Every master holds part of the data.
    for port in &cluster.master_ports {
        let mut node = cluster.node(*port).await;
        assert!(
            redis::cmd("DBSIZE")
                .query_async::<i64>(&mut node)
                .await
                .unwrap()
                > 1000
        );
    }

    // SCAN visits every key exactly once, with integer cursors.
    for resp in [2, 3] {
        let mut con = proxy.client(resp).await;
        let mut seen = HashSet::new();
        let mut cursor: u64 = 0;
        let mut calls = 0;
        loop {
            let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg("scan:*")
                .arg("COUNT")
                .arg(500)
                .query_async(&mut con)
                .await
                .unwrap();
            for k in keys {
                assert!(seen.insert(k), "key returned twice");
            }
            calls += 1;
            cursor = next;
            if cursor == 0 {
                break;
            }
        }
        assert_eq!(seen.len(), 10_000);
        assert!(calls > 3);
    }
    // A hash-tag pattern scans only the master of that slot.
    let (cursor, mut keys): (u64, Vec<String>) = redis::cmd("SCAN")
        .arg(0)
        .arg("MATCH")
        .arg("{tagged}*")
        .arg("COUNT")
        .arg(100_000)
        .query_async(&mut con)
        .await
        .unwrap();
    keys.sort();
    assert_eq!(
        (cursor, keys),
        (0, vec!["{tagged}a".to_string(), "{tagged}b".to_string()])
    );

    let mut keys: Vec<String> = con.keys("scan:1?").await.unwrap();
    keys.sort();
    assert_eq!(
        keys,
        (10..20).map(|i| format!("scan:{i}")).collect::<Vec<_>>()
    );
    let k: String = redis::cmd("RANDOMKEY").query_async(&mut con).await.unwrap();
    assert!(k.starts_with("scan:") || k.starts_with("{tagged}"));

    // CLUSTER answers as a standalone server does, so clients stay in standalone mode.
    let err = redis::cmd("CLUSTER")
        .arg("INFO")
        .query_async::<Value>(&mut con)
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("cluster support disabled"),
        "{err}"
    );

    let _: () = redis::cmd("FLUSHALL").query_async(&mut con).await.unwrap();
    assert_eq!(
        redis::cmd("DBSIZE")
            .query_async::<i64>(&mut con)
            .await
            .unwrap(),
        0
    );
    let k: Option<String> = redis::cmd("RANDOMKEY").query_async(&mut con).await.unwrap();
    assert_eq!(k, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scripts_route_by_keys_and_survive_a_flushed_master() {
    let cluster = Cluster::start();
    let proxy = Proxy::start(&cluster).await;
    let mut con = proxy.client(2).await;
    let script = "redis.call('SET', KEYS[1], ARGV[1]); return redis.call('GET', KEYS[1])";
    for (i, port) in cluster.master_ports.iter().enumerate() {
        let k = key_on(&cluster, *port, &format!("ev{i}:")).await;
        let v: String = redis::cmd("EVAL")
            .arg(script)
            .arg(1)
            .arg(&k)
            .arg("x")
            .query_async(&mut con)
            .await
            .unwrap();
        assert_eq!(v, "x");
    }
    let err = redis::cmd("EVAL")
        .arg(script)
        .arg(2)
        .arg("foo")
        .arg("bar")
        .arg("x")
        .query_async::<Value>(&mut con)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("CROSSSLOT"));
    let none: i64 = redis::cmd("EVAL")
        .arg("return 7")
        .arg(0)
        .query_async(&mut con)
        .await
        .unwrap();
    assert_eq!(none, 7);

    // SCRIPT LOAD reaches every master; EXISTS is 1 only where all have it.
    let sha: String = redis::cmd("SCRIPT")
        .arg("LOAD")
        .arg(script)
        .query_async(&mut con)
        .await
        .unwrap();
    let exists: Vec<i64> = redis::cmd("SCRIPT")
        .arg("EXISTS")
        .arg(&sha)
        .arg("0000")
        .query_async(&mut con)
        .await
        .unwrap();
    assert_eq!(exists, [1, 0]);
    let target = cluster.master_ports[1];
    let mut node = cluster.node(target).await;
    let _: () = redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query_async(&mut node)
        .await
        .unwrap();
    let exists: Vec<i64> = redis::cmd("SCRIPT")
        .arg("EXISTS")
        .arg(&sha)
        .query_async(&mut con)
        .await
        .unwrap();
    // slotgate remembers the body: EVALSHA through it runs the script on any master (it
    // loads it where it is missing), so the script exists for its clients.
    assert_eq!(exists, [1]);
    // The master lost the script, but the client never sees NOSCRIPT for it.
    let k = key_on(&cluster, target, "sha:").await;
    let v: String = redis::cmd("EVALSHA")
        .arg(&sha)
        .arg(1)
        .arg(&k)
        .arg("y")
        .query_async(&mut con)
        .await
        .unwrap();
    assert_eq!(v, "y");
    // After SCRIPT FLUSH through slotgate, NOSCRIPT is the right answer.
    let _: () = redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query_async(&mut con)
        .await
        .unwrap();
    let err = redis::cmd("EVALSHA")
        .arg(&sha)
        .arg(1)
        .arg(&k)
        .arg("y")
        .query_async::<Value>(&mut con)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("NOSCRIPT"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocking_clients_do_not_stall_others() {
    let cluster = Cluster::start();
    let proxy = Proxy::start_with(&cluster, |c| c.cluster.connections_per_node = 1).await;
    let mut con = proxy.client(2).await;

    // Baseline latency of GET/SET before anything blocks.
    let measure = |mut con: MultiplexedConnection| async move {
        let started = Instant::now();
        for i in 0..300 {
            let _: () = con.set(format!("lat:{i}"), i).await.unwrap();
            let _: i64 = con.get(format!("lat:{i}")).await.unwrap();
        }
        started.elapsed()
    };
    let baseline = measure(proxy.client(2).await).await;

    let mut blocked = Vec::new();
    for i in 0..100 {
        let mut c = proxy.client(2).await;
        blocked.push(tokio::spawn(async move {
            let v: Option<(String, String)> = c.blpop(format!("queue:{i}"), 30.0).await.unwrap();
            v
        }));
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while slotgate_counter(&mut con, "dedicated_connections").await < 100 {
        assert!(Instant::now() < deadline, "BLPOPs did not all start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let loaded = measure(proxy.client(2).await).await;
    // A generous bound: blocked clients hold their own connections, not the shared ones.
    assert!(
        loaded < baseline * 5 + Duration::from_millis(500),
        "baseline {baseline:?}, with 100 blocked clients {loaded:?}"
    );
    // Each BLPOP wakes on its own push.
    for i in 0..100 {
        let _: () = con.rpush(format!("queue:{i}"), i).await.unwrap();
    }
    for (i, b) in blocked.into_iter().enumerate() {
        let got = tokio::time::timeout(Duration::from_secs(10), b)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got, Some((format!("queue:{i}"), i.to_string())));
    }
    assert_eq!(slotgate_counter(&mut con, "dedicated_connections").await, 0);

    // A client that leaves mid-block frees its backend connection.
    {
        let (out, closed) =
            support::raw_exchange(proxy.port, b"BLPOP gone 0\r\n", Duration::from_millis(300))
                .await;
        assert!(out.is_empty() && !closed);
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while slotgate_counter(&mut con, "dedicated_connections").await != 0 {
        assert!(Instant::now() < deadline, "blocked connection not released");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // And the node no longer has it blocked (it sees the connection close a moment later).
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut total_blocked = 0;
        for port in &cluster.master_ports {
            let mut node = cluster.node(*port).await;
            total_blocked += support::info_counter(&mut node, "clients", "blocked_clients").await;
        }
        if total_blocked == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{total_blocked} clients still blocked on the nodes"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Pipelined commands behind a blocking one keep their order.
    let (out, _) = support::raw_exchange(
        proxy.port,
        b"BLPOP nothing 0.2\r\nSET after 1\r\nGET after\r\n",
        Duration::from_secs(2),
    )
    .await;
    assert_eq!(out, b"*-1\r\n+OK\r\n$1\r\n1\r\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_pin_to_one_master() {
    let cluster = Cluster::start();
    let proxy = Proxy::start(&cluster).await;
    let wait = Duration::from_millis(500);

    // MULTI/EXEC, with a keyless command before the first key.
    let (out, _) = support::raw_exchange(
        proxy.port,
        b"MULTI\r\nPING\r\nSET {t}a 1\r\nINCR {t}a\r\nGET {t}a\r\nEXEC\r\nGET {t}a\r\n",
        wait,
    )
    .await;
    assert_eq!(
        String::from_utf8_lossy(&out),
        "+OK\r\n+QUEUED\r\n+QUEUED\r\n+QUEUED\r\n+QUEUED\r\n*4\r\n+PONG\r\n+OK\r\n:2\r\n$1\r\n2\r\n$1\r\n2\r\n"
    );

    // The same through the redis crate's atomic pipeline, in RESP3.
    let mut con = proxy.client(3).await;
    let (a, b): (i64, i64) = redis::pipe()
        .atomic()
        .incr("{t}x", 1)
        .incr("{t}x", 10)
        .query_async(&mut con)
        .await
        .unwrap();
    assert_eq!((a, b), (1, 11));

    // WATCH: a change by another client aborts EXEC (nil reply).
    let mut watcher = proxy.client(2).await;
    let mut other = proxy.client(2).await;
    let _: () = redis::cmd("WATCH")
        .arg("{w}k")
        .query_async(&mut watcher)
        .await
        .unwrap();
    let _: () = other.set("{w}k", "changed").await.unwrap();
    let _: () = redis::cmd("MULTI").query_async(&mut watcher).await.unwrap();
    let q: String = redis::cmd("SET")
        .arg("{w}k")
        .arg("mine")
        .query_async(&mut watcher)
        .await
        .unwrap();
    assert_eq!(q, "QUEUED");
    let r: Value = redis::cmd("EXEC").query_async(&mut watcher).await.unwrap();
    assert_eq!(r, Value::Nil);
    assert_eq!(other.get::<_, String>("{w}k").await.unwrap(), "changed");
    // Without interference the same transaction commits.
    let _: () = redis::cmd("WATCH")
        .arg("{w}k")
        .query_async(&mut watcher)
        .await
        .unwrap();
    let _: () = redis::cmd("MULTI").query_async(&mut watcher).await.unwrap();
    let _: String = redis::cmd("SET")
        .arg("{w}k")
        .arg("mine")
        .query_async(&mut watcher)
        .await
        .unwrap();
    let r: Vec<String> = redis::cmd("EXEC").query_async(&mut watcher).await.unwrap();
    assert_eq!(r, ["OK"]);

    // A key in another slot fails the transaction; nothing of it is executed.
    let (out, _) = support::raw_exchange(
        proxy.port,
        b"MULTI\r\nSET {a}k 1\r\nSET {b}k 1\r\nEXEC\r\nEXISTS {a}k\r\n",
        wait,
    )
    .await;
    let text = String::from_utf8_lossy(&out);
    let lines: Vec<&str> = text.split("\r\n").collect();
    assert_eq!(&lines[..2], ["+OK", "+QUEUED"]);
    assert!(lines[2].starts_with("-CROSSSLOT"), "{text}");
    assert!(lines[3].starts_with("-EXECABORT"), "{text}");
    assert_eq!(lines[4], ":0");

    // DISCARD, and the errors Redis gives for misuse.
    let (out, _) = support::raw_exchange(
        proxy.port,
        b"MULTI\r\nSET {d}k 1\r\nDISCARD\r\nEXISTS {d}k\r\nEXEC\r\nDISCARD\r\nMULTI\r\nMULTI\r\nDISCARD\r\n",
        wait,
    )
    .await;
    assert_eq!(
        String::from_utf8_lossy(&out),
        "+OK\r\n+QUEUED\r\n+OK\r\n:0\r\n-ERR EXEC without MULTI\r\n-ERR DISCARD without MULTI\r\n+OK\r\n-ERR MULTI calls can not be nested\r\n+OK\r\n"
    );
    // The pinned connections were released.
    assert_eq!(slotgate_counter(&mut con, "dedicated_connections").await, 0);
}
