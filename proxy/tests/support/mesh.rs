//! A mesh on loopback: a PKI in a temp dir, the real control plane in-process, and proxies
//! configured to get their certificates from it.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use weft_certs::Ca;

use super::{get, metric_value, TestProxy};

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

/// The real control plane, in-process, on loopback.
pub struct ControlPlane {
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    shutdown: CancellationToken,
    task: JoinHandle<Result<(), weft_control_plane::Error>>,
}

fn free_port() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
}

impl ControlPlane {
    /// Starts with certificates living `lifetime`, files re-read every 100 ms; ready when its
    /// admin port answers.
    pub async fn start(pki: &Pki, lifetime: Duration) -> Self {
        Self::start_at(pki, lifetime, free_port()).await
    }

    pub async fn start_at(pki: &Pki, lifetime: Duration, addr: SocketAddr) -> Self {
        Self::start_with(pki, lifetime, addr, None).await
    }

    /// Reads Services, EndpointSlices and Pods from `config` (polled every 50 ms).
    pub async fn start_local(pki: &Pki, config: &Path) -> Self {
        Self::start_with(
            pki,
            Duration::from_secs(24 * 3600),
            free_port(),
            Some(config),
        )
        .await
    }

    pub async fn start_with(
        pki: &Pki,
        lifetime: Duration,
        addr: SocketAddr,
        config: Option<&Path>,
    ) -> Self {
        let admin = free_port();
        let args = weft_control_plane::Args {
            issuer: pki.path("issuer"),
            tokens: Some(pki.path("tokens")),
            trust_domain: TD.into(),
            source: config.map(|c| weft_control_plane::SourceArg::Local(c.to_path_buf())),
            config_poll_interval: Duration::from_millis(50),
            cluster_domain: "cluster.local".into(),
            grpc_addr: addr,
            admin_addr: admin,
            cert_lifetime: lifetime,
            reload_interval: Duration::from_millis(100),
            namespace: "weft".into(),
            service_account: "weft-control-plane".into(),
            log: "info".into(),
            log_format: "plain".into(),
        };
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(weft_control_plane::run(args, shutdown.clone()));
        crate::assert_eventually!(
            get(admin, "/ready").await.map(|(s, _)| s) == Some(200),
            "control plane ready on {admin}"
        );
        Self {
            addr,
            admin,
            shutdown,
            task,
        }
    }

    /// Stops it and waits until it has.
    pub async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("control plane stops within 10s")
            .expect("task")
            .expect("control plane ran cleanly");
    }

    /// A sample of its metrics.
    pub async fn metric(&self, series: &str) -> Option<f64> {
        let (_, text) = get(self.admin, "/metrics").await?;
        metric_value(&text, series)
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
