//! Test harness for the control plane: a PKI in a temp dir laid out like a mounted Secret, the
//! real `weft-control-plane` binary on loopback port 0 (`weft_testkit`'s fixture: killed by PID
//! when dropped), a TLS + HTTP/2 gRPC client that checks the control plane's SPIFFE ID, and raw
//! gRPC requests. The fake Kubernetes API server is `weft_testkit::kube`.
//!
//! Every wait is bounded in time.

#![allow(dead_code, unreachable_pub)]

use std::{
    convert::Infallible,
    net::SocketAddr,
    ops::{Deref, DerefMut},
    path::{Path, PathBuf},
    pin::Pin,
    sync::{
        atomic::{AtomicU32, Ordering},
        Arc,
    },
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Full};
use hyper::body::Frame;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use tokio::net::TcpStream;
use tokio_rustls::{client::TlsStream, TlsConnector};
use weft_api::{
    client::H2Connection,
    identity::{identity_client::IdentityClient, CertifyRequest, CertifyResponse},
};
use weft_certs::{Ca, SpiffeId, TrustBundle};
use weft_testkit::ControlPlaneCommand;

/// The trust domain every test uses.
pub const TD: &str = "cluster.local";
/// The control plane's identity with the default flags.
pub const CP_NS: &str = "weft";
pub const CP_SA: &str = "weft-control-plane";
/// Bound on any single wait in the harness.
pub const PATIENCE: Duration = weft_testkit::wait::PATIENCE;

const YEAR: Duration = Duration::from_secs(365 * 24 * 3600);

/// The ring provider, as the control plane uses it.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A SPIFFE ID in the test trust domain.
pub fn id(ns: &str, sa: &str) -> SpiffeId {
    SpiffeId::new(TD, ns, sa).expect("valid SPIFFE ID")
}

/// The control plane's own identity with the default flags.
pub fn cp_id() -> SpiffeId {
    id(CP_NS, CP_SA)
}

/// Trust anchors and an issuer directory laid out as Kubernetes mounts a Secret: the files are
/// symlinks through `..data`, which is swapped atomically to publish a new version.
pub struct Pki {
    pub dir: tempfile::TempDir,
    pub anchors: Vec<Ca>,
    version: AtomicU32,
}

impl Pki {
    /// `n` anchors, all in `anchors.pem`; the issuer is signed by anchor 0 and lives a year.
    pub fn new(n: usize) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let now = time::OffsetDateTime::now_utc();
        let anchors = (0..n)
            .map(|_| Ca::new_anchor(TD, 10 * YEAR, now).expect("anchor"))
            .collect();
        std::fs::create_dir(dir.path().join("issuer")).expect("mkdir issuer");
        let pki = Self {
            dir,
            anchors,
            version: AtomicU32::new(0),
        };
        let issuer = pki.new_issuer(0, YEAR);
        pki.publish(issuer.cert_pem(), &issuer.key_pem());
        for name in ["issuer.crt", "issuer.key", "anchors.pem"] {
            std::os::unix::fs::symlink(Path::new("..data").join(name), pki.issuer_dir().join(name))
                .expect("symlink");
        }
        write_atomic(&pki.path("tokens"), "");
        pki
    }

    /// A new issuer signed by anchor `i`, living `lifetime`.
    pub fn new_issuer(&self, i: usize, lifetime: Duration) -> Ca {
        self.anchors[i]
            .new_issuer(TD, lifetime, time::OffsetDateTime::now_utc())
            .expect("issuer")
    }

    /// Publishes a new issuer certificate and key (and the same anchors) in one atomic step.
    pub fn publish(&self, cert_pem: &str, key_pem: &str) {
        let v = self.version.fetch_add(1, Ordering::SeqCst) + 1;
        let dir = self.issuer_dir();
        let data = format!("..v{v}");
        std::fs::create_dir(dir.join(&data)).expect("mkdir version");
        std::fs::write(dir.join(&data).join("issuer.crt"), cert_pem).expect("write crt");
        std::fs::write(dir.join(&data).join("issuer.key"), key_pem).expect("write key");
        std::fs::write(dir.join(&data).join("anchors.pem"), self.bundle_pem()).expect("write");
        let tmp = dir.join("..data_tmp");
        std::os::unix::fs::symlink(&data, &tmp).expect("symlink ..data_tmp");
        std::fs::rename(&tmp, dir.join("..data")).expect("swap ..data");
    }

    /// Every anchor, PEM.
    pub fn bundle_pem(&self) -> String {
        self.anchors.iter().map(|a| a.cert_pem()).collect()
    }

    /// A bundle of anchor `i` alone.
    pub fn bundle_of(&self, i: usize) -> TrustBundle {
        TrustBundle::from_pem(self.anchors[i].cert_pem()).expect("bundle")
    }

    pub fn issuer_dir(&self) -> PathBuf {
        self.path("issuer")
    }

    pub fn tokens_path(&self) -> PathBuf {
        self.path("tokens")
    }

    /// Replaces the tokens file atomically.
    pub fn write_tokens(&self, contents: &str) {
        write_atomic(&self.tokens_path(), contents);
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

/// Writes `path` by renaming a finished temp file over it, so a reader never sees half of it.
pub fn write_atomic(path: &Path, contents: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, contents).expect("write temp file");
    std::fs::rename(&tmp, path).expect("rename over");
}

