//! The set-ups under test, each a chain of processes in front of the same upstream:
//!
//! - `direct`: client -> server.
//! - `weft`: client -> weft-proxy (outbound) -> mTLS (TLS 1.3, ECDSA P-256, certificates from
//!   the real control plane) -> weft-proxy (inbound) -> server.
//! - `haproxy-mtls`: client -> haproxy -> TLS 1.3 with client certificates -> haproxy -> server.
//! - `haproxy-plain`: the same HAProxy chain with a plaintext hop, to show what the hop's TLS
//!   costs.
//! - `weft-service`: the Weft chain reached through discovery: the client's proxy sends to a
//!   Service's cluster IP and learns its endpoint (the server's pod, behind its proxy) from the
//!   control plane, which reads a folder of YAML ([`Cluster`]). No route.
//! - `weft-route`: the same, with one HTTPRoute on the Service (one rule, one backend Service
//!   with the same pod): what a route costs (issue 15).
//! - `weft-policy`: the same route with `timeouts` (request 10 s, backendRequest 5 s) and a
//!   `retry` policy (2 attempts on 503) that never retries (the server answers 200): what a
//!   policy costs when nothing goes wrong (issue 16).
//!
//! Each proxy runs one thread (`WEFT_THREADS=1`, `nbthread 1`).

use std::{
    fmt::Write as _,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use anyhow::{bail, Context};

use crate::procs::{
    free_port, free_port_on, start_control_plane, wait_listening, wait_ready, Proc,
};

/// The control plane and PKI the Weft chains take their identities from: an anchor, an issuer,
/// a tokens file, and `weft-control-plane` serving them.
#[derive(Debug)]
pub struct MeshPki {
    pub control_plane: SocketAddr,
    pub anchors: PathBuf,
    dir: PathBuf,
    _proc: Proc,
}

impl MeshPki {
    /// Writes the PKI under `work` and starts the control plane from `bin_dir`, reading
    /// `cluster` (local mode) for the discovery set-ups.
    pub fn start(bin_dir: &Path, work: &Path, cluster: &Cluster) -> anyhow::Result<MeshPki> {
        let dir = work.join("mesh");
        let folder = dir.join("cluster");
        std::fs::create_dir_all(&folder)?;
        std::fs::write(folder.join("cluster.yaml"), &cluster.yaml)?;
        let anchor_pem = write_issuer(&dir.join("issuer"))?;
        let anchors = dir.join("anchors.pem");
        std::fs::write(&anchors, anchor_pem)?;
        let mut tokens = String::new();
        for sa in ["client", "server"] {
            let token = format!("bench-token-for-{sa}-0123456789");
            std::fs::write(dir.join(format!("{sa}.token")), &token)?;
            let _ = writeln!(tokens, "{token} bench {sa}");
        }
        std::fs::write(dir.join("tokens"), tokens)?;
        let (proc, addresses) = start_control_plane(
            Command::new(bin_dir.join("weft-control-plane"))
                .env_clear()
                .env("WEFT_LOG", "warn")
                .arg("--issuer")
                .arg(dir.join("issuer"))
                .arg("--tokens")
                .arg(dir.join("tokens"))
                .arg("--source")
                .arg(format!("local:{}", folder.display())),
            &dir,
            Duration::from_secs(10),
        )?;
        let control_plane = addresses.grpc;
        Ok(MeshPki {
            control_plane,
            anchors,
            dir,
            _proc: proc,
        })
    }

    /// The issuer the control plane signs with: for a client that makes its own certificate.
    pub fn issuer(&self) -> anyhow::Result<weft_certs::Ca> {
        let dir = self.dir.join("issuer");
        let cert = std::fs::read_to_string(dir.join("issuer.crt"))?;
        let key = std::fs::read_to_string(dir.join("issuer.key"))?;
        Ok(weft_certs::Ca::from_pem(&cert, &key)?)
    }

    fn token_file(&self, sa: &str) -> PathBuf {
        self.dir.join(format!("{sa}.token"))
    }
}

/// Writes a fresh trust anchor and an issuer it signed (ECDSA P-256, a year each, trust domain
/// `cluster.local`) into `dir` as the control plane's `--issuer` reads them: `issuer.crt`,
/// `issuer.key`, `anchors.pem`. Returns the anchor's PEM, the clients' trust bundle.
pub fn write_issuer(dir: &Path) -> anyhow::Result<String> {
    use weft_certs::Ca;
    std::fs::create_dir_all(dir)?;
    let now = time::OffsetDateTime::now_utc();
    let year = std::time::Duration::from_secs(365 * 24 * 3600);
    let anchor = Ca::new_anchor("cluster.local", year, now)?;
    let issuer = anchor.new_issuer("cluster.local", year, now)?;
    std::fs::write(dir.join("issuer.crt"), issuer.cert_pem())?;
    std::fs::write(dir.join("issuer.key"), issuer.key_pem())?;
    std::fs::write(dir.join("anchors.pem"), anchor.cert_pem())?;
    Ok(anchor.cert_pem().to_string())
}

/// Which kind of traffic a chain carries; HAProxy needs a configuration per kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Mode {
    Http1,
    Http2,
    Tcp,
}

