//! Boundary scanner for replies from backends: every RESP2 and RESP3 type, nested to any
//! depth a server sends (a Lua script may return a table nested hundreds deep); and readers
//! of a complete reply's integer and elements.
//!
//! The scanner only finds where a reply ends; the reply then goes to the client as the
//! untouched `Bytes`. Progress through a partly received reply is kept between calls (the
//! position of the next element and how many children each open aggregate still expects), so
//! a large reply arriving in many reads is scanned once.

use crate::error::ProtocolError;
use crate::resp::request::read_line_int;

/// Resumable reply scanner; one per backend connection.
#[derive(Debug, Default)]
pub struct ReplyScanner {
    /// Offset of the next element to scan in the current reply.
    pos: usize,
    /// For each open aggregate, how many child elements are still to come. Its length is the
    /// nesting depth, bounded by the reply's size (every level takes at least 4 bytes).
    open: Vec<u64>,
}

impl ReplyScanner {
    pub fn new() -> Self {
        Self::default()
    }

    /// Returns the length of the complete reply at the front of `buf`, or `None` when more
    /// bytes are needed. After `Some(len)` the caller removes `len` bytes from the buffer.
    pub fn next(&mut self, buf: &[u8]) -> Result<Option<usize>, ProtocolError> {
        loop {
            let Some(&kind) = buf.get(self.pos) else {
                return Ok(None);
            };
            let finished_element = match kind {
                b'+' | b'-' | b':' | b'_' | b'#' | b',' | b'(' => {
                    let Some(cr) = buf[self.pos + 1..].iter().position(|&b| b == b'\r') else {
                        return Ok(None);
                    };
                    let end = self.pos + 1 + cr + 2;
                    if end > buf.len() {
                        return Ok(None);
                    }
                    self.pos = end;
                    true
                }
                b'$' | b'!' | b'=' => {
                    let Some((n, header)) = read_line_int(buf, self.pos)? else {
                        return self.incomplete_header(buf);
                    };
                    match n {
                        Some(-1) if kind == b'$' => {
                            self.pos += header;
                        }
                        Some(n) if n >= 0 => {
                            let end = self.pos + header + n as usize + 2;
                            if end > buf.len() {
                                return Ok(None);
                            }
                            self.pos = end;
                        }
                        _ => return Err(ProtocolError::InvalidReplyLength),
                    }
                    true
                }
                b'*' | b'~' | b'>' | b'%' | b'|' => {
                    let Some((n, header)) = read_line_int(buf, self.pos)? else {
                        return self.incomplete_header(buf);
                    };
                    self.pos += header;
                    let children = match n {
                        Some(-1) if kind == b'*' => 0,
                        Some(n) if n >= 0 => match kind {
                            b'%' => 2 * n as u64,
                            // An attribute map is followed by the reply it annotates.
                            b'|' => 2 * n as u64 + 1,
                            _ => n as u64,
                        },
                        _ => return Err(ProtocolError::InvalidReplyLength),
                    };
                    if children == 0 {
                        true
                    } else {
                        self.open.push(children);
                        false
                    }
                }
                other => return Err(ProtocolError::InvalidReplyType(other)),
            };
            if finished_element && self.close_finished() {
                let len = self.pos;
                self.pos = 0;
                return Ok(Some(len));
            }
        }
    }

    /// Counts one finished element against the open aggregates; true when the whole reply
    /// is complete.
    fn close_finished(&mut self) -> bool {
        while let Some(remaining) = self.open.last_mut() {
            *remaining -= 1;
            if *remaining > 0 {
                return false;
            }
            self.open.pop();
        }
        true
    }

    fn incomplete_header(&self, buf: &[u8]) -> Result<Option<usize>, ProtocolError> {
        if buf.len() - self.pos > 32 {
            Err(ProtocolError::InvalidReplyLength)
        } else {
            Ok(None)
        }
    }
}

/// The payload of a complete bulk-string (`$`) or verbatim-string (`=`) reply, without the
/// verbatim format prefix; `None` for any other reply.
pub fn bulk_body(reply: &[u8]) -> Option<&[u8]> {
    let kind = *reply.first()?;
    if kind != b'$' && kind != b'=' {
        return None;
    }
    let (n, header) = read_line_int(reply, 0).ok()??;
    let n = usize::try_from(n?).ok()?;
    let body = reply.get(header..header + n)?;
    if kind == b'=' {
        body.get(4..)
    } else {
        Some(body)
    }
}

/// The integer of a `:N` reply.
pub fn integer(reply: &[u8]) -> Option<i64> {
    if reply.first() != Some(&b':') {
        return None;
    }
    let (v, len) = read_line_int(reply, 0).ok()??;
    (len == reply.len()).then_some(v?)
}

/// The raw elements of an array (`*`), set (`~`) or push (`>`) reply.
pub fn elements(reply: &[u8]) -> Option<Vec<&[u8]>> {
    if !matches!(reply.first(), Some(b'*' | b'~' | b'>')) {
        return None;
    }
    let (n, mut at) = read_line_int(reply, 0).ok()??;
    let n = usize::try_from(n?).ok()?;
    let mut out = Vec::with_capacity(n.min(1024));
    for _ in 0..n {
        let len = ReplyScanner::new().next(&reply[at..]).ok()??;
        out.push(&reply[at..at + len]);
        at += len;
    }
    (at == reply.len()).then_some(out)
}

