//! Commands routed from the servers' own descriptions: with commands taken out of the
//! built-in table (`cluster.route_from_server`), slotgate routes them by the key specs and
//! flags a real Redis 7.0 cluster reports in `COMMAND INFO`. One test per process: the
//! setting is read once per process.

mod support;

use redis::Value;
use support::{Cluster, Proxy, key_on, slotgate_counter};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_known_only_from_command_info_route_by_their_key_specs() {
    let cluster = Cluster::start();
    let names = ["ZUNIONSTORE", "LPOS", "MSETNX", "SMOVE", "XREAD"];
    let proxy = Proxy::start_with(&cluster, |c| {
        c.cluster.route_from_server = names.iter().map(|s| s.to_string()).collect();
    })
    .await;
    let mut con = proxy.client(2).await;
    assert!(slotgate_counter(&mut con, "commands_learned").await >= names.len() as u64);
    for n in names {
        let spec = slotgate::command::lookup(n.as_bytes()).unwrap();
        assert!(
            spec.flags.contains(slotgate::command::Flags::LEARNED),
            "{n} routes from the server's description"
        );
    }
    let moved_before = slotgate_counter(&mut con, "redirects_moved").await;
    // Keys on the second master: a keyless route would land elsewhere and be redirected.
    let port = cluster.master_ports[1];
    let list = key_on(&cluster, port, "lpos:").await;
    let _: () = redis::cmd("RPUSH")
        .arg(&[&list, "a", "b", "c"])
        .query_async(&mut con)
        .await
        .unwrap();
    for _ in 0..20 {
        let at: i64 = redis::cmd("LPOS")
            .arg(&[&list, "c"])
            .query_async(&mut con)
            .await
            .unwrap();
        assert_eq!(at, 2);
    }
    // ZUNIONSTORE: destination by index, sources after a key count.
    let (d, a, b) = ("{z}dest", "{z}a", "{z}b");
    let _: () = redis::cmd("ZADD")
        .arg(&[a, "1", "m"])
        .query_async(&mut con)
        .await
        .unwrap();
    let _: () = redis::cmd("ZADD")
        .arg(&[b, "2", "m"])
        .query_async(&mut con)
        .await
        .unwrap();
    let n: i64 = redis::cmd("ZUNIONSTORE")
        .arg(&[d, "2", a, b])
        .query_async(&mut con)
        .await
        .unwrap();
    assert_eq!(n, 1);
    let score: f64 = redis::cmd("ZSCORE")
        .arg(&[d, "m"])
        .query_async(&mut con)
        .await
        .unwrap();
    assert_eq!(score, 3.0);
    // XREAD: keys after STREAMS, half of the rest.
    let _: String = redis::cmd("XADD")
        .arg(&["{s}1", "*", "f", "v"])
        .query_async(&mut con)
        .await
        .unwrap();
    let read: Value = redis::cmd("XREAD")
        .arg(&["COUNT", "1", "STREAMS", "{s}1", "{s}2", "0", "0"])
        .query_async(&mut con)
        .await
        .unwrap();
    assert!(format!("{read:?}").contains("{s}1"), "{read:?}");
    assert_eq!(
        slotgate_counter(&mut con, "redirects_moved").await,
        moved_before,
        "every learned command went straight to its slot's master"
    );
    // Keys across slots are refused, writes are never split: MSETNX stays atomic.
    for args in [
        vec!["MSETNX", "x:1", "1", "y:2", "2"],
        vec!["SMOVE", "x:1", "y:2", "m"],
        vec!["ZUNIONSTORE", "x:1", "1", "y:2"],
    ] {
        let err = redis::cmd(args[0])
            .arg(&args[1..])
            .query_async::<Value>(&mut con)
            .await
            .unwrap_err();
        assert_eq!(err.code(), Some("CROSSSLOT"), "{args:?}");
    }
    let set: i64 = redis::cmd("MSETNX")
        .arg(&["{m}1", "a", "{m}2", "b"])
        .query_async(&mut con)
        .await
        .unwrap();
    assert_eq!(set, 1);
    // COMMAND INFO shows the server's description of a learned command.
    let info: Vec<Value> = redis::cmd("COMMAND")
        .arg(&["INFO", "lpos"])
        .query_async(&mut con)
        .await
        .unwrap();
    assert!(format!("{info:?}").contains("lpos"));
}
