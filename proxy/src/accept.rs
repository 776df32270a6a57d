//! Accept loops: one per listener, each connection in its own task and tracing span.

use std::{
    future::Future,
    net::SocketAddr,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use tokio::net::{TcpListener, TcpStream};
use tracing::{info_span, warn, Instrument};

use crate::{conn::Common, inbound::Inbound, outbound::Outbound};

/// What a listener does with each connection it accepts.
pub(crate) trait Serve: Send + Sync + 'static {
    /// What the listener's connections share.
    fn common(&self) -> &Common;
    /// Serves one connection to the end.
    fn serve(self: Arc<Self>, stream: TcpStream) -> impl Future<Output = ()> + Send;
}

impl Serve for Outbound {
    fn common(&self) -> &Common {
        &self.common
    }
    fn serve(self: Arc<Self>, stream: TcpStream) -> impl Future<Output = ()> + Send {
        Outbound::serve(self, stream)
    }
}

impl Serve for Inbound {
    fn common(&self) -> &Common {
        &self.common
    }
    fn serve(self: Arc<Self>, stream: TcpStream) -> impl Future<Output = ()> + Send {
        Inbound::serve(self, stream)
    }
}

/// Connection ids, unique within the process, for following one connection through the logs.
static NEXT_CONNECTION_ID: AtomicU64 = AtomicU64::new(1);

/// Accepts until the drain starts, then drops the listener: new connections are refused.
pub(crate) async fn serve<S: Serve>(listener: TcpListener, stack: Arc<S>) {
    let local = listener.local_addr().ok();
    let drain = stack.common().drain.clone();
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

fn spawn<S: Serve>(stack: &Arc<S>, stream: TcpStream, peer: SocketAddr) {
    let id = NEXT_CONNECTION_ID.fetch_add(1, Ordering::Relaxed);
    let span = info_span!(
        "conn",
        id,
        direction = stack.common().direction.as_str(),
        client = %peer,
        dst = tracing::field::Empty,
        protocol = tracing::field::Empty,
        client_id = tracing::field::Empty,
        service = tracing::field::Empty,
    );
    let tasks = stack.common().drain.tasks().clone();
    tasks.spawn(stack.clone().serve(stream).instrument(span));
}
