//! `GET /metrics`: a snapshot of slotgate's counters (per worker thread underneath, summed
//! here), encoded by prometheus-client in the Prometheus text format. Nothing on the request
//! path takes a lock for it: a scrape only reads atomics and the slot tables.

use std::sync::atomic::Ordering;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::backend::node_stats::ConnKind;
use crate::dispatch::Cluster;
use crate::histogram::Histogram;
use crate::shared::Shared;

/// One sample's value.
#[derive(Debug, Clone)]
enum Value {
    Counter(u64),
    Gauge(f64),
    /// Sum (seconds), count, cumulative buckets (upper bound in seconds, count).
    Histogram(f64, u64, Vec<(f64, u64)>),
}

impl Value {
    fn histogram(h: &Histogram) -> Value {
        let (sum, count, buckets) = h.exposition();
        Value::Histogram(sum, count, buckets)
    }
}

type Labels = Vec<(&'static str, String)>;

/// One metric family: its samples by label set.
#[derive(Debug)]
struct Family {
    name: &'static str,
    help: &'static str,
    kind: MetricType,
    samples: Vec<(Labels, Value)>,
}

/// Every family of one scrape.
#[derive(Debug, Default)]
struct Snapshot {
    families: Vec<Family>,
}

impl Snapshot {
    fn add(&mut self, name: &'static str, help: &'static str, labels: Labels, value: Value) {
        let kind = match value {
            Value::Counter(_) => MetricType::Counter,
            Value::Gauge(_) => MetricType::Gauge,
            Value::Histogram(..) => MetricType::Histogram,
        };
        match self.families.iter_mut().find(|f| f.name == name) {
            Some(f) => f.samples.push((labels, value)),
            None => self.families.push(Family {
                name,
                help,
                kind,
                samples: vec![(labels, value)],
            }),
        }
    }

    fn counter(&mut self, name: &'static str, help: &'static str, labels: Labels, v: u64) {
        self.add(name, help, labels, Value::Counter(v));
    }

    fn gauge(&mut self, name: &'static str, help: &'static str, labels: Labels, v: f64) {
        self.add(name, help, labels, Value::Gauge(v));
    }

    /// The figures of one cluster (the primary or a mirror), labelled `cluster`.
    fn cluster(&mut self, c: &Cluster) {
        let l = || vec![("cluster", c.name.to_string())];
        let k = &c.counters;
        self.counter(
            "slotgate_backend_requests",
            "Commands finished by a cluster (each part of a split command counts).",
            l(),
            k.requests.get(),
        );
        self.counter(
            "slotgate_backend_errors",
            "Commands that ended in an error reply or a failure.",
            l(),
            k.errors.get(),
        );
        for (kind, n) in [
            ("moved", k.redirects_moved.get()),
            ("ask", k.redirects_ask.get()),
        ] {
            self.counter(
                "slotgate_redirects",
                "MOVED and ASK redirects followed.",
                vec![("cluster", c.name.to_string()), ("kind", kind.into())],
                n,
            );
        }
        self.counter(
            "slotgate_retries",
            "Commands sent again after TRYAGAIN, CLUSTERDOWN or a connection failure.",
            l(),
            k.retries.get(),
        );
        self.add(
            "slotgate_backend_latency_seconds",
            "Time from queuing a command to its final reply (one command in 8 sampled).",
            l(),
            Value::histogram(&k.latency),
        );
        self.add(
            "slotgate_topology_refresh_seconds",
            "How long each topology refresh took (its count: refreshes done).",
            l(),
            Value::histogram(&c.topology.refresh_latency),
        );
        let table = c.topology.table();
        self.gauge(
            "slotgate_topology_generation",
            "Slot table updates applied so far.",
            l(),
            table.generation as f64,
        );
        self.gauge(
            "slotgate_slots_covered",
            "Hash slots with a known owner (16384 when the cluster is whole).",
            l(),
            table.assigned_slots() as f64,
        );
        self.gauge(
            "slotgate_masters",
            "Masters in the slot table.",
            l(),
            table.masters.len() as f64,
        );
        self.gauge(
            "slotgate_session_connections",
            "Dedicated connections leased now (transactions, blocking commands, WAIT).",
            l(),
            c.backends.blocking_in_use() as f64,
        );
        for (node, n) in c.backends.node_stats() {
            let nl = || vec![("cluster", c.name.to_string()), ("node", node.to_string())];
            self.counter(
                "slotgate_node_replies",
                "Replies received from a node.",
                nl(),
                n.replies.get(),
            );
            self.counter(
                "slotgate_node_errors",
                "Error replies received from a node.",
                nl(),
                n.errors.get(),
            );
            self.counter(
                "slotgate_node_timeouts",
                "Requests failed because the node missed their deadline.",
                nl(),
                n.timeouts.get(),
            );
            self.add(
                "slotgate_node_latency_seconds",
                "Time from writing a request to a node to its reply (one write in 8).",
                nl(),
                Value::histogram(&n.latency),
            );
            for kind in ConnKind::ALL {
                let (up, down) = n.connections(kind);
                for (state, count) in [("connected", up), ("reconnecting", down)] {
                    if kind == ConnKind::Control || (count == 0 && state == "reconnecting") {
                        continue;
                    }
                    let mut l = nl();
                    l.push(("kind", kind.label().into()));
                    l.push(("state", state.into()));
                    self.gauge(
                        "slotgate_node_connections",
                        "Connections to a node, by kind and state.",
                        l,
                        count as f64,
                    );
                }
            }
        }
        self.gauge(
            "slotgate_acl_users",
            "Cluster users clients are logged in as (each with its own connections).",
            l(),
            c.backends.users().len() as f64,
        );
    }
}

impl Collector for Snapshot {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        for f in &self.families {
            let mut metric = encoder.encode_descriptor(f.name, f.help, None, f.kind)?;
            for (labels, value) in &f.samples {
                let mut sample = metric.encode_family(labels)?;
                match value {
                    Value::Counter(v) => {
                        sample.encode_counter::<NoLabelSet, _, u64>(v, None)?;
                    }
                    Value::Gauge(v) => sample.encode_gauge(v)?,
                    Value::Histogram(sum, count, buckets) => {
                        sample.encode_histogram::<NoLabelSet>(*sum, *count, buckets, None)?;
                    }
                }
            }
        }
        Ok(())
    }
}

