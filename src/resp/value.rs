//! A parsed reply tree, for the cold paths that read a reply's content (`COMMAND INFO`,
//! `CLUSTER SHARDS`, `PUBSUB NUMSUB` merges). Parsing is iterative: a reply nested to any
//! depth a server sends parses without recursion.

use crate::error::ProtocolError;
use crate::resp::request::read_line_int;

/// One RESP2 or RESP3 value. Maps keep their pairs in order; strings are raw bytes.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `+`, and the text of `=` verbatim strings.
    Simple(Vec<u8>),
    /// `-` and `!`.
    Error(Vec<u8>),
    Int(i64),
    /// `$`.
    Bulk(Vec<u8>),
    /// `$-1`, `*-1`, `_`.
    Null,
    /// `,` doubles, `(` big numbers and `#` booleans, as their text.
    Other(Vec<u8>),
    /// `*`, `~` sets and `>` pushes.
    Array(Vec<Value>),
    /// `%`.
    Map(Vec<(Value, Value)>),
}

impl Value {
    /// Parses the complete reply at the front of `buf`; returns it and its length, or
    /// `None` when `buf` holds less than one whole reply.
    pub fn parse(buf: &[u8]) -> Result<Option<(Value, usize)>, ProtocolError> {
        // Open aggregates: (is a map, expected children, children so far).
        let mut open: Vec<(u8, usize, Vec<Value>)> = Vec::new();
        let mut pos = 0;
        loop {
            let Some(&kind) = buf.get(pos) else {
                return Ok(None);
            };
            let mut value = match kind {
                b'+' | b'-' | b':' | b'_' | b'#' | b',' | b'(' => {
                    let Some(cr) = buf[pos + 1..].iter().position(|&b| b == b'\r') else {
                        return Ok(None);
                    };
                    let text = buf[pos + 1..pos + 1 + cr].to_vec();
                    pos += cr + 3;
                    if pos > buf.len() {
                        return Ok(None);
                    }
                    match kind {
                        b'+' => Some(Value::Simple(text)),
                        b'-' => Some(Value::Error(text)),
                        b':' => Some(Value::Int(
                            std::str::from_utf8(&text)
                                .ok()
                                .and_then(|t| t.parse().ok())
                                .ok_or(ProtocolError::InvalidReplyLength)?,
                        )),
                        b'_' => Some(Value::Null),
                        _ => Some(Value::Other(text)),
                    }
                }
                b'$' | b'!' | b'=' => {
                    let Some((n, header)) = read_line_int(buf, pos)? else {
                        return Ok(None);
                    };
                    match n {
                        Some(-1) if kind == b'$' => {
                            pos += header;
                            Some(Value::Null)
                        }
                        Some(n) if n >= 0 => {
                            let start = pos + header;
                            let end = start + n as usize;
                            if end + 2 > buf.len() {
                                return Ok(None);
                            }
                            pos = end + 2;
                            let body = buf[start..end].to_vec();
                            Some(match kind {
                                b'$' => Value::Bulk(body),
                                b'!' => Value::Error(body),
                                _ => Value::Simple(body.get(4..).unwrap_or_default().to_vec()),
                            })
                        }
                        _ => return Err(ProtocolError::InvalidReplyLength),
                    }
                }
                b'*' | b'~' | b'>' | b'%' | b'|' => {
                    let Some((n, header)) = read_line_int(buf, pos)? else {
                        return Ok(None);
                    };
                    pos += header;
                    match n {
                        Some(-1) if kind == b'*' => Some(Value::Null),
                        Some(n) if n >= 0 => {
                            let n = n as usize;
                            let expected = match kind {
                                b'%' => 2 * n,
                                // An attribute map, then the value it annotates: kept as
                                // the value alone.
                                b'|' => 2 * n + 1,
                                _ => n,
                            };
                            if expected == 0 {
                                Some(if kind == b'%' {
                                    Value::Map(Vec::new())
                                } else {
                                    Value::Array(Vec::new())
                                })
                            } else {
                                open.push((kind, expected, Vec::with_capacity(expected.min(1024))));
                                None
                            }
                        }
                        _ => return Err(ProtocolError::InvalidReplyLength),
                    }
                }
                other => return Err(ProtocolError::InvalidReplyType(other)),
            };
            // Hand finished values up to their parents.
            while let Some(v) = value.take() {
                let Some((_, expected, children)) = open.last_mut() else {
                    return Ok(Some((v, pos)));
                };
                children.push(v);
                if children.len() < *expected {
                    break;
                }
                let (kind, _, children) = open.pop().expect("an open aggregate");
                value = Some(match kind {
                    b'%' => {
                        let mut pairs = Vec::with_capacity(children.len() / 2);
                        let mut it = children.into_iter();
                        while let (Some(k), Some(v)) = (it.next(), it.next()) {
                            pairs.push((k, v));
                        }
                        Value::Map(pairs)
                    }
                    b'|' => children.into_iter().last().unwrap_or(Value::Null),
                    _ => Value::Array(children),
                });
            }
        }
    }

