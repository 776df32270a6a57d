//! The executor hyper runs its HTTP/2 tasks on.

use std::future::Future;

/// Spawns each future hyper hands over on the current Tokio runtime, boxed.
///
/// hyper's HTTP/2 client spawns one task per request (it waits for the response), and the
/// future it spawns is an enum whose largest variant is the whole connection (codec buffers,
/// TLS state): every request's task would be allocated, and copied at each move into Tokio's
/// task cell and again when it finishes, at the size of the connection. Boxed first, the future
/// is copied once and Tokio moves a pointer.
#[derive(Clone, Copy, Debug, Default)]
pub struct BoxedSpawn;

impl<F> hyper::rt::Executor<F> for BoxedSpawn
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn execute(&self, fut: F) {
        tokio::spawn(Box::pin(fut));
    }
}
