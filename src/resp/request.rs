//! Incremental scanner for client requests: RESP arrays of bulk strings and inline commands.
//!
//! The scanner finds where a request ends and where each argument lies, then hands the request
//! out as one frozen `Bytes` (no copy) with argument ranges into it. Partial input keeps its
//! progress in the scanner, so a large bulk arriving in small reads is scanned in linear time.
//! Inline commands (what `redis-cli` and telnet send) are re-encoded as a RESP array, which is
//! what backends are sent.

use std::ops::Range;

use bytes::{BufMut, Bytes, BytesMut};

use crate::error::ProtocolError;

/// Bounds on what one client request may announce; anything beyond is a protocol error.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Longest bulk string accepted (Redis: `proto-max-bulk-len`, 512 MB).
    pub max_bulk_len: usize,
    /// Most elements in one request array.
    pub max_array_len: usize,
    /// Longest inline command line (Redis: 64 KB).
    pub max_inline_len: usize,
    /// These are the limits before authentication: going past them gets Redis's
    /// "unauthenticated" errors.
    pub unauthenticated: bool,
}

/// Most arguments in one request from a client that has not authenticated yet (Redis: 10).
pub const UNAUTHENTICATED_MAX_ARGS: usize = 10;
/// Longest bulk string from a client that has not authenticated yet (Redis: 16 KB).
pub const UNAUTHENTICATED_MAX_BULK: usize = 16 * 1024;

impl Limits {
    /// The limits that apply before a client has authenticated: Redis's own.
    fn unauthenticated(self) -> Limits {
        Limits {
            max_bulk_len: self.max_bulk_len.min(UNAUTHENTICATED_MAX_BULK),
            max_array_len: self.max_array_len.min(UNAUTHENTICATED_MAX_ARGS),
            max_inline_len: self.max_inline_len,
            unauthenticated: true,
        }
    }

    fn too_many_args(&self) -> ProtocolError {
        if self.unauthenticated {
            ProtocolError::UnauthenticatedMultibulkLength
        } else {
            ProtocolError::InvalidMultibulkLength
        }
    }

    fn bulk_too_long(&self) -> ProtocolError {
        if self.unauthenticated {
            ProtocolError::UnauthenticatedBulkLength
        } else {
            ProtocolError::InvalidBulkLength
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_bulk_len: 512 * 1024 * 1024,
            max_array_len: 1024 * 1024,
            max_inline_len: 64 * 1024,
            unauthenticated: false,
        }
    }
}

/// One complete client request.
#[derive(Debug, Clone)]
pub struct Request {
    /// The request as RESP bytes, exactly what is forwarded to a backend.
    pub raw: Bytes,
    /// Where each argument (command name first) lies inside `raw`.
    pub args: Vec<Range<usize>>,
}

impl Request {
    /// Number of arguments, command name included.
    pub fn len(&self) -> usize {
        self.args.len()
    }

    /// True for a request without arguments (never produced by the scanner).
    pub fn is_empty(&self) -> bool {
        self.args.is_empty()
    }

    /// Argument `i` as a byte slice; `i == 0` is the command name.
    pub fn arg(&self, i: usize) -> &[u8] {
        &self.raw[self.args[i].clone()]
    }

    /// Argument `i` as a shared `Bytes` pointing into the request (no copy).
    pub fn arg_bytes(&self, i: usize) -> Bytes {
        self.raw.slice(self.args[i].clone())
    }

    /// Builds a request from arguments, encoding them as a RESP array (used for requests the
    /// proxy makes itself and for inline commands).
    pub fn from_args<A: AsRef<[u8]>>(args: &[A]) -> Request {
        let mut out =
            BytesMut::with_capacity(16 + args.iter().map(|a| a.as_ref().len() + 16).sum::<usize>());
        let mut ranges = Vec::with_capacity(args.len());
        put_header(&mut out, b'*', args.len());
        for a in args {
            let a = a.as_ref();
            put_header(&mut out, b'$', a.len());
            let start = out.len();
            out.put_slice(a);
            ranges.push(start..out.len());
            out.put_slice(b"\r\n");
        }
        Request {
            raw: out.freeze(),
            args: ranges,
        }
    }
}

fn put_header(out: &mut BytesMut, kind: u8, n: usize) {
    out.put_u8(kind);
    let mut buf = [0u8; 20];
    out.put_slice(format_usize(n, &mut buf));
    out.put_slice(b"\r\n");
}

/// Formats `n` in decimal into `buf` without allocating.
pub(crate) fn format_usize(mut n: usize, buf: &mut [u8; 20]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    &buf[i..]
}

