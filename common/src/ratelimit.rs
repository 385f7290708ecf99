//! Token-bucket rate caps, so the lab can emulate slow peers (and protocol crates can cap their uploads).
//!
//! [`TokenBucket`] is the pure algorithm: time is passed in, nothing sleeps, so it is unit-tested without a
//! clock. A bucket holds at most `burst` tokens (one token = one byte) and refills at `rate` tokens per second.
//! [`RateLimiter`] is the async, cloneable, shareable shell around one bucket: clone it into every connection
//! to get a *global* cap, or make one per connection for a *per-connection* cap.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Smallest burst a bucket is given: below this a limiter would hand out uselessly tiny pieces.
pub const MIN_BURST: u64 = 1024;

/// A token bucket: `rate` tokens per second, at most `burst` stored. Time is passed in by the caller.
#[derive(Clone, Debug)]
pub struct TokenBucket {
    rate: u64,
    burst: u64,
    /// Tokens scaled by 1e9 (token-nanoseconds), so refills of a few nanoseconds are never rounded away.
    scaled: u128,
    last: Instant,
}

const NANOS: u128 = 1_000_000_000;

impl TokenBucket {
    /// A full bucket refilling at `rate` bytes per second (at least 1) holding at most `burst` bytes (at
    /// least [`MIN_BURST`]).
    pub fn new(rate: u64, burst: u64, now: Instant) -> Self {
        let burst = burst.max(MIN_BURST);
        TokenBucket {
            rate: rate.max(1),
            burst,
            scaled: burst as u128 * NANOS,
            last: now,
        }
    }

    /// A bucket whose burst is a tenth of a second of traffic (at least [`MIN_BURST`]): smooth but not choppy.
    pub fn with_rate(rate: u64, now: Instant) -> Self {
        Self::new(rate, rate / 10, now)
    }

    /// The refill rate in bytes per second.
    pub fn rate(&self) -> u64 {
        self.rate
    }

    /// The largest number of tokens the bucket can hold.
    pub fn burst(&self) -> u64 {
        self.burst
    }

    fn refill(&mut self, now: Instant) {
        // A clock that goes backwards (caller passing an older instant) simply adds nothing.
        let elapsed = now.saturating_duration_since(self.last).as_nanos();
        self.last = self.last.max(now);
        let cap = self.burst as u128 * NANOS;
        self.scaled = self
            .scaled
            .saturating_add(elapsed.saturating_mul(self.rate as u128))
            .min(cap);
    }

    /// Whole tokens available at `now`.
    pub fn available(&mut self, now: Instant) -> u64 {
        self.refill(now);
        (self.scaled / NANOS) as u64
    }

    /// Takes up to `want` tokens at `now` and returns how many were granted (0 when the bucket is empty).
    pub fn take_up_to(&mut self, now: Instant, want: u64) -> u64 {
        let got = self.available(now).min(want);
        self.scaled -= got as u128 * NANOS;
        got
    }

    /// How long from `now` until `min(want, burst)` tokens are available (zero if they already are).
    pub fn wait_time(&mut self, now: Instant, want: u64) -> Duration {
        self.refill(now);
        let need = want.clamp(1, self.burst) as u128 * NANOS;
        if self.scaled >= need {
            return Duration::ZERO;
        }
        // Round up so that waiting this long is always enough.
        let nanos = (need - self.scaled).div_ceil(self.rate as u128);
        Duration::from_nanos(nanos.min(u64::MAX as u128) as u64)
    }
}

/// The tokio clock (which tests can pause and advance) as a std instant.
fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

/// A shareable async rate limiter around one [`TokenBucket`]. Cloning shares the bucket.
#[derive(Clone, Debug)]
pub struct RateLimiter(Arc<Mutex<TokenBucket>>);

impl RateLimiter {
    /// A limiter of `rate` bytes per second with a burst of a tenth of a second ([`TokenBucket::with_rate`]).
    pub fn new(rate: u64) -> Self {
        RateLimiter(Arc::new(Mutex::new(TokenBucket::with_rate(rate, now()))))
    }

    /// A limiter with an explicit burst size.
    pub fn with_burst(rate: u64, burst: u64) -> Self {
        RateLimiter(Arc::new(Mutex::new(TokenBucket::new(rate, burst, now()))))
    }

