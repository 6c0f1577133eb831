//! Security through slotgate: TLS on the client side (mutual TLS, certificate reload on
//! SIGHUP) and on the backend side (a TLS-only cluster, server-name checks, a failover),
//! ACL users end to end, and the client limits (max clients, idle timeout, slow loris).

mod support;

use std::time::Duration;

use redis::AsyncCommands;
use support::tls::{Pki, TLS_OFFSET};
use support::{Cluster, Proxy};

/// The seeds of a TLS cluster: its masters' TLS ports.
fn tls_seeds(cluster: &Cluster) -> Vec<String> {
    cluster
        .master_ports
        .iter()
        .map(|p| format!("127.0.0.1:{}", p + TLS_OFFSET))
        .collect()
}

async fn info_slotgate(proxy: &Proxy) -> String {
    let mut con = proxy.client(2).await;
    redis::cmd("INFO")
        .arg("slotgate")
        .query_async(&mut con)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_on_both_sides_round_trips_and_follows_a_failover() {
    let (pki, _ca) = Pki::standard();
    let cluster = Cluster::start_tls(3, 1, pki.dir());
    // A mirror cluster over TLS too, with the same fields under its resource entry.
    let mirror = Cluster::start_tls(1, 0, pki.dir());
    let proxy = Proxy::start_with(&cluster, |c| {
        c.cluster.seeds = tls_seeds(&cluster);
        c.cluster.tls = true;
        c.cluster.tls_ca_file = Some(pki.path("ca.crt"));
        c.tls.listen = "127.0.0.1:0".into();
        c.tls.cert_file = pki.path("proxy.crt");
        c.tls.key_file = pki.path("proxy.key");
        c.mirror.mode = slotgate::config::MultiWriteMode::AllResourcesCheckError;
        c.mirror
            .resources
            .push(slotgate::config::MirrorResourceConfig {
                name: "tls-mirror".into(),
                cluster: tls_seeds(&mirror),
                tls: true,
                tls_ca_file: Some(pki.path("ca.crt")),
                ..Default::default()
            });
    })
    .await;
    // Every master is reached at its TLS port, as the nodes report it over TLS.
    let info = info_slotgate(&proxy).await;
    for p in &cluster.master_ports {
        assert!(
            info.contains(&format!("addr=127.0.0.1:{},", p + TLS_OFFSET)),
            "{info}"
        );
    }
    let tls_port = proxy.tls_port.unwrap();
    let mut client = support::tls::connect(tls_port, &pki.path("ca.crt"), None)
        .await
        .unwrap();
    for i in 0..200 {
        let key = format!("tls:{i}");
        let set = support::tls::command(&mut client, &["SET", &key, &i.to_string()])
            .await
            .unwrap();
        assert_eq!(set, b"+OK\r\n");
    }
    let mget = support::tls::command(&mut client, &["MGET", "tls:1", "tls:2", "tls:3"])
        .await
        .unwrap();
    assert_eq!(mget, b"*3\r\n$1\r\n1\r\n$1\r\n2\r\n$1\r\n3\r\n");
    // Every write reached the mirror (the client waited for it: all_resources_check_error).
    let mut on_mirror = mirror.node(mirror.master_ports[0]).await;
    for i in [0, 77, 199] {
        let mirrored: Option<String> = redis::cmd("GET")
            .arg(format!("tls:{i}"))
            .query_async(&mut on_mirror)
            .await
            .unwrap();
        assert_eq!(mirrored, Some(i.to_string()));
    }
    // The writes are on the cluster (read over a plain admin connection).
    let owner = support::key_on(&cluster, cluster.master_ports[0], "tls:fo").await;
    let mut node = cluster.node(cluster.master_ports[0]).await;
    let _: () = redis::cmd("SET")
        .arg(&owner)
        .arg("before")
        .query_async(&mut node)
        .await
        .unwrap();

    // A manual failover of the first master: slotgate follows it to the replica's TLS port.
    // Replicas of a TLS cluster replicate over TLS: their master is named by its TLS port.
    let replica = cluster.replica_of(cluster.master_ports[0] + TLS_OFFSET);
    cluster.fault(&["failover", &replica.to_string()]);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let mut written = 0;
    loop {
        let reply = support::tls::command(&mut client, &["SET", &owner, "after"])
            .await
            .unwrap();
        if reply == b"+OK\r\n" {
            written += 1;
        }
        let info = info_slotgate(&proxy).await;
        if written > 0 && info.contains(&format!("addr=127.0.0.1:{},", replica + TLS_OFFSET)) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "slotgate did not follow the failover: {info}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let get = support::tls::command(&mut client, &["GET", &owner])
        .await
        .unwrap();
    assert_eq!(get, b"$5\r\nafter\r\n");
    let mut promoted = cluster.node(replica).await;
    let value: String = redis::cmd("GET")
        .arg(&owner)
        .query_async(&mut promoted)
        .await
        .unwrap();
    assert_eq!(value, "after");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_clients_need_the_right_ca_and_with_mutual_tls_a_certificate() {
    let (pki, ca) = Pki::standard();
    let other = pki.ca("other");
    pki.leaf(&other, "stranger", &["127.0.0.1"]);
    let _ = ca;
    let cluster = Cluster::start_with(1, 0);
    let proxy = Proxy::start_with(&cluster, |c| {
        c.tls.listen = "127.0.0.1:0".into();
        c.tls.cert_file = pki.path("proxy.crt");
        c.tls.key_file = pki.path("proxy.key");
        c.tls.client_ca_file = Some(pki.path("ca.crt"));
    })
    .await;
    let port = proxy.tls_port.unwrap();
    // A client that does not trust the proxy's CA refuses it.
    let refused = support::tls::connect(port, &pki.path("other.crt"), None).await;
    assert!(refused.is_err(), "a client without the CA connected");
    // Mutual TLS: no client certificate, or one from another CA, is refused by slotgate.
    let refused = support::tls::connect(port, &pki.path("ca.crt"), None).await;
    assert!(
        refused.is_err(),
        "a client without a certificate was served"
    );
    let stranger = (pki.path("stranger.crt"), pki.path("stranger.key"));
    let refused =
        support::tls::connect(port, &pki.path("ca.crt"), Some((&stranger.0, &stranger.1))).await;
    assert!(refused.is_err(), "a certificate of another CA was accepted");
    let client = (pki.path("client.crt"), pki.path("client.key"));
    let mut ok = support::tls::connect(port, &pki.path("ca.crt"), Some((&client.0, &client.1)))
        .await
        .unwrap();
    let reply = support::tls::command(&mut ok, &["SET", "mtls", "yes"])
        .await
        .unwrap();
    assert_eq!(reply, b"+OK\r\n");
    let info = info_slotgate(&proxy).await;
    assert!(
        !info.contains("tls_handshake_failures:0\r\n"),
        "handshake failures not counted: {info}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_certificate_for_another_name_is_refused_unless_verification_is_off() {
    let (pki, _ca) = Pki::standard();
    let cluster = Cluster::start_tls(1, 0, pki.dir());
    let proxy = Proxy::start_unready(&cluster, |c| {
        c.cluster.seeds = tls_seeds(&cluster);
        c.cluster.tls = true;
        c.cluster.tls_ca_file = Some(pki.path("ca.crt"));
        c.cluster.tls_server_name = Some("wrong.example".into());
        c.cluster.connect_timeout_ms = 300;
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut con = proxy.client(2).await;
    let got: redis::RedisResult<Option<String>> =
        redis::cmd("GET").arg("k").query_async(&mut con).await;
    assert!(
        got.is_err(),
        "served by a node whose certificate names another host"
    );
    let info = info_slotgate(&proxy).await;
    assert!(info.contains("cluster_slots_assigned:0\r\n"), "{info}");
    // The same cluster without the CA but with verification explicitly off is served.
    let insecure = Proxy::start_with(&cluster, |c| {
        c.cluster.seeds = tls_seeds(&cluster);
        c.cluster.tls = true;
        c.cluster.tls_server_name = Some("wrong.example".into());
        c.cluster.tls_insecure_skip_verify = true;
    })
    .await;
    let mut con = insecure.client(2).await;
    let _: () = redis::cmd("SET")
        .arg("k")
        .arg("v")
        .query_async(&mut con)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_that_demand_a_client_certificate_get_the_configured_one() {
    let (pki, _ca) = Pki::standard();
    let cluster = Cluster::start_tls(1, 0, pki.dir());
    for port in &cluster.ports {
        let mut node = cluster.node(*port).await;
        let _: () = redis::cmd("CONFIG")
            .arg(&["SET", "tls-auth-clients", "yes"])
            .query_async(&mut node)
            .await
            .unwrap();
    }
    // Without a client certificate the nodes refuse the handshake: nothing is served.
    let without = Proxy::start_unready(&cluster, |c| {
        c.cluster.seeds = tls_seeds(&cluster);
        c.cluster.tls = true;
        c.cluster.tls_ca_file = Some(pki.path("ca.crt"));
        c.cluster.connect_timeout_ms = 300;
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let info = info_slotgate(&without).await;
    assert!(info.contains("cluster_slots_assigned:0\r\n"), "{info}");
    // With `cluster.tls_cert_file`/`tls_key_file`, slotgate presents its certificate.
    let with = Proxy::start_with(&cluster, |c| {
        c.cluster.seeds = tls_seeds(&cluster);
        c.cluster.tls = true;
        c.cluster.tls_ca_file = Some(pki.path("ca.crt"));
        c.cluster.tls_cert_file = Some(pki.path("client.crt"));
        c.cluster.tls_key_file = Some(pki.path("client.key"));
    })
    .await;
    let mut con = with.client(2).await;
    let _: () = con.set("mtls", "yes").await.unwrap();
    let v: String = con.get("mtls").await.unwrap();
    assert_eq!(v, "yes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_certificate_and_keeps_the_connections() {
    let (pki, _ca) = Pki::standard();
    let cluster = Cluster::start_with(1, 0);
    let proxy = Proxy::start_with(&cluster, |c| {
        c.tls.listen = "127.0.0.1:0".into();
        c.tls.cert_file = pki.path("proxy.crt");
        c.tls.key_file = pki.path("proxy.key");
    })
    .await;
    let port = proxy.tls_port.unwrap();
    let mut kept = support::tls::connect(port, &pki.path("ca.crt"), None)
        .await
        .unwrap();
    // A new certificate from a new CA replaces the files, then SIGHUP.
    let renewed = pki.ca("renewed");
    pki.leaf(&renewed, "proxy", &["127.0.0.1"]);
    let status = std::process::Command::new("kill")
        .args(["-HUP", &std::process::id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while support::tls::connect(port, &pki.path("renewed.crt"), None)
        .await
        .is_err()
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the new certificate was never served"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        support::tls::connect(port, &pki.path("ca.crt"), None)
            .await
            .is_err(),
        "the old certificate is still served"
    );
    // The connection opened before the reload still works.
    let reply = support::tls::command(&mut kept, &["SET", "kept", "1"])
        .await
        .unwrap();
    assert_eq!(reply, b"+OK\r\n");
}

/// Reads from `stream` until it closes; panics if it stays open past `limit`. Returns what
/// was read.
async fn read_until_closed(stream: &mut tokio::net::TcpStream, limit: Duration) -> Vec<u8> {
    use tokio::io::AsyncReadExt;
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let mut buf = [0u8; 512];
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return got,
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Err(_) => panic!(
                "connection still open after {limit:?}; read {:?}",
                String::from_utf8_lossy(&got)
            ),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_clients_is_answered_with_redis_text_and_counted() {
    use tokio::io::AsyncWriteExt;
    let cluster = Cluster::start_with(1, 0);
    let proxy = Proxy::start_with(&cluster, |c| c.limits.max_clients = 2).await;
    let mut first = proxy.client(2).await;
    // The connections slotgate's start was checked with are gone: `first` is the only one.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while support::slotgate_counter(&mut first, "connected_clients").await != 1 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "earlier connections still counted"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut second = support::RawClient::connect(proxy.port).await;
    second.send(b"PING\r\n").await;
    second.expect(b"+PONG\r\n").await;
    let mut third = tokio::net::TcpStream::connect(("127.0.0.1", proxy.port))
        .await
        .unwrap();
    let _ = third.write_all(b"PING\r\n").await;
    let got = read_until_closed(&mut third, Duration::from_secs(5)).await;
    assert_eq!(got, b"-ERR max number of clients reached\r\n");
    let info: String = redis::cmd("INFO")
        .arg("slotgate")
        .query_async(&mut first)
        .await
        .unwrap();
    assert!(info.contains("rejected_connections:1\r\n"), "{info}");
    // A place freed is taken by the next client.
    drop(second);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let mut next = tokio::net::TcpStream::connect(("127.0.0.1", proxy.port))
            .await
            .unwrap();
        let _ = next.write_all(b"PING\r\n").await;
        let mut buf = [0u8; 64];
        use tokio::io::AsyncReadExt;
        let n = next.read(&mut buf).await.unwrap_or(0);
        if &buf[..n] == b"+PONG\r\n" {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "no place freed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_clients_are_closed_but_subscribers_and_blocked_clients_are_not() {
    let cluster = Cluster::start_with(1, 0);
    let proxy = Proxy::start_with(&cluster, |c| c.limits.client_idle_timeout_s = 1).await;
    let mut idle = support::RawClient::connect(proxy.port).await;
    idle.send(b"PING\r\n").await;
    idle.expect(b"+PONG\r\n").await;
    let mut subscriber = support::RawClient::connect(proxy.port).await;
    subscriber.send(b"SUBSCRIBE news\r\n").await;
    subscriber
        .expect(b"*3\r\n$9\r\nsubscribe\r\n$4\r\nnews\r\n:1\r\n")
        .await;
    let mut blocked = support::RawClient::connect(proxy.port).await;
    blocked.send(b"BLPOP idle:list 4\r\n").await;
    let started = tokio::time::Instant::now();
    let got = read_until_closed(idle.stream_mut(), Duration::from_secs(5)).await;
    assert!(got.is_empty(), "{got:?}");
    assert!(started.elapsed() >= Duration::from_millis(500));
    // Past the limit, the subscriber still gets messages and the blocked client its reply.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut con = proxy.client(2).await;
    let _: i64 = con.publish("news", "hello").await.unwrap();
    subscriber
        .expect(b"*3\r\n$7\r\nmessage\r\n$4\r\nnews\r\n$5\r\nhello\r\n")
        .await;
    let _: i64 = con.rpush("idle:list", "x").await.unwrap();
    blocked
        .expect(b"*2\r\n$9\r\nidle:list\r\n$1\r\nx\r\n")
        .await;
    let info: String = redis::cmd("INFO")
        .arg("slotgate")
        .query_async(&mut con)
        .await
        .unwrap();
    assert!(info.contains("idle_timeouts:1\r\n"), "{info}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_trickled_past_the_read_deadline_is_cut_off() {
    let cluster = Cluster::start_with(1, 0);
    let proxy = Proxy::start_with(&cluster, |c| c.limits.request_read_timeout_ms = 600).await;
    // Slow but within the deadline: answered.
    let mut patient = support::RawClient::connect(proxy.port).await;
    patient.send(b"*1\r\n").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    patient.send(b"$4\r\nPING\r\n").await;
    patient.expect(b"+PONG\r\n").await;
    // A byte every 100 ms: the connection is closed once the request is 600 ms old, even
    // though bytes keep coming.
    let mut loris = support::RawClient::connect(proxy.port).await;
    let started = tokio::time::Instant::now();
    let request = b"*3\r\n$3\r\nSET\r\n$5\r\nloris\r\n$20\r\n01234567890123456789\r\n";
    let mut closed_after = None;
    for byte in request {
        use tokio::io::AsyncWriteExt;
        if loris.stream_mut().write_all(&[*byte]).await.is_err() {
            closed_after = Some(started.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut probe = [0u8; 16];
        if let Ok(Ok(0)) = tokio::time::timeout(
            Duration::from_millis(1),
            tokio::io::AsyncReadExt::read(loris.stream_mut(), &mut probe),
        )
        .await
        {
            closed_after = Some(started.elapsed());
            break;
        }
    }
    let closed_after = closed_after.expect("the slow client was never cut off");
    assert!(closed_after < Duration::from_secs(3), "{closed_after:?}");
    let mut con = proxy.client(2).await;
    let value: Option<String> = redis::cmd("GET")
        .arg("loris")
        .query_async(&mut con)
        .await
        .unwrap();
    assert_eq!(value, None);
    let info: String = redis::cmd("INFO")
        .arg("slotgate")
        .query_async(&mut con)
        .await
        .unwrap();
    assert!(info.contains("read_timeouts:1\r\n"), "{info}");
    // The patient client is still served.
    patient.send(b"PING\r\n").await;
    patient.expect(b"+PONG\r\n").await;
}

/// Creates the test users on every node of `cluster` (masters and replicas), as operators
/// do: ACLs are per node in Redis Cluster.
async fn create_users(cluster: &Cluster) {
    for port in &cluster.ports {
        let mut node = cluster.node(*port).await;
        for rule in [
            // Reads only, any key.
            &[
                "reader",
                "on",
                ">readpw",
                "~*",
                "&*",
                "+@read",
                "+@connection",
                "+multi",
                "+exec",
            ][..],
            // Everything, on keys and channels under app: only.
            &[
                "appuser",
                "on",
                ">apppw",
                "~app:*",
                "resetchannels",
                "&app:*",
                "+@all",
            ][..],
            // Disabled.
            &["gone", "off", ">gonepw", "~*", "+@all"][..],
        ] {
            let _: () = redis::cmd("ACL")
                .arg("SETUSER")
                .arg(rule)
                .query_async(&mut node)
                .await
                .unwrap();
        }
    }
}

/// One command on a raw connection; the raw reply.
async fn raw(client: &mut support::RawClient, args: &[&str]) -> Vec<u8> {
    let mut req = format!("*{}\r\n", args.len());
    for a in args {
        req.push_str(&format!("${}\r\n{a}\r\n", a.len()));
    }
    client.send(req.as_bytes()).await;
    read_reply(client).await
}

/// The reply the node at `port` gives `args` on a connection logged in as `user`.
async fn node_reply(port: u16, user: &str, pass: &str, args: &[&str]) -> Vec<u8> {
    let mut node = support::RawClient::connect(port).await;
    assert_eq!(raw(&mut node, &["AUTH", user, pass]).await, b"+OK\r\n");
    raw(&mut node, args).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acl_users_get_exactly_what_the_cluster_allows_them() {
    let cluster = Cluster::start_with(3, 0);
    create_users(&cluster).await;
    let proxy = Proxy::start(&cluster).await;
    let mut admin = proxy.client(2).await;
    let _: () = redis::cmd("MSET")
        .arg(&["app:1", "one", "other:1", "two", "app:2", "three"])
        .query_async(&mut admin)
        .await
        .unwrap();
    let owner_of_other = cluster.owner_of(slotgate::slot::slot_of(b"other:1")).await;

    for resp in [2, 3] {
        let mut reader = support::RawClient::connect(proxy.port).await;
        let login = if resp == 2 {
            raw(&mut reader, &["AUTH", "reader", "readpw"]).await
        } else {
            raw(&mut reader, &["HELLO", "3", "AUTH", "reader", "readpw"]).await
        };
        assert!(
            login.starts_with(b"+OK") || login.starts_with(b"%"),
            "{login:?}"
        );
        assert_eq!(
            raw(&mut reader, &["ACL", "WHOAMI"]).await,
            b"$6\r\nreader\r\n"
        );
        assert_eq!(
            raw(&mut reader, &["GET", "other:1"]).await,
            b"$3\r\ntwo\r\n"
        );
        // Split across slots, each part on the user's own connections.
        let mget = raw(&mut reader, &["MGET", "app:1", "other:1", "app:2"]).await;
        assert_eq!(
            mget, b"*3\r\n$3\r\none\r\n$3\r\ntwo\r\n$5\r\nthree\r\n",
            "RESP{resp}"
        );
        // A forbidden command: the node's own NOPERM, unchanged.
        let set = raw(&mut reader, &["SET", "other:1", "x"]).await;
        assert!(
            set.starts_with(b"-NOPERM"),
            "{}",
            String::from_utf8_lossy(&set)
        );
        assert_eq!(
            set,
            node_reply(owner_of_other, "reader", "readpw", &["SET", "other:1", "x"]).await
        );
        // A transaction runs as the user too.
        assert_eq!(raw(&mut reader, &["MULTI"]).await, b"+OK\r\n");
        assert_eq!(raw(&mut reader, &["GET", "other:1"]).await, b"+QUEUED\r\n");
        assert_eq!(
            raw(&mut reader, &["EXEC"]).await,
            b"*1\r\n$3\r\ntwo\r\n".to_vec()
        );
        let client_list = raw(&mut reader, &["CLIENT", "INFO"]).await;
        assert!(
            String::from_utf8_lossy(&client_list).contains("user=reader "),
            "{}",
            String::from_utf8_lossy(&client_list)
        );
        assert!(!String::from_utf8_lossy(&client_list).contains("readpw"));

        // The forbidden key and channel below in both protocols too.
        let mut app = support::RawClient::connect(proxy.port).await;
        let login = if resp == 2 {
            raw(&mut app, &["AUTH", "appuser", "apppw"]).await
        } else {
            raw(&mut app, &["HELLO", "3", "AUTH", "appuser", "apppw"]).await
        };
        assert!(login == b"+OK\r\n" || login.starts_with(b"%"), "{login:?}");
        assert_eq!(raw(&mut app, &["SET", "app:9", "v"]).await, b"+OK\r\n");
        // A forbidden key and a forbidden channel: NOPERM as the node says it.
        let other = raw(&mut app, &["GET", "other:1"]).await;
        assert!(
            other.starts_with(b"-NOPERM"),
            "{}",
            String::from_utf8_lossy(&other)
        );
        assert_eq!(
            other,
            node_reply(owner_of_other, "appuser", "apppw", &["GET", "other:1"]).await
        );
        let publish = raw(&mut app, &["PUBLISH", "news", "x"]).await;
        assert!(
            publish.starts_with(b"-NOPERM"),
            "{}",
            String::from_utf8_lossy(&publish)
        );
        assert_eq!(
            raw(&mut app, &["PUBLISH", "app:news", "x"]).await,
            b":0\r\n"
        );
        // Logging in as another user switches; a failed login changes nothing.
        let wrong = raw(&mut app, &["AUTH", "reader", "nope"]).await;
        assert_eq!(
            wrong,
            b"-WRONGPASS invalid username-password pair or user is disabled.\r\n"
        );
        assert_eq!(
            raw(&mut app, &["ACL", "WHOAMI"]).await,
            b"$7\r\nappuser\r\n"
        );
    }
    // A disabled user cannot log in; a client that never logged in is slotgate's default.
    let mut gone = support::RawClient::connect(proxy.port).await;
    assert_eq!(
        raw(&mut gone, &["AUTH", "gone", "gonepw"]).await,
        b"-WRONGPASS invalid username-password pair or user is disabled.\r\n"
    );
    assert_eq!(
        raw(&mut gone, &["ACL", "WHOAMI"]).await,
        b"$7\r\ndefault\r\n"
    );
    assert_eq!(raw(&mut gone, &["SET", "any", "1"]).await, b"+OK\r\n");
    let refused = raw(&mut gone, &["ACL", "SETUSER", "x"]).await;
    assert!(
        refused.starts_with(b"-ERR slotgate"),
        "{}",
        String::from_utf8_lossy(&refused)
    );
    // Passwords never show in INFO or CLIENT LIST.
    let info: String = redis::cmd("INFO").query_async(&mut admin).await.unwrap();
    let list: String = redis::cmd("CLIENT")
        .arg("LIST")
        .query_async(&mut admin)
        .await
        .unwrap();
    for secret in ["readpw", "apppw", "gonepw", "nope"] {
        assert!(
            !info.contains(secret) && !list.contains(secret),
            "{secret} shown"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_with_a_password_alone_logs_in_as_default_when_no_client_password_is_set() {
    let cluster = Cluster::start_with(1, 0);
    // The cluster's default user has a password; slotgate's own connections use it.
    for port in &cluster.ports {
        let mut node = cluster.node(*port).await;
        let _: () = redis::cmd("ACL")
            .arg(&["SETUSER", "default", "on", ">defpw", "~*", "&*", "+@all"])
            .query_async(&mut node)
            .await
            .unwrap();
    }
    let proxy = Proxy::start_with(&cluster, |c| {
        c.cluster.password = Some("defpw".into());
    })
    .await;
    let mut client = support::RawClient::connect(proxy.port).await;
    assert_eq!(
        raw(&mut client, &["AUTH", "wrong"]).await,
        b"-WRONGPASS invalid username-password pair or user is disabled.\r\n"
    );
    assert_eq!(raw(&mut client, &["AUTH", "defpw"]).await, b"+OK\r\n");
    assert_eq!(
        raw(&mut client, &["ACL", "WHOAMI"]).await,
        b"$7\r\ndefault\r\n"
    );
    assert_eq!(raw(&mut client, &["SET", "k", "v"]).await, b"+OK\r\n");
    // Back to no password, so that the cluster shuts down without waiting.
    for port in &cluster.ports {
        let mut node = support::RawClient::connect(*port).await;
        node.send(b"AUTH defpw\r\nACL SETUSER default nopass\r\n")
            .await;
        node.expect(b"+OK\r\n+OK\r\n").await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_logins_are_counted_and_rate_limited_per_address() {
    let cluster = Cluster::start_with(1, 0);
    create_users(&cluster).await;
    let proxy = Proxy::start_with(&cluster, |c| {
        c.password = Some("client-secret".into());
        c.limits.auth_failures_per_minute = 3;
    })
    .await;
    let mut client = support::RawClient::connect(proxy.port).await;
    assert_eq!(
        raw(&mut client, &["GET", "k"]).await,
        b"-NOAUTH Authentication required.\r\n"
    );
    for (user, pass) in [("reader", "bad"), ("default", "bad"), ("nobody", "bad")] {
        assert_eq!(
            raw(&mut client, &["AUTH", user, pass]).await,
            b"-WRONGPASS invalid username-password pair or user is disabled.\r\n"
        );
    }
    // The limit is reached: even the right password is refused unchecked, from any
    // connection of this address, for the rest of the minute.
    let mut again = support::RawClient::connect(proxy.port).await;
    let limited = raw(&mut again, &["AUTH", "client-secret"]).await;
    assert!(
        limited.starts_with(b"-ERR too many failed authentication attempts"),
        "{}",
        String::from_utf8_lossy(&limited)
    );
    // Another address is not limited; it sees the counts.
    let mut elsewhere =
        support::RawClient::connect_from(std::net::Ipv4Addr::new(127, 0, 0, 2), proxy.port).await;
    assert_eq!(
        raw(&mut elsewhere, &["AUTH", "client-secret"]).await,
        b"+OK\r\n"
    );
    let info = raw(&mut elsewhere, &["INFO", "slotgate"]).await;
    let info = String::from_utf8_lossy(&info);
    assert!(info.contains("auth_failures:3\r\n"), "{info}");
    assert!(info.contains("auth_rate_limited:1\r\n"), "{info}");
    // A proxy with a client password: the password alone logs in as slotgate's default,
    // a cluster user with its own credentials.
    let fresh = Proxy::start_with(&cluster, |c| c.password = Some("client-secret".into())).await;
    let mut ok = support::RawClient::connect(fresh.port).await;
    assert_eq!(raw(&mut ok, &["AUTH", "client-secret"]).await, b"+OK\r\n");
    assert_eq!(raw(&mut ok, &["ACL", "WHOAMI"]).await, b"$7\r\ndefault\r\n");
    assert_eq!(
        raw(&mut ok, &["AUTH", "reader", "readpw"]).await,
        b"+OK\r\n"
    );
    assert_eq!(raw(&mut ok, &["ACL", "WHOAMI"]).await, b"$6\r\nreader\r\n");
    let info = raw(&mut ok, &["INFO", "slotgate"]).await;
    let info = String::from_utf8_lossy(&info);
    assert!(info.contains("acl_users:1\r\n"), "{info}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acl_users_pipeline_block_and_subscribe_as_themselves() {
    let cluster = Cluster::start_with(3, 0);
    create_users(&cluster).await;
    let proxy = Proxy::start(&cluster).await;
    let mut app = support::RawClient::connect(proxy.port).await;
    assert_eq!(
        raw(&mut app, &["AUTH", "appuser", "apppw"]).await,
        b"+OK\r\n"
    );
    // One write: writes over every master, one forbidden key in the middle.
    let mut pipeline = Vec::new();
    let mut expected = Vec::new();
    for i in 0..60 {
        let key = if i == 30 {
            "other:9".to_string()
        } else {
            format!("app:{i}")
        };
        pipeline
            .extend(format!("*3\r\n$3\r\nSET\r\n${}\r\n{key}\r\n$1\r\nv\r\n", key.len()).bytes());
        if i != 30 {
            expected.extend_from_slice(b"+OK\r\n");
        }
    }
    app.send(&pipeline).await;
    let mut got = Vec::new();
    for _ in 0..60 {
        got.extend(read_reply(&mut app).await);
    }
    let text = String::from_utf8_lossy(&got).into_owned();
    assert_eq!(text.matches("+OK\r\n").count(), 59, "{text}");
    assert_eq!(text.matches("-NOPERM").count(), 1, "{text}");
    // The forbidden write is the 31st reply.
    let replies: Vec<&str> = text.split_inclusive("\r\n").collect();
    assert!(replies[30].starts_with("-NOPERM"), "{text}");

    // A blocking command runs on a connection of the user's own, and is woken up.
    let mut blocked = support::RawClient::connect(proxy.port).await;
    assert_eq!(
        raw(&mut blocked, &["AUTH", "appuser", "apppw"]).await,
        b"+OK\r\n"
    );
    blocked
        .send(b"*3\r\n$5\r\nBLPOP\r\n$6\r\napp:bl\r\n$1\r\n5\r\n")
        .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(raw(&mut app, &["RPUSH", "app:bl", "x"]).await, b":1\r\n");
    assert_eq!(
        read_reply(&mut blocked).await,
        b"*2\r\n$6\r\napp:bl\r\n$1\r\nx\r\n"
    );
    let forbidden = raw(&mut blocked, &["BLPOP", "other:bl", "1"]).await;
    assert!(
        forbidden.starts_with(b"-NOPERM"),
        "{}",
        String::from_utf8_lossy(&forbidden)
    );

    // Subscriptions run as the user: its channels are heard, others refused by the node.
    let mut sub = support::RawClient::connect(proxy.port).await;
    assert_eq!(
        raw(&mut sub, &["AUTH", "appuser", "apppw"]).await,
        b"+OK\r\n"
    );
    assert_eq!(
        raw(&mut sub, &["SUBSCRIBE", "app:news"]).await,
        b"*3\r\n$9\r\nsubscribe\r\n$8\r\napp:news\r\n:1\r\n"
    );
    assert_eq!(
        raw(&mut app, &["PUBLISH", "app:news", "hi"]).await,
        b":1\r\n"
    );
    assert_eq!(
        read_reply(&mut sub).await,
        b"*3\r\n$7\r\nmessage\r\n$8\r\napp:news\r\n$2\r\nhi\r\n"
    );
    let refused = raw(&mut sub, &["SUBSCRIBE", "secret"]).await;
    assert!(
        refused.starts_with(b"-NOPERM"),
        "{}",
        String::from_utf8_lossy(&refused)
    );
}

/// Reads one reply from a raw connection.
async fn read_reply(client: &mut support::RawClient) -> Vec<u8> {
    use tokio::io::AsyncReadExt;
    let mut buf = bytes::BytesMut::new();
    let mut scanner = slotgate::resp::ReplyScanner::new();
    loop {
        if let Some(n) = scanner.next(&buf).unwrap() {
            assert_eq!(n, buf.len(), "more than one reply read at once");
            return buf.to_vec();
        }
        let mut byte = [0u8; 1];
        let read =
            tokio::time::timeout(Duration::from_secs(10), client.stream_mut().read(&mut byte))
                .await
                .expect("no reply")
                .unwrap();
        assert!(read > 0, "closed");
        buf.extend_from_slice(&byte);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_clients_pipeline_and_move_large_values_over_tls_nodes() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (pki, _ca) = Pki::standard();
    let cluster = Cluster::start_tls(3, 0, pki.dir());
    let proxy = Proxy::start_with(&cluster, |c| {
        c.cluster.seeds = tls_seeds(&cluster);
        c.cluster.tls = true;
        c.cluster.tls_ca_file = Some(pki.path("ca.crt"));
        c.tls.listen = "127.0.0.1:0".into();
        c.tls.cert_file = pki.path("proxy.crt");
        c.tls.key_file = pki.path("proxy.key");
    })
    .await;
    let mut client = support::tls::connect(proxy.tls_port.unwrap(), &pki.path("ca.crt"), None)
        .await
        .unwrap();
    // 1000 writes then 1000 reads over every master, in one write.
    let mut pipeline = Vec::new();
    for i in 0..1000 {
        let (k, v) = (format!("p:{i}"), format!("value-{i}"));
        pipeline.extend(
            format!(
                "*3\r\n$3\r\nSET\r\n${}\r\n{k}\r\n${}\r\n{v}\r\n",
                k.len(),
                v.len()
            )
            .bytes(),
        );
    }
    for i in 0..1000 {
        let k = format!("p:{i}");
        pipeline.extend(format!("*2\r\n$3\r\nGET\r\n${}\r\n{k}\r\n", k.len()).bytes());
    }
    let mut expected = b"+OK\r\n".repeat(1000);
    for i in 0..1000 {
        let v = format!("value-{i}");
        expected.extend(format!("${}\r\n{v}\r\n", v.len()).bytes());
    }
    client.write_all(&pipeline).await.unwrap();
    client.flush().await.unwrap();
    let mut got = vec![0u8; expected.len()];
    tokio::time::timeout(Duration::from_secs(20), client.read_exact(&mut got))
        .await
        .expect("pipelined replies did not all arrive")
        .unwrap();
    assert!(got == expected, "pipelined replies differ");
    // A 4 MB value both ways.
    let big = "x".repeat(4 * 1024 * 1024);
    let set = support::tls::command(&mut client, &["SET", "big", &big])
        .await
        .unwrap();
    assert_eq!(set, b"+OK\r\n");
    let get = support::tls::command(&mut client, &["GET", "big"])
        .await
        .unwrap();
    assert_eq!(
        get.len(),
        big.len() + format!("${}\r\n\r\n", big.len()).len()
    );
    assert!(get.ends_with(b"xxx\r\n"));
}
