//! Token buckets on a caller-supplied clock: the rate limiters and pacers of both ends.
//!
//! - [`TokenBucket`] refuses what does not fit (the relay's per-connection frame and byte
//!   limits, the SDK's frame pacing below the relay's frame rate).
//! - [`Pacer`] lets a frame go whenever it is not in debt and charges its bytes after, so a
//!   stream of frames of any size leaves at the declared rate (the relay's downloads to a
//!   device, the device's uploads, both to the bandwidth its profile declares).
//!
//! Neither reads a clock: every call takes the current time in milliseconds, so the sans-IO
//! cores and the simulation drive them in virtual time.

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

    /// Whether `n` tokens are there at `now_ms` (without taking them), or in how many
    /// milliseconds they will be (at least 1). Always true when unlimited; `n` past the
    /// bucket's capacity waits for a full bucket.
    pub fn holds(&mut self, n: u64, now_ms: u64) -> Result<(), u64> {
        if self.per_second == 0 {
            return Ok(());
        }
        let elapsed = u128::from(now_ms.saturating_sub(self.last_ms));
        self.last_ms = self.last_ms.max(now_ms);
        self.milli_tokens =
            (self.milli_tokens + elapsed * u128::from(self.per_second)).min(self.capacity);
        let need = (u128::from(n) * 1000).min(self.capacity);
        if need <= self.milli_tokens {
            return Ok(());
        }
        let wait = (need - self.milli_tokens).div_ceil(u128::from(self.per_second));
        Err(u64::try_from(wait.max(1)).unwrap_or(u64::MAX))
    }

    /// Spends `n` tokens at `now_ms` however many are there (down to none): for a cost known
    /// only once the work is done; the next [`TokenBucket::take`] then waits for the refill.
    pub fn charge(&mut self, n: u64, now_ms: u64) {
        if self.per_second == 0 {
            return;
        }
        let elapsed = u128::from(now_ms.saturating_sub(self.last_ms));
        self.last_ms = self.last_ms.max(now_ms);
        self.milli_tokens = (self.milli_tokens + elapsed * u128::from(self.per_second))
            .min(self.capacity)
            .saturating_sub(u128::from(n) * 1000);
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

/// A byte budget refilled at a declared rate that may go into debt by one frame: a frame may
/// go whenever the budget is not in debt, and its bytes are then taken from it. Over a
/// transfer the rate is the declared one whatever the frame sizes; after an idle spell at most
/// `burst` bytes go at once. Without a rate it never holds anything back.
#[derive(Debug, Clone, Default)]
pub struct Pacer {
    /// Bytes per second (none: unpaced).
    rate: Option<u64>,
    /// The budget in thousandths of a byte; negative is debt.
    milli_budget: i128,
    /// When the budget was last refilled.
    refilled_ms: u64,
}

impl Pacer {
    /// Paces to `rate` bytes per second from `now_ms` (none or 0: no pacing). A change takes
    /// effect with the next frame; a debt already run up is kept.
    pub fn set_rate(&mut self, rate: Option<u64>, now_ms: u64) {
        let rate = rate.filter(|r| *r > 0);
        if rate == self.rate {
            return;
        }
        self.refill(now_ms);
        if self.rate.is_none() {
            // Starting to pace: one burst's worth may go at once.
            self.milli_budget = i128::from(Self::burst(rate.unwrap_or(0))) * 1000;
            self.refilled_ms = now_ms;
        }
        self.rate = rate;
        self.milli_budget = self.milli_budget.min(self.capacity());
    }

    /// The declared rate, if paced.
    pub fn rate(&self) -> Option<u64> {
        self.rate
    }

    /// True if a frame may go at `now_ms`.
    pub fn ready(&mut self, now_ms: u64) -> bool {
        self.refill(now_ms);
        self.rate.is_none() || self.milli_budget >= 0
    }

    /// Charges `bytes` that went at `now_ms`.
    pub fn spend(&mut self, bytes: u64, now_ms: u64) {
        self.refill(now_ms);
        if self.rate.is_some() {
            self.milli_budget -= i128::from(bytes) * 1000;
        }
    }

    /// When the next frame may go (now if it may already), or none when unpaced.
    pub fn ready_at(&self) -> Option<u64> {
        let rate = self.rate?;
        if self.milli_budget >= 0 {
            return Some(self.refilled_ms);
        }
        let missing = u128::try_from(-self.milli_budget).unwrap_or(u128::MAX);
        let wait = missing.div_ceil(u128::from(rate));
        Some(
            self.refilled_ms
                .saturating_add(u64::try_from(wait).unwrap_or(u64::MAX)),
        )
    }

    /// What may go at once after an idle spell at `rate`: a tenth of a second, at least
    /// 16 KiB.
    pub fn burst(rate: u64) -> u64 {
        (rate / 10).max(16 << 10)
    }

    fn capacity(&self) -> i128 {
        i128::from(self.rate.map_or(0, Self::burst)) * 1000
    }

    fn refill(&mut self, now_ms: u64) {
        let elapsed = now_ms.saturating_sub(self.refilled_ms);
        self.refilled_ms = self.refilled_ms.max(now_ms);
        if let Some(rate) = self.rate {
            // rate bytes per 1000 ms = rate milli-bytes per ms.
            let added = i128::from(elapsed) * i128::from(rate);
            self.milli_budget = (self.milli_budget + added).min(self.capacity());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Pacer, TokenBucket};

    #[test]
    fn a_pacer_keeps_the_rate_over_frames_of_any_size() {
        let mut p = Pacer::default();
        assert!(p.ready(0), "unpaced");
        p.set_rate(Some(10_000), 0);
        let burst = Pacer::burst(10_000);
        let mut now = 0;
        let mut sent = 0;
        // 100 frames of 3,000 bytes: 300,000 bytes at 10,000 per second.
        for _ in 0..100 {
            while !p.ready(now) {
                now = p.ready_at().expect("paced").max(now + 1);
            }
            p.spend(3000, now);
            sent += 3000;
        }
        // The last frame went when the budget had paid for all but it and the first burst.
        let ideal = (sent - 3000 - burst) * 1000 / 10_000;
        assert!(
            now.abs_diff(ideal) <= 2,
            "last frame at {now} ms, ideal {ideal}"
        );
        p.set_rate(None, now);
        assert!(p.ready(now), "no longer paced");
    }

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
