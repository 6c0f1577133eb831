//! Property tests of slotgate's parsers, run in CI: valid request and reply streams split
//! at every boundary scan to the same frames; arbitrary bytes never panic, never loop and
//! never make a scanner hold more than its limits; the topology parsers and the config
//! loader take any input without panicking. (The cargo-fuzz targets in `fuzz/` explore the
//! same code for longer.)

use bytes::BytesMut;
use proptest::prelude::*;
use slotgate::resp::{Limits, ReplyScanner, RequestScanner};

fn limits() -> Limits {
    Limits {
        max_bulk_len: 4096,
        max_array_len: 64,
        max_inline_len: 256,
        unauthenticated: false,
    }
}

/// One request as RESP: `*N` then `$len` bulks.
fn resp_request(args: &[Vec<u8>]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// `input` cut at the offsets `cuts` (in order, clamped), the last chunk ending at its end.
fn chunks<'a>(input: &'a [u8], cuts: &'a [usize]) -> impl Iterator<Item = &'a [u8]> + 'a {
    let mut fed = 0;
    cuts.iter()
        .copied()
        .chain(std::iter::once(input.len()))
        .map(move |cut| {
            let cut = cut.clamp(fed, input.len());
            let chunk = &input[fed..cut];
            fed = cut;
            chunk
        })
}

/// Scans `input` fed in the chunks `cuts` gives; the arguments of every request, or the
/// error that ended the stream.
fn scan_requests(input: &[u8], cuts: &[usize]) -> Result<Vec<Vec<Vec<u8>>>, String> {
    let mut scanner = RequestScanner::new(limits());
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    for chunk in chunks(input, cuts) {
        buf.extend_from_slice(chunk);
        // Every `Some` consumes bytes: the loop ends within the input's length.
        let mut waiting = false;
        for _ in 0..=input.len() + 1 {
            let before = buf.len();
            match scanner.next(&mut buf, true) {
                Ok(Some(req)) => {
                    assert!(buf.len() < before, "a request that consumed nothing");
                    out.push((0..req.len()).map(|i| req.arg(i).to_vec()).collect());
                }
                Ok(None) => {
                    waiting = true;
                    break;
                }
                Err(e) => return Err(e.to_string()),
            }
        }
        assert!(waiting, "the request scanner never stopped on {input:?}");
    }
    Ok(out)
}

fn arg() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..40)
}

/// Inline arguments: printable, no quotes or spaces (one word each).
fn inline_word() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(prop::sample::select(b"abcXYZ019:_-.".to_vec()), 1..12)
}

#[derive(Debug, Clone)]
enum Req {
    Resp(Vec<Vec<u8>>),
    Inline(Vec<Vec<u8>>),
}

fn request() -> impl Strategy<Value = Req> {
    prop_oneof![
        prop::collection::vec(arg(), 1..6).prop_map(Req::Resp),
        prop::collection::vec(inline_word(), 1..5).prop_map(Req::Inline),
    ]
}

fn encode_requests(reqs: &[Req]) -> (Vec<u8>, Vec<Vec<Vec<u8>>>) {
    let mut bytes = Vec::new();
    let mut expected = Vec::new();
    for r in reqs {
        match r {
            Req::Resp(args) => {
                bytes.extend(resp_request(args));
                expected.push(args.clone());
            }
            Req::Inline(words) => {
                bytes.extend(words.join(&b' '));
                bytes.extend_from_slice(b"\r\n");
                expected.push(words.clone());
            }
        }
    }
    (bytes, expected)
}

