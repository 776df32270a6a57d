//! Test harness for the control plane: a PKI in a temp dir laid out like a mounted Secret, the
//! real `weft-control-plane` binary on loopback (killed by PID when dropped), a TLS + HTTP/2
//! gRPC client that checks the control plane's SPIFFE ID, raw gRPC requests, and a fake
//! Kubernetes API server ([`kube`]).
//!
//! Every wait is bounded in time.

#![allow(dead_code, unreachable_pub)]

pub mod kube;

use std::{
    convert::Infallible,
    io::Read,
    net::SocketAddr,
    path::{Path, PathBuf},
    pin::Pin,
    process::{Child, Command, Stdio},
    sync::{
        atomic::{AtomicU32, Ordering},
        Arc, Mutex,
    },
    task::{Context, Poll},
    time::{Duration, Instant},
};

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Full};
use hyper::body::Frame;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};
use tokio_rustls::{client::TlsStream, TlsConnector};
use weft_api::{
    client::H2Connection,
    identity::{identity_client::IdentityClient, CertifyRequest, CertifyResponse},
};
use weft_certs::{Ca, SpiffeId, TrustBundle};

/// The trust domain every test uses.
pub const TD: &str = "cluster.local";
/// The control plane's identity with the default flags.
pub const CP_NS: &str = "weft";
pub const CP_SA: &str = "weft-control-plane";
/// Bound on any single wait in the harness.
pub const PATIENCE: Duration = Duration::from_secs(10);

const YEAR: Duration = Duration::from_secs(365 * 24 * 3600);

/// Retries an async condition every 20 ms until it holds or `PATIENCE` runs out.
#[macro_export]
macro_rules! assert_eventually {
    ($cond:expr, $($msg:tt)+) => {{
        let deadline = tokio::time::Instant::now() + $crate::support::PATIENCE;
        loop {
            if $cond {
                break;
            }
            if tokio::time::Instant::now() >= deadline {
                panic!(
                    "not true after {:?}: {}",
                    $crate::support::PATIENCE,
                    format!($($msg)+)
                );
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }};
}

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

/// A loopback address no one listens on right now.
pub fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
}

/// Where the control plane checks tokens.
pub enum Tokens<'a> {
    /// `--tokens FILE`.
    File(&'a Path),
    /// No `--tokens`: TokenReview through the API server in this kubeconfig.
    Kube { kubeconfig: &'a Path },
}

/// The real `weft-control-plane` binary, killed by its PID when dropped.
pub struct ControlPlane {
    pub child: Child,
    pub grpc: SocketAddr,
    pub admin: SocketAddr,
    logs: Arc<Mutex<String>>,
}

impl ControlPlane {
    /// Starts the binary on loopback ports with `tokens` and `extra` flags; returns once
    /// `/ready` answers 200. A port taken between choosing and binding it is retried.
    pub async fn start(pki: &Pki, tokens: Tokens<'_>, extra: &[&str]) -> Self {
        for _attempt in 0..3 {
            let grpc = free_addr();
            let admin = free_addr();
            let mut cmd = Command::new(env!("CARGO_BIN_EXE_weft-control-plane"));
            // Nothing from the test's environment (WEFT_CP_*, POD_NAMESPACE, proxies) leaks in.
            cmd.env_clear()
                .arg("--issuer")
                .arg(pki.issuer_dir())
                .args(["--trust-domain", TD])
                .args(["--grpc-addr", &grpc.to_string()])
                .args(["--admin-addr", &admin.to_string()])
                .args(["--log", "debug,kube=info,hyper=info,h2=info,rustls=info"])
                .args(extra)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped());
            match tokens {
                Tokens::File(path) => {
                    cmd.arg("--tokens").arg(path);
                }
                Tokens::Kube { kubeconfig } => {
                    cmd.env("KUBECONFIG", kubeconfig);
                }
            }
            let mut child = cmd.spawn().expect("spawn weft-control-plane");
            let logs = Arc::new(Mutex::new(String::new()));
            let mut stderr = child.stderr.take().expect("stderr");
            let sink = logs.clone();
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n) = stderr.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    sink.lock()
                        .expect("logs")
                        .push_str(&String::from_utf8_lossy(&buf[..n]));
                }
            });
            let mut cp = Self {
                child,
                grpc,
                admin,
                logs,
            };
            let deadline = Instant::now() + PATIENCE;
            loop {
                if let Some(status) = cp.child.try_wait().expect("try_wait") {
                    // Give the stderr reader a moment to drain (bounded).
                    let drained = Instant::now() + Duration::from_secs(1);
                    while Instant::now() < drained && !cp.logs().contains("weft-control-plane:") {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                    let logs = cp.logs();
                    if logs.contains("Address already in use") {
                        break; // another test took a port: try new ones
                    }
                    panic!("control plane exited with {status} before ready:\n{logs}");
                }
                if http_get(admin, "/ready").await.map(|r| r.0) == Some(200) {
                    return cp;
                }
                assert!(
                    Instant::now() < deadline,
                    "control plane not ready after {PATIENCE:?}:\n{}",
                    cp.logs()
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        panic!("could not find free loopback ports in 3 attempts");
    }

    /// Everything the process logged so far.
    pub fn logs(&self) -> String {
        self.logs.lock().expect("logs").clone()
    }

    /// The value of one exact series on `/metrics`, e.g. `x_total{reason="y"}`.
    pub async fn metric(&self, series: &str) -> Option<f64> {
        let (status, text) = http_get(self.admin, "/metrics").await?;
        assert_eq!(status, 200, "/metrics");
        metric_value(&text, series)
    }

    /// Like [`Self::metric`], but the series must exist.
    pub async fn metric_now(&self, series: &str) -> f64 {
        self.metric(series)
            .await
            .unwrap_or_else(|| panic!("series {series} on /metrics"))
    }

    /// Sends SIGTERM to the process this test started.
    pub fn sigterm(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM {}", self.child.id());
    }

    /// Waits up to `patience` for the process to exit; its exit code, or `None` if it did not.
    pub async fn wait_exit(&mut self, patience: Duration) -> Option<Option<i32>> {
        let deadline = Instant::now() + patience;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Some(status.code());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        None
    }

    /// A client of the identity service that expects the default control plane identity.
    pub async fn client(&self, pki: &Pki) -> IdentityClient<H2Connection> {
        identity_client(self.grpc, &pki.bundle_pem(), &cp_id()).await
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// `GET path` over plain HTTP/1.1; the status and body, or `None` if nothing answered.
pub async fn http_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let exchange = async {
        let mut tcp = TcpStream::connect(addr).await.ok()?;
        let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        tcp.write_all(req.as_bytes()).await.ok()?;
        let mut raw = Vec::new();
        tcp.read_to_end(&mut raw).await.ok()?;
        let text = String::from_utf8(raw).ok()?;
        let (head, body) = text.split_once("\r\n\r\n")?;
        let status = head.split(' ').nth(1)?.parse().ok()?;
        Some((status, body.to_string()))
    };
    tokio::time::timeout(Duration::from_secs(2), exchange)
        .await
        .ok()
        .flatten()
}

/// The value of the series named exactly `series` in a Prometheus text exposition.
pub fn metric_value(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|line| {
        line.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
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
