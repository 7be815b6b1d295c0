//! The one backoff of the server: delays that double from a first delay up to a cap, and start
//! over after a success. Watch reconnects, credential renewals, clean-up retries and the docker
//! runtime's liveness restarts all use it.

use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

/// The most a jittered delay is shortened by, as a share of the delay.
const JITTER_SHARE: f64 = 0.2;

/// Doubling delays between attempts, capped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Backoff {
    first: Duration,
    max: Duration,
    next: Duration,
    jitter: bool,
}

impl Backoff {
    /// Delays from `first`, doubling up to `max`.
    pub const fn new(first: Duration, max: Duration) -> Backoff {
        Backoff { first, max, next: first, jitter: false }
    }

    /// The same delays, each shortened by a random share of up to a fifth: many processes that
    /// failed at once do not come back at the same instant, and no delay exceeds its un-jittered
    /// value (so `first` and `max` stay upper bounds), while each delay below the cap still exceeds
    /// the one before it (four fifths of twice a delay is more than the delay).
    pub const fn with_jitter(self) -> Backoff {
        Backoff { jitter: true, ..self }
    }

    /// The delay before the next attempt; the one after it is twice as long, up to the cap.
    pub fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = self.next.saturating_mul(2).min(self.max);
        if self.jitter { delay.mul_f64(1.0 - JITTER_SHARE * unit_random()) } else { delay }
    }

    /// Starts over from the first delay, after a success.
    pub fn reset(&mut self) {
        self.next = self.first;
    }
}

/// A number in [0, 1) from the standard library's randomly keyed hasher: enough to spread
/// delays, without a random-number crate.
fn unit_random() -> f64 {
    let bits = std::collections::hash_map::RandomState::new().build_hasher().finish();
    // The top 53 bits, the precision of an f64.
    (bits >> 11) as f64 / (1u64 << 53) as f64
}

impl Iterator for Backoff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        Some(self.next_delay())
    }
}

impl kube::runtime::utils::Backoff for Backoff {
    fn reset(&mut self) {
        Backoff::reset(self);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_up_to_the_cap_and_start_over_after_a_reset() {
        let mut backoff = Backoff::new(Duration::from_millis(250), Duration::from_secs(1));
        let delays: Vec<u128> = (0..4).map(|_| backoff.next_delay().as_millis()).collect();
        assert_eq!(delays, [250, 500, 1000, 1000]);
        backoff.reset();
        assert_eq!(backoff.next_delay(), Duration::from_millis(250));
    }

    #[test]
    fn jittered_delays_stay_under_their_bound_and_still_grow() {
        let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(300)).with_jitter();
        let delays: Vec<Duration> = (0..12).map(|_| backoff.next_delay()).collect();
        let mut bound = Duration::from_secs(1);
        for delay in &delays {
            assert!(*delay <= bound && *delay >= bound.mul_f64(0.8), "{delay:?} against {bound:?}");
            bound = (bound * 2).min(Duration::from_secs(300));
        }
        assert!(delays.windows(2).take(8).all(|pair| pair[1] > pair[0]), "{delays:?}");
        // Eight delays drawn at random are not all shortened by the same share.
        let shares: std::collections::HashSet<u64> = delays
            .iter()
            .take(8)
            .enumerate()
            .map(|(step, delay)| (delay.as_nanos() >> step) as u64)
            .collect();
        assert!(shares.len() > 1, "{delays:?}");
    }
}
