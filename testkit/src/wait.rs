//! Waiting for a condition instead of sleeping: every wait polls at [`POLL_STEP`], is bounded
//! in time and in steps, and fails saying what it waited for.
//!
//! - [`until`]: blocking, for tests without a runtime.
//! - [`eventually`] and [`assert_eventually!`](crate::assert_eventually): async (feature
//!   `fixtures`).

use std::time::{Duration, Instant};

/// How long a wait lasts unless told otherwise.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// The step of every polling loop.
pub const POLL_STEP: Duration = Duration::from_millis(10);

/// A condition that did not hold in time.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not true after {after:?}: {what}")]
pub struct Timeout {
    pub what: String,
    pub after: Duration,
}

/// The most polling steps that fit in `patience`, plus one: the bound on a loop's count.
pub fn tries(patience: Duration) -> u128 {
    patience.as_millis() / POLL_STEP.as_millis() + 1
}

/// Calls `check` every [`POLL_STEP`] until it answers `Some`, for at most `patience`; blocks
/// the thread in between.
pub fn until<T>(
    what: impl Into<String>,
    patience: Duration,
    mut check: impl FnMut() -> Option<T>,
) -> Result<T, Timeout> {
    let start = Instant::now();
    for _ in 0..tries(patience) {
        if let Some(found) = check() {
            return Ok(found);
        }
        if start.elapsed() > patience {
            break;
        }
        std::thread::sleep(POLL_STEP);
    }
    Err(Timeout {
        what: what.into(),
        after: patience,
    })
}

/// Awaits `check` every [`POLL_STEP`] until it answers `Some`, for at most `patience`.
#[cfg(feature = "fixtures")]
pub async fn eventually<T, F>(
    what: impl Into<String>,
    patience: Duration,
    mut check: impl FnMut() -> F,
) -> Result<T, Timeout>
where
    F: std::future::Future<Output = Option<T>>,
{
    let start = tokio::time::Instant::now();
    for _ in 0..tries(patience) {
        if let Some(found) = check().await {
            return Ok(found);
        }
        if start.elapsed() > patience {
            break;
        }
        tokio::time::sleep(POLL_STEP).await;
    }
    Err(Timeout {
        what: what.into(),
        after: patience,
    })
}

/// Retries a condition (an expression, which may `.await`) every [`POLL_STEP`] until it holds,
/// or panics with the message once the patience ([`PATIENCE`] unless given with `@`) runs
/// out. For async tests; [`until`] is the blocking form.
///
/// ```ignore
/// assert_eventually!(proxy.metric("x_total") == Some(1.0), "x counted: {}", proxy.text());
/// assert_eventually!(@ Duration::from_secs(30), ready(addr).await, "{addr} ready");
/// ```
#[cfg(feature = "fixtures")]
#[macro_export]
macro_rules! assert_eventually {
    (@ $patience:expr, $cond:expr, $($msg:tt)+) => {{
        let patience: ::std::time::Duration = $patience;
        let start = $crate::__private::tokio::time::Instant::now();
        let mut tries = $crate::wait::tries(patience);
        loop {
            if $cond {
                break;
            }
            tries = tries.saturating_sub(1);
            if start.elapsed() >= patience || tries == 0 {
                panic!("not true after {:?}: {}", patience, format!($($msg)+));
            }
            $crate::__private::tokio::time::sleep($crate::wait::POLL_STEP).await;
        }
    }};
    ($cond:expr, $($msg:tt)+) => {
        $crate::assert_eventually!(@ $crate::wait::PATIENCE, $cond, $($msg)+)
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn until_returns_what_the_check_found() {
        let mut calls = 0;
        let found = until("the third call", PATIENCE, || {
            calls += 1;
            (calls == 3).then_some(calls)
        });
        assert_eq!(found, Ok(3));
    }

    #[test]
    fn until_gives_up_after_its_patience_naming_the_condition() {
        let start = Instant::now();
        let e = until("never", Duration::from_millis(50), || None::<()>).expect_err("times out");
        assert!(start.elapsed() >= Duration::from_millis(50));
        assert!(start.elapsed() < Duration::from_secs(5));
        assert_eq!(e.to_string(), "not true after 50ms: never");
    }

    #[cfg(feature = "fixtures")]
    #[tokio::test]
    async fn the_macro_waits_for_an_async_condition() {
        let start = tokio::time::Instant::now();
        let deadline = start + Duration::from_millis(30);
        assert_eventually!(
            async { tokio::time::Instant::now() >= deadline }.await,
            "30 ms passed"
        );
        let found = eventually("the deadline", PATIENCE, || async {
            (tokio::time::Instant::now() >= deadline).then_some(7)
        })
        .await;
        assert_eq!(found, Ok(7));
    }

    #[cfg(feature = "fixtures")]
    #[tokio::test]
    #[should_panic(expected = "not true after 30ms: never, 1")]
    async fn the_macro_panics_with_its_message() {
        assert_eventually!(@ Duration::from_millis(30), false, "never, {}", 1);
    }
}