/// Where the control plane checks tokens.
pub enum Tokens<'a> {
    /// `--tokens FILE`.
    File(&'a Path),
    /// No `--tokens`: TokenReview through the API server in this kubeconfig.
    Kube { kubeconfig: &'a Path },
}

/// The real `weft-control-plane` binary on loopback port 0 ([`weft_testkit::ControlPlane`]),
/// with an identity client.
pub struct ControlPlane(weft_testkit::ControlPlane);

impl ControlPlane {
    /// Starts the binary with `tokens` and `extra` flags; returns once `/ready` answers 200.
    pub async fn start(pki: &Pki, tokens: Tokens<'_>, extra: &[&str]) -> Self {
        let mut cmd = ControlPlaneCommand::new(env!("CARGO_BIN_EXE_weft-control-plane"))
            .arg("--issuer")
            .arg(pki.issuer_dir())
            .args(["--trust-domain", TD])
            .args(["--log", "debug,kube=info,hyper=info,h2=info,rustls=info"])
            .args(extra.iter().copied());
        match tokens {
            Tokens::File(path) => cmd = cmd.arg("--tokens").arg(path),
            Tokens::Kube { kubeconfig } => cmd = cmd.env("KUBECONFIG", kubeconfig),
        }
        Self(cmd.start().await)
    }

    /// A client of the identity service that expects the default control plane identity.
    pub async fn client(&self, pki: &Pki) -> IdentityClient<H2Connection> {
        identity_client(self.grpc, &pki.bundle_pem(), &cp_id()).await
    }
}

impl Deref for ControlPlane {
    type Target = weft_testkit::ControlPlane;

    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl DerefMut for ControlPlane {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

/// A TLS 1.3 client config offering h2 that accepts only `expected` chaining to `bundle_pem`.
pub fn client_config(bundle_pem: &str, expected: &SpiffeId) -> Arc<rustls::ClientConfig> {
    let provider = provider();
    let bundle = TrustBundle::from_pem(bundle_pem).expect("bundle");
    let verifier =
        weft_certs::SpiffeServerVerifier::new(bundle, expected.clone(), provider.as_ref());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("TLS 1.3")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    Arc::new(config)
}

/// TCP, then TLS checked by `config`.
pub async fn tls_connect(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from("control-plane").expect("server name");
    tokio::time::timeout(PATIENCE, TlsConnector::from(config).connect(name, tcp))
        .await
        .map_err(|_| std::io::Error::other("TLS handshake timed out"))?
}

/// An identity client over one checked TLS + HTTP/2 connection.
pub async fn identity_client(
    addr: SocketAddr,
    bundle_pem: &str,
    expected: &SpiffeId,
) -> IdentityClient<H2Connection> {
    let tls = tls_connect(addr, client_config(bundle_pem, expected))
        .await
        .expect("TLS to the control plane");
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]), "ALPN");
    let conn = H2Connection::handshake(TokioIo::new(tls))
        .await
        .expect("HTTP/2 handshake");
    IdentityClient::with_origin(conn, "https://control-plane".parse().expect("origin"))
}

/// One `Certify` call, bounded in time.
pub async fn certify(
    client: &mut IdentityClient<H2Connection>,
    identity: &str,
    token: &str,
    csr: Vec<u8>,
) -> Result<CertifyResponse, tonic::Status> {
    let req = CertifyRequest {
        identity: identity.to_string(),
        token: token.to_string(),
        certificate_signing_request: csr,
    };
    tokio::time::timeout(PATIENCE, client.certify(req))
        .await
        .expect("Certify answered in time")
        .map(tonic::Response::into_inner)
}

/// A fresh P-256 key and CSR for `id`.
pub fn csr_for(id: &SpiffeId) -> weft_certs::KeyAndCsr {
    weft_certs::new_key_and_csr(id).expect("key and CSR")
}

