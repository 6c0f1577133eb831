//! Where a command's keys are: the built-in shapes (a range, a key count, after `STREAMS`)
//! and Redis 7 key specifications learned from `COMMAND INFO` (begin search by index or
//! keyword, then a range or a key count), resolved against one request.

use crate::resp::Request;
use crate::resp::request::parse_i64;
use crate::slot::slot_of;

/// Where a command's keys are, by argument index (0 is the command name).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keys {
    /// No keys: any master can serve it.
    None,
    /// Keys from `first` to `last` (negative counts from the end: -1 is the last argument)
    /// every `step` arguments. `GET k` is `1,1,1`; `MSET k v k v` is `1,-1,2`; `BLPOP k k t` is
    /// `1,-2,1`.
    Range { first: u8, last: i8, step: u8 },
    /// A key count at argument `at`, the keys right after it (EVAL, LMPOP, ZUNION ...). With
    /// `dest`, argument 1 is a key too (ZUNIONSTORE dest numkeys ...).
    NumKeys { at: u8, dest: bool },
    /// The keys are the first half of the arguments after `STREAMS` (XREAD, XREADGROUP).
    Streams,
    /// Redis 7 key specifications, as a server described the command.
    Specs(&'static [KeySpec]),
}

/// One Redis 7 key specification (`COMMAND INFO` ... `key_specs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeySpec {
    pub begin: BeginSearch,
    pub find: FindKeys,
}

/// Where the search for a key spec's first key starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BeginSearch {
    /// At this argument index.
    Index(u32),
    /// Right after `keyword`, searched from argument `startfrom` (negative: from the end,
    /// backwards).
    Keyword {
        keyword: &'static str,
        startfrom: i32,
    },
}

/// How the keys continue from the first one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FindKeys {
    /// `lastkey` relative to the first key (negative: from the end of the arguments), every
    /// `step` arguments; with `limit` > 1 and `lastkey` -1, only the first 1/limit of the rest.
    Range { lastkey: i32, step: u32, limit: u32 },
    /// A key count at `keynumidx` (relative to the begin), the first key at `firstkey`
    /// (relative too), every `step` arguments.
    KeyNum {
        keynumidx: u32,
        firstkey: u32,
        step: u32,
    },
}

impl KeySpec {
    /// The key indices this spec finds in a request of `argc` arguments, or `None` when the
    /// request does not fit the spec (the node's own error then reaches the client).
    fn resolve(&self, req: &Request, out: &mut Vec<usize>) -> Option<()> {
        let argc = req.len() as i64;
        let mut first = match self.begin {
            BeginSearch::Index(i) => i as i64,
            BeginSearch::Keyword { keyword, startfrom } => {
                let start = if startfrom > 0 {
                    startfrom as i64
                } else {
                    argc + startfrom as i64
                };
                let found = if startfrom > 0 {
                    (start.max(1)..argc - 1)
                        .find(|&i| req.arg(i as usize).eq_ignore_ascii_case(keyword.as_bytes()))
                } else {
                    (2..=start.min(argc - 1))
                        .rev()
                        .find(|&i| req.arg(i as usize).eq_ignore_ascii_case(keyword.as_bytes()))
                };
                // A keyword that is absent means this spec has no keys in the request.
                found? + 1
            }
        };
        let (last, step) = match self.find {
            FindKeys::Range {
                lastkey,
                step,
                limit,
            } => {
                let last = if lastkey >= 0 {
                    first + lastkey as i64
                } else if limit <= 1 {
                    argc + lastkey as i64
                } else {
                    first + ((argc - first) / limit as i64 + lastkey as i64)
                };
                (last, step.max(1) as i64)
            }
            FindKeys::KeyNum {
                keynumidx,
                firstkey,
                step,
            } => {
                let at = first + keynumidx as i64;
                if at >= argc {
                    return None;
                }
                let numkeys = parse_i64(req.arg(at as usize)).filter(|&n| n >= 0)?;
                first += firstkey as i64;
                if numkeys == 0 {
                    return Some(());
                }
                // The last key is `numkeys - 1` steps after the first (MSETEX's keys are
                // every other argument).
                let step = step.max(1) as i64;
                (first + (numkeys - 1) * step, step)
            }
        };
        if last >= argc || last < first || first >= argc || first < 1 {
            return None;
        }
        let mut i = first;
        while i <= last {
            out.push(i as usize);
            i += step;
        }
        Some(())
    }
}

