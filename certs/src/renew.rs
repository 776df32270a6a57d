//! When to renew a certificate: at 70 % of its life, a little earlier by a random jitter so a
//! fleet of proxies started together does not renew together.

use std::time::{Duration, SystemTime};

/// The share of a certificate's life after which it is renewed.
pub const RENEW_AT: f64 = 0.70;
/// The most the jitter moves renewal earlier, as a share of the life.
pub const MAX_JITTER: f64 = 0.10;

/// The moment to renew a certificate valid from `not_before` to `not_after`; `jitter` is a
/// random number in `[0, 1)`. Renewal falls between 60 % and 70 % of the life.
pub fn renew_at(not_before: SystemTime, not_after: SystemTime, jitter: f64) -> SystemTime {
    let life = not_after
        .duration_since(not_before)
        .unwrap_or(Duration::ZERO);
    let share = RENEW_AT - MAX_JITTER * jitter.clamp(0.0, 1.0);
    not_before + life.mul_f64(share)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renews_between_60_and_70_percent_of_life() {
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let end = start + Duration::from_secs(24 * 3600);
        assert_eq!(
            renew_at(start, end, 0.0),
            start + Duration::from_secs(60_480)
        );
        assert_eq!(
            renew_at(start, end, 1.0),
            start + Duration::from_secs(51_840)
        );
        assert_eq!(
            renew_at(start, end, 7.0),
            renew_at(start, end, 1.0),
            "clamped"
        );
        // A certificate whose end precedes its start renews at once.
        assert_eq!(renew_at(end, start, 0.5), end);
    }
}
