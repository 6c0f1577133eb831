//! Topology sources: with `CLUSTER NODES` refused to slotgate's backend user (as managed
//! services refuse or rename it), the slot table comes from `CLUSTER SHARDS`.

mod support;

use redis::AsyncCommands;
use support::{Cluster, Proxy, key_on, slotgate_counter};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_shards_stands_in_for_a_refused_cluster_nodes() {
    let cluster = Cluster::start();
    for port in &cluster.ports {
        let mut node = cluster.node(*port).await;
        let _: () = redis::cmd("ACL")
            .arg(&[
                "SETUSER",
                "proxy",
                "on",
                ">proxy-pw",
                "~*",
                "&*",
                "+@all",
                "-cluster|nodes",
            ])
            .query_async(&mut node)
            .await
            .unwrap();
    }
    let proxy = Proxy::start_with(&cluster, |c| {
        c.cluster.username = Some("proxy".into());
        c.cluster.password = Some("proxy-pw".into());
    })
    .await;
    let mut con = proxy.client(2).await;
    assert_eq!(slotgate_counter(&mut con, "cluster_masters").await, 3);
    assert_eq!(
        slotgate_counter(&mut con, "cluster_slots_assigned").await,
        16384
    );
    // Each master's keys go straight to it.
    for port in &cluster.master_ports {
        let key = key_on(&cluster, *port, "shards:").await;
        let _: () = con.set(&key, *port).await.unwrap();
        let v: u16 = con.get(&key).await.unwrap();
        assert_eq!(v, *port);
    }
    assert_eq!(slotgate_counter(&mut con, "redirects_moved").await, 0);
}
