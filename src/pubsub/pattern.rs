//! Whether a Redis glob pattern can match channels that begin with a given prefix (a
//! `PSUBSCRIBE __key*__:*` or `*` hears keyspace notifications, which every master
//! publishes for its own keys).

/// Whether some channel that begins with `prefix` and goes on after it matches `pattern`,
/// read as Redis reads a pub/sub pattern (case-sensitive; `*`, `?`, `[...]` with `^` and
/// ranges, `\` escapes; a class left open runs to the end of the pattern).
pub fn may_match_prefixed(pattern: &[u8], prefix: &[u8]) -> bool {
    // The pattern positions reachable after the prefix read so far.
    let mut states = vec![0usize];
    let mut next = Vec::new();
    for &c in prefix {
        next.clear();
        for &at in &states {
            step(pattern, at, c, &mut next);
        }
        next.sort_unstable();
        next.dedup();
        std::mem::swap(&mut states, &mut next);
        if states.is_empty() {
            return false;
        }
    }
    // Something of the pattern must be left for the rest of the channel.
    states.iter().any(|&at| at < pattern.len())
}

/// The positions reached from `at` by matching the byte `c`.
fn step(pattern: &[u8], at: usize, c: u8, out: &mut Vec<usize>) {
    let Some(&p) = pattern.get(at) else {
        return;
    };
    match p {
        b'*' => {
            // The star takes `c`, or matches nothing and the rest takes it.
            out.push(at);
            step(pattern, at + 1, c, out);
        }
        b'?' => out.push(at + 1),
        b'[' => {
            let (end, hit) = class(pattern, at + 1, c);
            if hit {
                out.push(end);
            }
        }
        b'\\' if at + 1 < pattern.len() => out.extend((pattern[at + 1] == c).then_some(at + 2)),
        _ if p == c => out.push(at + 1),
        _ => {}
    }
}

/// Reads the class that starts at `start` (after its `[`): the position after it and
/// whether it matches `c`.
fn class(pattern: &[u8], start: usize, c: u8) -> (usize, bool) {
    let mut at = start;
    let negated = pattern.get(at) == Some(&b'^');
    if negated {
        at += 1;
    }
    let mut hit = false;
    while let Some(&p) = pattern.get(at) {
        match p {
            b']' => return (at + 1, hit != negated),
            b'\\' if at + 1 < pattern.len() => {
                hit |= pattern[at + 1] == c;
                at += 2;
            }
            _ if pattern.get(at + 1) == Some(&b'-') && at + 2 < pattern.len() => {
                let (lo, hi) = (p.min(pattern[at + 2]), p.max(pattern[at + 2]));
                hit |= (lo..=hi).contains(&c);
                at += 3;
            }
            _ => {
                hit |= p == c;
                at += 1;
            }
        }
    }
    (at, hit != negated)
}

#[cfg(test)]
mod tests {
    use super::may_match_prefixed;

    const KS: &[u8] = b"__keyspace@";

    #[test]
    fn patterns_that_reach_the_prefix() {
        for p in [
            "*",
            "__key*__:*",
            "__keyspace@0__:*",
            "__keyspace@*",
            "__key?pace@0__:foo",
            "__[k]eys[a-z]ace@*",
            "__keys[^q]ace@0__:*",
            "_*@0__:x",
            "\\_\\_keyspace@0__:k",
            "__keyspace@[0",
            "**?*",
        ] {
            assert!(may_match_prefixed(p.as_bytes(), KS), "{p}");
        }
    }

    #[test]
    fn patterns_that_do_not() {
        for p in [
            "news",
            "news*",
            "__keyevent@*",
            "__keyspace@",
            "__keys[^p]ace@*",
            "__KEYSPACE@*",
            "?",
            "__key[]space@*",
            "",
        ] {
            assert!(!may_match_prefixed(p.as_bytes(), KS), "{p}");
        }
    }
}