/// The elements of a flat array of pairs, or of a RESP3 map (keys and values alternating).
pub fn pair_elements(reply: &[u8]) -> Option<Vec<&[u8]>> {
    if reply.first() != Some(&b'%') {
        let e = elements(reply)?;
        return e.len().is_multiple_of(2).then_some(e);
    }
    let (n, mut at) = read_line_int(reply, 0).ok()??;
    let n = usize::try_from(n?).ok()?;
    let mut out = Vec::with_capacity(2 * n.min(512));
    for _ in 0..2 * n {
        let len = ReplyScanner::new().next(&reply[at..]).ok()??;
        out.push(&reply[at..at + len]);
        at += len;
    }
    (at == reply.len()).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Scans `input` whole and byte by byte; both must find the same reply lengths.
    fn lengths(input: &[u8]) -> Vec<usize> {
        let mut whole = Vec::new();
        let mut s = ReplyScanner::new();
        let mut at = 0;
        while let Some(n) = s.next(&input[at..]).unwrap() {
            whole.push(n);
            at += n;
        }
        assert_eq!(at, input.len(), "trailing bytes left");
        let mut bytewise = Vec::new();
        let mut s = ReplyScanner::new();
        let mut buf = Vec::new();
        for &b in input {
            buf.push(b);
            while let Some(n) = s.next(&buf).unwrap() {
                bytewise.push(n);
                buf.drain(..n);
            }
        }
        assert_eq!(whole, bytewise);
        whole
    }

    #[test]
    fn resp2_types() {
        let cases: &[&[u8]] = &[
            b"+OK\r\n",
            b"-ERR wrong\r\n",
            b":-42\r\n",
            b"$5\r\nhe\r\no\r\n",
            b"$0\r\n\r\n",
            b"$-1\r\n",
            b"*-1\r\n",
            b"*0\r\n",
            b"*3\r\n:1\r\n$1\r\na\r\n*2\r\n+x\r\n$-1\r\n",
        ];
        for c in cases {
            assert_eq!(
                lengths(c),
                vec![c.len()],
                "{:?}",
                String::from_utf8_lossy(c)
            );
        }
    }

    #[test]
    fn resp3_types() {
        let cases: &[&[u8]] = &[
            b"%2\r\n+a\r\n:1\r\n+b\r\n~2\r\n,1.5\r\n#t\r\n",
            b"_\r\n",
            b"#f\r\n",
            b",inf\r\n",
            b"(3492890328409238509324850943850943825024385\r\n",
            b"=15\r\ntxt:Some string\r\n",
            b"!21\r\nSYNTAX invalid syntax\r\n",
            b">3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$2\r\nhi\r\n",
            b"|1\r\n+key-popularity\r\n%1\r\n$1\r\na\r\n,0.19\r\n*2\r\n:2\r\n:3\r\n",
        ];
        for c in cases {
            assert_eq!(
                lengths(c),
                vec![c.len()],
                "{:?}",
                String::from_utf8_lossy(c)
            );
        }
    }

    #[test]
    fn bulk_bodies() {
        assert_eq!(bulk_body(b"$3\r\nabc\r\n"), Some(&b"abc"[..]));
        assert_eq!(bulk_body(b"=7\r\ntxt:abc\r\n"), Some(&b"abc"[..]));
        assert_eq!(bulk_body(b"$-1\r\n"), None);
        assert_eq!(bulk_body(b"+OK\r\n"), None);
        assert_eq!(bulk_body(b"$9\r\nabc\r\n"), None);
    }

    #[test]
    fn pipelined_replies_split_apart() {
        assert_eq!(lengths(b"+OK\r\n$1\r\na\r\n*1\r\n:1\r\n"), vec![5, 7, 8]);
    }

    #[test]
    fn garbage_is_an_error() {
        assert_eq!(
            ReplyScanner::new().next(b"?x\r\n"),
            Err(ProtocolError::InvalidReplyType(b'?'))
        );
        assert_eq!(
            ReplyScanner::new().next(b"$-2\r\n"),
            Err(ProtocolError::InvalidReplyLength)
        );
    }

    #[test]
    fn any_depth_is_accepted() {
        let mut deep = "*1\r\n".repeat(10_000);
        deep.push_str(":1\r\n");
        assert_eq!(lengths(deep.as_bytes()), vec![deep.len()]);
    }

    #[test]
    fn large_bulk_scans_linearly() {
        let mut reply = b"$1048576\r\n".to_vec();
        reply.extend(std::iter::repeat_n(b'v', 1 << 20));
        reply.extend_from_slice(b"\r\n");
        let mut s = ReplyScanner::new();
        let mut got = None;
        for end in (4096..=reply.len()).step_by(4096).chain([reply.len()]) {
            if let Some(n) = s.next(&reply[..end]).unwrap() {
                got = Some(n);
                break;
            }
        }
        assert_eq!(got, Some(reply.len()));
    }

    #[test]
    fn element_parsing() {
        assert_eq!(elements(b"*2\r\n*1\r\n:1\r\n$1\r\nx\r\n").unwrap().len(), 2);
        assert!(elements(b"*2\r\n:1\r\n").is_none());
        assert!(elements(b":1\r\n").is_none());
        assert_eq!(integer(b":-7\r\n"), Some(-7));
        assert_eq!(integer(b"$1\r\n7\r\n"), None);
    }
}
