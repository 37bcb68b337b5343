//! A token bucket on a caller-supplied clock: the one rate limiter of both ends (the relay's
//! per-connection frame and byte rates, the SDK's pacing of what it sends of its own accord).
//!
//! It reads no clock: every call takes the current time in milliseconds, so the sans-IO cores
//! and the simulation drive it in virtual time.

/// Holds up to `burst` tokens and refills continuously at `per_second`.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    per_second: u64,
    /// The most tokens it holds, in thousandths.
    capacity: u128,
    /// Tokens, in thousandths, so that refills of less than a token per millisecond add up.
    milli_tokens: u128,
    last_ms: u64,
}

impl TokenBucket {
    /// A full bucket for `per_second` tokens per second, holding one second's worth (0 means
    /// unlimited).
    pub fn per_second(per_second: u64, now_ms: u64) -> Self {
        Self::with_burst(per_second, per_second, now_ms)
    }

    /// A full bucket for `per_second` tokens per second that holds at most `burst` tokens (at
    /// least one); `per_second` 0 means unlimited.
    pub fn with_burst(per_second: u64, burst: u64, now_ms: u64) -> Self {
        let capacity = u128::from(burst.max(1)) * 1000;
        Self {
            per_second,
            capacity,
            milli_tokens: capacity,
            last_ms: now_ms,
        }
    }

    /// Takes `n` tokens at `now_ms`, or says in how many milliseconds they will be there (at
    /// least 1). A request larger than the bucket costs a full bucket instead of never fitting.
    pub fn take(&mut self, n: u64, now_ms: u64) -> Result<(), u64> {
        if self.per_second == 0 {
            return Ok(());
        }
        let capacity = self.capacity;
        let elapsed = u128::from(now_ms.saturating_sub(self.last_ms));
        self.last_ms = self.last_ms.max(now_ms);
        // per_second tokens per 1000 ms = per_second milli-tokens per ms.
        self.milli_tokens =
            (self.milli_tokens + elapsed * u128::from(self.per_second)).min(capacity);
        let need = (u128::from(n) * 1000).min(capacity);
        if need <= self.milli_tokens {
            self.milli_tokens -= need;
            return Ok(());
        }
        let missing = need - self.milli_tokens;
        let wait = missing.div_ceil(u128::from(self.per_second)).max(1);
        Err(u64::try_from(wait).unwrap_or(u64::MAX))
    }
}

#[cfg(test)]
mod tests {
    use super::TokenBucket;

    #[test]
    fn refills_over_time_and_reports_the_wait() {
        let mut b = TokenBucket::per_second(10, 0);
        for _ in 0..10 {
            b.take(1, 0).expect("burst of one second");
        }
        assert_eq!(b.take(1, 0), Err(100), "one token per 100 ms");
        assert_eq!(b.take(1, 50), Err(50));
        b.take(1, 100).expect("refilled");
        assert!(b.take(5, 200).is_err());
        b.take(5, 600).expect("refilled to five");
        let mut small = TokenBucket::per_second(10, 0);
        small
            .take(25, 0)
            .expect("a request over a second's budget takes a full bucket");
        assert_eq!(small.take(1, 0), Err(100));
        let mut unlimited = TokenBucket::per_second(0, 0);
        unlimited.take(u64::MAX, 0).expect("0 means unlimited");
    }

    #[test]
    fn a_burst_bounds_what_it_holds() {
        // Two tokens a frame at 10 per second: 5 frames per second, a burst of 3 frames.
        let mut b = TokenBucket::with_burst(10, 6, 0);
        for _ in 0..3 {
            b.take(2, 0).expect("the burst");
        }
        assert_eq!(b.take(2, 0), Err(200));
        // A long idle time refills only to the burst.
        for _ in 0..3 {
            b.take(2, 60_000).expect("refilled to the burst");
        }
        assert_eq!(b.take(2, 60_000), Err(200));
    }
}
