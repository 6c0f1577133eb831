//! Replies slotgate builds itself (errors, local answers, merged results), encoded in the
//! protocol the client chose with HELLO.
//!
//! Replies from backends never pass through here: they are forwarded as the original bytes.

use bytes::{BufMut, Bytes, BytesMut};

use crate::resp::request::format_usize;

/// The RESP version a client connection speaks, set by `HELLO`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Proto {
    #[default]
    Resp2,
    Resp3,
}

impl Proto {
    /// The number clients name in `HELLO`.
    pub fn version(self) -> i64 {
        match self {
            Proto::Resp2 => 2,
            Proto::Resp3 => 3,
        }
    }
}

/// `+OK`, shared and never rebuilt.
pub const OK: Bytes = Bytes::from_static(b"+OK\r\n");
/// `+PONG`.
pub const PONG: Bytes = Bytes::from_static(b"+PONG\r\n");

/// Appends RESP elements to a buffer; `proto` picks the encoding of nulls and maps.
#[derive(Debug)]
pub struct Encoder {
    pub out: BytesMut,
    pub proto: Proto,
}

impl Encoder {
    pub fn new(proto: Proto) -> Self {
        Encoder {
            out: BytesMut::with_capacity(64),
            proto,
        }
    }

    pub fn finish(self) -> Bytes {
        self.out.freeze()
    }

    fn header(&mut self, kind: u8, n: usize) -> &mut Self {
        self.out.put_u8(kind);
        let mut buf = [0u8; 20];
        self.out.put_slice(format_usize(n, &mut buf));
        self.out.put_slice(b"\r\n");
        self
    }

    pub fn simple(&mut self, s: &str) -> &mut Self {
        self.out.put_u8(b'+');
        self.out.put_slice(s.as_bytes());
        self.out.put_slice(b"\r\n");
        self
    }

    /// An error line; `msg` starts with its code (`ERR ...`, `NOAUTH ...`). CR and LF in the
    /// message are replaced so the reply stays one line.
    pub fn error(&mut self, msg: &str) -> &mut Self {
        self.out.put_u8(b'-');
        for b in msg.bytes() {
            self.out
                .put_u8(if b == b'\r' || b == b'\n' { b' ' } else { b });
        }
        self.out.put_slice(b"\r\n");
        self
    }

    pub fn integer(&mut self, v: i64) -> &mut Self {
        self.out.put_u8(b':');
        if v < 0 {
            self.out.put_u8(b'-');
        }
        let mut buf = [0u8; 20];
        self.out
            .put_slice(format_usize(v.unsigned_abs() as usize, &mut buf));
        self.out.put_slice(b"\r\n");
        self
    }

    pub fn bulk(&mut self, v: &[u8]) -> &mut Self {
        self.header(b'$', v.len());
        self.out.put_slice(v);
        self.out.put_slice(b"\r\n");
        self
    }

    /// A verbatim string in RESP3 (`=`, used by INFO), a bulk string in RESP2.
    pub fn verbatim_text(&mut self, v: &[u8]) -> &mut Self {
        match self.proto {
            Proto::Resp2 => self.bulk(v),
            Proto::Resp3 => {
                self.header(b'=', v.len() + 4);
                self.out.put_slice(b"txt:");
                self.out.put_slice(v);
                self.out.put_slice(b"\r\n");
                self
            }
        }
    }

    /// The null reply: `$-1` in RESP2, `_` in RESP3.
    pub fn null(&mut self) -> &mut Self {
        self.out.put_slice(match self.proto {
            Proto::Resp2 => b"$-1\r\n",
            Proto::Resp3 => b"_\r\n",
        });
        self
    }

    pub fn array(&mut self, n: usize) -> &mut Self {
        self.header(b'*', n)
    }

    /// An out-of-band message of `n` elements: a push (`>n`) in RESP3, an array in RESP2
    /// (where pub/sub messages are arrays).
    pub fn push(&mut self, n: usize) -> &mut Self {
        match self.proto {
            Proto::Resp2 => self.header(b'*', n),
            Proto::Resp3 => self.header(b'>', n),
        }
    }

    /// A map of `n` pairs: `%n` in RESP3, a flat array of `2n` in RESP2.
    pub fn map(&mut self, n: usize) -> &mut Self {
        match self.proto {
            Proto::Resp2 => self.header(b'*', 2 * n),
            Proto::Resp3 => self.header(b'%', n),
        }
    }

    /// Raw, already-encoded RESP (a backend reply nested in a built one).
    pub fn raw(&mut self, v: &[u8]) -> &mut Self {
        self.out.put_slice(v);
        self
    }
}

/// A one-line error reply (the same in both protocols).
pub fn error(msg: &str) -> Bytes {
    let mut e = Encoder::new(Proto::Resp2);
    e.error(msg);
    e.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodings_by_protocol() {
        let mut e = Encoder::new(Proto::Resp2);
        e.map(1).bulk(b"k").null();
        assert_eq!(&e.finish()[..], b"*2\r\n$1\r\nk\r\n$-1\r\n");
        let mut e = Encoder::new(Proto::Resp3);
        e.map(1).bulk(b"k").null();
        assert_eq!(&e.finish()[..], b"%1\r\n$1\r\nk\r\n_\r\n");
        let mut e = Encoder::new(Proto::Resp3);
        e.verbatim_text(b"a");
        assert_eq!(&e.finish()[..], b"=5\r\ntxt:a\r\n");
    }

    #[test]
    fn scalars() {
        let mut e = Encoder::new(Proto::Resp2);
        e.integer(-12).integer(0).simple("OK");
        assert_eq!(&e.finish()[..], b":-12\r\n:0\r\n+OK\r\n");
        assert_eq!(&error("ERR a\r\nb")[..], b"-ERR a  b\r\n");
    }
}
