//! A mesh on loopback: a PKI in a temp dir, the real control plane as its binary (found by
//! `weft_testkit::bins`, on port 0, its ports read from its addresses file), and proxies
//! configured to get their certificates from it.
//!
//! The binary is `target/<profile>/weft-control-plane`: `cargo test --workspace` builds it
//! before any test runs; `cargo test -p weft-proxy` alone needs `cargo build -p
//! weft-control-plane` first (the error says so).

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use weft_certs::Ca;
use weft_testkit::ControlPlaneCommand;

use super::TestProxy;

pub const TD: &str = "cluster.local";
const YEAR: Duration = Duration::from_secs(365 * 24 * 3600);

/// Anchors, an issuer directory for the control plane, and a tokens file.
pub struct Pki {
    pub dir: tempfile::TempDir,
    pub anchors: Vec<Ca>,
}

impl Pki {
    /// `n` anchors, all in the bundle; the issuer is signed by the first.
    pub fn new(n: usize) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let now = time::OffsetDateTime::now_utc();
        let anchors: Vec<Ca> = (0..n)
            .map(|_| Ca::new_anchor(TD, 10 * YEAR, now).expect("anchor"))
            .collect();
        let bundle: String = anchors.iter().map(|a| a.cert_pem().to_string()).collect();
        std::fs::create_dir(dir.path().join("issuer")).expect("mkdir");
        std::fs::write(dir.path().join("issuer/anchors.pem"), &bundle).expect("write");
        std::fs::write(dir.path().join("anchors.pem"), &bundle).expect("write");
        std::fs::write(dir.path().join("tokens"), "").expect("write");
        let pki = Self { dir, anchors };
        pki.issue_from(0);
        pki
    }

    /// Writes a new issuer signed by anchor `i`, atomically (as a Secret update would land).
    pub fn issue_from(&self, i: usize) {
        let now = time::OffsetDateTime::now_utc();
        let issuer = self.anchors[i].new_issuer(TD, YEAR, now).expect("issuer");
        let dir = self.dir.path().join("issuer");
        for (name, contents) in [
            ("issuer.key", issuer.key_pem()),
            ("issuer.crt", issuer.cert_pem().to_string()),
        ] {
            let tmp = dir.join(format!(".{name}.tmp"));
            std::fs::write(&tmp, contents).expect("write");
            std::fs::rename(&tmp, dir.join(name)).expect("rename");
        }
    }

    /// The trust bundle proxies read.
    pub fn anchors_path(&self) -> PathBuf {
        self.dir.path().join("anchors.pem")
    }

    /// Registers `token` for `ns`/`sa` and writes it to a file for a proxy; returns the file.
    pub fn token(&self, ns: &str, sa: &str) -> PathBuf {
        let token = format!("token-{ns}-{sa}-{:016x}", rand_u64());
        let tokens = self.dir.path().join("tokens");
        let mut all = std::fs::read_to_string(&tokens).expect("read tokens");
        all.push_str(&format!("{token} {ns} {sa}\n"));
        std::fs::write(&tokens, all).expect("write tokens");
        let path = self
            .dir
            .path()
            .join(format!("{ns}-{sa}-{}.token", rand_u64()));
        std::fs::write(&path, token).expect("write token");
        path
    }

    /// Mesh TLS as `ns`/`sa` with a certificate from an issuer of the first anchor: a peer
    /// that is not a proxy under test (a tap client, a proxy of another version).
    pub fn mesh_tls(&self, ns: &str, sa: &str) -> weft_proxy_identity::MeshTls {
        use std::sync::Arc;
        use weft_certs::{certified_key, new_key_and_csr, CertStore, SpiffeId, TrustBundle};
        let now = time::OffsetDateTime::now_utc();
        let issuer = self.anchors[0].new_issuer(TD, YEAR, now).expect("issuer");
        let id = SpiffeId::new(TD, ns, sa).expect("id");
        let req = new_key_and_csr(&id).expect("csr");
        let signed = issuer
            .sign_csr(&req.csr_der, &id, YEAR, now)
            .expect("signed");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let store = CertStore::new();
        store.store(certified_key(&signed.chain_der, &req.key, &provider).expect("key"));
        let bundle = TrustBundle::from_pem(self.anchors[0].cert_pem()).expect("bundle");
        weft_proxy_identity::MeshTls::new(id, bundle, provider, store).expect("tls")
    }

    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }
}

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64),
    );
    h.finish()
}

