//! Token-bucket rate limits keyed by user (or, later, by address), bounded in memory.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;

/// A bucket refills at `per_window` tokens a window (a minute, or an hour) up to `burst`; each
/// request takes one.
pub struct RateLimiter<K> {
    buckets: Mutex<HashMap<K, Bucket>>,
    per_window: u32,
    window_ms: u32,
    burst: u32,
    /// Keys tracked at most; past that, full buckets (idle keys) are dropped first.
    max_keys: usize,
}

#[derive(Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated_ms: i64,
}

impl<K: Hash + Eq + Clone> RateLimiter<K> {
    /// `per_minute == 0` turns the limit off.
    pub fn new(per_minute: u32, burst: u32, max_keys: usize) -> Self {
        Self::with_window(per_minute, 60_000, burst, max_keys)
    }

    /// Like [`RateLimiter::new`] for limits counted per hour; `per_hour == 0` turns it off.
    pub fn per_hour(per_hour: u32, burst: u32, max_keys: usize) -> Self {
        Self::with_window(per_hour, 3_600_000, burst, max_keys)
    }

    fn with_window(per_window: u32, window_ms: u32, burst: u32, max_keys: usize) -> Self {
        RateLimiter {
            buckets: Mutex::new(HashMap::new()),
            per_window,
            window_ms,
            burst: burst.max(1),
            max_keys: max_keys.max(1),
        }
    }

    fn rate_per_ms(&self) -> f64 {
        f64::from(self.per_window) / f64::from(self.window_ms)
    }

    fn refill(&self, bucket: &mut Bucket, now_ms: i64) {
        let elapsed = (now_ms - bucket.updated_ms).max(0) as f64;
        let rate_per_ms = self.rate_per_ms();
        bucket.tokens = (bucket.tokens + elapsed * rate_per_ms).min(f64::from(self.burst));
        bucket.updated_ms = now_ms;
    }

    /// Takes a token for `key`; when none is left, returns how many milliseconds until one is.
    pub fn check(&self, key: &K, now_ms: i64) -> Result<(), u64> {
        if self.per_window == 0 {
            return Ok(());
        }
        let mut buckets = self.buckets.lock().expect("rate limiter lock poisoned");
        if !buckets.contains_key(key) && buckets.len() >= self.max_keys {
            // Keys whose bucket is full again have nothing to remember.
            let burst = f64::from(self.burst);
            let rate_per_ms = self.rate_per_ms();
            buckets.retain(|_, b| {
                b.tokens + (now_ms - b.updated_ms).max(0) as f64 * rate_per_ms < burst
            });
            if buckets.len() >= self.max_keys {
                // Still full of active keys: forget one rather than grow.
                if let Some(victim) = buckets.keys().next().cloned() {
                    buckets.remove(&victim);
                }
            }
        }
        let bucket = buckets.entry(key.clone()).or_insert(Bucket {
            tokens: f64::from(self.burst),
            updated_ms: now_ms,
        });
        self.refill(bucket, now_ms);
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            let missing = 1.0 - bucket.tokens;
            let rate_per_ms = self.rate_per_ms();
            Err((missing / rate_per_ms).ceil() as u64)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_refill_with_an_honest_wait() {
        let limiter = RateLimiter::new(60, 3, 100);
        for _ in 0..3 {
            assert!(limiter.check(&1, 0).is_ok());
        }
        // One token a second: the next one is a second away.
        assert_eq!(limiter.check(&1, 0), Err(1000));
        assert_eq!(limiter.check(&1, 400), Err(600));
        assert!(limiter.check(&1, 1000).is_ok());
        // Other keys have their own bucket.
        assert!(limiter.check(&2, 0).is_ok());
    }

    #[test]
    fn hourly_limits_refill_by_the_hour() {
        let limiter = RateLimiter::per_hour(60, 2, 100);
        assert!(limiter.check(&1, 0).is_ok());
        assert!(limiter.check(&1, 0).is_ok());
        // One token a minute.
        assert_eq!(limiter.check(&1, 0), Err(60_000));
        assert!(limiter.check(&1, 60_000).is_ok());
    }

    #[test]
    fn zero_turns_it_off_and_memory_stays_bounded() {
        let off = RateLimiter::new(0, 1, 1);
        for _ in 0..100 {
            assert!(off.check(&1, 0).is_ok());
        }
        let limiter = RateLimiter::new(60, 1, 10);
        for key in 0..1000 {
            let _ = limiter.check(&key, 0);
        }
        assert!(limiter.buckets.lock().unwrap().len() <= 10);
    }
}
