//! What the HTTP/2 fuzz targets share: letting a one-thread runtime run to quiet, and the check
//! that nothing a connection spawned outlives it.

use std::time::Duration;

/// Far longer than any input needs (kilobytes, over an in-memory pipe): past it, a hang.
pub const LIMIT: Duration = Duration::from_secs(10);

/// Lets the other futures and tasks run until they wait (on one thread, with everything in
/// memory, a bounded number of turns).
pub async fn settle() {
    for _ in 0..64 {
        tokio::task::yield_now().await;
    }
}

/// Waits (at most [`LIMIT`]) until the runtime has no task left, and fails if one stays: once a
/// connection has ended, its streams' tasks, pipes and tunnels must end too.
pub async fn assert_no_task_outlives_the_connection() {
    let metrics = tokio::runtime::Handle::current().metrics();
    let settled = tokio::time::timeout(LIMIT, async {
        while metrics.num_alive_tasks() > 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await;
    assert!(
        settled.is_ok(),
        "{} task(s) outlived their connection",
        metrics.num_alive_tasks()
    );
}
