//! Pub/Sub through slotgate on a real cluster: classic subscriber mode (RESP2), push frames
//! alongside ordinary commands (RESP3), patterns, and shard channels that follow their slot
//! when it moves.

mod support;

use std::time::Duration;

use redis::AsyncCommands;
use support::{Cluster, Proxy, RawClient, key_on};

/// A RESP2 array of bulk strings.
fn array(parts: &[&str]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", parts.len());
    for p in parts {
        out.push_str(&format!("${}\r\n{p}\r\n", p.len()));
    }
    out.into_bytes()
}

/// A RESP2 subscription confirmation.
fn confirmation(kind: &str, name: &str, count: usize) -> Vec<u8> {
    format!(
        "*3\r\n${}\r\n{kind}\r\n${}\r\n{name}\r\n:{count}\r\n",
        kind.len(),
        name.len()
    )
    .into_bytes()
}

fn msg(kind: &str, ch: &str, payload: &str) -> Vec<u8> {
    format!(
        "*3\r\n${}\r\n{kind}\r\n${}\r\n{ch}\r\n${}\r\n{payload}\r\n",
        kind.len(),
        ch.len(),
        payload.len()
    )
    .into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resp2_subscriber_mode() {
    let cluster = Cluster::start();
    let proxy = Proxy::start(&cluster).await;
    let mut publisher = proxy.client(2).await;
    let mut sub = RawClient::connect(proxy.port).await;

    // A reply due before SUBSCRIBE comes before its confirmation.
    sub.send(b"SET {s}k 1\r\nSUBSCRIBE news sport\r\n").await;
    sub.expect(b"+OK\r\n").await;
    sub.expect(b"*3\r\n$9\r\nsubscribe\r\n$4\r\nnews\r\n:1\r\n*3\r\n$9\r\nsubscribe\r\n$5\r\nsport\r\n:2\r\n")
        .await;
    let _: i64 = publisher.publish("news", "hello").await.unwrap();
    sub.expect(&msg("message", "news", "hello")).await;

    // Only subscriber commands are accepted; PING answers in subscriber form.
    sub.send(b"GET {s}k\r\nPING\r\n").await;
    sub.expect(b"-ERR Can't execute 'get': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context\r\n")
        .await;
    sub.expect(b"*2\r\n$4\r\npong\r\n$0\r\n\r\n").await;

    sub.send(b"PSUBSCRIBE n*\r\n").await;
    sub.expect(b"*3\r\n$10\r\npsubscribe\r\n$2\r\nn*\r\n:3\r\n")
        .await;
    let _: i64 = publisher.publish("news", "again").await.unwrap();
    // Delivered once for the channel and once for the pattern.
    sub.expect(&msg("message", "news", "again")).await;
    sub.expect(b"*4\r\n$8\r\npmessage\r\n$2\r\nn*\r\n$4\r\nnews\r\n$5\r\nagain\r\n")
        .await;

    // Leaving subscriber mode when everything is unsubscribed.
    sub.send(b"UNSUBSCRIBE news sport\r\nPUNSUBSCRIBE n*\r\n")
        .await;
    sub.expect(b"*3\r\n$11\r\nunsubscribe\r\n$4\r\nnews\r\n:2\r\n")
        .await;
    sub.expect(b"*3\r\n$11\r\nunsubscribe\r\n$5\r\nsport\r\n:1\r\n")
        .await;
    sub.expect(b"*3\r\n$12\r\npunsubscribe\r\n$2\r\nn*\r\n:0\r\n")
        .await;
    sub.send(b"GET {s}k\r\nPING\r\n").await;
    sub.expect(b"$1\r\n1\r\n+PONG\r\n").await;
    // Unsubscribing when nothing is subscribed answers as Redis does.
    sub.send(b"UNSUBSCRIBE\r\n").await;
    sub.expect(b"*3\r\n$11\r\nunsubscribe\r\n$-1\r\n:0\r\n")
        .await;
    sub.expect_silence(Duration::from_millis(200)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resp3_push_frames_beside_ordinary_commands() {
    let cluster = Cluster::start();
    let proxy = Proxy::start(&cluster).await;
    let mut publisher = proxy.client(2).await;
    let _: () = publisher.set("plain", "v").await.unwrap();
    let mut sub = RawClient::connect(proxy.port).await;
    sub.send(b"HELLO 3\r\n").await;
    // Skip the HELLO map: read until the modules entry.
    let mut hello = Vec::new();
    while !hello.ends_with(b"$7\r\nmodules\r\n*0\r\n") {
        let (mut chunk, _) = (vec![0u8; 1], ());
        tokio::io::AsyncReadExt::read_exact(&mut sub_stream(&mut sub), &mut chunk)
            .await
            .unwrap();
        hello.extend(chunk);
    }
    sub.send(b"SUBSCRIBE ch\r\n").await;
    sub.expect(b">3\r\n$9\r\nsubscribe\r\n$2\r\nch\r\n:1\r\n")
        .await;
    // Ordinary commands keep working while subscribed.
    sub.send(b"GET plain\r\nPING\r\n").await;
    sub.expect(b"$1\r\nv\r\n+PONG\r\n").await;
    let _: i64 = publisher.publish("ch", "hi").await.unwrap();
    sub.expect(b">3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$2\r\nhi\r\n")
        .await;
    sub.send(b"UNSUBSCRIBE ch\r\n").await;
    sub.expect(b">3\r\n$11\r\nunsubscribe\r\n$2\r\nch\r\n:0\r\n")
        .await;
    sub.send(b"UNSUBSCRIBE ch\r\n").await;
    sub.expect(b">3\r\n$11\r\nunsubscribe\r\n$2\r\nch\r\n:0\r\n")
        .await;
}

/// The raw stream inside a `RawClient`, for byte-level reads in one test.
fn sub_stream(c: &mut RawClient) -> &mut tokio::net::TcpStream {
    c.stream_mut()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shard_channels_follow_their_slot() {
    let cluster = Cluster::start();
    let proxy = Proxy::start(&cluster).await;
    let mut publisher = proxy.client(2).await;
    let mut sub = RawClient::connect(proxy.port).await;

    sub.send(b"SSUBSCRIBE {x}a {y}b\r\n").await;
    sub.expect(b"-CROSSSLOT Keys in request don't hash to the same slot\r\n")
        .await;
    let ch = support::key_on(&cluster, cluster.master_ports[0], "shard").await;
    sub.send(format!("SSUBSCRIBE {ch}\r\n").as_bytes()).await;
    sub.expect(format!("*3\r\n$10\r\nssubscribe\r\n${}\r\n{ch}\r\n:1\r\n", ch.len()).as_bytes())
        .await;
    let n: i64 = redis::cmd("SPUBLISH")
        .arg(&ch)
        .arg("one")
        .query_async(&mut publisher)
        .await
        .unwrap();
    assert_eq!(n, 1);
    sub.expect(&msg("smessage", &ch, "one")).await;

    // Move the channel's slot to another master.
    let slot = slotgate::slot::slot_of(ch.as_bytes());
    let mut dst = cluster.node(cluster.master_ports[1]).await;
    let dst_id: String = redis::cmd("CLUSTER")
        .arg("MYID")
        .query_async(&mut dst)
        .await
        .unwrap();
    cluster.assign_slot(slot, &dst_id).await;
    // slotgate resubscribes on the new owner; the client sees no sunsubscribe.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let n: i64 = redis::cmd("SPUBLISH")
            .arg(&ch)
            .arg("two")
            .query_async(&mut publisher)
            .await
            .unwrap();
        if n == 1 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not resubscribed on the new owner"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    sub.expect(&msg("smessage", &ch, "two")).await;
    sub.expect_silence(Duration::from_millis(300)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_subscriber_is_disconnected() {
    let cluster = Cluster::start();
    let proxy = Proxy::start_with(&cluster, |c| c.limits.pubsub_output_buffer = 64 * 1024).await;
    let mut publisher = proxy.client(2).await;
    let mut sub = RawClient::connect(proxy.port).await;
    sub.send(b"SUBSCRIBE firehose\r\n").await;
    sub.expect(b"*3\r\n$9\r\nsubscribe\r\n$8\r\nfirehose\r\n:1\r\n")
        .await;
    // The subscriber stops reading; far more than the limit is published.
    let payload = "x".repeat(16 * 1024);
    for _ in 0..2000 {
        let _: i64 = publisher.publish("firehose", &payload).await.unwrap();
    }
    // slotgate gave up on it: reading what was buffered ends in EOF, well short of all.
    let mut total = 0usize;
    let stream = sub.stream_mut();
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        match tokio::time::timeout(
            Duration::from_secs(10),
            tokio::io::AsyncReadExt::read(stream, &mut chunk),
        )
        .await
        {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => total += n,
            Err(_) => panic!("slow subscriber was not disconnected"),
        }
    }
    assert!(total < 2000 * payload.len(), "received {total} bytes");
    // Other clients are unaffected.
    let _: () = publisher.set("still", "fine").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_counts_follow_the_home_master_through_a_failover() {
    let cluster = Cluster::start();
    let proxy = Proxy::start(&cluster).await;
    let mut subs = Vec::new();
    for _ in 0..2 {
        let mut s = RawClient::connect(proxy.port).await;
        s.send(b"SUBSCRIBE home\r\n").await;
        s.expect(b"*3\r\n$9\r\nsubscribe\r\n$4\r\nhome\r\n:1\r\n")
            .await;
        subs.push(s);
    }
    let mut con = proxy.client(2).await;
    let n: i64 = con.publish("home", "before").await.unwrap();
    assert_eq!(n, 2, "every subscriber of slotgate's clients counts");
    for s in &mut subs {
        s.expect(&msg("message", "home", "before")).await;
    }
    // The home master (slot 0's) fails over to its replica, which now owns slot 0.
    let home = cluster.owner_of(0).await;
    let replica = cluster.replica_of(home);
    cluster.fail_over_to(replica).await;
    // Once slotgate's table has the new home, PUBLISH reaches it, where the subscribers
    // moved.
    support::wait_for_slotgate_info(&mut con, &format!("addr=127.0.0.1:{replica},")).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let n: i64 = con.publish("home", "probe").await.unwrap();
        if n == 2 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "PUBLISH counts {n} after the failover"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let n: i64 = con.publish("home", "after").await.unwrap();
    assert_eq!(n, 2);
    for s in &mut subs {
        s.expect_until(&msg("message", "home", "after")).await;
    }
}

/// Turns keyspace notifications on (every kind) on every node of `cluster`.
async fn notify_keyspace_events(cluster: &Cluster) {
    for &port in &cluster.ports {
        let mut node = cluster.node(port).await;
        let _: () = redis::cmd("CONFIG")
            .arg("SET")
            .arg("notify-keyspace-events")
            .arg("KEA")
            .query_async(&mut node)
            .await
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyspace_notifications_come_from_every_master_across_a_failover() {
    let cluster = Cluster::start();
    notify_keyspace_events(&cluster).await;
    let proxy = Proxy::start(&cluster).await;
    let mut con = proxy.client(2).await;
    let mut sub = RawClient::connect(proxy.port).await;
    let pattern = "__keyevent@0__:*";
    let channel = "__keyspace@0__:{ks}k";
    // A first keyspace pattern: confirmed once subscribed on every master, so events of
    // keys on each, written right after the confirmation, reach the one subscriber.
    let mut keys = Vec::new();
    for &master in &cluster.master_ports {
        keys.push(key_on(&cluster, master, "ev:").await);
    }
    sub.send(format!("PSUBSCRIBE {pattern}\r\n").as_bytes())
        .await;
    sub.expect(&confirmation("psubscribe", pattern, 1)).await;
    for key in &keys {
        let _: () = con.set(key, 1).await.unwrap();
    }
    for key in &keys {
        sub.expect_until(&array(&["pmessage", pattern, "__keyevent@0__:set", key]))
            .await;
    }
    // A classic channel beside a keyspace one: one confirmation per name, in the order
    // asked, counted as one server counts.
    sub.send(format!("SUBSCRIBE news {channel}\r\n").as_bytes())
        .await;
    let mut expected = confirmation("subscribe", "news", 2);
    expected.extend(confirmation("subscribe", channel, 3));
    sub.expect(&expected).await;
    let _: () = con.set("{ks}k", 1).await.unwrap();
    sub.expect_until(&msg("message", channel, "set")).await;
    let _: i64 = con.publish("news", "hello").await.unwrap();
    sub.expect_until(&msg("message", "news", "hello")).await;

    // A master fails over: its replica's events are heard once slotgate follows it.
    let master = cluster.master_ports[0];
    let replica = cluster.replica_of(master);
    cluster.fail_over_to(replica).await;
    support::wait_for_slotgate_info(&mut con, &format!("addr=127.0.0.1:{replica},")).await;
    let key = key_on(&cluster, replica, "after:").await;
    let event = array(&["pmessage", pattern, "__keyevent@0__:set", &key]);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let _: () = con.set(&key, 2).await.unwrap();
        if sub.seen_within(&event, Duration::from_millis(500)).await {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no event from the promoted master"
        );
    }
    // Every other master still reports.
    for &master in &cluster.master_ports[1..] {
        let key = key_on(&cluster, master, "still:").await;
        let _: () = con.set(&key, 1).await.unwrap();
        sub.expect_until(&array(&["pmessage", pattern, "__keyevent@0__:set", &key]))
            .await;
    }

    // Unsubscribing everything: one confirmation per name, counts going down to 0, and the
    // client leaves subscriber mode.
    sub.send(b"PUNSUBSCRIBE\r\nUNSUBSCRIBE\r\n").await;
    sub.expect_until(&confirmation("punsubscribe", pattern, 2))
        .await;
    let mut expected = confirmation("unsubscribe", "news", 1);
    expected.extend(confirmation("unsubscribe", channel, 0));
    sub.expect(&expected).await;
    sub.send(b"PING\r\n").await;
    sub.expect(b"+PONG\r\n").await;
    sub.expect_silence(Duration::from_millis(300)).await;
    // Once the per-master connections are closed too, an unsubscribe from nothing is
    // answered as Redis answers it, and the next command after it.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    sub.send(b"UNSUBSCRIBE\r\nPING\r\n").await;
    sub.expect(b"*3\r\n$11\r\nunsubscribe\r\n$-1\r\n:0\r\n+PONG\r\n")
        .await;

    // A client's last unsubscribe pipelined with a new subscribe keeps the new one (the
    // connection is not closed under it), with and without keyspace subscriptions made.
    let mut plain = RawClient::connect(proxy.port).await;
    for client in [&mut plain, &mut sub] {
        client.send(b"SUBSCRIBE x\r\n").await;
        client.expect(&confirmation("subscribe", "x", 1)).await;
        client.send(b"UNSUBSCRIBE x\r\nSUBSCRIBE y\r\n").await;
        let mut expected = confirmation("unsubscribe", "x", 0);
        expected.extend(confirmation("subscribe", "y", 1));
        client.expect(&expected).await;
    }
    let n: i64 = con.publish("y", "kept").await.unwrap();
    assert_eq!(n, 2);
    plain.expect(&msg("message", "y", "kept")).await;
    sub.expect(&msg("message", "y", "kept")).await;

    // RESP3: the confirmation and the events are push frames, beside ordinary commands.
    let mut push = RawClient::connect(proxy.port).await;
    push.send(b"HELLO 3\r\nPING\r\n").await;
    push.expect_until(b"+PONG\r\n").await;
    push.send(format!("PSUBSCRIBE {pattern}\r\nGET {{ks}}k\r\n").as_bytes())
        .await;
    push.expect(
        format!(
            ">3\r\n$10\r\npsubscribe\r\n${}\r\n{pattern}\r\n:1\r\n$1\r\n1\r\n",
            pattern.len()
        )
        .as_bytes(),
    )
    .await;
    let key = key_on(&cluster, cluster.master_ports[2], "push:").await;
    let _: () = con.set(&key, 1).await.unwrap();
    let mut event = array(&["pmessage", pattern, "__keyevent@0__:set", &key]);
    event[0] = b'>';
    push.expect_until(&event).await;
}

/// How many times `needle` occurs in `hay`.
fn occurrences(hay: &[u8], needle: &[u8]) -> usize {
    hay.windows(needle.len()).filter(|w| *w == needle).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broad_patterns_hear_every_master_once() {
    let cluster = Cluster::start();
    notify_keyspace_events(&cluster).await;
    let proxy = Proxy::start(&cluster).await;
    let mut con = proxy.client(2).await;
    // The pattern of Redis's documentation, and everything: both match keyspace
    // notifications, which each master publishes for its own keys only.
    let patterns = ["__key*__:*", "*"];
    let mut sub = RawClient::connect(proxy.port).await;
    sub.send(b"PSUBSCRIBE __key*__:* *\r\n").await;
    let mut expected = confirmation("psubscribe", patterns[0], 1);
    expected.extend(confirmation("psubscribe", patterns[1], 2));
    sub.expect(&expected).await;
    let mut keys = Vec::new();
    for &master in &cluster.master_ports {
        keys.push(key_on(&cluster, master, "broad:").await);
    }
    for key in &keys {
        let _: () = con.set(key, 1).await.unwrap();
    }
    // Published messages reach every master through the cluster bus: each pattern's
    // message arrives once all the same.
    let _: i64 = con.publish("news", "hello").await.unwrap();
    let _: i64 = con.publish("__keyx__:y", "hi").await.unwrap();
    let got = sub.collect(Duration::from_millis(1500)).await;
    for key in &keys {
        let space = format!("__keyspace@0__:{key}");
        for p in patterns {
            for frame in [
                array(&["pmessage", p, &space, "set"]),
                array(&["pmessage", p, "__keyevent@0__:set", key]),
            ] {
                assert_eq!(
                    occurrences(&got, &frame),
                    1,
                    "{:?} in {:?}",
                    String::from_utf8_lossy(&frame),
                    String::from_utf8_lossy(&got)
                );
            }
        }
    }
    for (p, ch, payload) in [
        ("*", "news", "hello"),
        ("*", "__keyx__:y", "hi"),
        ("__key*__:*", "__keyx__:y", "hi"),
    ] {
        let frame = array(&["pmessage", p, ch, payload]);
        assert_eq!(
            occurrences(&got, &frame),
            1,
            "{:?} in {:?}",
            String::from_utf8_lossy(&frame),
            String::from_utf8_lossy(&got)
        );
    }
    // Unsubscribed from every master: one confirmation each, and the client leaves
    // subscriber mode.
    sub.send(b"PUNSUBSCRIBE *\r\nPUNSUBSCRIBE __key*__:*\r\nPING\r\n")
        .await;
    let mut expected = confirmation("punsubscribe", "*", 1);
    expected.extend(confirmation("punsubscribe", patterns[0], 0));
    expected.extend(b"+PONG\r\n");
    sub.expect(&expected).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyspace_notifications_follow_a_master_added_to_the_cluster() {
    let cluster = Cluster::start_with(3, 0);
    notify_keyspace_events(&cluster).await;
    let proxy = Proxy::start(&cluster).await;
    let mut con = proxy.client(2).await;
    let mut sub = RawClient::connect(proxy.port).await;
    let pattern = "__keyevent@0__:*";
    sub.send(format!("PSUBSCRIBE {pattern}\r\n").as_bytes())
        .await;
    sub.expect(&confirmation("psubscribe", pattern, 1)).await;

    // A new master joins and takes an empty slot.
    let added = cluster.add_empty_master().await;
    let mut node = cluster.node(added).await;
    let _: () = redis::cmd("CONFIG")
        .arg(&["SET", "notify-keyspace-events", "KEA"])
        .query_async(&mut node)
        .await
        .unwrap();
    let key = key_on(&cluster, cluster.master_ports[1], "joined:").await;
    cluster
        .move_empty_slot(slotgate::slot::slot_of(key.as_bytes()), added)
        .await;
    // Once slotgate routes the slot there, the new master's events reach the subscriber.
    let event = array(&["pmessage", pattern, "__keyevent@0__:set", &key]);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let _: () = con.set(&key, 1).await.unwrap();
        if sub.seen_within(&event, Duration::from_millis(500)).await {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no event from the added master"
        );
    }
    let v: i64 = node.get(&key).await.unwrap();
    assert_eq!(v, 1, "the key is on the added master");
}
