//! Draining: one signal that every listener and connection watches, and a tracker of the tasks
//! that must finish before the process exits.

use std::time::Duration;

use tokio_util::{sync::CancellationToken, task::TaskTracker};

/// The drain signal and the connection tasks it waits for.
#[derive(Clone, Debug, Default)]
pub struct Drain {
    signal: CancellationToken,
    tasks: TaskTracker,
}

/// How a drain ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Drained {
    /// Every connection finished within the grace period.
    Clean,
    /// The grace period ran out with connections still open.
    GraceExpired,
}

impl Drain {
    /// A drain that has not started.
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts draining: listeners stop accepting, HTTP connections finish their in-flight
    /// requests and close. Idempotent.
    pub fn start(&self) {
        self.signal.cancel();
    }

    /// Whether draining has started.
    pub fn is_draining(&self) -> bool {
        self.signal.is_cancelled()
    }

    /// The signal, for connections to watch.
    pub fn signal(&self) -> &CancellationToken {
        &self.signal
    }

    /// The tracker connection tasks are spawned on.
    pub fn tasks(&self) -> &TaskTracker {
        &self.tasks
    }

    /// Waits for the drain to start, then up to `grace` for every tracked task to finish.
    pub async fn wait(&self, grace: Duration) -> Drained {
        self.signal.cancelled().await;
        self.tasks.close();
        match tokio::time::timeout(grace, self.tasks.wait()).await {
            Ok(()) => Drained::Clean,
            Err(_) => Drained::GraceExpired,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn waits_for_tasks_up_to_the_grace_period() {
        let drain = Drain::new();
        let quick = drain.signal().clone();
        drain.tasks().spawn(async move {
            quick.cancelled().await;
            tokio::time::sleep(Duration::from_secs(1)).await;
        });
        drain.start();
        assert_eq!(drain.wait(Duration::from_secs(5)).await, Drained::Clean);

        let drain = Drain::new();
        drain
            .tasks()
            .spawn(tokio::time::sleep(Duration::from_secs(60)));
        drain.start();
        assert_eq!(
            drain.wait(Duration::from_secs(5)).await,
            Drained::GraceExpired
        );
    }
}
