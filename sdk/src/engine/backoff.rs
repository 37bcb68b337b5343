//! Reconnect delays: capped exponential backoff (`backon`) with full jitter.
//!
//! `backon`'s own jitter adds a random part on top of each delay (`[d, 2d)`); full jitter, as
//! reconnecting fleets want it, picks uniformly in `[0, d]`, so that devices cut off together do
//! not come back together. The exponential sequence comes from `backon`; the jitter is drawn here
//! from a seeded generator, so a simulation replays exactly.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};

/// Reconnect delay bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The first delay's upper bound, in milliseconds.
    pub min_ms: u64,
    /// The cap, in milliseconds.
    pub max_ms: u64,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            min_ms: 250,
            max_ms: 30_000,
        }
    }
}

/// The running sequence of delays.
pub(crate) struct Schedule {
    bounds: Backoff,
    delays: backon::ExponentialBackoff,
    rng: fastrand::Rng,
}

impl Schedule {
    pub(crate) fn new(bounds: Backoff, seed: u64) -> Self {
        Self {
            bounds,
            delays: builder(bounds).build(),
            rng: fastrand::Rng::with_seed(seed),
        }
    }

    /// The next delay: uniform in `[0, d]` where `d` doubles from `min_ms` up to `max_ms`.
    pub(crate) fn next_delay_ms(&mut self) -> u64 {
        let cap = self.delays.next().map_or(self.bounds.max_ms, |d| {
            u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
        });
        self.rng.u64(0..=cap.min(self.bounds.max_ms))
    }

    /// Back to the first delay (after a successful sync, or when the app says the network is
    /// back).
    pub(crate) fn reset(&mut self) {
        self.delays = builder(self.bounds).build();
    }
}

fn builder(bounds: Backoff) -> ExponentialBuilder {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(bounds.min_ms.max(1)))
        .with_max_delay(Duration::from_millis(
            bounds.max_ms.max(bounds.min_ms).max(1),
        ))
        .with_factor(2.0)
        .without_max_times()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_to_the_cap_and_stay_within_it() {
        let mut s = Schedule::new(
            Backoff {
                min_ms: 100,
                max_ms: 1000,
            },
            7,
        );
        let delays: Vec<u64> = (0..20).map(|_| s.next_delay_ms()).collect();
        assert!(delays[0] <= 100);
        assert!(delays.iter().all(|d| *d <= 1000));
        // Full jitter: later delays spread over [0, cap], not bunched at the top.
        let late = &delays[10..];
        assert!(late.iter().any(|d| *d < 500), "{late:?}");
        assert!(late.iter().any(|d| *d > 500), "{late:?}");
    }

    #[test]
    fn the_same_seed_gives_the_same_delays_and_reset_starts_over() {
        let bounds = Backoff {
            min_ms: 100,
            max_ms: 10_000,
        };
        let mut a = Schedule::new(bounds, 42);
        let mut b = Schedule::new(bounds, 42);
        let xs: Vec<u64> = (0..8).map(|_| a.next_delay_ms()).collect();
        let ys: Vec<u64> = (0..8).map(|_| b.next_delay_ms()).collect();
        assert_eq!(xs, ys);
        a.reset();
        assert!(a.next_delay_ms() <= 100);
    }
}