/// Progress through a request array that has not fully arrived yet.
#[derive(Debug, Default)]
struct Partial {
    /// Elements announced by the `*N` header.
    expected: usize,
    /// Ranges of the arguments scanned so far.
    args: Vec<Range<usize>>,
    /// Offset in the buffer where the next argument's `$` header starts.
    pos: usize,
}

/// Resumable request scanner; one per client connection.
#[derive(Debug)]
pub struct RequestScanner {
    limits: Limits,
    /// Set while an array request is only partly in the buffer.
    partial: Option<Partial>,
}

/// Longest `$N\r\n` or `*N\r\n` header line we accept before calling it garbage.
const MAX_HEADER_LINE: usize = 32;

impl RequestScanner {
    pub fn new(limits: Limits) -> Self {
        RequestScanner {
            limits,
            partial: None,
        }
    }

    /// Takes the next complete request off the front of `buf`.
    ///
    /// Returns `Ok(None)` when more bytes are needed; progress is kept, so the next call
    /// resumes where this one stopped. Empty inline lines and `*0`/`*-N` are skipped, as
    /// Redis does. Until the client has `authenticated`, requests of more than 10 arguments
    /// or with a bulk longer than 16 KB are refused from their header, before anything is
    /// buffered, as Redis does.
    pub fn next(
        &mut self,
        buf: &mut BytesMut,
        authenticated: bool,
    ) -> Result<Option<Request>, ProtocolError> {
        let limits = if authenticated {
            self.limits
        } else {
            self.limits.unauthenticated()
        };
        self.next_within(buf, &limits)
    }

    fn next_within(
        &mut self,
        buf: &mut BytesMut,
        limits: &Limits,
    ) -> Result<Option<Request>, ProtocolError> {
        loop {
            if let Some(partial) = self.partial.as_mut() {
                return match scan_args(buf, partial, limits)? {
                    true => {
                        let partial = self.partial.take().unwrap_or_default();
                        let raw = buf.split_to(partial.pos).freeze();
                        Ok(Some(Request {
                            raw,
                            args: partial.args,
                        }))
                    }
                    false => Ok(None),
                };
            }
            let Some(&first) = buf.first() else {
                return Ok(None);
            };
            if first != b'*' {
                match self.scan_inline(buf, limits)? {
                    Inline::Incomplete => return Ok(None),
                    Inline::Empty => continue,
                    Inline::Request(r) => return Ok(Some(r)),
                }
            }
            let Some((n, header_len)) = read_line_int(buf, 0)? else {
                if buf.len() > MAX_HEADER_LINE {
                    return Err(ProtocolError::InvalidMultibulkLength);
                }
                return Ok(None);
            };
            let n = n.ok_or(ProtocolError::InvalidMultibulkLength)?;
            // As Redis does, a count of zero or less is an empty request, skipped.
            if n <= 0 {
                let _ = buf.split_to(header_len);
                continue;
            }
            if n as u64 > limits.max_array_len as u64 {
                return Err(limits.too_many_args());
            }
            let expected = n as usize;
            self.partial = Some(Partial {
                expected,
                args: Vec::with_capacity(expected.min(64)),
                pos: header_len,
            });
        }
    }

    fn scan_inline(&self, buf: &mut BytesMut, limits: &Limits) -> Result<Inline, ProtocolError> {
        let Some(nl) = buf.iter().position(|&b| b == b'\n') else {
            if buf.len() > limits.max_inline_len {
                return Err(ProtocolError::InlineTooBig);
            }
            return Ok(Inline::Incomplete);
        };
        if nl > limits.max_inline_len {
            return Err(ProtocolError::InlineTooBig);
        }
        let line = buf.split_to(nl + 1);
        let mut text = &line[..nl];
        if let Some(stripped) = text.strip_suffix(b"\r") {
            text = stripped;
        }
        let args = split_inline(text)?;
        if args.is_empty() {
            return Ok(Inline::Empty);
        }
        Ok(Inline::Request(Request::from_args(&args)))
    }
}

enum Inline {
    Incomplete,
    Empty,
    Request(Request),
}