/// A RESP2/RESP3 reply, nested.
fn reply() -> impl Strategy<Value = Vec<u8>> {
    let leaf = prop_oneof![
        "[a-zA-Z0-9 ]{0,12}".prop_map(|s| format!("+{s}\r\n").into_bytes()),
        "[a-zA-Z0-9 ]{0,12}".prop_map(|s| format!("-ERR {s}\r\n").into_bytes()),
        any::<i64>().prop_map(|n| format!(":{n}\r\n").into_bytes()),
        prop::collection::vec(any::<u8>(), 0..24).prop_map(|b| {
            let mut v = format!("${}\r\n", b.len()).into_bytes();
            v.extend(b);
            v.extend_from_slice(b"\r\n");
            v
        }),
        Just(b"$-1\r\n".to_vec()),
        Just(b"*-1\r\n".to_vec()),
        Just(b"_\r\n".to_vec()),
        any::<bool>().prop_map(|b| if b {
            b"#t\r\n".to_vec()
        } else {
            b"#f\r\n".to_vec()
        }),
        any::<f64>().prop_map(|f| format!(",{f}\r\n").into_bytes()),
        "[0-9]{1,30}".prop_map(|s| format!("({s}\r\n").into_bytes()),
        prop::collection::vec(any::<u8>(), 0..16).prop_map(|b| {
            let mut v = format!("!{}\r\n", b.len()).into_bytes();
            v.extend(b);
            v.extend_from_slice(b"\r\n");
            v
        }),
        "[a-z]{0,10}".prop_map(|s| format!("={}\r\ntxt:{s}\r\n", s.len() + 4).into_bytes()),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        (
            prop::sample::select(vec![b'*', b'~', b'>', b'%', b'|']),
            prop::collection::vec(inner, 0..6),
        )
            .prop_map(|(kind, items)| {
                let (count, items) = match kind {
                    // Maps and attributes hold pairs: drop an odd last element; an
                    // attribute is followed by the reply it annotates.
                    b'%' | b'|' => {
                        let pairs = items.len() / 2;
                        let mut items = items;
                        items.truncate(pairs * 2);
                        if kind == b'|' {
                            items.push(b"+annotated\r\n".to_vec());
                        }
                        (pairs, items)
                    }
                    _ => (items.len(), items),
                };
                let mut v = format!("{}{count}\r\n", kind as char).into_bytes();
                for i in items {
                    v.extend(i);
                }
                v
            })
    })
}