/// Why a request cannot be routed to one slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteError {
    /// Keys hash to different slots.
    CrossSlot,
}

impl Keys {
    /// Indices of the key arguments of `req`. Arguments that do not match the command's
    /// shape (too few, a bad key count) yield no keys: the request then goes to any master,
    /// whose own error message reaches the client.
    pub fn indices(&self, req: &Request) -> KeyIndices {
        let n = req.len();
        let none = KeyIndices::Simple {
            extra: None,
            range: 0..0,
            step: 1,
        };
        match *self {
            Keys::None => none,
            Keys::Range { first, last, step } => {
                let first = first as usize;
                let last = if last < 0 {
                    n as isize + last as isize
                } else {
                    last as isize
                };
                if last < first as isize || last as usize >= n {
                    none
                } else {
                    KeyIndices::Simple {
                        extra: None,
                        range: first..last as usize + 1,
                        step: step as usize,
                    }
                }
            }
            Keys::NumKeys { at, dest } => {
                let at = at as usize;
                let count = (at < n).then(|| parse_i64(req.arg(at))).flatten();
                match count {
                    Some(c) if c >= 0 && at + 1 + (c as usize) <= n => KeyIndices::Simple {
                        extra: (dest && n > 1).then_some(1),
                        range: at + 1..at + 1 + c as usize,
                        step: 1,
                    },
                    _ => none,
                }
            }
            Keys::Streams => {
                let pos = (1..n).find(|&i| req.arg(i).eq_ignore_ascii_case(b"STREAMS"));
                match pos {
                    Some(p) if (n - p - 1).is_multiple_of(2) => {
                        let count = (n - p - 1) / 2;
                        KeyIndices::Simple {
                            extra: None,
                            range: p + 1..p + 1 + count,
                            step: 1,
                        }
                    }
                    _ => none,
                }
            }
            Keys::Specs(specs) => {
                let mut out = Vec::new();
                for spec in specs {
                    if spec.resolve(req, &mut out).is_none() {
                        // As Redis does for a request that does not fit: no keys at all.
                        out.clear();
                        break;
                    }
                }
                KeyIndices::List(out.into_iter())
            }
        }
    }

    /// The one slot all keys of `req` hash to; `None` for a request without keys.
    pub fn slot(&self, req: &Request) -> Result<Option<u16>, RouteError> {
        let mut slot = None;
        for i in self.indices(req) {
            let s = slot_of(req.arg(i));
            match slot {
                None => slot = Some(s),
                Some(prev) if prev != s => return Err(RouteError::CrossSlot),
                Some(_) => {}
            }
        }
        Ok(slot)
    }
}

/// Iterator over key argument indices of one request.
#[derive(Debug, Clone)]
pub enum KeyIndices {
    /// A range of indices and a key outside it (ZUNIONSTORE's destination).
    Simple {
        extra: Option<usize>,
        range: std::ops::Range<usize>,
        step: usize,
    },
    /// Indices found by key specs (learned commands only).
    List(std::vec::IntoIter<usize>),
}

impl Iterator for KeyIndices {
    type Item = usize;

