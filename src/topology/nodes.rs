//! Parser for `CLUSTER NODES` output, tolerant of every format from Redis 3 to 7.
//!
//! A line is `<id> <addr> <flags> <master> <ping-sent> <pong-recv> <config-epoch>
//! <link-state> <slot>...`, where `<addr>` is `ip:port` (Redis 3), `ip:port@cport` (4+) or
//! `ip:port@cport,hostname` (7+), the ip may be empty (the node we asked does not know its
//! own address yet: use the address we dialled), and slots are `N`, `A-B`, or the migration
//! markers `[N->-id]` / `[N-<-id]`. This runs once per refresh, so it favours clear errors
//! over speed and is written with `combine`.

use combine::error::StringStreamError;
use combine::parser::char::{char, string};
use combine::parser::range::{take_while, take_while1};
use combine::{Parser, attempt, choice, eof, optional};

/// One node as `CLUSTER NODES` describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeEntry {
    pub id: String,
    /// `host:port` clients should dial; `None` for a node flagged `noaddr`.
    pub addr: Option<String>,
    pub flags: NodeFlags,
    /// For a replica, the id of its master.
    pub master_id: Option<String>,
    pub config_epoch: u64,
    /// Whether the cluster bus link is up (`connected`).
    pub connected: bool,
    /// Slot ranges served, inclusive.
    pub slots: Vec<(u16, u16)>,
}

/// The flags that matter for routing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NodeFlags {
    pub myself: bool,
    pub master: bool,
    pub replica: bool,
    /// `fail`: the cluster agreed the node is down.
    pub fail: bool,
    /// `fail?`: one node suspects it is down.
    pub pfail: bool,
    pub handshake: bool,
    pub noaddr: bool,
}

/// A line that could not be read, with the reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("CLUSTER NODES line {line}: {reason}: {text:?}")]
pub struct NodesError {
    pub line: usize,
    pub reason: &'static str,
    pub text: String,
}

/// One slot token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SlotToken {
    Range(u16, u16),
    /// `[N->-id]` or `[N-<-id]`: migration in progress; the slot's owner is listed elsewhere.
    Marker,
}

fn number<'a>() -> impl Parser<&'a str, Output = u16> {
    take_while1(|c: char| c.is_ascii_digit()).and_then(|s: &str| {
        s.parse::<u16>()
            .ok()
            .filter(|&n| (n as usize) < crate::slot::SLOT_COUNT)
            .ok_or(StringStreamError::UnexpectedParse)
    })
}

fn slot_token<'a>() -> impl Parser<&'a str, Output = SlotToken> {
    let marker = (
        char('['),
        number(),
        choice((attempt(string("->-")), string("-<-"))),
        take_while1(|c: char| c != ']'),
        char(']'),
    )
        .map(|_| SlotToken::Marker);
    let range = (number(), optional(char('-').with(number()))).and_then(|(a, b)| {
        let b = b.unwrap_or(a);
        if a <= b {
            Ok(SlotToken::Range(a, b))
        } else {
            Err(StringStreamError::UnexpectedParse)
        }
    });
    choice((marker, range)).skip(eof())
}

/// `host:port[@cport][,hostname]` -> (host, port). The port is after the last ':' before
/// '@', so IPv6 hosts work.
fn address<'a>() -> impl Parser<&'a str, Output = (&'a str, u16)> {
    (
        take_while(|c: char| c != '@' && c != ','),
        optional((char('@'), take_while1(|c: char| c.is_ascii_digit()))),
        optional((char(','), take_while(|_| true))),
        eof(),
    )
        .and_then(|(hostport, _, _, _): (&str, _, _, _)| {
            let (host, port) = hostport
                .rsplit_once(':')
                .ok_or(StringStreamError::UnexpectedParse)?;
            let port = port
                .parse::<u16>()
                .map_err(|_| StringStreamError::UnexpectedParse)?;
            Ok::<_, StringStreamError>((host, port))
        })
}

