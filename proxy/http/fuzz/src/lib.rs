//! What the HTTP/2 fuzz targets share: the fuzzed peer's bytes, a one-thread runtime and letting
//! it run to quiet, reading a peer's bytes to their end, and the check that nothing a
//! connection spawned outlives it.

use std::{future::Future, time::Duration};

use tokio::io::{AsyncRead, AsyncReadExt};

/// Far longer than any input needs (kilobytes, over an in-memory pipe): past it, a hang.
pub const LIMIT: Duration = Duration::from_secs(10);

/// Runs `f` on a fresh one-thread runtime: every input starts with no task left from another.
pub fn run_on_one_thread<F: Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(f)
}

/// What a fuzzed peer sends: `preface`, then each of `picks` whose bit is set in the input's
/// first byte (bit 0 for the first), then the rest of the input. The first byte is returned
/// too, for the target's other choices.
pub fn peer_bytes(input: &[u8], preface: &[u8], picks: &[&[u8]]) -> (u8, Vec<u8>) {
    let (&first, rest) = input.split_first().unwrap_or((&0, &[]));
    let mut sent = preface.to_vec();
    for (bit, frames) in picks.iter().enumerate() {
        if first & (1 << bit) != 0 {
            sent.extend_from_slice(frames);
        }
    }
    sent.extend_from_slice(rest);
    (first, sent)
}

/// Reads `r` to its end (or its first error), throwing the bytes away.
pub async fn drain(mut r: impl AsyncRead + Unpin) {
    let mut buf = vec![0u8; 16 * 1024];
    while matches!(r.read(&mut buf).await, Ok(n) if n > 0) {}
}

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
