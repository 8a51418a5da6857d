//! Pacing of outgoing pushes: a token bucket per target, exponential backoff with jitter
//! between retries, and `Retry-After` parsing. Pure: time and randomness come in as
//! arguments, so the rules are tested with exact numbers.
//!
//! Invariant: a target never sends faster than its bucket allows, and never retries sooner
//! than the server asked (`Retry-After`) or than its backoff.

use std::time::{Duration, Instant};

use serde::Deserialize;

/// Rate limit, batching and retry policy of a push target.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PushLimits {
    /// Requests per second allowed on average (token bucket refill rate).
    pub rate_per_sec: f64,
    /// Requests allowed back to back (token bucket size).
    pub burst: u32,
    /// Most SKUs in one request.
    pub max_batch: usize,
    pub timeout_ms: u64,
    /// First retry delay; doubles per failure up to `backoff_max_ms`, with jitter.
    pub backoff_initial_ms: u64,
    pub backoff_max_ms: u64,
}

impl Default for PushLimits {
    fn default() -> Self {
        PushLimits {
            rate_per_sec: 5.0,
            burst: 10,
            max_batch: 250,
            timeout_ms: 10_000,
            backoff_initial_ms: 200,
            backoff_max_ms: 60_000,
        }
    }
}

/// A token bucket: `burst` requests back to back, `rate` per second on average.
#[derive(Debug)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(rate_per_sec: f64, burst: u32, now: Instant) -> TokenBucket {
        let burst = f64::from(burst.max(1));
        TokenBucket {
            rate: rate_per_sec.max(0.001),
            burst,
            tokens: burst,
            last: now,
        }
    }

    /// Takes one token; returns how long to wait before sending (zero if a token was there).
    /// The token is reserved either way, so callers that wait the returned time stay within
    /// the rate.
    pub fn take(&mut self, now: Instant) -> Duration {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        self.tokens -= 1.0;
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / self.rate)
        }
    }
}

/// Exponential backoff with jitter: the n-th consecutive failure waits a random time in
/// `[d/2, d]` where `d = min(max, initial * 2^n)`.
#[derive(Debug)]
pub struct Backoff {
    initial_ms: u64,
    max_ms: u64,
    failures: u32,
    rng: u64,
}

impl Backoff {
    pub fn new(limits: &PushLimits, seed: u64) -> Backoff {
        Backoff {
            initial_ms: limits.backoff_initial_ms.max(1),
            max_ms: limits.backoff_max_ms.max(limits.backoff_initial_ms.max(1)),
            failures: 0,
            rng: seed | 1,
        }
    }

    /// The delay after one more failure.
    pub fn next_delay(&mut self) -> Duration {
        let ceiling = self
            .initial_ms
            .saturating_mul(1u64 << self.failures.min(32))
            .min(self.max_ms);
        self.failures = self.failures.saturating_add(1);
        // xorshift64: jitter only needs to spread retries, not to be unpredictable.
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let half = ceiling / 2;
        Duration::from_millis(half + self.rng % (ceiling - half + 1))
    }

    /// Consecutive failures so far.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    pub fn reset(&mut self) {
        self.failures = 0;
    }
}

/// A seed that differs per target and per run.
pub fn seed(name: &str) -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    name.bytes()
        .fold(nanos, |h, b| h.rotate_left(5) ^ u64::from(b))
}

/// A `Retry-After` header in delay-seconds form. HTTP dates are not understood and return
/// `None`, so the caller falls back to its own backoff.
pub fn retry_after(value: &str) -> Option<Duration> {
    let secs: f64 = value.trim().parse().ok()?;
    (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs.min(3600.0)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_allows_burst_then_paces_at_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(2.0, 3, t0);
        for _ in 0..3 {
            assert_eq!(b.take(t0), Duration::ZERO);
        }
        // Fourth at once: wait for one token at 2/s = 500 ms.
        assert_eq!(b.take(t0), Duration::from_millis(500));
        // Fifth at once: that token is reserved, so 1 s.
        assert_eq!(b.take(t0), Duration::from_millis(1000));
        // 2 s refill 4 tokens: 2 pay back the reservations, 2 are usable.
        let t2 = t0 + Duration::from_secs(2);
        assert_eq!(b.take(t2), Duration::ZERO);
        assert_eq!(b.take(t2), Duration::ZERO);
        assert_eq!(b.take(t2), Duration::from_millis(500));
    }

    #[test]
    fn bucket_never_holds_more_than_burst() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(10.0, 2, t0);
        let later = t0 + Duration::from_secs(60);
        assert_eq!(b.take(later), Duration::ZERO);
        assert_eq!(b.take(later), Duration::ZERO);
        assert_eq!(b.take(later), Duration::from_millis(100));
    }

    #[test]
    fn backoff_doubles_within_jitter_and_caps() {
        let limits = PushLimits {
            backoff_initial_ms: 100,
            backoff_max_ms: 1000,
            ..PushLimits::default()
        };
        let mut b = Backoff::new(&limits, 42);
        let bounds = [
            (50, 100),
            (100, 200),
            (200, 400),
            (400, 800),
            (500, 1000),
            (500, 1000),
        ];
        for (lo, hi) in bounds {
            let d = b.next_delay().as_millis() as u64;
            assert!((lo..=hi).contains(&d), "{d} not in {lo}..={hi}");
        }
        assert_eq!(b.failures(), 6);
        b.reset();
        let d = b.next_delay().as_millis() as u64;
        assert!((50..=100).contains(&d));
    }

    #[test]
    fn jitter_spreads_retries() {
        let limits = PushLimits {
            backoff_initial_ms: 1000,
            backoff_max_ms: 1000,
            ..PushLimits::default()
        };
        let mut b = Backoff::new(&limits, 7);
        let delays: std::collections::BTreeSet<_> = (0..20).map(|_| b.next_delay()).collect();
        assert!(delays.len() > 10, "jitter gave {delays:?}");
    }

    #[test]
    fn retry_after_seconds() {
        assert_eq!(retry_after("2"), Some(Duration::from_secs(2)));
        assert_eq!(retry_after(" 0.5 "), Some(Duration::from_millis(500)));
        assert_eq!(retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), None);
        assert_eq!(retry_after("-1"), None);
    }
}