/// Frame lengths of `input` scanned in the chunks `cuts` gives.
fn scan_replies(input: &[u8], cuts: &[usize]) -> Result<Vec<usize>, String> {
    let mut scanner = ReplyScanner::new();
    let mut buf: Vec<u8> = Vec::new();
    let mut out = Vec::new();
    for chunk in chunks(input, cuts) {
        buf.extend_from_slice(chunk);
        let mut waiting = false;
        for _ in 0..=input.len() + 1 {
            match scanner.next(&buf) {
                Ok(Some(n)) => {
                    assert!(n > 0 && n <= buf.len());
                    out.push(n);
                    buf.drain(..n);
                }
                Ok(None) => {
                    waiting = true;
                    break;
                }
                Err(e) => return Err(e.to_string()),
            }
        }
        assert!(waiting, "the reply scanner never stopped on {input:?}");
    }
    Ok(out)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn request_streams_scan_the_same_at_every_split(reqs in prop::collection::vec(request(), 1..5)) {
        let (bytes, expected) = encode_requests(&reqs);
        prop_assert_eq!(scan_requests(&bytes, &[]).unwrap(), expected.clone());
        for cut in 0..=bytes.len() {
            prop_assert_eq!(scan_requests(&bytes, &[cut]).unwrap(), expected.clone());
        }
        // A byte at a time.
        let every: Vec<usize> = (0..=bytes.len()).collect();
        prop_assert_eq!(scan_requests(&bytes, &every).unwrap(), expected);
    }

    #[test]
    fn reply_streams_scan_the_same_at_every_split(replies in prop::collection::vec(reply(), 1..4)) {
        let bytes: Vec<u8> = replies.concat();
        let expected: Vec<usize> = replies.iter().map(Vec::len).collect();
        prop_assert_eq!(scan_replies(&bytes, &[]).unwrap(), expected.clone());
        for cut in 0..=bytes.len() {
            prop_assert_eq!(scan_replies(&bytes, &[cut]).unwrap(), expected.clone());
        }
        let every: Vec<usize> = (0..=bytes.len()).collect();
        prop_assert_eq!(scan_replies(&bytes, &every).unwrap(), expected.clone());
        // The value parser agrees on every frame's length.
        let mut at = 0;
        for len in expected {
            let parsed = slotgate::resp::value::Value::parse(&bytes[at..]).unwrap();
            prop_assert_eq!(parsed.map(|(_, n)| n), Some(len));
            at += len;
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic_loop_or_grow_past_the_limits(
        bytes in prop::collection::vec(any::<u8>(), 0..600),
        cut in 0usize..600,
    ) {
        let _ = scan_requests(&bytes, &[cut]);
        let _ = scan_replies(&bytes, &[cut]);
        let _ = slotgate::resp::value::Value::parse(&bytes);
        // What the request scanner keeps waiting for is within its limits: an incomplete
        // request is never bigger than the largest one it would accept.
        let mut scanner = RequestScanner::new(limits());
        let mut buf = BytesMut::from(&bytes[..]);
        let before = buf.len();
        let mut stopped = false;
        for _ in 0..=before {
            let len = buf.len();
            match scanner.next(&mut buf, false) {
                Ok(Some(_)) => prop_assert!(buf.len() < len, "a request that consumed nothing"),
                Ok(None) | Err(_) => {
                    stopped = true;
                    break;
                }
            }
        }
        prop_assert!(stopped, "the scanner never stopped");
        prop_assert!(buf.len() <= before);
    }

    #[test]
    fn hostile_headers_are_refused_before_anything_is_buffered(
        n in prop::sample::select(vec![
            "2147483647", "4294967296", "-2", "999999999999999999",
            "9223372036854775807", "99999999999999999999", "", "x", "1x",
        ]),
        kind in prop::sample::select(vec!['*', '$']),
    ) {
        let input = if kind == '*' {
            format!("*{n}\r\n")
        } else {
            format!("*1\r\n${n}\r\n")
        };
        for authenticated in [false, true] {
            let mut scanner = RequestScanner::new(limits());
            let mut buf = BytesMut::from(input.as_bytes());
            let got = scanner.next(&mut buf, authenticated);
            // Either refused at once, or (a negative count) skipped: never a wait for a
            // bulk larger than the limit.
            prop_assert!(matches!(got, Err(_) | Ok(None)), "{input:?}: {got:?}");
            if got.is_ok() {
                prop_assert!(buf.len() < input.len() || n == "-2", "{input:?} kept");
            }
        }
        let mut replies = ReplyScanner::new();
        let _ = replies.next(format!("${n}\r\nabc").as_bytes());
        let _ = replies.next(format!("*{n}\r\n:1\r\n").as_bytes());
    }

    #[test]
    fn topology_parsers_take_any_input(text in ".{0,400}", bytes in prop::collection::vec(any::<u8>(), 0..400)) {
        let _ = slotgate::topology::nodes::parse_nodes(&text, "127.0.0.1");
        let _ = slotgate::topology::shards::parse_shards(&bytes, "127.0.0.1", false);
        let _ = slotgate::topology::shards::parse_shards(&bytes, "127.0.0.1", true);
    }

    #[test]
    fn cluster_nodes_lines_with_random_fields_never_panic(
        fields in prop::collection::vec("[0-9a-f:@,.\\-?\\[\\]a-z]{0,20}", 0..12),
        lines in 1usize..4,
    ) {
        let line = fields.join(" ");
        let text = vec![line; lines].join("\n");
        let _ = slotgate::topology::nodes::parse_nodes(&text, "10.0.0.1");
    }

    #[test]
    fn the_config_loader_takes_any_yaml(text in "(?s).{0,300}") {
        if let Ok(config) = slotgate::config::Config::from_yaml(&text) {
            let _ = config.validate();
        }
    }

    #[test]
    fn config_fields_with_random_values_are_validated_not_panicked_on(
        key in prop::sample::select(vec![
            "listen", "threads", "password", "log_level",
            "cluster: {seeds", "cluster: {connections_per_node", "cluster: {tls",
            "cluster: {tls_ca_file", "limits: {max_clients", "limits: {request_read_timeout_ms",
            "tls: {listen", "mirror: {mode", "mirror: {resources",
        ]),
        value in "[a-z0-9:\\[\\]{}\\-\\.\"]{0,20}",
    ) {
        let close = if key.contains('{') { "}" } else { "" };
        let text = format!("{key}: {value}{close}\n");
        if let Ok(config) = slotgate::config::Config::from_yaml(&text) {
            let _ = config.validate();
        }
    }
}

/// The captured server replies split at every boundary scan to one frame each.
#[test]
fn captured_replies_scan_the_same_at_every_split() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/servers");
    let mut checked = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if !(name.ends_with(".resp2") || name.ends_with(".resp3")) {
            continue;
        }
        let bytes = std::fs::read(&path).unwrap();
        let whole = scan_replies(&bytes, &[]).unwrap();
        assert_eq!(whole, [bytes.len()], "{name}");
        // Every boundary of a large reply costs its size squared: step through big ones.
        let step = (bytes.len() / 2000).max(1);
        for cut in (0..=bytes.len()).step_by(step) {
            assert_eq!(
                scan_replies(&bytes, &[cut]).unwrap(),
                whole,
                "{name} cut {cut}"
            );
        }
        checked += 1;
    }
    assert!(checked >= 20, "only {checked} fixtures");
}