/// Checks a response's chain against `bundle` as a peer would; returns the leaf's SPIFFE ID.
pub fn verify_chain(rsp: &CertifyResponse, bundle: &TrustBundle) -> Result<SpiffeId, String> {
    let mut chain = vec![CertificateDer::from(rsp.leaf_certificate.as_slice())];
    chain.extend(
        rsp.intermediate_certificates
            .iter()
            .map(|d| CertificateDer::from(d.as_slice())),
    );
    bundle
        .verify_workload(&chain, UnixTime::now(), provider().as_ref())
        .map_err(|e| e.to_string())
}

/// A raw gRPC exchange's outcome: `grpc-status` and decoded `grpc-message`.
#[derive(Debug)]
pub struct RawStatus {
    pub http_status: u16,
    pub code: Option<i32>,
    pub message: String,
}

/// The request body type of raw connections.
pub type RawBody = BoxBody<Bytes, Infallible>;

/// A checked TLS + HTTP/2 connection driven with hyper directly: what a broken or hostile
/// client can send.
pub async fn raw_connection(
    addr: SocketAddr,
    bundle_pem: &str,
) -> hyper::client::conn::http2::SendRequest<RawBody> {
    let tls = tls_connect(addr, client_config(bundle_pem, &cp_id()))
        .await
        .expect("TLS to the control plane");
    let (tx, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
        .await
        .expect("HTTP/2 handshake");
    tokio::spawn(conn);
    tx
}

/// A `Certify` request carrying `body` as is.
pub fn certify_request(body: RawBody) -> http::Request<RawBody> {
    http::Request::post("https://control-plane/weft.identity.v1.Identity/Certify")
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(body)
        .expect("request")
}

/// Posts `body` (already gRPC-framed, or not) to `Certify` on a fresh raw connection.
pub async fn raw_certify(addr: SocketAddr, bundle_pem: &str, body: Vec<u8>) -> RawStatus {
    let mut tx = raw_connection(addr, bundle_pem).await;
    raw_exchange(&mut tx, full(body)).await
}

/// One bounded request on a raw connection; its gRPC status.
pub async fn raw_exchange(
    tx: &mut hyper::client::conn::http2::SendRequest<RawBody>,
    body: RawBody,
) -> RawStatus {
    let exchange = async {
        let rsp = tx
            .send_request(certify_request(body))
            .await
            .expect("response headers");
        let http_status = rsp.status().as_u16();
        let headers = rsp.headers().clone();
        let trailers = rsp
            .into_body()
            .collect()
            .await
            .ok()
            .and_then(|c| c.trailers().cloned())
            .unwrap_or_default();
        // A trailers-only response carries the status in the headers.
        let field = |name: &str| {
            trailers
                .get(name)
                .or_else(|| headers.get(name))
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        RawStatus {
            http_status,
            code: field("grpc-status").and_then(|s| s.parse().ok()),
            message: percent_decode(&field("grpc-message").unwrap_or_default()),
        }
    };
    tokio::time::timeout(PATIENCE, exchange)
        .await
        .expect("raw exchange answered in time")
}

/// A whole body.
pub fn full(bytes: Vec<u8>) -> RawBody {
    Full::new(Bytes::from(bytes)).boxed()
}

/// A body that sends `first` and then never another byte, nor its end: a client stalled
/// halfway through its request.
pub fn stalled(first: Vec<u8>) -> RawBody {
    Stalled(Some(Bytes::from(first))).boxed()
}

struct Stalled(Option<Bytes>);

impl hyper::body::Body for Stalled {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.0.take() {
            Some(first) => Poll::Ready(Some(Ok(Frame::data(first)))),
            None => Poll::Pending,
        }
    }
}

/// Frames `message` as one gRPC message: uncompressed flag, big-endian length, bytes.
pub fn grpc_frame(message: &[u8]) -> Vec<u8> {
    let len = u32::try_from(message.len()).expect("message fits a frame");
    let mut out = vec![0u8];
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(message);
    out
}

/// A `CertifyRequest` encoded by hand (protobuf: fields 1 and 2 strings, 3 bytes).
pub fn encode_certify(identity: &str, token: &str, csr: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for (tag, value) in [
        (0x0a, identity.as_bytes()),
        (0x12, token.as_bytes()),
        (0x1a, csr),
    ] {
        out.push(tag);
        let mut len = value.len();
        loop {
            let low = u8::try_from(len & 0x7f).expect("7 bits");
            len >>= 7;
            if len == 0 {
                out.push(low);
                break;
            }
            out.push(low | 0x80);
        }
        out.extend_from_slice(value);
    }
    out
}

/// Undoes gRPC's percent-encoding of `grpc-message`.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
            if let Some(b) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