/// The real control plane, its binary as a child process on loopback; killed by its PID when
/// dropped.
pub struct ControlPlane {
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    process: weft_testkit::ControlPlane,
}

impl ControlPlane {
    /// Starts with certificates living `lifetime`, files re-read every 100 ms; ready when its
    /// admin port answers.
    pub async fn start(pki: &Pki, lifetime: Duration) -> Self {
        Self::start_with(pki, lifetime, None).await
    }

    /// Reads Services, EndpointSlices and Pods from `config` (polled every 50 ms).
    pub async fn start_local(pki: &Pki, config: &Path) -> Self {
        Self::start_with(pki, Duration::from_secs(24 * 3600), Some(config)).await
    }

    pub async fn start_with(pki: &Pki, lifetime: Duration, config: Option<&Path>) -> Self {
        let mut cmd = ControlPlaneCommand::locate()
            .unwrap_or_else(|e| panic!("{e}"))
            .arg("--issuer")
            .arg(pki.path("issuer"))
            .arg("--tokens")
            .arg(pki.path("tokens"))
            .args(["--trust-domain", TD, "--cluster-domain", "cluster.local"])
            .args([
                "--config-poll-interval",
                "50ms",
                "--reload-interval",
                "100ms",
            ])
            .arg("--cert-lifetime")
            .arg(humantime::format_duration(lifetime).to_string());
        if let Some(config) = config {
            let mut source = std::ffi::OsString::from("local:");
            source.push(config);
            cmd = cmd.arg("--source").arg(source);
        }
        Self::from(cmd.start().await)
    }

    /// SIGTERM to its PID, and waits until it has exited 0; it can be started again on the
    /// same addresses, as a restarted pod behind its Service would be.
    pub async fn stop(self) -> Stopped {
        let again = self.process.command();
        self.process.stop().await;
        Stopped {
            addr: self.addr,
            again,
        }
    }

    /// A sample of its metrics, named as printed.
    pub async fn metric(&self, series: &str) -> Option<f64> {
        self.process.metric(series).await
    }

    /// Everything it logged so far.
    pub fn logs(&self) -> String {
        self.process.logs()
    }
}

/// A control plane that was stopped, and where it was.
pub struct Stopped {
    pub addr: SocketAddr,
    again: ControlPlaneCommand,
}

impl Stopped {
    /// Starts it again with the same flags on the same addresses.
    pub async fn start_again(self) -> ControlPlane {
        ControlPlane::from(self.again.start().await)
    }
}

impl From<weft_testkit::ControlPlane> for ControlPlane {
    fn from(process: weft_testkit::ControlPlane) -> Self {
        Self {
            addr: process.grpc,
            admin: process.admin,
            process,
        }
    }
}

/// The settings of a meshed proxy for `ns`/`sa`.
pub fn identity_env(pki: &Pki, cp: SocketAddr, ns: &str, sa: &str) -> Vec<(String, String)> {
    vec![
        ("WEFT_CONTROL_PLANE".into(), cp.to_string()),
        ("WEFT_TRUST_ANCHORS".into(), path_str(&pki.anchors_path())),
        (
            "WEFT_IDENTITY_TOKEN_FILE".into(),
            path_str(&pki.token(ns, sa)),
        ),
        ("WEFT_NAMESPACE".into(), ns.into()),
        ("WEFT_SERVICE_ACCOUNT".into(), sa.into()),
    ]
}

fn path_str(p: &Path) -> String {
    p.to_str().expect("utf-8 path").to_string()
}

/// A SPIFFE ID string.
pub fn spiffe(ns: &str, sa: &str) -> String {
    format!("spiffe://{TD}/ns/{ns}/sa/{sa}")
}

/// A meshed proxy with `env` plus `extra` settings.
pub async fn proxy(env: &[(String, String)], extra: &[(&str, String)]) -> TestProxy {
    let mut all: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    all.extend(extra.iter().map(|(k, v)| (*k, v.as_str())));
    TestProxy::with(&all).await
}

/// The mesh map entry sending `dst` to the peer proxy `peer` (its inbound), which must be `id`.
pub fn route(dst: SocketAddr, id: &str, peer: &TestProxy) -> String {
    format!("{dst}={id}@127.0.0.1:{}", peer.addrs.inbound.port())
}