/// A set-up: where the client connects, and the proxy processes on the path.
#[derive(Debug)]
pub struct Chain {
    pub entry: SocketAddr,
    pub procs: Vec<Proc>,
}

/// Names of the set-ups, in the order runs interleave.
pub const SETUPS: [&str; 7] = [
    "direct",
    "weft",
    "weft-service",
    "weft-route",
    "weft-policy",
    "haproxy-mtls",
    "haproxy-plain",
];

/// The set-ups that carry opaque TCP too. A route does not change opaque TCP (only a
/// TrafficSplit does), so the discovery set-ups carry HTTP only.
pub const TCP_SETUPS: [&str; 4] = ["direct", "weft", "haproxy-mtls", "haproxy-plain"];

/// The namespace of the bench's proxies and Services.
const NAMESPACE: &str = "bench";

/// The cluster the discovery set-ups' client proxies learn from the control plane: a folder of
/// YAML it reads in local mode. Every address is on loopback; the cluster IPs are in
/// 127.0.10.0/24, where nothing listens, so a request that missed discovery fails rather than
/// reaching the upstream some other way.
#[derive(Debug)]
pub struct Cluster {
    pub yaml: String,
    /// `weft-service`: Service `plain`, no route.
    pub plain: Discovered,
    /// `weft-route`: Service `routed`, one HTTPRoute sending every request to `routed-v1`.
    pub routed: Discovered,
    /// `weft-policy`: Service `guarded`, the same route to `guarded-v1` with timeouts and a
    /// retry policy.
    pub guarded: Discovered,
}

/// A Service a discovery set-up's client proxy sends to.
#[derive(Debug, Clone)]
pub struct Discovered {
    /// The Service's cluster IP and port: the client proxy's destination.
    pub cluster_ip: SocketAddr,
    /// The inbound port of the server pod's proxy.
    pub inbound_port: u16,
    /// The Service whose balancer must have answered every request (`namespace/name:port`, as
    /// the proxy's `dst_service` label): the Service itself, or its route's backend.
    pub served_by: String,
}

