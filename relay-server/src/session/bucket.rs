//! A token bucket on a caller-supplied clock, for the per-connection frame and byte rates.

/// Holds up to one second's worth of tokens and refills continuously.
#[derive(Debug, Clone)]
pub(crate) struct TokenBucket {
    per_second: u64,
    /// Tokens, in thousandths, so that refills of less than a token per millisecond add up.
    milli_tokens: u128,
    last_ms: u64,
}

impl TokenBucket {
    /// A full bucket for `per_second` tokens per second (0 means unlimited).
    pub(crate) fn per_second(per_second: u64, now_ms: u64) -> Self {
        Self {
            per_second,
            milli_tokens: u128::from(per_second) * 1000,
            last_ms: now_ms,
        }
    }

    /// Takes `n` tokens at `now_ms`, or says in how many milliseconds they will be there.
    pub(crate) fn take(&mut self, n: u64, now_ms: u64) -> Result<(), u64> {
        if self.per_second == 0 {
            return Ok(());
        }
        let capacity = u128::from(self.per_second) * 1000;
        let elapsed = u128::from(now_ms.saturating_sub(self.last_ms));
        self.last_ms = self.last_ms.max(now_ms);
        // per_second tokens per 1000 ms = per_second milli-tokens per ms.
        self.milli_tokens =
            (self.milli_tokens + elapsed * u128::from(self.per_second)).min(capacity);
        // A request larger than a second's budget costs a full bucket instead of never fitting.
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
}