    fn next(&mut self) -> Option<usize> {
        match self {
            KeyIndices::Simple { extra, range, step } => {
                if let Some(e) = extra.take() {
                    return Some(e);
                }
                if range.start >= range.end {
                    return None;
                }
                let i = range.start;
                range.start += *step;
                Some(i)
            }
            KeyIndices::List(it) => it.next(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(s: &str) -> Request {
        Request::from_args(&s.split(' ').collect::<Vec<_>>())
    }

    fn found(keys: Keys, s: &str) -> Vec<usize> {
        keys.indices(&req(s)).collect()
    }

    const INDEX1_RANGE0: KeySpec = KeySpec {
        begin: BeginSearch::Index(1),
        find: FindKeys::Range {
            lastkey: 0,
            step: 1,
            limit: 0,
        },
    };

    #[test]
    fn key_specs_resolve_like_redis() {
        static GET: [KeySpec; 1] = [INDEX1_RANGE0];
        assert_eq!(found(Keys::Specs(&GET), "GET a"), [1]);
        assert_eq!(found(Keys::Specs(&GET), "GET"), Vec::<usize>::new());
        // MSET: index 1, range to the end every 2.
        static MSET: [KeySpec; 1] = [KeySpec {
            begin: BeginSearch::Index(1),
            find: FindKeys::Range {
                lastkey: -1,
                step: 2,
                limit: 0,
            },
        }];
        assert_eq!(found(Keys::Specs(&MSET), "MSET a 1 b 2"), [1, 3]);
        // LMPOP: numkeys at 1, keys after it.
        static LMPOP: [KeySpec; 1] = [KeySpec {
            begin: BeginSearch::Index(1),
            find: FindKeys::KeyNum {
                keynumidx: 0,
                firstkey: 1,
                step: 1,
            },
        }];
        assert_eq!(found(Keys::Specs(&LMPOP), "LMPOP 2 a b LEFT"), [2, 3]);
        assert_eq!(
            found(Keys::Specs(&LMPOP), "LMPOP 5 a b LEFT"),
            Vec::<usize>::new()
        );
        assert_eq!(found(Keys::Specs(&LMPOP), "LMPOP x a"), Vec::<usize>::new());
        // A key count then key/value pairs (Redis 8.4's MSETEX).
        static PAIRS: [KeySpec; 1] = [KeySpec {
            begin: BeginSearch::Index(1),
            find: FindKeys::KeyNum {
                keynumidx: 0,
                firstkey: 1,
                step: 2,
            },
        }];
        assert_eq!(found(Keys::Specs(&PAIRS), "MSETEX 2 a 1 b 2 EX 10"), [2, 4]);
        assert_eq!(
            found(Keys::Specs(&PAIRS), "MSETEX 3 a 1 b 2"),
            Vec::<usize>::new()
        );
        // XREAD: after STREAMS, half of the rest.
        static XREAD: [KeySpec; 1] = [KeySpec {
            begin: BeginSearch::Keyword {
                keyword: "STREAMS",
                startfrom: 1,
            },
            find: FindKeys::Range {
                lastkey: -1,
                step: 1,
                limit: 2,
            },
        }];
        assert_eq!(
            found(Keys::Specs(&XREAD), "XREAD COUNT 2 STREAMS a b 0 0"),
            [4, 5]
        );
        // MIGRATE-like: a keyword searched from the end.
        static BACK: [KeySpec; 1] = [KeySpec {
            begin: BeginSearch::Keyword {
                keyword: "KEYS",
                startfrom: -2,
            },
            find: FindKeys::Range {
                lastkey: -1,
                step: 1,
                limit: 0,
            },
        }];
        assert_eq!(found(Keys::Specs(&BACK), "M h p x 0 5 KEYS a b"), [7, 8]);
        assert_eq!(
            found(Keys::Specs(&BACK), "M h p k 0 5"),
            Vec::<usize>::new()
        );
        // Two specs: SMOVE-like source and destination.
        static TWO: [KeySpec; 2] = [
            INDEX1_RANGE0,
            KeySpec {
                begin: BeginSearch::Index(2),
                find: FindKeys::Range {
                    lastkey: 0,
                    step: 1,
                    limit: 0,
                },
            },
        ];
        assert_eq!(found(Keys::Specs(&TWO), "SMOVE a b m"), [1, 2]);
    }
}
