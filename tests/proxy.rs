//! slotgate in front of a real 3-master/3-replica cluster: round trips through the `redis`
//! crate (RESP2 and RESP3) and `redis-cli`, pipelines, cross-slot requests, malformed input,
//! handshakes and locally answered commands.

mod support;

use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;
use redis::{AsyncCommands, Value};
use support::{Cluster, Proxy, key_on, raw_exchange, redis_cli};

/// SET/GET/INCR/HSET/LPUSH/ZADD on keys spread over every master, checked through the
/// proxy and then directly on the owning node.
async fn round_trips(con: &mut MultiplexedConnection, cluster: &Cluster, tag: &str) {
    for (i, port) in cluster.master_ports.iter().enumerate() {
        let k = key_on(cluster, *port, &format!("{tag}:{i}:")).await;
        let _: () = con.set(&k, "v").await.unwrap();
        assert_eq!(con.get::<_, String>(&k).await.unwrap(), "v");
        let c = format!("{{{k}}}:counter");
        assert_eq!(con.incr::<_, _, i64>(&c, 5).await.unwrap(), 5);
        assert_eq!(con.incr::<_, _, i64>(&c, 1).await.unwrap(), 6);
        let h = format!("{{{k}}}:hash");
        let _: () = con.hset(&h, "f", "x").await.unwrap();
        assert_eq!(con.hget::<_, _, String>(&h, "f").await.unwrap(), "x");
        let l = format!("{{{k}}}:list");
        assert_eq!(con.lpush::<_, _, i64>(&l, &["a", "b"]).await.unwrap(), 2);
        assert_eq!(
            con.lrange::<_, Vec<String>>(&l, 0, -1).await.unwrap(),
            ["b", "a"]
        );
        let z = format!("{{{k}}}:zset");
        assert_eq!(con.zadd::<_, _, _, i64>(&z, "m", 2.5).await.unwrap(), 1);
        assert_eq!(con.zscore::<_, _, f64>(&z, "m").await.unwrap(), 2.5);
        // The key really lives on the master that owns its slot.
        let mut node = cluster.node(*port).await;
        assert_eq!(node.get::<_, String>(&k).await.unwrap(), "v");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trips_in_resp2_resp3_and_redis_cli() {
    let cluster = Cluster::start();
    let proxy = Proxy::start(&cluster).await;

    let mut resp2 = proxy.client(2).await;
    round_trips(&mut resp2, &cluster, "r2").await;
    let mut resp3 = proxy.client(3).await;
    round_trips(&mut resp3, &cluster, "r3").await;

    // RESP3 replies pass through as RESP3: HGETALL is a map.
    let _: () = resp3.hset("{m}h", "a", "1").await.unwrap();
    let v: Value = redis::cmd("HGETALL")
        .arg("{m}h")
        .query_async(&mut resp3)
        .await
        .unwrap();
    assert!(matches!(v, Value::Map(_)), "{v:?}");
    let v: Value = redis::cmd("HGETALL")
        .arg("{m}h")
        .query_async(&mut resp2)
        .await
        .unwrap();
    assert!(matches!(v, Value::Array(_)), "{v:?}");

    // redis-cli, in both protocols.
    for (proto, tag) in [("-2", "cli2"), ("-3", "cli3")] {
        for (i, port) in cluster.master_ports.iter().enumerate() {
            let k = key_on(&cluster, *port, &format!("{tag}:{i}:")).await;
            let p = proxy.port;
            assert_eq!(redis_cli(p, &[proto, "set", &k, "hello world"]), "OK");
            assert_eq!(redis_cli(p, &[proto, "get", &k]), "hello world");
            assert_eq!(
                redis_cli(p, &[proto, "incrby", &format!("{{{k}}}c"), "3"]),
                "3"
            );
            assert_eq!(
                redis_cli(p, &[proto, "hset", &format!("{{{k}}}h"), "f", "v"]),
                "1"
            );
            assert_eq!(
                redis_cli(p, &[proto, "lpush", &format!("{{{k}}}l"), "a"]),
                "1"
            );
            assert_eq!(
                redis_cli(p, &[proto, "zadd", &format!("{{{k}}}z"), "1", "m"]),
                "1"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_command_pipeline_keeps_order() {
    let cluster = Cluster::start();
    let proxy = Proxy::start(&cluster).await;
    let mut con = proxy.client(2).await;

    let mut pipe = redis::pipe();
    for i in 0..5000 {
        pipe.set(format!("p:{i}"), i).ignore();
    }
    for i in 0..5000 {
        pipe.get(format!("p:{i}"));
    }
    let values: Vec<i64> = pipe.query_async(&mut con).await.unwrap();
    assert_eq!(values, (0..5000).collect::<Vec<i64>>());

    // Interleaved writes and reads of the same keys, mixed over all masters.
    let mut pipe = redis::pipe();
    for i in 0..2500 {
        pipe.incr(format!("q:{}", i % 97), 1);
        pipe.get(format!("q:{}", i % 97));
        pipe.cmd("PING");
        pipe.cmd("ECHO").arg(i);
    }
    let replies: Vec<Value> = pipe.query_async(&mut con).await.unwrap();
    assert_eq!(replies.len(), 10_000);
    let mut counts = [0i64; 97];
    for (i, chunk) in replies.chunks(4).enumerate() {
        counts[i % 97] += 1;
        assert_eq!(chunk[0], Value::Int(counts[i % 97]));
        assert_eq!(
            chunk[1],
            Value::BulkString(counts[i % 97].to_string().into_bytes())
        );
        assert_eq!(chunk[2], Value::SimpleString("PONG".into()));
        assert_eq!(chunk[3], Value::BulkString(i.to_string().into_bytes()));
    }

    // A raw pipeline written in one go, including inline commands.
    let mut raw = Vec::new();
    for i in 0..1000 {
        raw.extend_from_slice(format!("ECHO {i}\r\n").as_bytes());
    }
    let (out, closed) = raw_exchange(proxy.port, &raw, Duration::from_millis(500)).await;
    assert!(!closed);
    let expected: Vec<u8> = (0..1000)
        .flat_map(|i| {
            let s = i.to_string();
            format!("${}\r\n{s}\r\n", s.len()).into_bytes()
        })
        .collect();
    assert_eq!(out, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cross_slot_requests_get_crossslot() {
    let cluster = Cluster::start();
    let proxy = Proxy::start(&cluster).await;
    let mut con = proxy.client(2).await;

    for cmd in [
        vec!["RENAME", "foo", "bar"],
        vec!["SINTER", "foo", "bar"],
        vec!["SUNIONSTORE", "d", "a", "b"],
        vec!["EVAL", "return 1", "2", "foo", "bar"],
        vec!["MSETNX", "foo", "1", "bar", "2"],
    ] {
        let err = redis::cmd(cmd[0])
            .arg(&cmd[1..])
            .query_async::<Value>(&mut con)
            .await
            .unwrap_err();
        assert_eq!(err.code(), Some("CROSSSLOT"), "{cmd:?}: {err}");
    }
    // Same slot through a hash tag is fine.
    let _: () = redis::cmd("MSET")
        .arg(&["{u}a", "1", "{u}b", "2"])
        .query_async(&mut con)
        .await
        .unwrap();
    let v: Vec<i64> = con.mget(&["{u}a", "{u}b"]).await.unwrap();
    assert_eq!(v, [1, 2]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_input_closes_only_that_client() {
    let cluster = Cluster::start();
    let proxy = Proxy::start(&cluster).await;
    let mut healthy = proxy.client(2).await;
    let _: () = healthy.set("healthy", "1").await.unwrap();

    let cases: [(&[u8], &str); 5] = [
        (b"*abc\r\n", "invalid multibulk length"),
        (b"*1\r\n$abc\r\n", "invalid bulk length"),
        (b"*999999999\r\n", "invalid multibulk length"),
        (b"*1\r\n+PING\r\n", "expected '$', got '+'"),
        (b"set a \"unbalanced\r\n", "unbalanced quotes"),
    ];
    for (input, reason) in cases {
        // A good command first: its reply comes before the error.
        let mut bytes = b"PING\r\n".to_vec();
        bytes.extend_from_slice(input);
        let (out, closed) = raw_exchange(proxy.port, &bytes, Duration::from_secs(5)).await;
        let text = String::from_utf8_lossy(&out);
        assert!(closed, "{reason}: connection left open");
        assert!(
            text.starts_with("+PONG\r\n-ERR Protocol error: ") && text.contains(reason),
            "{reason}: got {text:?}"
        );
        let v: String = healthy.get("healthy").await.unwrap();
        assert_eq!(v, "1");
    }

    // Half a command, then the client goes away.
    {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", proxy.port))
            .await
            .unwrap();
        tokio::io::AsyncWriteExt::write_all(&mut s, b"*3\r\n$3\r\nSET\r\n$1\r\nx\r\n$100\r\nabc")
            .await
            .unwrap();
    }
    // A bulk over the configured limit.
    let small = Proxy::start_with(&cluster, |c| c.limits.max_bulk_len = 10).await;
    let (out, closed) = raw_exchange(
        small.port,
        b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$11\r\nhello world\r\n",
        Duration::from_secs(5),
    )
    .await;
    assert!(closed);
    assert_eq!(out, b"-ERR Protocol error: invalid bulk length\r\n");

    let v: String = healthy.get("healthy").await.unwrap();
    assert_eq!(v, "1");
    // Empty inline lines are ignored, and values stay binary-safe.
    let (out, _) = raw_exchange(
        proxy.port,
        b"\r\n\r\n*2\r\n$4\r\nECHO\r\n$5\r\n\x00\xff\r\n\n\r\n",
        Duration::from_millis(300),
    )
    .await;
    assert_eq!(out, b"$5\r\n\x00\xff\r\n\n\r\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshakes_and_local_commands() {
    let cluster = Cluster::start();
    let proxy = Proxy::start(&cluster).await;
    let p = proxy.port;
    let wait = Duration::from_millis(300);

    // HELLO 3 switches the connection to RESP3; HELLO 2 back.
    let (out, _) = raw_exchange(
        p,
        b"HELLO 3\r\nCLIENT GETNAME\r\nHELLO 2 SETNAME app\r\nCLIENT GETNAME\r\n",
        wait,
    )
    .await;
    let text = String::from_utf8_lossy(&out);
    assert!(
        text.starts_with("%7\r\n$6\r\nserver\r\n$5\r\nredis\r\n"),
        "{text}"
    );
    assert!(text.contains("$5\r\nproto\r\n:3\r\n"), "{text}");
    assert!(text.contains("_\r\n*14\r\n"), "{text}");
    assert!(text.contains("$5\r\nproto\r\n:2\r\n"), "{text}");
    assert!(text.ends_with("$3\r\napp\r\n"), "{text}");
    // The version is the cluster's.
    assert!(text.contains("$7\r\nversion\r\n$"), "{text}");

    let (out, _) = raw_exchange(p, b"HELLO 4\r\nHELLO x\r\n", wait).await;
    assert_eq!(
        String::from_utf8_lossy(&out),
        "-NOPROTO unsupported protocol version\r\n-ERR Protocol version is not an integer or out of range\r\n"
    );

    let (out, _) = raw_exchange(
        p,
        b"SELECT 0\r\nSELECT 1\r\nCLIENT SETINFO LIB-NAME x\r\nCLIENT SETINFO LIB-VER 1.0\r\nCLIENT ID\r\nREADONLY\r\nREADWRITE\r\nPING hi\r\nCLIENT KILL x\r\nNOSUCH a b\r\nMONITOR\r\nQUIT\r\nPING\r\n",
        wait,
    )
    .await;
    let text = String::from_utf8_lossy(&out);
    let lines: Vec<&str> = text.split("\r\n").collect();
    assert_eq!(lines[0], "+OK");
    assert!(lines[1].starts_with("-ERR DB index is out of range"));
    assert_eq!(lines[2], "+OK");
    assert_eq!(lines[3], "+OK");
    assert!(lines[4].starts_with(':'));
    assert_eq!(&lines[5..7], ["+OK", "+OK"]);
    assert_eq!(&lines[7..9], ["$2", "hi"]);
    assert!(
        lines[9].starts_with("-ERR slotgate: 'CLIENT KILL'"),
        "{text}"
    );
    assert_eq!(
        lines[10],
        "-ERR unknown command 'NOSUCH', with args beginning with: 'a' 'b' "
    );
    assert!(lines[11].starts_with("-ERR slotgate: 'MONITOR'"), "{text}");
    // QUIT answers OK and closes: the PING after it is never answered.
    assert_eq!(lines[12], "+OK");
    assert_eq!(lines.len(), 14);

    // INFO comes from a master, with a slotgate section, in either protocol.
    let mut con = proxy.client(3).await;
    let info: String = redis::cmd("INFO").query_async(&mut con).await.unwrap();
    for field in [
        "redis_version:",
        "loading:0",
        "role:master",
        "# Slotgate",
        "cluster_masters:3",
        "cluster_enabled:0",
    ] {
        assert!(info.contains(field), "INFO lacks {field}");
    }
    let info: String = redis::cmd("INFO")
        .arg("slotgate")
        .query_async(&mut con)
        .await
        .unwrap();
    assert!(info.starts_with("# Slotgate") && info.contains("cluster_slots_assigned:16384"));
    let info = redis_cli(p, &["info", "replication"]);
    assert!(info.contains("role:master") && !info.contains("Slotgate"));
    // COMMAND DOCS / COUNT go to a node (the redis-cli REPL asks for them first).
    let count: i64 = redis::cmd("COMMAND")
        .arg("COUNT")
        .query_async(&mut con)
        .await
        .unwrap();
    assert!(count > 100);
    let docs: Value = redis::cmd("COMMAND")
        .arg("DOCS")
        .arg("get")
        .query_async(&mut con)
        .await
        .unwrap();
    assert!(matches!(docs, Value::Map(_)), "{docs:?}");
    let _: Value = redis::cmd("CONFIG")
        .arg("GET")
        .arg("save")
        .query_async(&mut con)
        .await
        .unwrap();
    let err = redis::cmd("CONFIG")
        .arg("SET")
        .arg("save")
        .arg("")
        .query_async::<Value>(&mut con)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("slotgate"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_password() {
    let cluster = Cluster::start();
    let proxy = Proxy::start_with(&cluster, |c| c.password = Some("s3cret".into())).await;
    let wait = Duration::from_millis(300);
    let (out, _) = raw_exchange(
        proxy.port,
        b"GET a\r\nHELLO 3\r\nAUTH wrong\r\nAUTH s3cret\r\nSET a 1\r\nGET a\r\n",
        wait,
    )
    .await;
    let text = String::from_utf8_lossy(&out);
    let lines: Vec<&str> = text.split("\r\n").collect();
    assert_eq!(lines[0], "-NOAUTH Authentication required.");
    assert!(lines[1].starts_with("-NOAUTH HELLO must be called"));
    assert_eq!(
        lines[2],
        "-WRONGPASS invalid username-password pair or user is disabled."
    );
    assert_eq!(&lines[3..7], ["+OK", "+OK", "$1", "1"]);

    // HELLO with AUTH authenticates and switches protocol at once (redis-rs does this).
    let url = format!(
        "redis://default:s3cret@127.0.0.1:{}/?protocol=resp3",
        proxy.port
    );
    let mut con = redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    assert_eq!(con.get::<_, String>("a").await.unwrap(), "1");
    assert_eq!(
        redis_cli(
            proxy.port,
            &["--no-auth-warning", "-a", "s3cret", "get", "a"]
        ),
        "1"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocking_commands_run_on_their_own_connection() {
    let cluster = Cluster::start();
    let proxy = Proxy::start_with(&cluster, |c| c.cluster.connections_per_node = 1).await;
    let mut waiter = proxy.client(2).await;
    let mut other = proxy.client(2).await;

    let blocked = tokio::spawn(async move {
        let v: Option<(String, String)> = waiter.blpop("bq", 10.0).await.unwrap();
        v
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Other traffic to the same node flows while BLPOP waits.
    let started = Instant::now();
    for i in 0..100 {
        let _: () = other.set("{bq}x", i).await.unwrap();
    }
    assert!(started.elapsed() < Duration::from_secs(5));
    let _: () = other.rpush("bq", "job").await.unwrap();
    let got = tokio::time::timeout(Duration::from_secs(5), blocked)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got, Some(("bq".to_string(), "job".to_string())));

    // A timeout answers nil after about the timeout.
    let started = Instant::now();
    let v: Option<(String, String)> = other.blpop("empty", 1.0).await.unwrap();
    assert_eq!(v, None);
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(5),
        "{waited:?}"
    );
}
