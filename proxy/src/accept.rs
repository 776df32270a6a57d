//! Accept loops: one per listener, each connection in its own task and tracing span.

use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use tokio::net::TcpListener;
use tracing::{info_span, warn, Instrument};

use crate::stack::Stack;

/// Connection ids, unique within the process, for following one connection through the logs.
static NEXT_CONNECTION_ID: AtomicU64 = AtomicU64::new(1);

/// Accepts until the drain starts, then drops the listener: new connections are refused.
pub(crate) async fn serve(listener: TcpListener, stack: Arc<Stack>) {
    let local = listener.local_addr().ok();
    let drain = stack.drain.clone();
    loop {
        let accepted = tokio::select! {
            biased;
            () = drain.signal().cancelled() => break,
            res = listener.accept() => res,
        };
        match accepted {
            Ok((stream, peer)) => spawn(&stack, stream, peer),
            Err(e) => {
                // Out of file descriptors, or a connection reset before accept: back off a
                // little so a full fd table does not become a hot loop.
                warn!(listener = ?local, error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

fn spawn(stack: &Arc<Stack>, stream: tokio::net::TcpStream, peer: SocketAddr) {
    let id = NEXT_CONNECTION_ID.fetch_add(1, Ordering::Relaxed);
    let span = info_span!(
        "conn",
        id,
        direction = stack.direction.as_str(),
        client = %peer,
        dst = tracing::field::Empty,
        protocol = tracing::field::Empty,
        client_id = tracing::field::Empty,
        service = tracing::field::Empty,
    );
    let tasks = stack.drain.tasks().clone();
    tasks.spawn(stack.clone().serve(stream).instrument(span));
}