impl Cluster {
    /// Services `plain` (no route), `routed` and `routed-v1`, and HTTPRoute `routed` (one rule,
    /// PathPrefix `/`, everything to `routed-v1`). Each Service's one endpoint is `upstream`,
    /// a meshed pod whose proxy listens on the pre-picked inbound port: pods `plain-0` and
    /// `routed-0` share the upstream's address and differ by their proxies.
    pub fn new(upstream: SocketAddr) -> anyhow::Result<Cluster> {
        let plain_ip = SocketAddr::from(([127, 0, 10, 1], free_port_on([127, 0, 10, 1])?));
        let routed_ip = SocketAddr::from(([127, 0, 10, 2], free_port_on([127, 0, 10, 2])?));
        // The backend Service: its own cluster IP, the same port (a backendRef names a port).
        let backend_ip = SocketAddr::from(([127, 0, 10, 3], routed_ip.port()));
        let guarded_ip = SocketAddr::from(([127, 0, 10, 4], free_port_on([127, 0, 10, 4])?));
        let guarded_backend_ip = SocketAddr::from(([127, 0, 10, 5], guarded_ip.port()));
        let (plain_in, routed_in, guarded_in) = (free_port()?, free_port()?, free_port()?);
        let mut yaml = String::new();
        for (service, ip, pod) in [
            ("plain", plain_ip, "plain-0"),
            ("routed", routed_ip, "routed-0"),
            ("routed-v1", backend_ip, "routed-0"),
            ("guarded", guarded_ip, "guarded-0"),
            ("guarded-v1", guarded_backend_ip, "guarded-0"),
        ] {
            let _ = write!(
                yaml,
                "apiVersion: v1\nkind: Service\nmetadata: {{name: {service}, namespace: {NAMESPACE}}}\n\
                 spec: {{clusterIP: {}, ports: [{{name: http, port: {}}}]}}\n---\n\
                 apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
                 metadata: {{name: {service}, namespace: {NAMESPACE}, labels: {{kubernetes.io/service-name: {service}}}}}\n\
                 addressType: IPv4\nports: [{{name: http, port: {}}}]\n\
                 endpoints: [{{addresses: [{}], targetRef: {{kind: Pod, name: {pod}, namespace: {NAMESPACE}}}}}]\n---\n",
                ip.ip(),
                ip.port(),
                upstream.port(),
                upstream.ip(),
            );
        }
        for (pod, inbound) in [
            ("plain-0", plain_in),
            ("routed-0", routed_in),
            ("guarded-0", guarded_in),
        ] {
            let _ = write!(
                yaml,
                "apiVersion: v1\nkind: Pod\nmetadata: {{name: {pod}, namespace: {NAMESPACE}}}\n\
                 spec:\n  serviceAccountName: server\n  containers:\n  - {{name: app, image: app}}\n\
                 \x20 - name: weft-proxy\n    image: weft-proxy\n    ports: [{{name: weft-inbound, containerPort: {inbound}}}]\n\
                 status: {{podIP: {}}}\n---\n",
                upstream.ip(),
            );
        }
        let _ = write!(
            yaml,
            "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\n\
             metadata: {{name: routed, namespace: {NAMESPACE}}}\n\
             spec:\n  parentRefs: [{{group: '', kind: Service, name: routed}}]\n  rules:\n\
             \x20 - matches: [{{path: {{type: PathPrefix, value: /}}}}]\n\
             \x20   backendRefs: [{{name: routed-v1, port: {}}}]\n",
            backend_ip.port()
        );
        let _ = write!(
            yaml,
            "---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\n\
             metadata: {{name: guarded, namespace: {NAMESPACE}}}\n\
             spec:\n  parentRefs: [{{group: '', kind: Service, name: guarded}}]\n  rules:\n\
             \x20 - matches: [{{path: {{type: PathPrefix, value: /}}}}]\n\
             \x20   timeouts: {{request: 10s, backendRequest: 5s}}\n\
             \x20   retry: {{attempts: 2, codes: [503], backoff: 10ms}}\n\
             \x20   backendRefs: [{{name: guarded-v1, port: {}}}]\n",
            guarded_backend_ip.port()
        );
        Ok(Cluster {
            yaml,
            plain: Discovered {
                cluster_ip: plain_ip,
                inbound_port: plain_in,
                served_by: format!("{NAMESPACE}/plain:{}", plain_ip.port()),
            },
            routed: Discovered {
                cluster_ip: routed_ip,
                inbound_port: routed_in,
                served_by: format!("{NAMESPACE}/routed-v1:{}", backend_ip.port()),
            },
            guarded: Discovered {
                cluster_ip: guarded_ip,
                inbound_port: guarded_in,
                served_by: format!("{NAMESPACE}/guarded-v1:{}", guarded_backend_ip.port()),
            },
        })
    }
}

impl Chain {
    pub fn direct(upstream: SocketAddr) -> Chain {
        Chain {
            entry: upstream,
            procs: Vec::new(),
        }
    }

