//! Answers a single server would give, through slotgate on a real cluster: introspection
//! (CLIENT, COMMAND, CONFIG GET, INFO, PUBSUB), scripts (nesting, SCRIPT EXISTS, SCRIPT
//! KILL), keyless commands spread over the masters, and Redis's own error texts.

mod support;

use std::time::Duration;

use redis::{AsyncCommands, Value};
use support::{Cluster, Proxy, RawClient, key_on, raw_exchange};

/// `INFO` field of a reply text.
fn field(text: &str, name: &str) -> Option<i64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .and_then(|v| v.trim().parse().ok())
}

async fn info(con: &mut redis::aio::MultiplexedConnection, section: &str) -> String {
    redis::cmd("INFO")
        .arg(section)
        .query_async(con)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_connection_commands_answer_for_slotgate_clients() {
    let cluster = Cluster::start();
    let proxy = Proxy::start(&cluster).await;
    // CLIENT MAINT_NOTIFICATIONS, sent by redis-py 8 on every RESP3 connection.
    let mut c3 = proxy.client(3).await;
    let ok: String = redis::cmd("CLIENT")
        .arg(&["MAINT_NOTIFICATIONS", "ON", "moving-endpoint-type", "none"])
        .query_async(&mut c3)
        .await
        .unwrap();
    assert_eq!(ok, "OK");
    let mut c2 = proxy.client(2).await;
    let err = redis::cmd("CLIENT")
        .arg(&["MAINT_NOTIFICATIONS", "ON", "moving-endpoint-type", "none"])
        .query_async::<Value>(&mut c2)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("RESP3"), "{err}");

    // CLIENT LIST and CLIENT INFO describe slotgate's clients.
    let _: () = redis::cmd("CLIENT")
        .arg(&["SETNAME", "three"])
        .query_async(&mut c3)
        .await
        .unwrap();
    let _: () = redis::cmd("CLIENT")
        .arg(&["SETINFO", "LIB-NAME", "mylib"])
        .query_async(&mut c2)
        .await
        .unwrap();
    let _: () = redis::cmd("CLIENT")
        .arg(&["SETINFO", "LIB-VER", "1.2.3"])
        .query_async(&mut c2)
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let id3: i64 = redis::cmd("CLIENT")
        .arg("ID")
        .query_async(&mut c3)
        .await
        .unwrap();
    let id2: i64 = redis::cmd("CLIENT")
        .arg("ID")
        .query_async(&mut c2)
        .await
        .unwrap();
    let list: String = redis::cmd("CLIENT")
        .arg("LIST")
        .query_async(&mut c2)
        .await
        .unwrap();
    let line = |id: i64| {
        list.lines()
            .find(|l| l.starts_with(&format!("id={id} ")))
            .unwrap_or_else(|| panic!("no client {id} in {list}"))
            .to_string()
    };
    assert!(line(id3).contains(" name=three "), "{list}");
    assert!(line(id3).contains(" resp=3 "), "{list}");
    assert!(line(id2).contains(" lib-name=mylib "), "{list}");
    assert!(line(id2).contains(" lib-ver=1.2.3"), "{list}");
    // Connected over a second ago: its age counts whole seconds, as Redis's does.
    let age: u64 = line(id2)
        .split(' ')
        .find_map(|f| f.strip_prefix("age="))
        .unwrap_or_else(|| panic!("no age in {list}"))
        .parse()
        .unwrap();
    assert!((1..60).contains(&age), "{list}");
    assert!(line(id2).contains(" cmd=client|list "), "{list}");
    assert!(line(id2).contains(" addr=127.0.0.1:"), "{list}");
    let mine: String = redis::cmd("CLIENT")
        .arg("INFO")
        .query_async(&mut c3)
        .await
        .unwrap();
    assert!(mine.starts_with(&format!("id={id3} ")), "{mine}");
    assert!(mine.contains(" name=three "), "{mine}");
    let only: String = redis::cmd("CLIENT")
        .arg(&["LIST", "ID", &id3.to_string()])
        .query_async(&mut c2)
        .await
        .unwrap();
    assert_eq!(only.lines().count(), 1);

    // CLIENT REPLY: OFF and SKIP replies are never written; ON answers.
    let (out, _) = raw_exchange(
        proxy.port,
        b"CLIENT REPLY SKIP\r\nSET r:a 1\r\nGET r:a\r\nCLIENT REPLY OFF\r\nSET r:b 2\r\nGET r:b\r\n\
          CLIENT REPLY ON\r\nGET r:b\r\nCLIENT REPLY SKIP\r\nGET r:a\r\nPING\r\n",
        Duration::from_millis(500),
    )
    .await;
    assert_eq!(
        String::from_utf8_lossy(&out),
        "$1\r\n1\r\n+OK\r\n$1\r\n2\r\n+PONG\r\n"
    );

    // A negative multibulk count is an empty request, as Redis takes it.
    let (out, closed) = raw_exchange(
        proxy.port,
        b"*-10\r\n*1\r\n$4\r\nPING\r\n",
        Duration::from_millis(300),
    )
    .await;
    assert_eq!(&out[..], b"+PONG\r\n");
    assert!(!closed);

    // Redis's texts for commands refused inside MULTI and unknown subcommands.
    let (out, _) = raw_exchange(
        proxy.port,
        b"MULTI\r\nSAVE\r\nDISCARD\r\nSCRIPT NOSUCH\r\nFUNCTION NOSUCH\r\nCONFIG\r\n",
        Duration::from_millis(500),
    )
    .await;
    assert_eq!(
        String::from_utf8_lossy(&out),
        "+OK\r\n-ERR Command not allowed inside a transaction\r\n+OK\r\n\
         -ERR unknown subcommand 'NOSUCH'. Try SCRIPT HELP.\r\n\
         -ERR unknown subcommand 'NOSUCH'. Try FUNCTION HELP.\r\n\
         -ERR wrong number of arguments for 'config' command\r\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn command_describes_what_slotgate_accepts() {
    let cluster = Cluster::start();
    let proxy = Proxy::start(&cluster).await;
    let mut con = proxy.client(2).await;
    let count: i64 = redis::cmd("COMMAND")
        .arg("COUNT")
        .query_async(&mut con)
        .await
        .unwrap();
    let all: Vec<Value> = redis::cmd("COMMAND").query_async(&mut con).await.unwrap();
    let list: Vec<String> = redis::cmd("COMMAND")
        .arg("LIST")
        .query_async(&mut con)
        .await
        .unwrap();
    assert_eq!(all.len() as i64, count);
    // COMMAND LIST names subcommands too (`config|get`); its commands are COMMAND's.
    let top: Vec<&String> = list.iter().filter(|n| !n.contains('|')).collect();
    assert_eq!(top.len() as i64, count, "{list:?}");
    assert!(list.contains(&"config|get".to_string()));
    assert!(
        !list.contains(&"config|set".to_string()),
        "refused subcommand listed"
    );
    assert!(!list.iter().any(|n| n.starts_with("cluster|")));
    // ACL: only WHOAMI (and HELP) are accepted, so only they are listed.
    assert!(list.contains(&"acl|whoami".to_string()));
    assert!(!list.contains(&"acl|setuser".to_string()));
    assert!(list.contains(&"get".to_string()));
    assert!(
        !list.contains(&"monitor".to_string()),
        "refused commands are not listed"
    );
    assert!(!list.contains(&"cluster".to_string()));
    // The server has more commands than slotgate accepts.
    let mut node = cluster.node(cluster.master_ports[0]).await;
    let server: i64 = redis::cmd("COMMAND")
        .arg("COUNT")
        .query_async(&mut node)
        .await
        .unwrap();
    assert!(server > count, "{server} <= {count}");
    for resp in [2, 3] {
        let mut con = proxy.client(resp).await;
        let info: Vec<Value> = redis::cmd("COMMAND")
            .arg(&["INFO", "get", "monitor"])
            .query_async(&mut con)
            .await
            .unwrap();
        assert!(
            matches!(&info[0], Value::Array(a) if !a.is_empty()),
            "{info:?}"
        );
        assert_eq!(info[1], Value::Nil);
        let docs: Value = redis::cmd("COMMAND")
            .arg(&["DOCS", "get", "monitor"])
            .query_async(&mut con)
            .await
            .unwrap();
        let text = format!("{docs:?}");
        assert!(text.contains("get") && !text.contains("monitor"), "{text}");
    }
    let learned = support::slotgate_counter(&mut con, "commands_learned").await;
    assert!(
        learned > 0,
        "ROLE, RESTORE-ASKING, ... are learned from the servers"
    );
    // ROLE, not in the built-in table, is routed from the server's description.
    let role: Vec<Value> = redis::cmd("ROLE").query_async(&mut con).await.unwrap();
    assert_eq!(role[0], Value::BulkString(b"master".to_vec()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scripts_nesting_exists_and_kill() {
    let cluster = Cluster::start();
    for port in &cluster.master_ports {
        let mut node = cluster.node(*port).await;
        let _: () = redis::cmd("CONFIG")
            .arg(&["SET", "lua-time-limit", "100"])
            .query_async(&mut node)
            .await
            .unwrap();
    }
    let proxy = Proxy::start_with(&cluster, |c| c.threads = 1).await;
    let mut con = proxy.client(2).await;
    // A legal reply nested 501 deep passes, and the shared connection it came on stays
    // usable for everyone.
    let (out, _) = raw_exchange(
        proxy.port,
        b"EVAL \"local t = {1} for i=1,500 do t = {t} end return t\" 0\r\nPING\r\n",
        Duration::from_millis(800),
    )
    .await;
    assert_eq!(
        out.len(),
        501 * 4 + 4 + 7,
        "{:?}",
        String::from_utf8_lossy(&out[..64])
    );
    assert!(out.ends_with(b":1\r\n+PONG\r\n"));
    let _: () = con.set::<_, _, ()>("after-deep", 1).await.unwrap();

    // SCRIPT EXISTS finds a script cached by EVAL.
    let body = "return 'cached-by-eval'";
    let sha = slotgate::scripts::sha1_hex(body.as_bytes());
    let _: String = redis::cmd("EVAL")
        .arg(body)
        .arg(0)
        .query_async(&mut con)
        .await
        .unwrap();
    let exists: Vec<i64> = redis::cmd("SCRIPT")
        .arg(&["EXISTS", &sha, "0000000000000000000000000000000000000000"])
        .query_async(&mut con)
        .await
        .unwrap();
    assert_eq!(exists, [1, 0]);
    let got: String = redis::cmd("EVALSHA")
        .arg(&sha)
        .arg(0)
        .query_async(&mut con)
        .await
        .unwrap();
    assert_eq!(got, "cached-by-eval");

    // SCRIPT KILL reaches the master busy with a script: OK, and the script ends.
    let key = key_on(&cluster, cluster.master_ports[1], "busy:").await;
    let mut busy = proxy.client(2).await;
    let running = tokio::spawn(async move {
        redis::cmd("EVAL")
            .arg("redis.call('GET', KEYS[1]) while true do end")
            .arg(1)
            .arg(key)
            .query_async::<Value>(&mut busy)
            .await
    });
    let mut killer = proxy.client(2).await;
    kill_while_busy(&mut killer, "SCRIPT", running).await;

    // FUNCTION KILL likewise, for a function busy on another master.
    let lib = "#!lua name=spinlib\nredis.register_function('spin', function(keys, args) \
               redis.call('GET', keys[1]) while true do end end)";
    let loaded: String = redis::cmd("FUNCTION")
        .arg(&["LOAD", lib])
        .query_async(&mut killer)
        .await
        .unwrap();
    assert_eq!(loaded, "spinlib");
    let key = key_on(&cluster, cluster.master_ports[2], "fbusy:").await;
    let mut busy = proxy.client(2).await;
    let running = tokio::spawn(async move {
        redis::cmd("FCALL")
            .arg(&["spin", "1", &key])
            .query_async::<Value>(&mut busy)
            .await
    });
    kill_while_busy(&mut killer, "FUNCTION", running).await;
}

/// `family KILL` (SCRIPT or FUNCTION) while `running` keeps a master busy: OK, the busy
/// call ends as killed, and a second KILL finds nothing busy (NOTBUSY, as one server says).
async fn kill_while_busy(
    killer: &mut redis::aio::MultiplexedConnection,
    family: &str,
    running: tokio::task::JoinHandle<redis::RedisResult<Value>>,
) {
    tokio::time::sleep(Duration::from_millis(400)).await;
    let killed: redis::RedisResult<String> = tokio::time::timeout(
        Duration::from_secs(10),
        redis::cmd(family).arg("KILL").query_async(killer),
    )
    .await
    .unwrap();
    assert_eq!(killed.unwrap(), "OK", "{family} KILL");
    let ended = tokio::time::timeout(Duration::from_secs(10), running)
        .await
        .unwrap()
        .unwrap();
    assert!(
        ended.unwrap_err().to_string().contains("killed"),
        "{family}"
    );
    let err = redis::cmd(family)
        .arg("KILL")
        .query_async::<Value>(killer)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("NOTBUSY"), "{family}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyless_commands_pubsub_and_info_span_the_masters() {
    let cluster = Cluster::start();
    let proxy = Proxy::start(&cluster).await;
    // Keyless commands from 30 connections reach every master.
    let before: Vec<i64> = {
        let mut v = Vec::new();
        for port in &cluster.master_ports {
            let mut node = cluster.node(*port).await;
            let text = info(&mut node, "commandstats").await;
            v.push(cmdstat_calls(&text, "lastsave"));
        }
        v
    };
    for _ in 0..30 {
        let mut c = proxy.client(2).await;
        let _: i64 = redis::cmd("LASTSAVE").query_async(&mut c).await.unwrap();
    }
    for (i, port) in cluster.master_ports.iter().enumerate() {
        let mut node = cluster.node(*port).await;
        let text = info(&mut node, "commandstats").await;
        assert!(
            cmdstat_calls(&text, "lastsave") > before[i],
            "master {port} got no keyless command"
        );
    }

    // PUBLISH counts every subscriber of slotgate's clients, as one server would; PUBSUB
    // NUMSUB counts the subscribers of every master.
    let mut subs = Vec::new();
    for _ in 0..3 {
        let mut s = RawClient::connect(proxy.port).await;
        s.send(b"SUBSCRIBE news\r\n").await;
        s.expect(b"*3\r\n$9\r\nsubscribe\r\n$4\r\nnews\r\n:1\r\n")
            .await;
        subs.push(s);
    }
    let mut direct = Vec::new();
    for port in &cluster.master_ports {
        let mut s = RawClient::connect(*port).await;
        s.send(b"SUBSCRIBE news\r\n").await;
        s.expect(b"*3\r\n$9\r\nsubscribe\r\n$4\r\nnews\r\n:1\r\n")
            .await;
        direct.push(s);
    }
    let mut con = proxy.client(2).await;
    let numsub: Vec<Value> = redis::cmd("PUBSUB")
        .arg(&["NUMSUB", "news", "none"])
        .query_async(&mut con)
        .await
        .unwrap();
    assert_eq!(
        numsub,
        [
            Value::BulkString(b"news".to_vec()),
            Value::Int(6),
            Value::BulkString(b"none".to_vec()),
            Value::Int(0)
        ]
    );
    let channels: Vec<String> = redis::cmd("PUBSUB")
        .arg(&["CHANNELS", "ne*"])
        .query_async(&mut con)
        .await
        .unwrap();
    assert_eq!(channels, ["news"]);
    // The 3 subscribers through slotgate, plus the direct one on the same master.
    let n: i64 = con.publish("news", "hello").await.unwrap();
    assert_eq!(n, 4);
    for s in &mut subs {
        s.expect(b"*3\r\n$7\r\nmessage\r\n$4\r\nnews\r\n$5\r\nhello\r\n")
            .await;
    }
    drop(subs);
    drop(direct);

    // Keyspace subscriptions are made on every master: counted once each all the same, as
    // one server counts them (two clients through slotgate, one directly on a master).
    let mut keyspace = Vec::new();
    for _ in 0..2 {
        let mut s = RawClient::connect(proxy.port).await;
        s.send(b"SUBSCRIBE __keyevent@0__:set\r\nPSUBSCRIBE __keyspace@0__:*\r\n")
            .await;
        s.expect(
            b"*3\r\n$9\r\nsubscribe\r\n$18\r\n__keyevent@0__:set\r\n:1\r\n\
              *3\r\n$10\r\npsubscribe\r\n$16\r\n__keyspace@0__:*\r\n:2\r\n",
        )
        .await;
        keyspace.push(s);
    }
    let mut on_node = RawClient::connect(cluster.master_ports[2]).await;
    on_node.send(b"SUBSCRIBE __keyevent@0__:set\r\n").await;
    on_node
        .expect(b"*3\r\n$9\r\nsubscribe\r\n$18\r\n__keyevent@0__:set\r\n:1\r\n")
        .await;
    let numsub: Vec<Value> = redis::cmd("PUBSUB")
        .arg(&["NUMSUB", "__keyevent@0__:set"])
        .query_async(&mut con)
        .await
        .unwrap();
    assert_eq!(
        numsub,
        [
            Value::BulkString(b"__keyevent@0__:set".to_vec()),
            Value::Int(3)
        ]
    );
    let numpat: i64 = redis::cmd("PUBSUB")
        .arg("NUMPAT")
        .query_async(&mut con)
        .await
        .unwrap();
    assert_eq!(numpat, 1);
    drop(keyspace);
    drop(on_node);

    // INFO sums what a client reads as a total: clients blocked on keys of three masters.
    let mut blocked = Vec::new();
    for port in &cluster.master_ports {
        let key = key_on(&cluster, *port, "blk:").await;
        let mut c = proxy.client(2).await;
        blocked.push(tokio::spawn(async move {
            redis::cmd("BLPOP")
                .arg(&key)
                .arg(5)
                .query_async::<Value>(&mut c)
                .await
        }));
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let text = info(&mut con, "clients").await;
        if field(&text, "blocked_clients") == Some(3) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{text}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let text = info(&mut con, "clients").await;
    let connected = field(&text, "connected_clients").unwrap();
    assert!((4..20).contains(&connected), "slotgate's own count: {text}");
    let stats = info(&mut con, "commandstats").await;
    let mut total = 0;
    for port in &cluster.master_ports {
        let mut node = cluster.node(*port).await;
        total += cmdstat_calls(&info(&mut node, "commandstats").await, "lastsave");
    }
    assert_eq!(cmdstat_calls(&stats, "lastsave"), total, "{stats}");
    for b in blocked {
        b.abort();
    }
}

fn cmdstat_calls(text: &str, cmd: &str) -> i64 {
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("cmdstat_{cmd}:calls=")))
        .and_then(|v| v.split(',').next()?.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_get_never_shows_backend_secrets() {
    let cluster = Cluster::start();
    let secret = "backend-Secret-7f3a";
    for port in &cluster.ports {
        let mut node = cluster.node(*port).await;
        let _: () = redis::cmd("CONFIG")
            .arg(&["SET", "masterauth", secret, "requirepass", secret])
            .query_async(&mut node)
            .await
            .unwrap();
    }
    let proxy = Proxy::start_with(&cluster, |c| {
        c.cluster.password = Some(secret.to_string());
    })
    .await;
    for resp in [2, 3] {
        let mut con = proxy.client(resp).await;
        for pattern in ["*", "masterauth", "*pass*"] {
            let reply: Value = redis::cmd("CONFIG")
                .arg(&["GET", pattern])
                .query_async(&mut con)
                .await
                .unwrap();
            let text = format!("{reply:?}");
            assert!(
                !text.contains(secret),
                "RESP{resp} CONFIG GET {pattern}: {text}"
            );
            assert!(text.contains("redacted"), "{text}");
        }
        let port: std::collections::HashMap<String, String> = redis::cmd("CONFIG")
            .arg(&["GET", "port"])
            .query_async(&mut con)
            .await
            .unwrap();
        assert!(port["port"].parse::<u16>().is_ok(), "{port:?}");
    }
    // Let the cluster's stop script in without a password again.
    for p in &cluster.ports {
        support::redis_cli(
            *p,
            &[
                "-a",
                secret,
                "--no-auth-warning",
                "CONFIG",
                "SET",
                "requirepass",
                "",
            ],
        );
    }
}