    /// The bytes of a string-like value.
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            Value::Simple(b) | Value::Bulk(b) | Value::Other(b) => Some(b),
            _ => None,
        }
    }

    /// The text of a string-like value, lossily.
    pub fn text(&self) -> Option<String> {
        self.as_bytes()
            .map(|b| String::from_utf8_lossy(b).into_owned())
    }

    pub fn as_int(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&[Value]> {
        match self {
            Value::Array(a) => Some(a),
            _ => None,
        }
    }

    /// A map's pairs: a RESP3 map, or a RESP2 flat array of name/value pairs.
    pub fn pairs(&self) -> Option<Vec<(&Value, &Value)>> {
        match self {
            Value::Map(m) => Some(m.iter().map(|(k, v)| (k, v)).collect()),
            Value::Array(a) if a.len().is_multiple_of(2) => {
                Some(a.chunks(2).map(|c| (&c[0], &c[1])).collect())
            }
            _ => None,
        }
    }

    /// The value under `key` in a map-like value (case-insensitive key).
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.pairs()?
            .into_iter()
            .find(|(k, _)| {
                k.as_bytes()
                    .is_some_and(|b| b.eq_ignore_ascii_case(key.as_bytes()))
            })
            .map(|(_, v)| v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &[u8]) -> Value {
        let (v, n) = Value::parse(s).unwrap().unwrap();
        assert_eq!(n, s.len());
        v
    }

    #[test]
    fn scalars_and_aggregates() {
        assert_eq!(parse(b"+OK\r\n"), Value::Simple(b"OK".to_vec()));
        assert_eq!(parse(b":-3\r\n"), Value::Int(-3));
        assert_eq!(parse(b"$-1\r\n"), Value::Null);
        assert_eq!(
            parse(b"*2\r\n$1\r\na\r\n*0\r\n"),
            Value::Array(vec![Value::Bulk(b"a".to_vec()), Value::Array(vec![])])
        );
        let m = parse(b"%1\r\n+k\r\n:1\r\n");
        assert_eq!(m.get("K"), Some(&Value::Int(1)));
        let flat = parse(b"*2\r\n$1\r\nk\r\n:2\r\n");
        assert_eq!(flat.get("k"), Some(&Value::Int(2)));
        assert_eq!(parse(b"=7\r\ntxt:abc\r\n").text().unwrap(), "abc");
        assert!(Value::parse(b"*2\r\n:1\r\n").unwrap().is_none());
    }

    #[test]
    fn any_depth_without_recursion() {
        let depth = 100_000;
        let mut s = "*1\r\n".repeat(depth).into_bytes();
        s.extend_from_slice(b":1\r\n");
        let (mut v, _) = Value::parse(&s).unwrap().unwrap();
        let mut seen = 0;
        while let Value::Array(mut a) = v {
            v = a.pop().unwrap();
            seen += 1;
        }
        assert_eq!(seen, depth);
    }
}
