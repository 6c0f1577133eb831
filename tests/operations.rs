//! Operating slotgate: the admin listener's /metrics (parsed as Prometheus text), /health,
//! /ready through a failover, and /config with its secrets redacted.

mod support;

use std::time::Duration;

use redis::AsyncCommands;
use support::{Cluster, Proxy};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// `GET path` on the admin listener: status code and body.
async fn http_get(port: u16, path: &str) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: slotgate\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await
        .unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut raw))
        .await
        .expect("admin listener did not answer")
        .unwrap();
    let text = String::from_utf8(raw).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, body.to_string())
}

fn parse_metrics(text: &str) -> prometheus_parse::Scrape {
    prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).unwrap()
}

/// The value of the sample `name` with `labels`.
fn sample(scrape: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    let s = scrape
        .samples
        .iter()
        .find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .unwrap_or_else(|| panic!("no sample {name} {labels:?}"));
    match &s.value {
        prometheus_parse::Value::Counter(v)
        | prometheus_parse::Value::Gauge(v)
        | prometheus_parse::Value::Untyped(v) => *v,
        prometheus_parse::Value::Histogram(buckets) => buckets.last().map_or(0.0, |b| b.count),
        prometheus_parse::Value::Summary(_) => panic!("{name} is a summary"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_parse_as_prometheus_text_and_move_with_the_traffic() {
    let cluster = Cluster::start_with(3, 0);
    let proxy = Proxy::start_with(&cluster, |c| c.admin.listen = "127.0.0.1:0".into()).await;
    let admin = proxy.admin_port.unwrap();
    let (status, text) = http_get(admin, "/metrics").await;
    assert_eq!(status, 200);
    let before = parse_metrics(&text);
    for family in [
        "slotgate_uptime_seconds",
        "slotgate_client_connections",
        "slotgate_client_connections_accepted_total",
        "slotgate_client_connections_rejected_total",
        "slotgate_client_connections_closed_by_limit_total",
        "slotgate_auth_failures_total",
        "slotgate_auth_rate_limited_total",
        "slotgate_commands_total",
        "slotgate_backend_requests_total",
        "slotgate_backend_errors_total",
        "slotgate_redirects_total",
        "slotgate_retries_total",
        "slotgate_backend_latency_seconds",
        "slotgate_topology_generation",
        "slotgate_slots_covered",
        "slotgate_masters",
        "slotgate_session_connections",
        "slotgate_acl_users",
        "slotgate_command_calls_total",
        "slotgate_command_errors_total",
        "slotgate_command_latency_seconds",
        "slotgate_slowlog_entries",
        "slotgate_pubsub_subscribers",
        "slotgate_topology_refresh_seconds",
        "slotgate_tracking_clients",
        "slotgate_tracking_keys",
        "slotgate_tracking_invalidations_total",
        "slotgate_tracking_flushes_total",
    ] {
        assert!(
            before.samples.iter().any(|s| s.metric == family),
            "{family} missing:\n{text}"
        );
    }
    assert_eq!(
        sample(&before, "slotgate_slots_covered", &[("cluster", "primary")]),
        16384.0
    );
    let mut con = proxy.client(2).await;
    for i in 0..200 {
        let _: () = redis::cmd("SET")
            .arg(format!("m:{i}"))
            .arg(i)
            .query_async(&mut con)
            .await
            .unwrap();
    }
    let _: redis::RedisResult<()> = redis::cmd("INCR")
        .arg("m:1x")
        .arg("extra")
        .query_async(&mut con)
        .await;
    let (_, text) = http_get(admin, "/metrics").await;
    let after = parse_metrics(&text);
    // Families with a label per command appear with the first call: absent counts as 0.
    let moved = |name: &str, labels: &[(&str, &str)]| {
        let had = before
            .samples
            .iter()
            .any(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)));
        let was = if had {
            sample(&before, name, labels)
        } else {
            0.0
        };
        sample(&after, name, labels) - was
    };
    assert!(moved("slotgate_commands_total", &[]) >= 201.0);
    assert!(moved("slotgate_backend_requests_total", &[("cluster", "primary")]) >= 200.0);
    assert!(moved("slotgate_client_connections_accepted_total", &[]) >= 1.0);
    assert!(sample(&after, "slotgate_client_connections", &[]) >= 1.0);
    assert!(
        moved(
            "slotgate_backend_latency_seconds",
            &[("cluster", "primary")]
        ) >= 10.0,
        "one command in 8 is timed"
    );
    assert_eq!(
        moved("slotgate_command_calls_total", &[("command", "set")]),
        200.0
    );
    assert!(
        text.contains("slotgate_command_latency_seconds_count{command=\"set\"} 200\n"),
        "{}",
        text.lines()
            .filter(|l| l.contains("latency_seconds") && l.contains("set"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(
        sample(
            &after,
            "slotgate_command_errors_total",
            &[("command", "incr")]
        ) >= 1.0
    );
    // Per node: every master answered, on a shared connection that is up.
    for port in &cluster.master_ports {
        let node = format!("127.0.0.1:{port}");
        let labels = [("cluster", "primary"), ("node", node.as_str())];
        assert!(
            sample(&after, "slotgate_node_replies_total", &labels) > 0.0,
            "{node}"
        );
        let up = [
            ("cluster", "primary"),
            ("node", node.as_str()),
            ("kind", "shared"),
            ("state", "connected"),
        ];
        assert!(
            sample(&after, "slotgate_node_connections", &up) >= 1.0,
            "{node}"
        );
    }
    assert!(
        text.contains("slotgate_node_latency_seconds_count{"),
        "no node latency"
    );
    assert!(text.contains("slotgate_node_timeouts_total{"));
    // Commands outside the table share one label: the cardinality stays bounded.
    let _: redis::RedisResult<()> = redis::cmd("NOSUCHCOMMAND").query_async(&mut con).await;
    let (_, text) = http_get(admin, "/metrics").await;
    let last = parse_metrics(&text);
    assert!(
        sample(
            &last,
            "slotgate_command_errors_total",
            &[("command", "other")]
        ) >= 1.0
    );
    assert!(
        !text.contains("nosuchcommand"),
        "an unknown command became a label"
    );
    // A subscriber is counted while it is subscribed.
    let mut sub = support::RawClient::connect(proxy.port).await;
    sub.send(b"SUBSCRIBE news\r\n").await;
    sub.expect(b"*3\r\n$9\r\nsubscribe\r\n$4\r\nnews\r\n:1\r\n")
        .await;
    let (_, text) = http_get(admin, "/metrics").await;
    assert_eq!(
        sample(&parse_metrics(&text), "slotgate_pubsub_subscribers", &[]),
        1.0
    );
    drop(sub);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let (_, text) = http_get(admin, "/metrics").await;
        if sample(&parse_metrics(&text), "slotgate_pubsub_subscribers", &[]) == 0.0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "subscriber still counted"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirror_and_queue_families_move_with_mirrored_writes() {
    let cluster = Cluster::start_with(3, 0);
    let copy = support::Standalone::start().await;
    let queue = support::Standalone::start().await;
    let mirror = || slotgate::config::MirrorResourceConfig {
        name: "copy".into(),
        standalone: Some(format!("127.0.0.1:{}", copy.port)),
        ..Default::default()
    };
    // Direct mode, with the delay probe every 100 ms.
    let direct = Proxy::start_with(&cluster, |c| {
        c.admin.listen = "127.0.0.1:0".into();
        c.mirror.mode = slotgate::config::MultiWriteMode::FirstResourceOnly;
        c.mirror.probe_interval_ms = 100;
        c.mirror.resources = vec![mirror()];
    })
    .await;
    let mut con = direct.client(2).await;
    for i in 0..100 {
        let _: () = con.set(format!("mm:{i}"), i).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(600)).await;
    let (_, text) = http_get(direct.admin_port.unwrap(), "/metrics").await;
    let m = parse_metrics(&text);
    let copy_label = [("resource", "copy")];
    assert_eq!(
        sample(&m, "slotgate_mirror_dropped_total", &copy_label),
        0.0
    );
    assert!(sample(&m, "slotgate_mirror_backlog", &copy_label) >= 0.0);
    assert!(
        sample(&m, "slotgate_mirror_delay_seconds", &copy_label) >= 2.0,
        "the probe measured nothing:\n{text}"
    );
    // The mirror's own backend series, under its resource name.
    assert!(
        sample(
            &m,
            "slotgate_backend_requests_total",
            &[("cluster", "copy")]
        ) >= 100.0,
        "{text}"
    );

    // Async mode: the queue's length, pending entries and lag.
    let queued = Proxy::start_with(&cluster, |c| {
        c.admin.listen = "127.0.0.1:0".into();
        c.mirror.mode = slotgate::config::MultiWriteMode::Async;
        c.mirror.resources = vec![mirror()];
        c.mirror.queue = Some(slotgate::config::QueueConfig {
            redis: format!("127.0.0.1:{}", queue.port),
            ..Default::default()
        });
    })
    .await;
    let mut con = queued.client(2).await;
    for i in 0..30 {
        let _: () = con.set(format!("mq:{i}"), i).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (_, text) = http_get(queued.admin_port.unwrap(), "/metrics").await;
    let m = parse_metrics(&text);
    assert_eq!(sample(&m, "slotgate_queue_length", &[]), 30.0, "{text}");
    assert_eq!(sample(&m, "slotgate_queue_pending", &[]), 0.0, "{text}");
    // No consumer yet: the oldest entry waits, and its age shows.
    assert!(
        sample(&m, "slotgate_queue_lag_seconds", &[]) >= 1.0,
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_skewed_loads_hottest_key_is_reported_first() {
    let cluster = Cluster::start_with(3, 0);
    let proxy = Proxy::start_with(&cluster, |c| c.admin.listen = "127.0.0.1:0".into()).await;
    let mut con = proxy.client(2).await;
    for i in 0..3000u32 {
        let key = match i % 10 {
            0..=4 => "hot:first".to_string(),
            5 | 6 => "hot:second".to_string(),
            _ => format!("cold:{i}"),
        };
        let _: Option<String> = redis::cmd("GET")
            .arg(&key)
            .query_async(&mut con)
            .await
            .unwrap();
    }
    let info: String = redis::cmd("INFO")
        .arg("hotkeys")
        .query_async(&mut con)
        .await
        .unwrap();
    let first = info
        .lines()
        .find(|l| l.starts_with("hotkey0:"))
        .unwrap_or_default();
    let second = info
        .lines()
        .find(|l| l.starts_with("hotkey1:"))
        .unwrap_or_default();
    assert!(first.starts_with("hotkey0:key=hot:first,calls="), "{info}");
    assert!(
        second.starts_with("hotkey1:key=hot:second,calls="),
        "{info}"
    );
    let (_, text) = http_get(proxy.admin_port.unwrap(), "/metrics").await;
    let scrape = parse_metrics(&text);
    let hot = sample(&scrape, "slotgate_hotkey_calls", &[("key", "hot:first")]);
    assert!(
        (1000.0..=2000.0).contains(&hot),
        "{hot}: 1500 calls, sampled"
    );
    assert!(
        scrape
            .samples
            .iter()
            .filter(|s| s.metric == "slotgate_hotkey_calls")
            .count()
            <= slotgate::hotkeys::TOP
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowlog_keeps_slotgates_own_timing_with_the_node() {
    let cluster = Cluster::start_with(3, 0);
    let proxy = Proxy::start_with(&cluster, |c| c.slowlog.threshold_us = 100_000).await;
    let mut con = proxy.client(2).await;
    let _: () = redis::cmd("SET")
        .arg("fast")
        .arg(1)
        .query_async(&mut con)
        .await
        .unwrap();
    // A Lua script that runs for 200 ms on the node owning `slow`.
    let _: redis::Value = redis::cmd("EVAL")
        .arg(
            "local t = redis.call('TIME') local s = t[1] * 1000000 + t[2] \
              while true do local n = redis.call('TIME') \
              if n[1] * 1000000 + n[2] - s > 200000 then break end end return 1",
        )
        .arg(1)
        .arg("slow")
        .query_async(&mut con)
        .await
        .unwrap();
    let len = slowlog_len(&mut con).await;
    assert_eq!(len, 1);
    let entries: Vec<Vec<redis::Value>> = redis::cmd("SLOWLOG")
        .arg("GET")
        .query_async(&mut con)
        .await
        .unwrap();
    let entry = &entries[0];
    let micros: i64 = redis::from_redis_value(&entry[2]).unwrap();
    assert!(micros >= 200_000, "{micros}");
    let args: Vec<String> = redis::from_redis_value(&entry[3]).unwrap();
    assert_eq!(args[0], "EVAL");
    assert_eq!(args[3], "slow");
    let node: String = redis::from_redis_value(&entry[6]).unwrap();
    let owner = cluster.owner_of(slotgate::slot::slot_of(b"slow")).await;
    assert_eq!(node, format!("127.0.0.1:{owner}"));
    let _: () = redis::cmd("SLOWLOG")
        .arg("RESET")
        .query_async(&mut con)
        .await
        .unwrap();
    let len = slowlog_len(&mut con).await;
    assert_eq!(len, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_follows_the_slot_table_and_the_masters() {
    let cluster = Cluster::start_with(3, 1);
    let proxy = Proxy::start_with(&cluster, |c| {
        c.admin.listen = "127.0.0.1:0".into();
        c.cluster.connect_timeout_ms = 500;
    })
    .await;
    let admin = proxy.admin_port.unwrap();
    assert_eq!(http_get(admin, "/health").await, (200, "ok\n".into()));
    assert_eq!(http_get(admin, "/ready").await.0, 200);
    // A stopped master: not ready (its PING times out) until its replica is promoted.
    let victim = cluster.master_ports[1];
    let resume = support::stop(&cluster, victim);
    let (status, body) = http_get(admin, "/ready").await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains(&victim.to_string()), "{body}");
    // The replica takes over (cluster-node-timeout 2 s): ready again.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body) = http_get(admin, "/ready").await;
        if status == 200 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never ready after the failover: {body}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(resume);
    assert_eq!(http_get(admin, "/nope").await.0, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_is_503_until_the_slot_table_is_complete() {
    let cluster = Cluster::start_with(1, 0);
    // A seed that is not a node: no slot table at all.
    let proxy = Proxy::start_unready(&cluster, |c| {
        c.admin.listen = "127.0.0.1:0".into();
        c.cluster.seeds = vec!["127.0.0.1:1".into()];
        c.cluster.connect_timeout_ms = 200;
    })
    .await;
    let admin = proxy.admin_port.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let (status, body) = loop {
        match tokio::net::TcpStream::connect(("127.0.0.1", admin)).await {
            Ok(_) => break http_get(admin, "/ready").await,
            Err(_) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("admin listener never opened: {e}"),
        }
    };
    assert_eq!(status, 503);
    assert!(
        body.contains("16384 of 16384 slots have no known owner"),
        "{body}"
    );
    assert_eq!(http_get(admin, "/health").await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_is_shown_with_its_secrets_redacted() {
    let cluster = Cluster::start_with(1, 0);
    let proxy = Proxy::start_with(&cluster, |c| {
        c.admin.listen = "127.0.0.1:0".into();
        c.password = Some("client-secret".into());
        c.limits.max_clients = 1234;
    })
    .await;
    let (status, body) = http_get(proxy.admin_port.unwrap(), "/config").await;
    assert_eq!(status, 200);
    assert!(!body.contains("client-secret"), "{body}");
    assert!(body.contains("password: <redacted>"), "{body}");
    assert!(body.contains("max_clients: 1234"), "{body}");
    let parsed = slotgate::config::Config::from_yaml(&body.replace("<redacted>", "x")).unwrap();
    assert_eq!(parsed.limits.max_clients, 1234);
}

/// The Grafana dashboard only queries metric families slotgate exports.
#[test]
fn the_dashboard_uses_exported_metric_names() {
    let root = support::repo_root();
    let dashboard = std::fs::read_to_string(root.join("config/grafana-dashboard.json")).unwrap();
    let source = std::fs::read_to_string(root.join("src/admin/metrics.rs")).unwrap();
    let mut checked = 0;
    for (i, _) in dashboard.match_indices("slotgate_") {
        let name: String = dashboard[i..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        let family = name.trim_end_matches("_bucket").trim_end_matches("_total");
        assert!(
            source.contains(&format!("\"{family}\"")),
            "the dashboard queries {name}, which slotgate does not export"
        );
        checked += 1;
    }
    assert!(checked >= 15, "{checked}");
}

async fn slowlog_len(con: &mut redis::aio::MultiplexedConnection) -> i64 {
    redis::cmd("SLOWLOG")
        .arg("LEN")
        .query_async(con)
        .await
        .unwrap()
}
