//! Worker threads: each runs a current-thread runtime that owns the client connections
//! handed to it at accept and its own backend connections to every node, so a plain
//! command's path (client socket, backend connection, reply) never leaves its thread.
//!
//! Shared between workers: the slot tables (swapped atomically), the configuration and the
//! command table. The accept loop and background tasks (topology managers, the multi-write
//! log and probe) run on the runtime that called `server::run`.

use std::cell::Cell;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::JoinHandle;

use tokio::runtime::Handle;
use tokio::sync::oneshot;

thread_local! {
    /// Index of the worker running on this thread; `None` off the worker threads.
    static WORKER: Cell<Option<usize>> = const { Cell::new(None) };
}

/// The worker running on this thread, if this is a worker thread.
pub fn current() -> Option<usize> {
    WORKER.with(Cell::get)
}

/// Slot of this thread in per-worker tables of `workers + 1` entries: its worker index, or
/// the last entry for every other thread (accept loop, background tasks, tests).
pub fn slot(workers: usize) -> usize {
    current().map_or(workers, |w| w.min(workers))
}

/// The number of workers `threads` asks for: 0 means one per core.
pub fn resolve(threads: usize) -> usize {
    if threads > 0 {
        return threads;
    }
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// One worker thread.
struct Worker {
    handle: Handle,
    /// Completing it ends the worker's runtime.
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

/// The running workers.
pub struct Workers {
    workers: Vec<Worker>,
    /// Round-robin position for the next client.
    next: AtomicUsize,
}

impl Workers {
    /// Starts `count` worker threads (at least one).
    pub fn start(count: usize) -> std::io::Result<Workers> {
        let mut workers = Vec::with_capacity(count.max(1));
        for index in 0..count.max(1) {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let handle = runtime.handle().clone();
            let (stop, stopped) = oneshot::channel::<()>();
            let thread = std::thread::Builder::new()
                .name(format!("slotgate-worker-{index}"))
                .spawn(move || {
                    WORKER.with(|w| w.set(Some(index)));
                    runtime.block_on(async {
                        let _ = stopped.await;
                    });
                    // Dropping the runtime cancels what is left on it.
                    drop(runtime);
                })?;
            workers.push(Worker {
                handle,
                stop: Some(stop),
                thread: Some(thread),
            });
        }
        Ok(Workers {
            workers,
            next: AtomicUsize::new(0),
        })
    }

    /// Number of workers.
    pub fn len(&self) -> usize {
        self.workers.len()
    }

    /// Always false: there is at least one worker.
    pub fn is_empty(&self) -> bool {
        self.workers.is_empty()
    }

    /// Runs a client task on the next worker, round-robin.
    pub fn spawn<F>(&self, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.workers.len();
        self.workers[i].handle.spawn(task);
    }

    /// Stops every worker (cancelling what still runs on them) and waits for their threads.
    pub fn stop(mut self) {
        self.stop_all();
    }

    fn stop_all(&mut self) {
        for w in &mut self.workers {
            if let Some(stop) = w.stop.take() {
                let _ = stop.send(());
            }
        }
        for w in &mut self.workers {
            if let Some(t) = w.thread.take() {
                let _ = t.join();
            }
        }
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        self.stop_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clients_are_spread_over_workers_that_know_their_index() {
        let workers = Workers::start(2).unwrap();
        assert_eq!(current(), None);
        assert_eq!(slot(2), 2);
        let (tx, rx) = std::sync::mpsc::channel();
        for _ in 0..4 {
            let tx = tx.clone();
            workers.spawn(async move {
                tx.send(current()).unwrap();
            });
        }
        let mut seen: Vec<Option<usize>> = (0..4).map(|_| rx.recv().unwrap()).collect();
        seen.sort();
        assert_eq!(seen, [Some(0), Some(0), Some(1), Some(1)]);
        workers.stop();
    }

    #[test]
    fn zero_threads_means_one_per_core() {
        assert!(resolve(0) >= 1);
        assert_eq!(resolve(3), 3);
    }
}
