//! The retry simulator's memory: how many requests each `uuid` has made and how many of them
//! were failed, bounded in the number of uuids (the oldest forgotten first) and in each uuid's
//! length. Pure: the server asks it what to do with a request and does it.

use std::collections::{HashMap, VecDeque};

/// How many uuids the simulator remembers by default; past it the oldest is forgotten.
pub const DEFAULT_RETRY_CAPACITY: usize = 4096;

/// The longest `uuid` accepted, in bytes: with the capacity, the memory's bound (a Go
/// `uuid.New()` is 36).
pub const MAX_UUID_LEN: usize = 256;

/// What the simulator has seen of one uuid.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetryCount {
    /// Requests made with this uuid to `/retry/`, failed or answered.
    pub attempts: u64,
    /// Of those, the ones failed (with the status asked for, or a reset).
    pub failures: u64,
}

/// What to do with one request to `/retry/`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Fail it: fewer than `succeedAfter` requests with this uuid were failed so far.
    Fail,
    /// Answer it as the echo does.
    Succeed,
}

/// The counts per uuid, remembered in insertion order up to a capacity.
#[derive(Debug)]
pub(crate) struct RetryCounters {
    capacity: usize,
    counts: HashMap<String, RetryCount>,
    /// The uuids, oldest first: which one to forget when a new one comes past capacity.
    order: VecDeque<String>,
}

impl RetryCounters {
    /// Remembers at most `capacity` uuids (at least one).
    pub(crate) fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        Self {
            capacity,
            counts: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    /// Records a request with `uuid` and says whether to fail it, as echo-basic decides: the
    /// first `succeed_after` requests of a uuid fail, every later one succeeds. A uuid not seen
    /// before (or forgotten) starts at zero.
    pub(crate) fn record(&mut self, uuid: &str, succeed_after: u64) -> Verdict {
        if !self.counts.contains_key(uuid) {
            if self.counts.len() >= self.capacity {
                if let Some(oldest) = self.order.pop_front() {
                    self.counts.remove(&oldest);
                }
            }
            self.order.push_back(uuid.to_owned());
        }
        let count = self.counts.entry(uuid.to_owned()).or_default();
        count.attempts = count.attempts.saturating_add(1);
        if count.failures < succeed_after {
            count.failures += 1;
            Verdict::Fail
        } else {
            Verdict::Succeed
        }
    }

    /// What was recorded for `uuid`; `None` if it was never seen or was forgotten.
    pub(crate) fn get(&self, uuid: &str) -> Option<RetryCount> {
        self.counts.get(uuid).copied()
    }

    /// How many uuids are remembered.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.counts.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fails_succeed_after_times_then_succeeds() {
        let mut c = RetryCounters::new(8);
        assert_eq!(c.record("a", 2), Verdict::Fail);
        assert_eq!(c.record("a", 2), Verdict::Fail);
        assert_eq!(c.record("a", 2), Verdict::Succeed);
        assert_eq!(c.record("a", 2), Verdict::Succeed);
        assert_eq!(
            c.get("a"),
            Some(RetryCount {
                attempts: 4,
                failures: 2
            })
        );
    }

    #[test]
    fn succeed_after_zero_never_fails() {
        let mut c = RetryCounters::new(8);
        assert_eq!(c.record("a", 0), Verdict::Succeed);
        assert_eq!(
            c.get("a"),
            Some(RetryCount {
                attempts: 1,
                failures: 0
            })
        );
    }

    #[test]
    fn uuids_count_apart() {
        let mut c = RetryCounters::new(8);
        assert_eq!(c.record("a", 1), Verdict::Fail);
        assert_eq!(c.record("b", 1), Verdict::Fail);
        assert_eq!(c.record("a", 1), Verdict::Succeed);
        assert_eq!(c.get("b").map(|c| c.attempts), Some(1));
        assert_eq!(c.get("never"), None);
    }

    #[test]
    fn the_oldest_uuid_is_forgotten_past_capacity() {
        let mut c = RetryCounters::new(3);
        for uuid in ["a", "b", "c"] {
            c.record(uuid, 5);
        }
        // Touching an old uuid does not make it young: the order is first use.
        c.record("a", 5);
        c.record("d", 5);
        assert_eq!(c.len(), 3);
        assert_eq!(c.get("a"), None);
        assert!(c.get("b").is_some() && c.get("c").is_some() && c.get("d").is_some());
        // A forgotten uuid starts again from zero.
        assert_eq!(c.record("a", 1), Verdict::Fail);
        assert_eq!(c.get("b"), None);
        assert_eq!(c.len(), 3);
        // Many more uuids than the capacity: the bound holds.
        for i in 0..1000 {
            c.record(&i.to_string(), 1);
        }
        assert_eq!(c.len(), 3);
        assert_eq!(c.order.len(), 3);
    }
}
