//! Security through slotgate: TLS on the client side (mutual TLS, certificate reload on
//! SIGHUP) and on the backend side (a TLS-only cluster, server-name checks, a failover),
//! ACL users end to end, and the client limits (max clients, idle timeout, slow loris).

mod support;

use std::time::Duration;

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
    let proxy = Proxy::start_with(&cluster, |c| {
        c.cluster.seeds = tls_seeds(&cluster);
        c.cluster.tls = true;
        c.cluster.tls_ca_file = Some(pki.path("ca.crt"));
        c.tls.listen = "127.0.0.1:0".into();
        c.tls.cert_file = pki.path("proxy.crt");
        c.tls.key_file = pki.path("proxy.key");
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
    let _: i64 = redis::cmd("PUBLISH")
        .arg("news")
        .arg("hello")
        .query_async(&mut con)
        .await
        .unwrap();
    subscriber
        .expect(b"*3\r\n$7\r\nmessage\r\n$4\r\nnews\r\n$5\r\nhello\r\n")
        .await;
    let _: i64 = redis::cmd("RPUSH")
        .arg("idle:list")
        .arg("x")
        .query_async(&mut con)
        .await
        .unwrap();
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