    /// Two weft-proxy processes with identities from `mesh`'s control plane: the first's
    /// outbound listener sends `upstream` over mTLS to the second's inbound listener, which
    /// forwards to `upstream` (explicit mode both; the first knows its peer from the static
    /// mesh map, `WEFT_MESH_DESTINATIONS`).
    pub fn weft(bin: &Path, mesh: &MeshPki, upstream: SocketAddr) -> anyhow::Result<Chain> {
        let in_port = free_port()?;
        let peer = format!(
            "{upstream}=spiffe://cluster.local/ns/{NAMESPACE}/sa/server@127.0.0.1:{in_port}"
        );
        let (chain, _) = Chain::weft_with(
            bin,
            mesh,
            upstream,
            in_port,
            &[
                ("WEFT_OUTBOUND_TARGET", upstream.to_string()),
                ("WEFT_MESH_DESTINATIONS", peer),
            ],
        )?;
        Ok(chain)
    }

    /// The same two proxies, the first sending to `service`'s cluster IP (explicit mode): what
    /// that is, the server's pod behind its proxy and the routes on the Service, it learns from
    /// the control plane. Ready once one request went through and the first proxy's metrics
    /// say `service.served_by` answered it: the Service is discovered and its routes in force.
    pub fn weft_discovered(
        bin: &Path,
        mesh: &MeshPki,
        upstream: SocketAddr,
        service: &Discovered,
    ) -> anyhow::Result<Chain> {
        let (chain, outbound_admin) = Chain::weft_with(
            bin,
            mesh,
            upstream,
            service.inbound_port,
            &[("WEFT_OUTBOUND_TARGET", service.cluster_ip.to_string())],
        )?;
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let status = http_get(chain.entry, "/");
            let metrics = http_get(outbound_admin, "/metrics");
            let served = metrics.as_ref().is_ok_and(|(_, text)| {
                text.lines().any(|l| {
                    l.starts_with("weft_requests_total{")
                        && l.contains(&format!("dst_service=\"{}\"", service.served_by))
                        && l.contains("status_code=\"200\"")
                })
            });
            if served {
                return Ok(chain);
            }
            if std::time::Instant::now() >= deadline {
                bail!(
                    "no request through {} (to {}) was answered by {} within 10s: last answer \
                     {:?}; check the control plane's log above and the cluster YAML",
                    chain.entry,
                    service.cluster_ip,
                    service.served_by,
                    status.map(|(code, _)| code),
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The two proxies, the inbound one on `in_port` in strict mTLS in front of `upstream`, the
    /// outbound one configured by `outbound`; both ready. Returns the outbound's admin address.
    fn weft_with(
        bin: &Path,
        mesh: &MeshPki,
        upstream: SocketAddr,
        in_port: u16,
        outbound: &[(&str, String)],
    ) -> anyhow::Result<(Chain, SocketAddr)> {
        let out_port = free_port()?;
        let proxy = |name: &str, sa: &str, env: &[(&str, String)]| {
            Chain::weft_proxy(bin, mesh, name, sa, env)
        };
        let (inbound, inbound_admin) = proxy(
            "weft-inbound",
            "server",
            &[
                ("WEFT_INBOUND_PORT", in_port.to_string()),
                ("WEFT_INBOUND_TARGET", upstream.to_string()),
                ("WEFT_INBOUND_MTLS", "strict".to_string()),
            ],
        )?;
        let mut env = vec![("WEFT_OUTBOUND_PORT", out_port.to_string())];
        env.extend(outbound.iter().cloned());
        let (outbound, outbound_admin) = proxy("weft-outbound", "client", &env)?;
        let entry = SocketAddr::from(([127, 0, 0, 1], out_port));
        // Ready means holding a certificate.
        wait_ready(inbound_admin, "weft inbound proxy")?;
        wait_ready(outbound_admin, "weft outbound proxy")?;
        Ok((
            Chain {
                entry,
                procs: vec![outbound, inbound],
            },
            outbound_admin,
        ))
    }

    /// One Weft proxy (one thread) as the bench starts them: identity `sa` from `mesh`, the
    /// ports not in `env` free ones; its admin address.
    pub fn weft_proxy(
        bin: &Path,
        mesh: &MeshPki,
        name: &str,
        sa: &str,
        env: &[(&str, String)],
    ) -> anyhow::Result<(Proc, SocketAddr)> {
        let admin = SocketAddr::from(([127, 0, 0, 1], free_port()?));
        let mut cmd = Command::new(bin);
        cmd.env_clear()
            .env("WEFT_THREADS", "1")
            .env("WEFT_LOG", "warn")
            .env("WEFT_OUTBOUND_PORT", free_port()?.to_string())
            .env("WEFT_INBOUND_PORT", free_port()?.to_string())
            .env("WEFT_ADMIN_PORT", admin.port().to_string())
            .env("WEFT_CONTROL_PLANE", mesh.control_plane.to_string())
            .env("WEFT_TRUST_ANCHORS", &mesh.anchors)
            .env("WEFT_IDENTITY_TOKEN_FILE", mesh.token_file(sa))
            .env("WEFT_NAMESPACE", NAMESPACE)
            .env("WEFT_SERVICE_ACCOUNT", sa);
        for (k, v) in env {
            cmd.env(k, v);
        }
        Ok((Proc::spawn(name, &mut cmd)?, admin))
    }

    /// Two haproxy processes, the hop between them TLS 1.3 with client certificates (`tls`) or
    /// plaintext. Keep-alive and connection reuse on both hops.
    pub fn haproxy(
        certs: &Certs,
        work: &Path,
        mode: Mode,
        tls: bool,
        upstream: SocketAddr,
    ) -> anyhow::Result<Chain> {
        let (entry_port, hop_port) = (free_port()?, free_port()?);
        let setup = if tls { "haproxy-mtls" } else { "haproxy-plain" };
        let tag = format!("{setup}-{mode:?}").to_lowercase();
        let http = mode != Mode::Tcp;
        let h2 = mode == Mode::Http2;
        let alpn = if h2 { "h2" } else { "http/1.1" };
        let mut defaults = String::new();
        let _ = writeln!(defaults, "global\n    nbthread 1\n    maxconn 8000\n");
        let _ = writeln!(
            defaults,
            "defaults\n    mode {}\n    timeout connect 5s\n    timeout client 60s\n    timeout server 60s",
            if http { "http" } else { "tcp" }
        );
        if http {
            let _ = writeln!(
                defaults,
                "    timeout http-keep-alive 60s\n    http-reuse always"
            );
        }
        // The hop's TLS parameters: each side presents `pem` and requires the other's certificate
        // to chain to the test CA; without TLS, HTTP/2 is spoken in clear (h2c).
        let hop = |pem: &Path, verify: &str| {
            if tls {
                let mut s = format!(
                    " ssl crt {} ca-file {} verify required{verify} ssl-min-ver TLSv1.3",
                    pem.display(),
                    certs.ca.display()
                );
                if http {
                    let _ = write!(s, " alpn {alpn}");
                }
                s
            } else if h2 {
                " proto h2".to_string()
            } else {
                String::new()
            }
        };
        let client_tls = hop(&certs.client_pem, " verifyhost server");
        let server_tls = hop(&certs.server_pem, "");
        let h2_proto = if h2 { " proto h2" } else { "" };
        let first = format!(
            "{defaults}\nfrontend entry\n    bind 127.0.0.1:{entry_port}{h2_proto}\n    default_backend hop\n\
             backend hop\n    server next 127.0.0.1:{hop_port}{client_tls}\n"
        );
        let second = format!(
            "{defaults}\nfrontend hop\n    bind 127.0.0.1:{hop_port}{server_tls}\n    default_backend app\n\
             backend app\n    server app {upstream}{h2_proto}\n"
        );
        let mut procs = Vec::new();
        for (name, cfg) in [("second", second), ("first", first)] {
            let path = work.join(format!("{tag}-{name}.cfg"));
            std::fs::write(&path, cfg)?;
            let check = Command::new("haproxy")
                .arg("-c")
                .arg("-q")
                .arg("-f")
                .arg(&path)
                .output()?;
            anyhow::ensure!(
                check.status.success(),
                "haproxy rejected {}: {}",
                path.display(),
                String::from_utf8_lossy(&check.stderr)
            );
            procs.push(Proc::spawn(
                &format!("{tag}-{name}"),
                Command::new("haproxy").arg("-db").arg("-f").arg(&path),
            )?);
        }
        let entry = SocketAddr::from(([127, 0, 0, 1], entry_port));
        wait_listening(
            SocketAddr::from(([127, 0, 0, 1], hop_port)),
            "second haproxy",
        )?;
        wait_listening(entry, "first haproxy")?;
        procs.reverse();
        Ok(Chain { entry, procs })
    }

    /// The largest value of a `/proc/PID/status` field among the chain's proxies, KiB.
    pub fn max_status_kib(&self, field: &str) -> anyhow::Result<Option<u64>> {
        let values = self
            .procs
            .iter()
            .map(|p| p.status_kib(field))
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(values.into_iter().max())
    }

    /// Total CPU time of the chain's proxies.
    pub fn cpu(&self) -> anyhow::Result<std::time::Duration> {
        self.cpu_times().map(crate::procs::CpuTimes::total)
    }

    /// The chain's proxies' CPU time, user and kernel apart.
    pub fn cpu_times(&self) -> anyhow::Result<crate::procs::CpuTimes> {
        self.procs.iter().map(Proc::cpu_times).sum()
    }

    /// Fails if a proxy of the chain died.
    pub fn check_running(&mut self) -> anyhow::Result<()> {
        self.procs.iter_mut().try_for_each(Proc::check_running)
    }
}

/// ECDSA P-256 certificates for the HAProxy TLS hop, made with openssl.
#[derive(Debug)]
pub struct Certs {
    pub ca: PathBuf,
    pub server_pem: PathBuf,
    pub client_pem: PathBuf,
}

impl Certs {
    pub fn create(dir: &Path) -> anyhow::Result<Certs> {
        let run = |args: &[&str]| -> anyhow::Result<()> {
            let out = Command::new("openssl")
                .args(args)
                .current_dir(dir)
                .output()
                .context("openssl")?;
            anyhow::ensure!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            Ok(())
        };
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        run(&[
            &["req", "-x509"][..],
            &ec,
            &[
                "-keyout",
                "ca.key",
                "-out",
                "ca.crt",
                "-days",
                "2",
                "-subj",
                "/CN=weft-bench-ca",
            ],
        ]
        .concat())?;
        for (name, eku) in [("server", "serverAuth"), ("client", "clientAuth")] {
            let ext = dir.join(format!("{name}.ext"));
            std::fs::write(
                &ext,
                format!("subjectAltName=DNS:{name}\nextendedKeyUsage={eku}\n"),
            )?;
            let (key, csr, crt) = (
                format!("{name}.key"),
                format!("{name}.csr"),
                format!("{name}.crt"),
            );
            run(&[
                &["req"][..],
                &ec,
                &[
                    "-keyout",
                    &key,
                    "-out",
                    &csr,
                    "-subj",
                    &format!("/CN={name}"),
                ],
            ]
            .concat())?;
            run(&[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &crt,
                "-days",
                "2",
                "-extfile",
                &ext.to_string_lossy(),
            ])?;
            let pem = [
                std::fs::read(dir.join(&crt))?,
                std::fs::read(dir.join(&key))?,
            ]
            .concat();
            std::fs::write(dir.join(format!("{name}.pem")), pem)?;
        }
        Ok(Certs {
            ca: dir.join("ca.crt"),
            server_pem: dir.join("server.pem"),
            client_pem: dir.join("client.pem"),
        })
    }
}

/// `GET path` on `addr` over HTTP/1.1 on a fresh connection, each step bounded (1 s to
/// connect, 5 s to answer): the status and the whole response.
fn http_get(addr: SocketAddr, path: &str) -> anyhow::Result<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1))
        .with_context(|| format!("connecting to {addr}"))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)
        .with_context(|| format!("reading the answer of {addr}{path}"))?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .with_context(|| format!("no HTTP status from {addr}{path}"))?;
    Ok((status, text))
}
