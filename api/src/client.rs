//! A gRPC transport over one HTTP/2 connection that the caller made.
//!
//! The proxy dials the control plane itself (TCP, then TLS checked against its trust anchors
//! and the control plane's SPIFFE ID), so it needs no connection manager from tonic: this wraps
//! hyper's HTTP/2 client connection as the service tonic's generated clients call.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
};

use hyper::{
    body::Incoming,
    client::conn::http2,
    rt::{Read, Write},
};
use hyper_util::rt::{TokioExecutor, TokioTimer};

/// One HTTP/2 connection, usable by any generated client (`IdentityClient::with_origin`).
#[derive(Clone, Debug)]
pub struct H2Connection {
    tx: http2::SendRequest<tonic::body::Body>,
}

impl H2Connection {
    /// Performs the HTTP/2 handshake on `io` and spawns the connection task, which ends when
    /// every clone of the returned value is dropped or the peer closes.
    pub async fn handshake<I>(io: I) -> Result<Self, hyper::Error>
    where
        I: Read + Write + Unpin + Send + 'static,
    {
        let (tx, conn) = http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .keep_alive_interval(std::time::Duration::from_secs(30))
            .handshake(io)
            .await?;
        hyper::rt::Executor::execute(&TokioExecutor::new(), async move {
            let _ = conn.await;
        });
        Ok(Self { tx })
    }

    /// Whether the connection is closed (reconnect).
    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl tower_service::Service<http::Request<tonic::body::Body>> for H2Connection {
    type Response = http::Response<Incoming>;
    type Error = hyper::Error;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.tx.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        Box::pin(self.tx.send_request(req))
    }
}