/// Takes the snapshot (asking the async queue for its lag) and encodes it.
pub async fn render(shared: &Shared) -> Result<String, std::fmt::Error> {
    let mut s = Snapshot::default();
    let st = &shared.stats;
    let none = Vec::new;
    s.gauge(
        "slotgate_uptime_seconds",
        "Seconds since slotgate started.",
        none(),
        shared.started.elapsed().as_secs_f64(),
    );
    s.gauge(
        "slotgate_client_connections",
        "Client connections open now.",
        none(),
        st.connected_clients.load(Ordering::Relaxed) as f64,
    );
    s.counter(
        "slotgate_client_connections_accepted",
        "Client connections accepted.",
        none(),
        st.total_connections.load(Ordering::Relaxed),
    );
    for (reason, n) in [
        (
            "max_clients",
            st.rejected_connections.load(Ordering::Relaxed),
        ),
        (
            "tls_handshake",
            st.tls_handshake_failures.load(Ordering::Relaxed),
        ),
    ] {
        s.counter(
            "slotgate_client_connections_rejected",
            "Client connections refused, by reason.",
            vec![("reason", reason.into())],
            n,
        );
    }
    for (reason, n) in [
        ("idle_timeout", st.idle_timeouts.load(Ordering::Relaxed)),
        ("read_timeout", st.read_timeouts.load(Ordering::Relaxed)),
        (
            "output_buffer",
            st.output_buffer_closes.load(Ordering::Relaxed),
        ),
    ] {
        s.counter(
            "slotgate_client_connections_closed_by_limit",
            "Client connections closed by a limit, by limit.",
            vec![("reason", reason.into())],
            n,
        );
    }
    s.counter(
        "slotgate_auth_failures",
        "AUTH and HELLO AUTH attempts with wrong credentials.",
        none(),
        st.auth_failures.load(Ordering::Relaxed),
    );
    s.counter(
        "slotgate_auth_rate_limited",
        "AUTH attempts refused unchecked (limits.auth_failures_per_minute).",
        none(),
        st.auth_rate_limited.load(Ordering::Relaxed),
    );
    let t = &shared.tracking;
    s.gauge(
        "slotgate_tracking_clients",
        "Clients with CLIENT TRACKING on.",
        none(),
        t.clients.load(Ordering::Relaxed) as f64,
    );
    s.gauge(
        "slotgate_tracking_keys",
        "Keys tracked for default-mode tracking clients.",
        none(),
        t.tracked_keys() as f64,
    );
    s.counter(
        "slotgate_tracking_invalidations",
        "Keys announced to tracking clients (each key to each client once).",
        none(),
        t.invalidations.load(Ordering::Relaxed),
    );
    s.counter(
        "slotgate_tracking_flushes",
        "Flushes of every tracking client (an invalidation connection reconnected, slots changed owner).",
        none(),
        t.flushes.load(Ordering::Relaxed),
    );
    s.gauge(
        "slotgate_pubsub_subscribers",
        "Clients with at least one subscription now.",
        none(),
        st.subscribers.load(Ordering::Relaxed) as f64,
    );
    s.counter(
        "slotgate_commands",
        "Client commands read.",
        none(),
        st.total_commands.get(),
    );
    for f in shared.commands.snapshot() {
        let (sum, count, buckets) = f.latency;
        let (calls, errors) = (f.calls, f.errors);
        let l = || vec![("command", crate::command_stats::label(f.index))];
        s.counter(
            "slotgate_command_calls",
            "Client commands answered, by command (commands outside the table: other).",
            l(),
            calls,
        );
        s.counter(
            "slotgate_command_errors",
            "Client commands answered with an error, by command.",
            l(),
            errors,
        );
        s.add(
            "slotgate_command_latency_seconds",
            "Time from reading a command to its reply being ready, by command.",
            l(),
            Value::Histogram(sum, count, buckets),
        );
    }
    for (key, calls) in shared.hotkeys.top() {
        s.gauge(
            "slotgate_hotkey_calls",
            "Estimated commands on each of the hottest keys over the last one to two minutes (sampled).",
            vec![("key", crate::hotkeys::shown(&key))],
            calls as f64,
        );
    }
    s.gauge(
        "slotgate_slowlog_entries",
        "Entries in slotgate's SLOWLOG.",
        none(),
        shared.slowlog.len() as f64,
    );
    s.cluster(&shared.primary);
    if let Some(m) = &shared.mirrors() {
        for r in &m.resources {
            s.cluster(&r.link.cluster);
            let l = || vec![("resource", r.name.clone())];
            s.counter(
                "slotgate_mirror_dropped",
                "Mirror writes dropped because the resource's backlog was full.",
                l(),
                r.link.dropped.load(Ordering::Relaxed),
            );
            s.gauge(
                "slotgate_mirror_backlog",
                "Mirror writes handed over and not answered yet.",
                l(),
                r.link.backlog.load(Ordering::Relaxed) as f64,
            );
            s.add(
                "slotgate_mirror_delay_seconds",
                "Double-write delay measured by the probe (mirror.probe_interval_ms).",
                l(),
                Value::histogram(&r.link.delay),
            );
        }
        if let Some(q) = &m.queue
            && let Some(lag) = q.lag().await
        {
            s.gauge(
                "slotgate_queue_length",
                "Entries in the async multi-write queue.",
                none(),
                lag.length as f64,
            );
            s.gauge(
                "slotgate_queue_pending",
                "Queue entries delivered to a consumer and not acknowledged.",
                none(),
                lag.pending as f64,
            );
            s.gauge(
                "slotgate_queue_lag_seconds",
                "Age of the oldest queue entry not yet applied.",
                none(),
                lag.seconds,
            );
        }
    }
    let mut registry = Registry::default();
    registry.register_collector(Box::new(s));
    let mut out = String::with_capacity(16 * 1024);
    prometheus_client::encoding::prometheus_text::encode(&mut out, &registry)?;
    Ok(out)
}
