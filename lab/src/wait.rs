//! Bounded waiting: every loop in the lab has a step count and a deadline.

use std::{
    thread,
    time::{Duration, Instant},
};

use crate::error::{Error, Result};

/// The step of every polling loop.
pub const POLL_STEP: Duration = Duration::from_millis(20);

/// The most polling steps that fit in `patience`, plus one.
pub fn tries(patience: Duration) -> u128 {
    patience.as_millis() / POLL_STEP.as_millis() + 1
}

/// Calls `check` every [`POLL_STEP`] until it answers `Some`, for at most `patience`.
pub fn until<T>(
    what: impl Into<String>,
    patience: Duration,
    mut check: impl FnMut() -> Option<T>,
) -> Result<T> {
    let start = Instant::now();
    for _ in 0..tries(patience) {
        if let Some(found) = check() {
            return Ok(found);
        }
        if start.elapsed() > patience {
            break;
        }
        thread::sleep(POLL_STEP);
    }
    Err(Error::Timeout {
        what: what.into(),
        after: patience,
    })
}

/// The outcome of waiting for a process to be ready ([`until`] with a probe that may fail):
/// a timeout's message gets `log()`, what the process said, so a failure shows why.
pub fn ready_or_log(ready: Result<Result<()>>, log: impl FnOnce() -> String) -> Result<()> {
    match ready {
        Ok(outcome) => outcome,
        Err(Error::Timeout { what, after }) => Err(Error::Timeout {
            what: format!("{what}; its log:\n{}", log()),
            after,
        }),
        Err(e) => Err(e),
    }
}
