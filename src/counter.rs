//! Counters that every worker thread bumps without sharing a cache line with the others,
//! summed when read (INFO). A plain shared atomic would bounce its cache line between cores
//! on every request.

use std::sync::atomic::{AtomicU64, Ordering};

/// Cells per counter: one per worker (modulo), the last for every other thread.
const CELLS: usize = 16;

/// One cell on a cache line of its own.
#[derive(Debug, Default)]
#[repr(align(64))]
struct Cell(AtomicU64);

/// A monotonically increasing count, split per worker thread.
#[derive(Debug)]
pub struct Counter {
    cells: [Cell; CELLS],
}

impl Default for Counter {
    fn default() -> Self {
        Counter {
            cells: std::array::from_fn(|_| Cell::default()),
        }
    }
}

impl Counter {
    /// Adds `n` in this thread's cell.
    pub fn add(&self, n: u64) {
        let i = crate::worker::current().map_or(CELLS - 1, |w| w % (CELLS - 1));
        self.cells[i].0.fetch_add(n, Ordering::Relaxed);
    }

    /// The sum over every thread.
    pub fn get(&self) -> u64 {
        self.cells
            .iter()
            .map(|c| c.0.load(Ordering::Relaxed))
            .fold(0, u64::wrapping_add)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_every_thread() {
        let c = std::sync::Arc::new(Counter::default());
        let workers = crate::worker::Workers::start(3).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        for _ in 0..6 {
            let (c, tx) = (c.clone(), tx.clone());
            workers.spawn(async move {
                c.add(5);
                tx.send(()).unwrap();
            });
        }
        for _ in 0..6 {
            rx.recv().unwrap();
        }
        c.add(1);
        assert_eq!(c.get(), 31);
        workers.stop();
    }
}
