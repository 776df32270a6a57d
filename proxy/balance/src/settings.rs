//! The balancer's tunables.

use std::time::Duration;

/// How endpoints' latency estimates decay and when failing endpoints are ejected.
///
/// Every field is public so the proxy's config can fill it; [`Settings::default`] holds values
/// that suit a mesh of ordinary HTTP services.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Settings {
    /// The peak-EWMA time constant: a sample this old weighs `1/e` of its first weight. Longer
    /// remembers slowness longer; zero keeps only the latest sample.
    pub decay: Duration,
    /// The latency assumed for an endpoint before its first successful response.
    pub default_rtt: Duration,
    /// Consecutive failures that eject an endpoint. Zero never ejects.
    pub failure_threshold: u32,
    /// The first ejection's length; each consecutive ejection doubles it.
    pub min_ejection: Duration,
    /// The longest ejection before jitter (jitter adds up to a quarter more). A value below
    /// `min_ejection` is taken as `min_ejection`.
    pub max_ejection: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            decay: Duration::from_secs(10),
            default_rtt: Duration::from_millis(30),
            failure_threshold: 5,
            min_ejection: Duration::from_secs(1),
            max_ejection: Duration::from_secs(30),
        }
    }
}

impl Settings {
    /// `max_ejection`, never below `min_ejection`.
    pub(crate) fn max_ejection(&self) -> Duration {
        self.max_ejection.max(self.min_ejection)
    }
}
