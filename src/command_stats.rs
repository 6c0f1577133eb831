//! Per-command figures: calls, error replies and end-to-end latency (from reading the
//! request to its reply being ready), per command-table entry and per worker thread, summed
//! when read (/metrics). Each worker writes only its own cells.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::command::{COMMANDS, CmdSpec};
use crate::histogram::Histogram;

/// The figures of one command on one worker.
#[derive(Debug, Default)]
pub struct CommandCell {
    pub calls: AtomicU64,
    pub errors: AtomicU64,
    pub latency: Histogram,
}

/// One worker's cells, one per command-table entry plus one for every other command.
#[derive(Debug)]
#[repr(align(64))]
struct WorkerCells(Box<[CommandCell]>);

/// One command's figures over every worker.
#[derive(Debug)]
pub struct CommandFigures {
    /// Its index (`label` names it).
    pub index: usize,
    pub calls: u64,
    pub errors: u64,
    pub latency: crate::histogram::Exposition,
}

/// Every worker's per-command figures.
#[derive(Debug)]
pub struct CommandStats {
    workers: Box<[WorkerCells]>,
    worker_count: usize,
}

/// Index of `spec` in the built-in table; commands learned from the servers, and unknown
/// ones, share the last index (`other`).
pub fn index_of(spec: Option<&'static CmdSpec>) -> u16 {
    let other = COMMANDS.len() as u16;
    let Some(spec) = spec else { return other };
    let base = COMMANDS.as_ptr() as usize;
    let at = spec as *const CmdSpec as usize;
    let size = std::mem::size_of::<CmdSpec>();
    if at < base || size == 0 {
        return other;
    }
    let i = (at - base) / size;
    if i < COMMANDS.len() && std::ptr::eq(&COMMANDS[i], spec) {
        i as u16
    } else {
        other
    }
}

/// The metric label of command index `i`: the table's name in lower case, `other` beyond.
pub fn label(i: usize) -> String {
    COMMANDS
        .get(i)
        .map_or_else(|| "other".to_string(), CmdSpec::redis_name)
}

impl CommandStats {
    /// Cells for `workers` worker threads (plus one entry for every other thread).
    pub fn new(workers: usize) -> CommandStats {
        CommandStats {
            workers: (0..=workers)
                .map(|_| {
                    WorkerCells(
                        (0..=COMMANDS.len())
                            .map(|_| CommandCell::default())
                            .collect(),
                    )
                })
                .collect(),
            worker_count: workers,
        }
    }

    /// Counts one finished command of index `command`.
    pub fn record(&self, command: u16, error: bool, took: Duration) {
        let cells = &self.workers[crate::worker::slot(self.worker_count)].0;
        let Some(cell) = cells.get(command as usize) else {
            return;
        };
        cell.calls.fetch_add(1, Ordering::Relaxed);
        if error {
            cell.errors.fetch_add(1, Ordering::Relaxed);
        }
        cell.latency.record(took);
    }

    /// Every command with at least one call, summed over the workers.
    pub fn snapshot(&self) -> Vec<CommandFigures> {
        let mut out = Vec::new();
        for i in 0..=COMMANDS.len() {
            let calls: u64 = self
                .workers
                .iter()
                .map(|w| w.0[i].calls.load(Ordering::Relaxed))
                .sum();
            if calls == 0 {
                continue;
            }
            let errors = self
                .workers
                .iter()
                .map(|w| w.0[i].errors.load(Ordering::Relaxed))
                .sum();
            let mut sum = 0.0;
            let mut count = 0;
            let mut buckets: Vec<(f64, u64)> = Vec::new();
            for w in self.workers.iter() {
                let (s, c, b) = w.0[i].latency.exposition();
                sum += s;
                count += c;
                if buckets.is_empty() {
                    buckets = b;
                } else {
                    for (acc, (_, n)) in buckets.iter_mut().zip(b) {
                        acc.1 += n;
                    }
                }
            }
            out.push(CommandFigures {
                index: i,
                calls,
                errors,
                latency: (sum, count, buckets),
            });
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_entries_have_their_own_index_and_others_share_one() {
        let get = crate::command::lookup(b"GET").unwrap();
        let i = index_of(Some(get));
        assert_eq!(label(i as usize), "get");
        assert_eq!(index_of(None) as usize, COMMANDS.len());
        assert_eq!(label(COMMANDS.len()), "other");
        let stats = CommandStats::new(2);
        stats.record(i, false, Duration::from_micros(100));
        stats.record(i, true, Duration::from_micros(300));
        stats.record(index_of(None), false, Duration::from_micros(5));
        let snap = stats.snapshot();
        assert_eq!(snap.len(), 2);
        let f = &snap[0];
        assert_eq!(
            (f.index, f.calls, f.errors, f.latency.1),
            (i as usize, 2, 1, 2)
        );
        assert!((f.latency.0 - 0.0004).abs() < 1e-9);
    }
}
