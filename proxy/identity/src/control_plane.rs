//! Dialing the control plane: TCP, then TLS 1.3 checked against the proxy's trust anchors and
//! the control plane's exact SPIFFE ID, then HTTP/2 for gRPC. Shared by the certifier and
//! discovery, so both trust the control plane the same way.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use rustls::ClientConfig;
use tracing::debug;
use weft_api::client::H2Connection;
use weft_certs::{CertStore, SpiffeId, SpiffeServerVerifier, TrustBundle};

/// Why the control plane could not be reached. Each names the address and what failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum DialError {
    #[error("resolving the control plane {addr}: {reason}")]
    Resolve { addr: String, reason: String },
    #[error("connecting to the control plane {addr}: {reason}")]
    Connect { addr: String, reason: String },
}

/// Makes checked connections to the control plane.
#[derive(Clone)]
pub struct ControlPlaneDialer {
    addr: String,
    tls: Arc<ClientConfig>,
    connect_timeout: Duration,
}

impl std::fmt::Debug for ControlPlaneDialer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlPlaneDialer")
            .field("addr", &self.addr)
            .field("connect_timeout", &self.connect_timeout)
            .finish_non_exhaustive()
    }
}

impl ControlPlaneDialer {
    /// Dials `addr` (`host:port`), which must present `id` under `bundle`; TCP connect plus
    /// TLS handshake bounded by `connect_timeout`. With `client_cert`, each handshake presents
    /// the certificate the store holds then (none before the first): the control plane learns
    /// the proxy's identity from it (its namespace selects consumer routes), never from a
    /// request field.
    pub fn new(
        addr: String,
        id: SpiffeId,
        bundle: TrustBundle,
        connect_timeout: Duration,
        client_cert: Option<Arc<CertStore>>,
    ) -> Result<Self, rustls::Error> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier = SpiffeServerVerifier::new(bundle, id, &provider);
        let builder = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier));
        let mut tls = match client_cert {
            Some(store) => builder.with_client_cert_resolver(store),
            None => builder.with_no_client_auth(),
        };
        tls.alpn_protocols = vec![b"h2".to_vec()];
        tls.enable_sni = false;
        // No resumption: a resumed TLS 1.3 session carries the identity of the handshake that
        // made it, so a connection resumed from the certifier's first one (made before there
        // was a certificate) would stay anonymous. Connections to the control plane are few.
        tls.resumption = rustls::client::Resumption::disabled();
        Ok(Self {
            addr,
            tls: Arc::new(tls),
            connect_timeout,
        })
    }

    /// The address dialled.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// One new connection, trying each resolved address in turn.
    pub async fn connect(&self) -> Result<H2Connection, DialError> {
        let addr = &self.addr;
        let fail = |reason: String| DialError::Connect {
            addr: addr.clone(),
            reason,
        };
        // An ip:port needs no resolver (whose lookup runs on a blocking thread).
        let addrs: Vec<SocketAddr> = match addr.parse::<SocketAddr>() {
            Ok(sa) => vec![sa],
            Err(_) => tokio::net::lookup_host(addr.as_str())
                .await
                .map_err(|e| DialError::Resolve {
                    addr: addr.clone(),
                    reason: e.to_string(),
                })?
                .collect(),
        };
        let mut last = String::from("no addresses");
        for sa in addrs {
            let attempt = async {
                let tcp = tokio::net::TcpStream::connect(sa)
                    .await
                    .map_err(|e| format!("{sa}: {e}"))?;
                let _ = tcp.set_nodelay(true);
                let name = rustls::pki_types::ServerName::IpAddress(sa.ip().into());
                tokio_rustls::TlsConnector::from(self.tls.clone())
                    .connect(name, tcp)
                    .await
                    .map_err(|e| format!("{sa}: TLS: {e}"))
            };
            match tokio::time::timeout(self.connect_timeout, attempt).await {
                Ok(Ok(tls)) => {
                    return H2Connection::handshake(hyper_util::rt::TokioIo::new(tls))
                        .await
                        .map_err(|e| fail(format!("HTTP/2: {e}")));
                }
                Ok(Err(e)) => last = e,
                Err(_) => last = format!("{sa}: timed out after {:?}", self.connect_timeout),
            }
            debug!(error = %last, "control plane address failed");
        }
        Err(fail(last))
    }
}

/// The `:authority` gRPC requests to the control plane carry.
pub fn origin() -> http::Uri {
    http::Uri::from_static("https://weft-control-plane")
}