fn parse_flags(s: &str) -> NodeFlags {
    let mut f = NodeFlags::default();
    for flag in s.split(',') {
        match flag {
            "myself" => f.myself = true,
            "master" => f.master = true,
            "slave" | "replica" => f.replica = true,
            "fail" => f.fail = true,
            "fail?" => f.pfail = true,
            "handshake" => f.handshake = true,
            "noaddr" => f.noaddr = true,
            _ => {}
        }
    }
    f
}

/// Parses the whole `CLUSTER NODES` text. `dialled_host` replaces an empty ip. Lines that
/// cannot be read are returned as errors beside the nodes that could.
pub fn parse_nodes(text: &str, dialled_host: &str) -> (Vec<NodeEntry>, Vec<NodesError>) {
    let mut nodes = Vec::new();
    let mut errors = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        match parse_line(line, dialled_host) {
            Ok(n) => nodes.push(n),
            Err(reason) => errors.push(NodesError {
                line: i + 1,
                reason,
                text: line.to_string(),
            }),
        }
    }
    (nodes, errors)
}

fn parse_line(line: &str, dialled_host: &str) -> Result<NodeEntry, &'static str> {
    let fields: Vec<&str> = line.split_ascii_whitespace().collect();
    if fields.len() < 8 {
        return Err("fewer than 8 fields");
    }
    let flags = parse_flags(fields[2]);
    let addr = if flags.noaddr {
        None
    } else {
        let ((host, port), _) = address().parse(fields[1]).map_err(|_| "bad address")?;
        if port == 0 {
            None
        } else {
            let host = if host.is_empty() { dialled_host } else { host };
            Some(format!("{host}:{port}"))
        }
    };
    let master_id = (fields[3] != "-").then(|| fields[3].to_string());
    let config_epoch = fields[6].parse::<u64>().map_err(|_| "bad config epoch")?;
    let mut slots = Vec::new();
    for token in &fields[8..] {
        match slot_token().parse(token).map_err(|_| "bad slot")?.0 {
            SlotToken::Range(a, b) => slots.push((a, b)),
            SlotToken::Marker => {}
        }
    }
    Ok(NodeEntry {
        id: fields[0].to_string(),
        addr,
        flags,
        master_id,
        config_epoch,
        connected: fields[7] == "connected",
        slots,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Redis 7 output, in the shape shown on redis.io for `CLUSTER NODES`.
    const REDIS7: &str = "\
07c37dfeb235213a872192d90877d0cd55635b91 127.0.0.1:30004@31004,hostname4 slave e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca 0 1426238317239 4 connected
67ed2db8d677e59ec4a4cefb06858cf2a1a89fa1 127.0.0.1:30002@31002,hostname2 master - 0 1426238316232 2 connected 5461-10922
292f8b365bb7edb5e285caf0b7e6ddc7265d2f4f 127.0.0.1:30003@31003,hostname3 master - 0 1426238318243 3 connected 10923-16383
6ec23923021cf3ffec47632106199cb7f496ce01 127.0.0.1:30005@31005,hostname5 slave 67ed2db8d677e59ec4a4cefb06858cf2a1a89fa1 0 1426238316232 5 connected
824fe116063bc5fcf9f4ffd895bc17aee7731ac3 127.0.0.1:30006@31006,hostname6 slave 292f8b365bb7edb5e285caf0b7e6ddc7265d2f4f 0 1426238317741 6 connected
e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca 127.0.0.1:30001@31001,hostname1 myself,master - 0 0 1 connected 0-5460
";

    #[test]
    fn redis7_with_hostnames() {
        let (nodes, errors) = parse_nodes(REDIS7, "10.0.0.1");
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(nodes.len(), 6);
        let me = nodes.iter().find(|n| n.flags.myself).unwrap();
        assert_eq!(me.addr.as_deref(), Some("127.0.0.1:30001"));
        assert!(me.flags.master);
        assert_eq!(me.slots, vec![(0, 5460)]);
        assert_eq!(me.config_epoch, 1);
        let replica = &nodes[0];
        assert!(replica.flags.replica);
        assert_eq!(
            replica.master_id.as_deref(),
            Some("e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca")
        );
        assert!(replica.slots.is_empty());
    }

    #[test]
    fn redis3_address_without_bus_port() {
        let line = "97a3a64667477371c4479320d683e4c8db5858b1 127.0.0.1:7000 myself,master - 0 0 0 connected 0-5460 5462 5470-5480";
        let (nodes, errors) = parse_nodes(line, "h");
        assert!(errors.is_empty());
        assert_eq!(nodes[0].addr.as_deref(), Some("127.0.0.1:7000"));
        assert_eq!(nodes[0].slots, vec![(0, 5460), (5462, 5462), (5470, 5480)]);
    }

    #[test]
    fn empty_ip_means_the_dialled_host() {
        let line = "97a3a64667477371c4479320d683e4c8db5858b1 :6380@16380 myself,master - 0 0 0 connected 0-16383";
        let (nodes, _) = parse_nodes(line, "127.0.0.5");
        assert_eq!(nodes[0].addr.as_deref(), Some("127.0.0.5:6380"));
    }

    #[test]
    fn flags_and_noaddr() {
        let text = "\
a 127.0.0.1:7001@17001 master,fail? - 1 0 3 disconnected 100-200
b :0@0 master,fail,noaddr - 1 0 2 disconnected
c 127.0.0.1:7003@17003 handshake - 0 0 0 connected
";
        let (nodes, errors) = parse_nodes(text, "h");
        assert!(errors.is_empty(), "{errors:?}");
        assert!(nodes[0].flags.pfail && !nodes[0].connected);
        assert!(nodes[1].flags.fail && nodes[1].flags.noaddr);
        assert_eq!(nodes[1].addr, None);
        assert!(nodes[2].flags.handshake);
    }

    #[test]
    fn migration_markers_are_skipped() {
        let line = "e7d1 127.0.0.1:30001@31001 myself,master - 0 0 7 connected 0-5460 [5461->-67ed2db8d677e59ec4a4cefb06858cf2a1a89fa1] [93-<-292f8b365bb7edb5e285caf0b7e6ddc7265d2f4f]";
        let (nodes, errors) = parse_nodes(line, "h");
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(nodes[0].slots, vec![(0, 5460)]);
        assert_eq!(nodes[0].config_epoch, 7);
    }

    #[test]
    fn ipv6_address() {
        let line = "a 2001:db8::1:7000@17000 master - 0 0 1 connected 0";
        let (nodes, _) = parse_nodes(line, "h");
        assert_eq!(nodes[0].addr.as_deref(), Some("2001:db8::1:7000"));
    }

    #[test]
    fn bad_lines_are_reported_not_fatal() {
        let text = "\
short line
a 127.0.0.1:x@1 master - 0 0 1 connected 0
b 127.0.0.1:7000@17000 master - 0 0 1 connected 20000
c 127.0.0.1:7000@17000 master - 0 0 1 connected 9-3
d 127.0.0.1:7000@17000 master - 0 0 e connected 1
e 127.0.0.1:7002@17002 master - 0 0 1 connected 0-10
";
        let (nodes, errors) = parse_nodes(text, "h");
        assert_eq!(nodes.len(), 1);
        assert_eq!(nodes[0].id, "e");
        let reasons: Vec<_> = errors.iter().map(|e| e.reason).collect();
        assert_eq!(
            reasons,
            [
                "fewer than 8 fields",
                "bad address",
                "bad slot",
                "bad slot",
                "bad config epoch"
            ]
        );
    }

    #[test]
    fn aux_fields_and_stray_commas() {
        let text = "\
a1 127.0.0.1:7000@17000,,shard-id=5f2a,tls-port=0 myself,master - 0 0 1 connected 0-8000
b2 127.0.0.1:7001@17001,node-b,shard-id=77aa, master - 0 1700000000000 2 connected 8001-16383
c3 127.0.0.1:7002@17002, slave b2 0 1700000000000 2 connected
";
        let (nodes, errors) = parse_nodes(text, "127.0.0.1");
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(nodes[0].addr.as_deref(), Some("127.0.0.1:7000"));
        assert_eq!(nodes[1].addr.as_deref(), Some("127.0.0.1:7001"));
        assert_eq!(nodes[1].slots, [(8001, 16383)]);
        assert_eq!(nodes[2].master_id.as_deref(), Some("b2"));
    }
}