/// Scans bulk-string arguments of a partly received array. Returns true once all arrived.
fn scan_args(buf: &BytesMut, p: &mut Partial, limits: &Limits) -> Result<bool, ProtocolError> {
    while p.args.len() < p.expected {
        let Some(&first) = buf.get(p.pos) else {
            return Ok(false);
        };
        if first != b'$' {
            return Err(ProtocolError::ExpectedBulk(first));
        }
        let Some((n, header_len)) = read_line_int(buf, p.pos)? else {
            if buf.len() - p.pos > MAX_HEADER_LINE {
                return Err(ProtocolError::InvalidBulkLength);
            }
            return Ok(false);
        };
        let n = n.ok_or(ProtocolError::InvalidBulkLength)?;
        if n < 0 {
            return Err(ProtocolError::InvalidBulkLength);
        }
        if n as u64 > limits.max_bulk_len as u64 {
            return Err(limits.bulk_too_long());
        }
        let start = p.pos + header_len;
        let end = start + n as usize;
        if buf.len() < end + 2 {
            return Ok(false);
        }
        if &buf[end..end + 2] != b"\r\n" {
            return Err(ProtocolError::MissingCrlf);
        }
        p.args.push(start..end);
        p.pos = end + 2;
    }
    Ok(true)
}

/// Reads a `<type byte><integer>\r\n` line at `at`.
///
/// Returns `None` when the line is not complete yet, `Some((None, _))` when it is complete
/// but not a valid integer, and otherwise the integer and the line length including CRLF.
pub(crate) fn read_line_int(
    buf: &[u8],
    at: usize,
) -> Result<Option<(Option<i64>, usize)>, ProtocolError> {
    let search_end = buf.len().min(at + MAX_HEADER_LINE);
    let Some(cr) = buf[at + 1..search_end].iter().position(|&b| b == b'\r') else {
        return Ok(None);
    };
    let cr = at + 1 + cr;
    if cr + 1 >= buf.len() {
        return Ok(None);
    }
    if buf[cr + 1] != b'\n' {
        return Ok(Some((None, cr + 2 - at)));
    }
    Ok(Some((parse_i64(&buf[at + 1..cr]), cr + 2 - at)))
}

/// Strict decimal parse: optional '-', then 1 to 18 digits.
pub(crate) fn parse_i64(s: &[u8]) -> Option<i64> {
    let (neg, digits) = match s.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, s),
    };
    if digits.is_empty() || digits.len() > 18 {
        return None;
    }
    let mut v: i64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        v = v * 10 + i64::from(d - b'0');
    }
    Some(if neg { -v } else { v })
}

/// Splits an inline command line into arguments, honouring "double" and 'single' quotes with
/// the escapes Redis accepts (`sdssplitargs`).
fn split_inline(line: &[u8]) -> Result<Vec<Vec<u8>>, ProtocolError> {
    let mut args = Vec::new();
    let mut i = 0;
    while i < line.len() {
        while i < line.len() && line[i].is_ascii_whitespace() {
            i += 1;
        }
        if i == line.len() {
            break;
        }
        let mut cur = Vec::new();
        match line[i] {
            b'"' => {
                i += 1;
                loop {
                    let Some(&c) = line.get(i) else {
                        return Err(ProtocolError::UnbalancedQuotes);
                    };
                    match c {
                        b'\\'
                            if i + 3 < line.len()
                                && line[i + 1] == b'x'
                                && line[i + 2].is_ascii_hexdigit()
                                && line[i + 3].is_ascii_hexdigit() =>
                        {
                            cur.push(hex(line[i + 2]) * 16 + hex(line[i + 3]));
                            i += 4;
                        }
                        b'\\' if i + 1 < line.len() => {
                            cur.push(match line[i + 1] {
                                b'n' => b'\n',
                                b'r' => b'\r',
                                b't' => b'\t',
                                b'b' => 0x08,
                                b'a' => 0x07,
                                other => other,
                            });
                            i += 2;
                        }
                        b'"' => {
                            i += 1;
                            if line.get(i).is_some_and(|c| !c.is_ascii_whitespace()) {
                                return Err(ProtocolError::UnbalancedQuotes);
                            }
                            break;
                        }
                        _ => {
                            cur.push(c);
                            i += 1;
                        }
                    }
                }
            }
            b'\'' => {
                i += 1;
                loop {
                    let Some(&c) = line.get(i) else {
                        return Err(ProtocolError::UnbalancedQuotes);
                    };
                    match c {
                        b'\\' if line.get(i + 1) == Some(&b'\'') => {
                            cur.push(b'\'');
                            i += 2;
                        }
                        b'\'' => {
                            i += 1;
                            if line.get(i).is_some_and(|c| !c.is_ascii_whitespace()) {
                                return Err(ProtocolError::UnbalancedQuotes);
                            }
                            break;
                        }
                        _ => {
                            cur.push(c);
                            i += 1;
                        }
                    }
                }
            }
            _ => {
                while i < line.len() && !line[i].is_ascii_whitespace() {
                    cur.push(line[i]);
                    i += 1;
                }
            }
        }
        args.push(cur);
    }
    Ok(args)
}

