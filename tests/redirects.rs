//! A slot migrated by hand while clients use it: slotgate follows ASK during the migration
//! and MOVED after it, and the client never sees an error.

mod support;

use std::time::Duration;

use redis::AsyncCommands;
use redis::aio::MultiplexedConnection;
use support::{Cluster, Proxy, key_on, slotgate_counter};

async fn node_id(con: &mut MultiplexedConnection) -> String {
    redis::cmd("CLUSTER")
        .arg("MYID")
        .query_async(con)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migration_is_followed_through_ask_then_moved() {
    let cluster = Cluster::start();
    let proxy = Proxy::start(&cluster).await;
    let mut con = proxy.client(2).await;
    let (src_port, dst_port) = (cluster.master_ports[0], cluster.master_ports[1]);
    let mut src = cluster.node(src_port).await;
    let mut dst = cluster.node(dst_port).await;
    let (src_id, dst_id) = (node_id(&mut src).await, node_id(&mut dst).await);

    // Keys in one slot owned by the source master.
    let base = key_on(&cluster, src_port, "mig").await;
    let slot = slotgate::slot::slot_of(base.as_bytes());
    let old_key = format!("{{{base}}}:old");
    let new_key = format!("{{{base}}}:new");
    let _: () = con.set(&old_key, "before").await.unwrap();

    // Start migrating the slot: importing on the destination, migrating on the source.
    let _: () = redis::cmd("CLUSTER")
        .arg(&["SETSLOT", &slot.to_string(), "IMPORTING", &src_id])
        .query_async(&mut dst)
        .await
        .unwrap();
    let _: () = redis::cmd("CLUSTER")
        .arg(&["SETSLOT", &slot.to_string(), "MIGRATING", &dst_id])
        .query_async(&mut src)
        .await
        .unwrap();

    // A key the source does not have: the source answers ASK, slotgate follows it.
    let _: () = con.set(&new_key, "during").await.unwrap();
    assert_eq!(con.get::<_, String>(&new_key).await.unwrap(), "during");
    assert!(slotgate_counter(&mut con, "redirects_ask").await >= 2);
    // The key still on the source is served by the source.
    assert_eq!(con.get::<_, String>(&old_key).await.unwrap(), "before");

    // Move the remaining key, then hand the slot to the destination everywhere.
    let _: () = redis::cmd("MIGRATE")
        .arg(&[
            "127.0.0.1",
            &dst_port.to_string(),
            "",
            "0",
            "5000",
            "KEYS",
            &old_key,
        ])
        .query_async(&mut src)
        .await
        .unwrap();
    cluster.assign_slot(slot, &dst_id).await;

    // slotgate still routes the slot to the source, which now answers MOVED.
    let moved_before = slotgate_counter(&mut con, "redirects_moved").await;
    assert_eq!(con.get::<_, String>(&old_key).await.unwrap(), "before");
    assert_eq!(con.get::<_, String>(&new_key).await.unwrap(), "during");
    assert!(slotgate_counter(&mut con, "redirects_moved").await > moved_before);

    // The table converges: later requests go straight to the new owner.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let settled = slotgate_counter(&mut con, "redirects_moved").await;
    for _ in 0..20 {
        assert_eq!(con.get::<_, String>(&old_key).await.unwrap(), "before");
    }
    assert_eq!(slotgate_counter(&mut con, "redirects_moved").await, settled);
    // Both keys now live on the destination master.
    assert_eq!(dst.get::<_, String>(&old_key).await.unwrap(), "before");
    let on_dst: String = redis::cmd("GET")
        .arg(&new_key)
        .query_async(&mut dst)
        .await
        .unwrap();
    assert_eq!(on_dst, "during");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_seeds_are_tolerated() {
    let cluster = Cluster::start();
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let proxy = Proxy::start_with(&cluster, |c| {
        // A seed that refuses connections comes first; only one live seed is given.
        c.cluster.seeds = vec![format!("127.0.0.1:{dead}"), c.cluster.seeds[1].clone()];
    })
    .await;
    let mut con = proxy.client(2).await;
    for port in &cluster.master_ports {
        let k = key_on(&cluster, *port, "seed:").await;
        let _: () = con.set(&k, 1).await.unwrap();
        assert_eq!(con.get::<_, i64>(&k).await.unwrap(), 1);
    }
}
