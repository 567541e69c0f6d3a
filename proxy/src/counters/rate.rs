//! Rates and sliding averages, lock-free: HAProxy's `freq_ctr` and `swrate`.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// An events-per-second estimate without locks, as HAProxy's `freq_ctr`: the count of the
/// current second plus the previous second's count weighted by the part of it still inside
/// the sliding one-second window.
#[derive(Debug, Default)]
pub struct Rate {
    /// `second << 32 | count` of the current second, swapped in one step so two threads
    /// rotating the window cannot both reset it.
    window: AtomicU64,
    previous: AtomicU32,
    max: AtomicU64,
}

impl Rate {
    pub fn hit(&self, now_ms: u64) {
        let second = (now_ms / 1000) as u32;
        let mut seen = self.window.load(Ordering::Relaxed);
        loop {
            let (cur_second, count) = ((seen >> 32) as u32, seen as u32);
            let next = if cur_second == second {
                seen + 1
            } else {
                (u64::from(second) << 32) | 1
            };
            match self.window.compare_exchange_weak(
                seen,
                next,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => {
                    if cur_second != second {
                        let carried = if cur_second.wrapping_add(1) == second {
                            count
                        } else {
                            0
                        };
                        self.previous.store(carried, Ordering::Relaxed);
                    }
                    break;
                }
                Err(actual) => seen = actual,
            }
        }
        self.max.fetch_max(self.read(now_ms), Ordering::Relaxed);
    }

    /// Events over the last second as of `now_ms`.
    pub fn read(&self, now_ms: u64) -> u64 {
        let seen = self.window.load(Ordering::Relaxed);
        let (cur_second, count) = ((seen >> 32) as u32, u64::from(seen as u32));
        let second = (now_ms / 1000) as u32;
        let left = 1000 - now_ms % 1000;
        if cur_second == second {
            count + u64::from(self.previous.load(Ordering::Relaxed)) * left / 1000
        } else if cur_second.wrapping_add(1) == second {
            count * left / 1000
        } else {
            0
        }
    }

    pub fn max(&self) -> u64 {
        self.max.load(Ordering::Relaxed)
    }
}

/// HAProxy's "average over the last 1024 samples" (`swrate`), with the peak seen: a
/// lock-free running sum where each new sample replaces one average sample.
#[derive(Debug, Default)]
pub struct SlidingAvg {
    sum: AtomicU64,
    samples: AtomicU64,
    max: AtomicU64,
}

/// How many samples the average spans, as HAProxy's `TIME_STATS_SAMPLES`.
const AVG_SAMPLES: u64 = 1024;

impl SlidingAvg {
    pub fn add(&self, value: u64) {
        let before = self.samples.fetch_add(1, Ordering::Relaxed);
        // Until the window is full the sum is exact (a true mean); after, each sample pushes
        // out one average sample. Concurrent adds retry on a stale sum; the closure never fails.
        let _ = self
            .sum
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |sum| {
                let kept = if before < AVG_SAMPLES {
                    sum
                } else {
                    sum - sum / AVG_SAMPLES
                };
                Some(kept.saturating_add(value))
            });
        self.max.fetch_max(value, Ordering::Relaxed);
    }

    pub fn average(&self) -> u64 {
        let n = self.samples.load(Ordering::Relaxed).min(AVG_SAMPLES);
        if n == 0 {
            return 0;
        }
        self.sum.load(Ordering::Relaxed).div_ceil(n)
    }

    pub fn max(&self) -> u64 {
        self.max.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_counts_the_current_second_and_decays() {
        let r = Rate::default();
        let base = 1_000_000_000;
        for _ in 0..10 {
            r.hit(base);
        }
        assert_eq!(r.read(base), 10);
        // Half way into the next second half of the previous one still counts.
        assert_eq!(r.read(base + 1500), 5);
        r.hit(base + 1500);
        assert_eq!(r.read(base + 1500), 6);
        assert_eq!(r.read(base + 5000), 0);
        assert_eq!(r.max(), 10);
    }

    #[test]
    fn sliding_average_follows_recent_samples() {
        let a = SlidingAvg::default();
        assert_eq!((a.average(), a.max()), (0, 0));
        a.add(10);
        assert_eq!(a.average(), 10);
        a.add(20);
        a.add(30);
        assert_eq!(a.average(), 20, "an exact mean while the window fills");
        for _ in 0..5000 {
            a.add(100);
        }
        assert_eq!(a.average(), 100, "old samples fade out");
        a.add(1000);
        assert_eq!(a.max(), 1000);
        assert!(a.average() > 100 && a.average() < 110);
    }
}