fn hex(c: u8) -> u8 {
    match c {
        b'0'..=b'9' => c - b'0',
        b'a'..=b'f' => c - b'a' + 10,
        _ => c - b'A' + 10,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan_all(input: &[u8]) -> Result<Vec<Vec<Vec<u8>>>, ProtocolError> {
        let mut s = RequestScanner::new(Limits::default());
        let mut buf = BytesMut::from(input);
        let mut out = Vec::new();
        while let Some(r) = s.next(&mut buf, true)? {
            out.push((0..r.len()).map(|i| r.arg(i).to_vec()).collect());
        }
        Ok(out)
    }

    /// Feeds the input one byte at a time and checks the same requests come out.
    fn scan_bytewise(input: &[u8]) -> Vec<Vec<Vec<u8>>> {
        let mut s = RequestScanner::new(Limits::default());
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for &b in input {
            buf.put_u8(b);
            while let Some(r) = s.next(&mut buf, true).unwrap() {
                out.push((0..r.len()).map(|i| r.arg(i).to_vec()).collect());
            }
        }
        out
    }

    fn args(v: &[&str]) -> Vec<Vec<u8>> {
        v.iter().map(|s| s.as_bytes().to_vec()).collect()
    }

    #[test]
    fn array_request() {
        let input = b"*3\r\n$3\r\nSET\r\n$1\r\na\r\n$3\r\n1\r\n\r\n*1\r\n$4\r\nPING\r\n";
        let expect = vec![args(&["SET", "a", "1\r\n"]), args(&["PING"])];
        assert_eq!(scan_all(input).unwrap(), expect);
        assert_eq!(scan_bytewise(input), expect);
    }

    #[test]
    fn raw_is_the_exact_request() {
        let mut s = RequestScanner::new(Limits::default());
        let mut buf = BytesMut::from(&b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n*1"[..]);
        let r = s.next(&mut buf, true).unwrap().unwrap();
        assert_eq!(&r.raw[..], b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n");
        assert_eq!(&buf[..], b"*1");
        assert!(s.next(&mut buf, true).unwrap().is_none());
    }

    #[test]
    fn binary_safe_bulk() {
        let input = b"*2\r\n$4\r\nECHO\r\n$4\r\n\x00\r\n\xff\r\n";
        assert_eq!(
            scan_bytewise(input),
            vec![vec![b"ECHO".to_vec(), b"\x00\r\n\xff".to_vec()]]
        );
    }

    #[test]
    fn inline_commands() {
        let input = b"PING\r\n\r\n\nset a \"b c\\x41\\n\" 'd\\'e'\nget a\r\n";
        let expect = vec![
            args(&["PING"]),
            args(&["set", "a", "b cA\n", "d'e"]),
            args(&["get", "a"]),
        ];
        assert_eq!(scan_all(input).unwrap(), expect);
        assert_eq!(scan_bytewise(input), expect);
    }

    #[test]
    fn inline_request_is_reencoded_as_array() {
        let mut s = RequestScanner::new(Limits::default());
        let mut buf = BytesMut::from(&b"get k\r\n"[..]);
        let r = s.next(&mut buf, true).unwrap().unwrap();
        assert_eq!(&r.raw[..], b"*2\r\n$3\r\nget\r\n$1\r\nk\r\n");
    }

    #[test]
    fn empty_and_null_arrays_are_skipped() {
        assert_eq!(
            scan_all(b"*0\r\n*-1\r\n*1\r\n$4\r\nPING\r\n").unwrap(),
            vec![args(&["PING"])]
        );
    }

    #[test]
    fn malformed_lengths() {
        assert_eq!(
            scan_all(b"*-5\r\n*-10\r\n*1\r\n$4\r\nPING\r\n").unwrap(),
            vec![args(&["PING"])]
        );
        assert_eq!(
            scan_all(b"*abc\r\n"),
            Err(ProtocolError::InvalidMultibulkLength)
        );
        assert_eq!(
            scan_all(b"*999999999\r\n"),
            Err(ProtocolError::InvalidMultibulkLength)
        );
        assert_eq!(
            scan_all(b"*1\r\n$abc\r\n"),
            Err(ProtocolError::InvalidBulkLength)
        );
        assert_eq!(
            scan_all(b"*1\r\n$-3\r\n"),
            Err(ProtocolError::InvalidBulkLength)
        );
        assert_eq!(
            scan_all(b"*1\r\n+OK\r\n"),
            Err(ProtocolError::ExpectedBulk(b'+'))
        );
        assert_eq!(
            scan_all(b"*1\r\n$2\r\nabcd\r\n"),
            Err(ProtocolError::MissingCrlf)
        );
        assert_eq!(
            scan_all(b"set a \"b\r\n"),
            Err(ProtocolError::UnbalancedQuotes)
        );
        // A header line that never ends is garbage, not a reason to buffer forever.
        assert_eq!(
            scan_all(&[b'*'; 100]),
            Err(ProtocolError::InvalidMultibulkLength)
        );
    }

    #[test]
    fn limits_are_configurable() {
        let limits = Limits {
            max_bulk_len: 4,
            max_array_len: 2,
            max_inline_len: 8,
            unauthenticated: false,
        };
        let run = |input: &[u8]| RequestScanner::new(limits).next(&mut BytesMut::from(input), true);
        assert!(run(b"*1\r\n$4\r\nPING\r\n").unwrap().is_some());
        assert_eq!(
            run(b"*1\r\n$5\r\nhello\r\n").unwrap_err(),
            ProtocolError::InvalidBulkLength
        );
        assert_eq!(
            run(b"*3\r\n").unwrap_err(),
            ProtocolError::InvalidMultibulkLength
        );
        assert_eq!(run(b"123456789").unwrap_err(), ProtocolError::InlineTooBig);
    }

    #[test]
    fn big_bulk_in_small_pieces_keeps_progress() {
        let value = vec![b'x'; 1 << 20];
        let mut input = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1048576\r\n".to_vec();
        input.extend_from_slice(&value);
        input.extend_from_slice(b"\r\n");
        let mut s = RequestScanner::new(Limits::default());
        let mut buf = BytesMut::new();
        let mut got = None;
        for chunk in input.chunks(4096) {
            buf.extend_from_slice(chunk);
            if let Some(r) = s.next(&mut buf, true).unwrap() {
                got = Some(r);
            }
            // Progress is kept: the first two arguments are not rescanned.
            if got.is_none() {
                assert_eq!(s.partial.as_ref().unwrap().args.len(), 2);
            }
        }
        let r = got.unwrap();
        assert_eq!(r.arg(2).len(), 1 << 20);
    }

    #[test]
    fn from_args_round_trips() {
        let r = Request::from_args(&["ECHO", "hi"]);
        assert_eq!(&r.raw[..], b"*2\r\n$4\r\nECHO\r\n$2\r\nhi\r\n");
        assert_eq!(r.arg(1), b"hi");
    }

    #[test]
    fn integers() {
        assert_eq!(parse_i64(b"0"), Some(0));
        assert_eq!(parse_i64(b"-1"), Some(-1));
        assert_eq!(parse_i64(b"12a"), None);
        assert_eq!(parse_i64(b""), None);
        assert_eq!(parse_i64(b"-"), None);
        let mut b = [0u8; 20];
        assert_eq!(format_usize(0, &mut b), b"0");
        assert_eq!(format_usize(1234567, &mut b), b"1234567");
    }

    #[test]
    fn unauthenticated_limits_are_redis_own() {
        let mut s = RequestScanner::new(Limits::default());
        let mut eleven = BytesMut::from(&b"*11\r\n"[..]);
        assert_eq!(
            s.next(&mut eleven, false).unwrap_err().to_string(),
            "unauthenticated multibulk length"
        );
        let mut s = RequestScanner::new(Limits::default());
        let mut big = BytesMut::from(&b"*2\r\n$3\r\nSET\r\n$200000000\r\n"[..]);
        assert_eq!(
            s.next(&mut big, false).unwrap_err().to_string(),
            "unauthenticated bulk length"
        );
        // The same requests are fine once authenticated (the bulk is only incomplete).
        let mut s = RequestScanner::new(Limits::default());
        let mut big = BytesMut::from(&b"*2\r\n$3\r\nSET\r\n$200000000\r\n"[..]);
        assert!(s.next(&mut big, true).unwrap().is_none());
        let mut s = RequestScanner::new(Limits::default());
        let mut auth = BytesMut::from(&b"*2\r\n$4\r\nAUTH\r\n$2\r\npw\r\n"[..]);
        assert_eq!(s.next(&mut auth, false).unwrap().unwrap().len(), 2);
    }
}
