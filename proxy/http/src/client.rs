//! Pooled upstream clients.
//!
//! hyper-util's pooled client does the pooling: keep-alive HTTP/1 connections reused one request
//! at a time, and one multiplexed HTTP/2 connection per endpoint. Its pool is keyed by the
//! request's authority, but a transparent proxy must connect to the *original destination*
//! whatever the `Host` header says, so each endpoint gets its own client whose connector always
//! dials that endpoint. The `Host` header and `:authority` are forwarded untouched.

use std::{
    collections::HashMap,
    future::Future,
    net::SocketAddr,
    pin::Pin,
    sync::Mutex,
    task::{Context, Poll},
    time::{Duration, Instant},
};

use http::Uri;
use hyper::body::Incoming;
use hyper_util::{
    client::legacy::Client,
    rt::{TokioExecutor, TokioIo, TokioTimer},
};
use tokio::net::TcpStream;
use weft_proxy_transport::{connect, ConnectError};

/// A pooled client for one endpoint and protocol.
pub type UpstreamClient = Client<EndpointConnector, Incoming>;

/// How upstream connections are made and kept.
#[derive(Clone, Debug)]
pub struct ClientSettings {
    /// The longest a TCP connect to an upstream may take.
    pub connect_timeout: Duration,
    /// How long an unused pooled connection is kept open.
    pub idle_timeout: Duration,
    /// The most idle HTTP/1 connections kept per endpoint.
    pub max_idle_per_endpoint: usize,
}

/// Which HTTP version an upstream connection speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum UpstreamVersion {
    /// HTTP/1.1 (or 1.0), one request at a time per connection.
    Http1,
    /// HTTP/2 with prior knowledge, multiplexed.
    Http2,
}

/// The pooled clients of every endpoint the proxy has talked to recently.
#[derive(Debug)]
pub struct Upstreams {
    settings: ClientSettings,
    clients: Mutex<Clients>,
}

#[derive(Debug)]
struct Clients {
    by_endpoint: HashMap<(SocketAddr, UpstreamVersion), (UpstreamClient, Instant)>,
    /// The map is swept of clients unused for an idle timeout when it grows past this size.
    sweep_at: usize,
}

/// Sweeping starts once this many endpoints are cached.
const MIN_SWEEP_AT: usize = 1024;

impl Upstreams {
    /// An empty set of clients.
    pub fn new(settings: ClientSettings) -> Self {
        Self {
            settings,
            clients: Mutex::new(Clients {
                by_endpoint: HashMap::new(),
                sweep_at: MIN_SWEEP_AT,
            }),
        }
    }

    /// The pooled client for `addr` speaking `version`, made on first use.
    ///
    /// Called once per accepted connection, not per request.
    pub fn client(&self, addr: SocketAddr, version: UpstreamVersion) -> UpstreamClient {
        let now = Instant::now();
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((client, used)) = clients.by_endpoint.get_mut(&(addr, version)) {
            *used = now;
            return client.clone();
        }
        if clients.by_endpoint.len() >= clients.sweep_at {
            // A client unused for an idle timeout holds no pooled connection worth keeping;
            // connections still in use keep their own handle on it.
            let idle = self.settings.idle_timeout;
            clients
                .by_endpoint
                .retain(|_, (_, used)| now.duration_since(*used) < idle);
            clients.sweep_at = (clients.by_endpoint.len() * 2).max(MIN_SWEEP_AT);
        }
        let client = self.build(addr, version);
        clients
            .by_endpoint
            .insert((addr, version), (client.clone(), now));
        client
    }

    fn build(&self, addr: SocketAddr, version: UpstreamVersion) -> UpstreamClient {
        let mut builder = Client::builder(TokioExecutor::new());
        builder
            .timer(TokioTimer::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(self.settings.idle_timeout)
            .pool_max_idle_per_host(self.settings.max_idle_per_endpoint)
            // The request's own Host header is forwarded as it came, or not at all.
            .set_host(false)
            .http2_only(version == UpstreamVersion::Http2);
        builder.build(EndpointConnector {
            addr,
            timeout: self.settings.connect_timeout,
        })
    }
}

/// Dials one fixed endpoint, whatever the request URI says.
#[derive(Clone, Debug)]
pub struct EndpointConnector {
    addr: SocketAddr,
    timeout: Duration,
}

impl tower::Service<Uri> for EndpointConnector {
    type Response = TokioIo<TcpStream>;
    type Error = ConnectError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, ConnectError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), ConnectError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Uri) -> Self::Future {
        let (addr, timeout) = (self.addr, self.timeout);
        Box::pin(async move { connect(addr, timeout).await.map(TokioIo::new) })
    }
}
