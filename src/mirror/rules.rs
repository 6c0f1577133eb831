//! Key rules: which mirrors a key's writes go to, by Redis-style glob patterns, so operators
//! can migrate part of a keyspace.

/// Glob patterns a key must match for a mirror to receive its writes; empty means every key.
#[derive(Debug, Clone, Default)]
pub struct KeyRules {
    patterns: Vec<Vec<u8>>,
}

impl KeyRules {
    pub fn new(patterns: &[String]) -> Self {
        KeyRules {
            patterns: patterns.iter().map(|p| p.as_bytes().to_vec()).collect(),
        }
    }

    /// Whether writes to `key` go to this mirror.
    pub fn matches(&self, key: &[u8]) -> bool {
        self.patterns.is_empty() || self.patterns.iter().any(|p| glob(p, key))
    }

    /// True when every key matches (no rules).
    pub fn all(&self) -> bool {
        self.patterns.is_empty()
    }
}

/// Redis glob matching (`KEYS`/`SCAN MATCH`): `*`, `?`, `[abc]`, `[^a]`, `[a-z]`, `\x`.
pub fn glob(pattern: &[u8], s: &[u8]) -> bool {
    let (mut p, mut i) = (0, 0);
    // Where to resume after the last `*`: (pattern index after it, string index).
    let mut star: Option<(usize, usize)> = None;
    while i < s.len() {
        if p < pattern.len() {
            match pattern[p] {
                b'*' => {
                    star = Some((p + 1, i));
                    p += 1;
                    continue;
                }
                b'?' => {
                    p += 1;
                    i += 1;
                    continue;
                }
                b'[' => {
                    if let Some((matched, next)) = class(pattern, p, s[i])
                        && matched
                    {
                        p = next;
                        i += 1;
                        continue;
                    }
                }
                b'\\' if p + 1 < pattern.len() && pattern[p + 1] == s[i] => {
                    p += 2;
                    i += 1;
                    continue;
                }
                b'\\' if p + 1 < pattern.len() => {}
                c if c == s[i] => {
                    p += 1;
                    i += 1;
                    continue;
                }
                _ => {}
            }
        }
        match star {
            Some((sp, si)) => {
                p = sp;
                i = si + 1;
                star = Some((sp, si + 1));
            }
            None => return false,
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

/// Matches `c` against the class starting at `pattern[at] == '['`; returns whether it matched
/// and the index after the class.
fn class(pattern: &[u8], at: usize, c: u8) -> Option<(bool, usize)> {
    let mut p = at + 1;
    let negate = pattern.get(p) == Some(&b'^');
    if negate {
        p += 1;
    }
    let mut matched = false;
    loop {
        let &pc = pattern.get(p)?;
        if pc == b']' {
            break;
        }
        if pc == b'\\' && p + 1 < pattern.len() {
            matched |= pattern[p + 1] == c;
            p += 2;
        } else if pattern.get(p + 1) == Some(&b'-')
            && p + 2 < pattern.len()
            && pattern[p + 2] != b']'
        {
            let (lo, hi) = (pc.min(pattern[p + 2]), pc.max(pattern[p + 2]));
            matched |= (lo..=hi).contains(&c);
            p += 3;
        } else {
            matched |= pc == c;
            p += 1;
        }
    }
    Some((matched != negate, p + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob(b"user:*", b"user:1"));
        assert!(glob(b"user:*", b"user:"));
        assert!(!glob(b"user:*", b"session:1"));
        assert!(glob(b"*", b""));
        assert!(glob(b"h?llo", b"hello"));
        assert!(!glob(b"h?llo", b"hllo"));
        assert!(glob(b"h[ae]llo", b"hallo"));
        assert!(!glob(b"h[^e]llo", b"hello"));
        assert!(glob(b"h[a-c]llo", b"hbllo"));
        assert!(glob(b"*:*:end", b"a:b:c:end"));
        assert!(glob(b"a\\*b", b"a*b"));
        assert!(!glob(b"a\\*b", b"axb"));
        assert!(glob(b"{tag}*", b"{tag}x"));
    }

    #[test]
    fn rules() {
        let r = KeyRules::new(&["user:*".into(), "cart:?".into()]);
        assert!(r.matches(b"user:1") && r.matches(b"cart:1") && !r.matches(b"cart:12"));
        assert!(KeyRules::new(&[]).matches(b"anything"));
    }
}