    /// Bytes per second.
    pub fn rate(&self) -> u64 {
        self.lock().rate()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, TokenBucket> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes whatever is available now, up to `want`, without waiting.
    pub fn try_take(&self, want: u64) -> u64 {
        self.lock().take_up_to(now(), want)
    }

    /// How long until `want` tokens (capped at the burst) are available.
    pub fn wait_time(&self, want: u64) -> Duration {
        self.lock().wait_time(now(), want)
    }

    /// Waits until at least one token is available and takes up to `want` (returns 0 only if `want` is 0).
    ///
    /// Several tasks sharing one limiter each get a share; none is starved for longer than a refill of
    /// the amount it asked for.
    pub async fn acquire_up_to(&self, want: u64) -> u64 {
        if want == 0 {
            return 0;
        }
        loop {
            let wait = {
                let mut b = self.lock();
                let now = now();
                // Ask for a sizeable piece when the bucket is low, so a slow cap does not turn into a
                // stream of one-byte writes.
                let piece = want.min(b.burst()).min((b.rate() / 20).max(MIN_BURST));
                let got = if b.available(now) >= piece {
                    b.take_up_to(now, want)
                } else {
                    0
                };
                if got > 0 {
                    return got;
                }
                b.wait_time(now, piece)
            };
            tokio::time::sleep(wait.max(Duration::from_millis(1))).await;
        }
    }

    /// Waits until all of `amount` has been taken (in pieces, so other tasks sharing the limiter are served
    /// in between). Used after bytes have been received: the reader stops reading until the cap allows it,
    /// and TCP flow control slows the sender.
    pub async fn acquire(&self, amount: u64) {
        let mut left = amount;
        while left > 0 {
            left -= self.acquire_up_to(left).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_full_and_never_exceeds_burst() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(1000, 5000, t0);
        assert_eq!(b.take_up_to(t0, 10_000), 5000);
        assert_eq!(b.take_up_to(t0, 1), 0);
        // A long idle period refills only up to the burst.
        assert_eq!(b.available(t0 + Duration::from_secs(3600)), 5000);
    }

    #[test]
    fn refills_at_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(1000, 2000, t0);
        assert_eq!(b.take_up_to(t0, 2000), 2000);
        assert_eq!(b.take_up_to(t0 + Duration::from_millis(500), 2000), 500);
        // Fractions accumulate: 1 ms gives exactly one token.
        let mut t = t0 + Duration::from_millis(500);
        let mut total = 0;
        for _ in 0..100 {
            t += Duration::from_millis(1);
            total += b.take_up_to(t, 10);
        }
        assert_eq!(total, 100);
    }

    #[test]
    fn long_run_average_matches_rate() {
        let t0 = Instant::now();
        let rate = 12_345;
        let mut b = TokenBucket::new(rate, MIN_BURST, t0);
        let first = b.take_up_to(t0, u64::MAX);
        let mut got = 0;
        let mut t = t0;
        // Ten simulated seconds of greedy takes at irregular instants.
        for i in 0..10_000u64 {
            t += Duration::from_micros(500 + (i * 7919) % 1000);
            got += b.take_up_to(t, 700);
        }
        let secs = (t - t0).as_secs_f64();
        let expected = rate as f64 * secs;
        assert_eq!(first, MIN_BURST);
        assert!(
            (got as f64 - expected).abs() <= MIN_BURST as f64 + 1.0,
            "got {got}, expected about {expected}"
        );
    }

    #[test]
    fn wait_time_is_exactly_enough() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(2000, 4000, t0);
        assert_eq!(b.wait_time(t0, 100), Duration::ZERO);
        b.take_up_to(t0, 4000);
        let w = b.wait_time(t0, 1000);
        assert_eq!(w, Duration::from_millis(500));
        assert_eq!(b.take_up_to(t0 + w, 1000), 1000);
        // Asking for more than the burst waits only for the burst.
        assert_eq!(b.wait_time(t0 + w, 1_000_000), Duration::from_secs(2));
    }

    #[test]
    fn clock_going_backwards_adds_nothing() {
        let t0 = Instant::now() + Duration::from_secs(10);
        let mut b = TokenBucket::new(1000, 2000, t0);
        assert_eq!(b.take_up_to(t0, 5000), 2000);
        assert_eq!(b.take_up_to(t0 - Duration::from_secs(5), 10), 0);
        assert_eq!(b.take_up_to(t0 + Duration::from_millis(10), 100), 10);
    }

    #[test]
    fn extreme_values_do_not_overflow() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(u64::MAX, u64::MAX, t0);
        assert_eq!(b.take_up_to(t0, u64::MAX), u64::MAX);
        assert_eq!(
            b.available(t0 + Duration::from_secs(1_000_000_000)),
            u64::MAX
        );
        let mut z = TokenBucket::new(0, 0, t0);
        assert_eq!(z.rate(), 1);
        z.take_up_to(t0, u64::MAX);
        assert_eq!(z.wait_time(t0, 1), Duration::from_secs(1));
    }

    #[tokio::test(start_paused = true)]
    async fn async_limiter_paces_a_shared_budget() {
        let lim = RateLimiter::with_burst(100_000, 10_000);
        let start = tokio::time::Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..4 {
            let l = lim.clone();
            tasks.push(tokio::spawn(async move {
                let mut got = 0;
                while got < 50_000 {
                    got += l.acquire_up_to(50_000 - got).await;
                }
                got
            }));
        }
        let mut total = 0;
        for t in tasks {
            total += t.await.unwrap();
        }
        assert_eq!(total, 200_000);
        // 200 kB at 100 kB/s with a 10 kB head start: about 1.9 s of (paused, simulated) time.
        let took = start.elapsed();
        assert!(
            took >= Duration::from_millis(1850) && took <= Duration::from_millis(2100),
            "{took:?}"
        );
    }
}
