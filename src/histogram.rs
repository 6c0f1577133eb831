//! A lock-free latency histogram: power-of-two buckets of microseconds, enough for p50/p99
//! and the maximum in INFO without locks on the request path.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Buckets: `[0,1) us`, `[1,2)`, `[2,4)`, ... up to about 2^40 us.
const BUCKETS: usize = 41;

/// A histogram for Prometheus: sum in seconds, count, cumulative counts per bucket upper
/// bound in seconds.
pub type Exposition = (f64, u64, Vec<(f64, u64)>);

/// Counts of observed durations.
#[derive(Debug)]
pub struct Histogram {
    buckets: [AtomicU64; BUCKETS],
    max_us: AtomicU64,
    /// Sum of the observations, in microseconds (Prometheus's `_sum`).
    sum_us: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            max_us: AtomicU64::new(0),
            sum_us: AtomicU64::new(0),
        }
    }
}

impl Histogram {
    pub fn record(&self, d: Duration) {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        let bucket = (64 - us.leading_zeros() as usize).min(BUCKETS - 1);
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        self.max_us.fetch_max(us, Ordering::Relaxed);
        self.sum_us.fetch_add(us, Ordering::Relaxed);
    }

    /// For Prometheus: the sum in seconds, the count, and cumulative counts per bucket
    /// upper bound in seconds (1 us, 2 us, 4 us, ... 2^26 us = 67 s, then `+Inf`).
    pub fn exposition(&self) -> Exposition {
        const SHOWN: usize = 27;
        let mut cumulative = 0;
        let mut buckets = Vec::with_capacity(SHOWN + 1);
        for (i, b) in self.buckets.iter().enumerate() {
            cumulative += b.load(Ordering::Relaxed);
            if i < SHOWN {
                // Bucket i holds [2^(i-1), 2^i) us.
                buckets.push(((1u64 << i) as f64 / 1e6, cumulative));
            }
        }
        buckets.push((f64::INFINITY, cumulative));
        let sum = self.sum_us.load(Ordering::Relaxed) as f64 / 1e6;
        (sum, cumulative, buckets)
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.buckets.iter().map(|b| b.load(Ordering::Relaxed)).sum()
    }

    /// Upper bound of the bucket holding quantile `q` (0..1), in microseconds; 0 when empty.
    pub fn quantile_us(&self, q: f64) -> u64 {
        let counts: Vec<u64> = self
            .buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect();
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return 0;
        }
        let rank = ((total as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, c) in counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                let upper = if i == 0 { 1 } else { 1u64 << i };
                return upper.min(self.max_us());
            }
        }
        self.max_us()
    }

    pub fn max_us(&self) -> u64 {
        self.max_us.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_bound_the_observations() {
        let h = Histogram::default();
        assert_eq!(h.quantile_us(0.5), 0);
        for us in [100u64, 120, 130, 140, 5000] {
            h.record(Duration::from_micros(us));
        }
        assert_eq!(h.count(), 5);
        let p50 = h.quantile_us(0.5);
        assert!((128..=256).contains(&p50), "{p50}");
        assert_eq!(h.quantile_us(0.99), 5000);
        assert_eq!(h.max_us(), 5000);
    }
}
