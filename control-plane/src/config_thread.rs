//! The one thread the control plane's config work runs on: reading and parsing the folder,
//! indexing a snapshot, looking watched targets up.
//!
//! Why one named thread rather than Tokio's blocking pool: glibc's malloc gives threads
//! arenas of their own and keeps what is freed in an arena for that arena. Blocking-pool
//! threads come and go, and each one that parsed or indexed kept that reload's peak: 100
//! reloads of 1,500 documents doubled the control plane's private memory (12.7 to 25.2 MiB)
//! while its live heap stayed at 10 MiB (heaptrack), and with one arena (`MALLOC_ARENA_MAX=1`)
//! it stayed at 13.9. On one thread each reload reuses what the one before freed. The work is
//! also serial, so a reload never competes with itself for the cores the proxies' streams
//! need.

use std::{
    panic::{catch_unwind, AssertUnwindSafe},
    sync::mpsc,
};

use tokio::sync::oneshot;

type Job = Box<dyn FnOnce() + Send>;

/// A handle on the config thread; it runs jobs in the order they come and ends when the last
/// handle is dropped.
#[derive(Debug, Clone)]
pub struct ConfigThread {
    jobs: mpsc::Sender<Job>,
}

/// A job that did not finish: it panicked (the panic is logged on stderr, as any thread's),
/// or the thread is gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the config thread did not finish the job (it panicked)")]
pub struct JobFailed;

impl ConfigThread {
    /// Starts the thread (`weft-config`).
    pub fn start() -> std::io::Result<Self> {
        let (jobs, queue) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("weft-config".into())
            .spawn(move || {
                for job in queue {
                    // A panicking job fails alone: its caller is told, the thread goes on.
                    let _ = catch_unwind(AssertUnwindSafe(job));
                }
            })?;
        Ok(Self { jobs })
    }

    /// Runs `job` on the config thread and waits for its result without blocking the
    /// caller's runtime.
    pub async fn run<R: Send + 'static>(
        &self,
        job: impl FnOnce() -> R + Send + 'static,
    ) -> Result<R, JobFailed> {
        let (tx, rx) = oneshot::channel();
        self.jobs
            .send(Box::new(move || {
                let _ = tx.send(job());
            }))
            .map_err(|_| JobFailed)?;
        rx.await.map_err(|_| JobFailed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn jobs_run_in_order_on_one_named_thread_and_a_panic_fails_only_its_job() {
        let thread = ConfigThread::start().expect("thread");
        let name = thread
            .run(|| std::thread::current().name().map(str::to_owned))
            .await;
        assert_eq!(name, Ok(Some("weft-config".to_owned())));
        let first = thread.run(std::thread::current).await.expect("ran").id();
        assert_ne!(first, std::thread::current().id());
        let failed = thread.run(|| panic!("a bad job")).await;
        assert_eq!(failed.map(|_: ()| ()), Err(JobFailed));
        let after = thread.run(std::thread::current).await.expect("ran").id();
        assert_eq!(after, first, "the same thread goes on after a panic");
    }
}
