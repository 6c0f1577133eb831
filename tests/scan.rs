//! SCAN through slotgate while the cluster changes under it: a manual failover of the master
//! being scanned, and a master that starts serving slots in the middle of the walk. Every
//! key must come back at least once.

mod support;

use std::collections::HashSet;
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use support::{Cluster, Proxy, slotgate_counter};

const KEYS: usize = 3000;

async fn fill(con: &mut MultiplexedConnection) -> HashSet<String> {
    let keys: Vec<String> = (0..KEYS).map(|i| format!("scan:{i}")).collect();
    for chunk in keys.chunks(500) {
        let mut mset = redis::cmd("MSET");
        for k in chunk {
            mset.arg(k).arg(1);
        }
        let _: () = mset.query_async(con).await.unwrap();
    }
    keys.into_iter().collect()
}

/// One SCAN call; returns the next cursor.
async fn step(con: &mut MultiplexedConnection, cursor: u64, seen: &mut HashSet<String>) -> u64 {
    let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
        .arg(cursor)
        .arg("COUNT")
        .arg(100)
        .query_async(con)
        .await
        .unwrap();
    seen.extend(keys);
    next
}

/// Fills the cluster, then makes the first two SCAN calls of a walk: the keys written, the
/// keys seen so far and the cursor (the walk is not over).
async fn begin_walk(con: &mut MultiplexedConnection) -> (HashSet<String>, HashSet<String>, u64) {
    let all = fill(con).await;
    let mut seen = HashSet::new();
    let mut cursor = step(con, 0, &mut seen).await;
    cursor = step(con, cursor, &mut seen).await;
    assert_ne!(cursor, 0);
    (all, seen, cursor)
}

fn assert_every_key_seen(all: &HashSet<String>, seen: &HashSet<String>) {
    let missing: Vec<&String> = all.difference(seen).collect();
    assert!(
        missing.is_empty(),
        "{} keys skipped: {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
}

async fn wait_for_generation(con: &mut MultiplexedConnection, after: u64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while slotgate_counter(con, "topology_generation").await <= after {
        assert!(
            tokio::time::Instant::now() < deadline,
            "topology never changed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scan_across_a_failover_of_the_master_being_scanned() {
    let cluster = Cluster::start();
    let proxy = Proxy::start(&cluster).await;
    let mut con = proxy.client(2).await;
    // The walk starts at slot 0: its master is being scanned after two calls.
    let (all, mut seen, mut cursor) = begin_walk(&mut con).await;
    let first = cluster.master_ports[0];
    let replica = cluster.replica_of(first);
    let generation = slotgate_counter(&mut con, "topology_generation").await;
    cluster.fail_over_to(replica).await;
    wait_for_generation(&mut con, generation).await;
    // ... until slotgate routes to the promoted replica.
    support::wait_for_slotgate_info(&mut con, &format!("addr=127.0.0.1:{replica},")).await;
    while cursor != 0 {
        cursor = step(&mut con, cursor, &mut seen).await;
    }
    assert_every_key_seen(&all, &seen);
}

/// Moves slots between masters, retrying while the nodes still disagree about the last
/// change (`redis-cli --cluster reshard` refuses to start then).
fn move_slots(from: u16, to: u16, count: usize) {
    let mut last = String::new();
    for _ in 0..40 {
        let out = std::process::Command::new("bash")
            .arg(support::repo_root().join("integration/faults.sh"))
            .args(["move-slots", &from.to_string(), &from.to_string()])
            .args([&to.to_string(), &count.to_string()])
            .output()
            .unwrap();
        if out.status.success() {
            return;
        }
        last = String::from_utf8_lossy(&out.stderr).into_owned();
        std::thread::sleep(Duration::from_millis(250));
    }
    panic!("move-slots {from} -> {to} kept failing: {last}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scan_across_a_master_added_mid_walk() {
    let cluster = Cluster::start_with(4, 0);
    // The master with the lowest address (first in any address order) joins mid-walk.
    let spare = cluster.master_ports[0];
    // The fourth master starts empty, as an added one does (and stays a master without
    // slots, instead of turning into a replica of the node that took them).
    let mut node = cluster.node(spare).await;
    let _: () = redis::cmd("CONFIG")
        .arg(&["SET", "cluster-allow-replica-migration", "no"])
        .query_async(&mut node)
        .await
        .unwrap();
    move_slots(spare, cluster.master_ports[1], 4096);
    let proxy = Proxy::start(&cluster).await;
    let mut con = proxy.client(2).await;
    let (all, mut seen, mut cursor) = begin_walk(&mut con).await;
    // Now it takes slots (and their keys) from the other masters, some behind the walk and
    // some ahead of it.
    let generation = slotgate_counter(&mut con, "topology_generation").await;
    for from in &cluster.master_ports[1..] {
        move_slots(*from, spare, 300);
    }
    wait_for_generation(&mut con, generation).await;
    // The walk goes on once slotgate's table has all three moves (a refresh may land
    // between two of them): the cursor is exact against the table it routes by.
    let line = format!("addr=127.0.0.1:{spare},slots=900,");
    support::wait_for_slotgate_info(&mut con, &line).await;
    while cursor != 0 {
        cursor = step(&mut con, cursor, &mut seen).await;
    }
    assert_every_key_seen(&all, &seen);
}
