//! The hottest keys: one command with keys in `SAMPLE` has its first key counted in a
//! space-saving summary per worker thread (bounded memory: `CAPACITY` keys each), per
//! minute. `INFO hotkeys` and /metrics show the top keys of the last minute and the current
//! one, merged over the workers, counts scaled back by the sampling rate.

use std::collections::HashMap;
use std::sync::Mutex;

use bytes::Bytes;

/// One command with keys in this many is sampled.
pub const SAMPLE: u64 = 16;
/// Keys tracked per worker and minute.
const CAPACITY: usize = 128;
/// Keys reported.
pub const TOP: usize = 10;
/// Bytes of a key shown (INFO, metric labels).
const SHOWN_KEY_LEN: usize = 128;

/// A key as INFO and metric labels show it: at most `SHOWN_KEY_LEN` bytes, lossy UTF-8.
pub fn shown(key: &[u8]) -> String {
    let cut = &key[..key.len().min(SHOWN_KEY_LEN)];
    let mut s = String::from_utf8_lossy(cut).into_owned();
    if key.len() > SHOWN_KEY_LEN {
        s.push_str("...");
    }
    s
}

/// A space-saving summary: at most `CAPACITY` keys; a new key replaces the least counted
/// one and inherits its count (an overestimate bounded by that count).
#[derive(Debug, Default)]
struct Summary {
    counts: HashMap<Bytes, u64>,
}

impl Summary {
    fn add(&mut self, key: &[u8]) {
        if let Some(c) = self.counts.get_mut(key) {
            *c += 1;
            return;
        }
        if self.counts.len() < CAPACITY {
            self.counts.insert(Bytes::copy_from_slice(key), 1);
            return;
        }
        let Some((victim, min)) = self
            .counts
            .iter()
            .min_by_key(|(_, c)| **c)
            .map(|(k, c)| (k.clone(), *c))
        else {
            return;
        };
        self.counts.remove(&victim);
        self.counts.insert(Bytes::copy_from_slice(key), min + 1);
    }
}

/// One worker's summaries: the current minute's and the previous one's.
#[derive(Debug, Default)]
struct Windows {
    minute: u64,
    current: Summary,
    previous: Summary,
}

/// Every worker's hot-key summaries.
#[derive(Debug)]
pub struct HotKeys {
    workers: Box<[Mutex<Windows>]>,
    worker_count: usize,
}

thread_local! {
    /// Commands with keys seen on this thread, for the sampling.
    static SEEN: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// Whether this command (one with keys) is the one in `SAMPLE` to count.
pub fn sampled() -> bool {
    SEEN.with(|s| {
        let n = s.get().wrapping_add(1);
        s.set(n);
        n.is_multiple_of(SAMPLE)
    })
}

impl HotKeys {
    pub fn new(workers: usize) -> HotKeys {
        HotKeys {
            workers: (0..=workers).map(|_| Mutex::default()).collect(),
            worker_count: workers,
        }
    }

    /// Counts one sampled key (only this worker's summary is locked).
    pub fn add(&self, key: &[u8]) {
        let minute = crate::clock::now_ms() / 60_000;
        let mut w = self.workers[crate::worker::slot(self.worker_count)]
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if w.minute != minute {
            w.previous = if w.minute + 1 == minute {
                std::mem::take(&mut w.current)
            } else {
                Summary::default()
            };
            w.current = Summary::default();
            w.minute = minute;
        }
        w.current.add(key);
    }

    /// The `TOP` hottest keys of the last minute and this one, hottest first, with their
    /// estimated command counts.
    pub fn top(&self) -> Vec<(Bytes, u64)> {
        let minute = crate::clock::now_ms() / 60_000;
        let mut merged: HashMap<Bytes, u64> = HashMap::new();
        for w in self.workers.iter() {
            let w = w.lock().unwrap_or_else(|p| p.into_inner());
            let windows: &[&Summary] = match minute.saturating_sub(w.minute) {
                0 => &[&w.current, &w.previous],
                1 => &[&w.current],
                _ => &[],
            };
            for s in windows {
                for (k, c) in &s.counts {
                    *merged.entry(k.clone()).or_default() += c * SAMPLE;
                }
            }
        }
        let mut top: Vec<(Bytes, u64)> = merged.into_iter().collect();
        top.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        top.truncate(TOP);
        top
    }

    /// The `# Hotkeys` INFO section.
    pub fn info_section(&self) -> String {
        let mut out = String::from("# Hotkeys\r\n");
        out.push_str(&format!("hotkeys_sample_rate:1/{SAMPLE}\r\n"));
        for (i, (key, count)) in self.top().iter().enumerate() {
            out.push_str(&format!(
                "hotkey{i}:key={},calls={count}\r\n",
                shown(key).replace([',', '\r', '\n'], "_")
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_skewed_load_reports_its_hottest_key_first() {
        let hot = HotKeys::new(1);
        for i in 0..5000u32 {
            hot.add(format!("cold:{}", i % 1000).as_bytes());
            if i % 3 == 0 {
                hot.add(b"hot:a");
            }
            if i % 7 == 0 {
                hot.add(b"hot:b");
            }
        }
        let top = hot.top();
        assert_eq!(&top[0].0[..], b"hot:a");
        assert_eq!(&top[1].0[..], b"hot:b");
        assert!(top.len() <= TOP);
        // Bounded: never more than CAPACITY keys per worker.
        assert!(hot.workers[1].lock().unwrap().current.counts.len() <= CAPACITY);
        let info = hot.info_section();
        assert!(info.contains("hotkey0:key=hot:a,calls="), "{info}");
    }
}
