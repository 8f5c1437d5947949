//! Reconnect delays: exponential from 250 ms to 5 s, with jitter so that every client of a
//! restarted gateway does not come back in the same instant.

use std::time::Duration;

pub const INITIAL: Duration = Duration::from_millis(250);
pub const MAX: Duration = Duration::from_secs(5);

/// The delay before attempt `attempt` (0-based), scaled by `jitter` in [0, 1): between half and
/// all of the exponential step.
pub fn delay(attempt: u32, jitter: f64) -> Duration {
    let step = INITIAL
        .saturating_mul(2u32.saturating_pow(attempt.min(16)))
        .min(MAX);
    step.mul_f64(0.5 + 0.5 * jitter.clamp(0.0, 1.0))
}

/// [`delay`] with a random jitter.
pub fn next(attempt: u32) -> Duration {
    delay(attempt, rand::random::<f64>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_then_caps_and_jitter_stays_in_range() {
        assert_eq!(delay(0, 1.0), INITIAL);
        assert_eq!(delay(0, 0.0), INITIAL / 2);
        assert_eq!(delay(2, 1.0), Duration::from_secs(1));
        assert_eq!(delay(10, 1.0), MAX);
        assert_eq!(delay(u32::MAX, 0.0), MAX / 2);
        for attempt in 0..20 {
            let d = next(attempt);
            assert!(d >= INITIAL / 2 && d <= MAX, "{d:?}");
        }
    }
}
