//! Building the proxy: bind every port from a validated [`Config`], then run until drained.
//!
//! [`build`] binds on the addresses the config names (port 0 picks a free one), so a test can
//! build the whole proxy in-process and read the bound addresses back.

use std::{
    collections::HashMap,
    io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    sync::{atomic::AtomicBool, atomic::Ordering, Arc},
    time::Duration,
};

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};
use weft_certs::{CertStore, TrustBundle};
use weft_proxy_http::Upstreams;
use weft_proxy_identity::{Certifier, CertifyConfig, MeshTls};
use weft_proxy_metrics::{Direction, Metrics};
use weft_proxy_tap::Tap;
use weft_proxy_transport::bind;

use crate::{
    accept, admin,
    config::{keys, Config, IdentityConfig, Target, TrustAnchors},
    conn::Common,
    drain::{Drain, Drained},
    inbound::{Inbound, InboundMesh},
    outbound::{endpoint::Endpoints, Destinations, Outbound, StaticPeer},
    redirect_check::{self, CheckAddr, Checker, RedirectStatus, Token},
    telemetry::LogHandle,
};

/// A proxy with its ports bound, not yet serving.
#[derive(Debug)]
pub struct App {
    config: Config,
    outbound: Vec<TcpListener>,
    inbound: TcpListener,
    admin: std::net::TcpListener,
    addrs: Addrs,
    metrics: Arc<Metrics>,
    drain: Drain,
    log: Option<LogHandle>,
    /// The redirect check's addresses and this process's token.
    check: Arc<CheckAddr>,
    /// With a control plane: the proxy's TLS and the certifier that fills its store.
    identity: Option<Identity>,
}

/// The proxy's identity, prepared before any port is bound.
#[derive(Debug)]
struct Identity {
    tls: Arc<MeshTls>,
    own_id: Arc<str>,
    certifier: Certifier,
}

/// Where the proxy's listeners ended up.
#[derive(Clone, Copy, Debug)]
pub struct Addrs {
    /// The outbound listener (IPv4 loopback; IPv6 loopback on the same port when available).
    pub outbound: SocketAddr,
    /// The inbound listener.
    pub inbound: SocketAddr,
    /// The admin server.
    pub admin: SocketAddr,
}

/// Why the proxy could not start.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// A port could not be bound.
    #[error("cannot bind the {listener} listener on {addr}: {source}; is another process using the port?")]
    Bind {
        listener: &'static str,
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
    /// The metrics registry refused a definition (a bug).
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    /// No random bytes for the redirect check's token.
    #[error("the system's random number generator failed; is /dev/urandom (getrandom) available?")]
    Random,
    /// The identity's configuration is unusable (the trust anchors file, a peer's identity).
    #[error("{0}")]
    Identity(String),
}

impl BuildError {
    /// Whether the cause is the configuration (exit 64) rather than the host (exit 1).
    pub fn is_config(&self) -> bool {
        matches!(self, BuildError::Identity(_))
    }
}

/// Checks what the config names on disk (the trust anchors), then binds every listener.
/// Nothing is served until [`App::run`].
pub async fn build(config: Config, log: Option<LogHandle>) -> Result<App, BuildError> {
    let identity = config
        .identity
        .as_ref()
        .map(|id| identity(&config, id))
        .transpose()?;
    let metrics = Arc::new(Metrics::new(env!("CARGO_PKG_VERSION"))?);
    if config.redirect_check.is_some() {
        metrics.enable_redirect_check()?;
    }
    let token = Token::random().map_err(|_| BuildError::Random)?;
    let check = Arc::new(CheckAddr::new(config.redirect_check_port, token));

    let v4_loopback = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), config.outbound_port);
    let outbound_v4 = bind_as("outbound", v4_loopback)?;
    let outbound_addr = local_addr("outbound", &outbound_v4, v4_loopback)?;
    let mut outbound = vec![outbound_v4];
    // IPv6 REDIRECT lands on ::1. A host without IPv6 simply has no such listener, but another
    // process on [::1]:port would silently receive the pod's redirected IPv6 traffic: an error.
    let v6_loopback = SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), outbound_addr.port());
    match bind(v6_loopback) {
        Ok(l) => outbound.push(l),
        Err(e) if no_ipv6(&e) => debug!(addr = %v6_loopback, error = %e, "no IPv6 on this host"),
        Err(source) => {
            return Err(BuildError::Bind {
                listener: "outbound",
                addr: v6_loopback,
                source,
            })
        }
    }

    let inbound = bind_any("inbound", config.inbound_port)?;
    let inbound_addr = local_addr(
        "inbound",
        &inbound,
        SocketAddr::from(([0; 4], config.inbound_port)),
    )?;
    let admin = bind_any("admin", config.admin_port)?;
    let admin_addr = local_addr(
        "admin",
        &admin,
        SocketAddr::from(([0; 4], config.admin_port)),
    )?;
    let admin = admin.into_std().map_err(|source| BuildError::Bind {
        listener: "admin",
        addr: admin_addr,
        source,
    })?;

    Ok(App {
        addrs: Addrs {
            outbound: outbound_addr,
            inbound: inbound_addr,
            admin: admin_addr,
        },
        config,
        outbound,
        inbound,
        admin,
        metrics,
        drain: Drain::new(),
        log,
        check,
        identity,
    })
}

impl App {
    /// Where the listeners are bound.
    pub fn addrs(&self) -> Addrs {
        self.addrs
    }

    /// The drain handle: [`Drain::start`] begins a graceful shutdown.
    pub fn drain(&self) -> Drain {
        self.drain.clone()
    }

    /// The proxy's metrics.
    pub fn metrics(&self) -> Arc<Metrics> {
        self.metrics.clone()
    }

    /// Serves until the drain starts and completes (or its grace period runs out).
    pub async fn run(self) -> io::Result<Drained> {
        let App {
            config,
            outbound,
            inbound,
            admin,
            addrs,
            metrics,
            drain,
            log,
            check,
            identity,
        } = self;
        let ready = Arc::new(AtomicBool::new(false));
        // IPv6 is proved too when the proxy listens on `::1`: its traffic is redirected there.
        let check_targets = check.targets(outbound.len() > 1);
        let redirect = config
            .redirect_check
            .map(|interval| Arc::new(RedirectStatus::new(interval, &check_targets)));
        let config_view = admin::ConfigView::default();
        let tap = config.tap.then(Tap::new);
        if let Some(tap) = &tap {
            let tap = tap.clone();
            metrics
                .enable_tap(move || {
                    let c = tap.counts();
                    weft_proxy_metrics::TapCounts {
                        sent: c.sent,
                        dropped: c.dropped,
                        streams: c.streams,
                    }
                })
                .map_err(io::Error::other)?;
        }
        let stop_admin = CancellationToken::new();
        let admin_tls = identity.as_ref().map(|i| i.tls.clone());
        let admin_thread = admin::spawn(
            admin::Admin {
                metrics: metrics.clone(),
                ready: ready.clone(),
                drain: drain.clone(),
                log,
                config: config_view.clone(),
                redirect: redirect.clone(),
                tap: tap.clone(),
                tap_identities: config.tap_identities.clone().into(),
                tls: admin_tls,
            },
            admin,
            stop_admin.clone(),
        )?;

        let upstreams = Upstreams::new(config.client.clone(), metrics.clone());
        let shutdown_identity = CancellationToken::new();
        let tracing = start_tracing(&config, &metrics)?;
        if let Some((kind, name)) = &config.workload {
            metrics
                .enable_proxy_info(kind, name)
                .map_err(io::Error::other)?;
        }
        let common = |direction| Common {
            direction,
            opaque_ports: config.opaque_ports.clone(),
            detect_timeout: config.detect_timeout,
            connect_timeout: config.client.connect_timeout,
            server: weft_proxy_http::ServerSettings {
                trace: tracing.as_ref().map(|t| t.for_direction(direction)),
                tap: tap.as_ref().map(|t| {
                    let side = match direction {
                        Direction::Outbound => weft_proxy_tap::Direction::Outbound,
                        Direction::Inbound => weft_proxy_tap::Direction::Inbound,
                    };
                    weft_proxy_tap::Point::new(t.clone(), side)
                }),
                ..config.server.clone()
            },
            upstreams: upstreams.clone(),
            metrics: metrics.clone(),
            drain: drain.clone(),
        };
        let check_for = |target| (target == Target::Transparent).then(|| check.clone());
        let mut outbound_stack = Outbound {
            common: common(Direction::Outbound),
            target: config.outbound_target,
            destinations: None,
            peers: HashMap::new(),
            redirect_check: check_for(config.outbound_target),
        };
        let mut inbound_stack = Inbound {
            common: common(Direction::Inbound),
            target: config.inbound_target,
            mesh: None,
            redirect_check: check_for(config.inbound_target),
        };
        let mut certified = None;
        if let Some(Identity {
            tls,
            own_id,
            certifier,
        }) = identity
        {
            certified = Some(certifier.subscribe());
            let endpoints = Endpoints {
                upstreams: upstreams.clone(),
                tls: tls.clone(),
                own_id: own_id.clone(),
                metrics: metrics.clone(),
                tunnels: drain.tasks().clone(),
                http1_upgrade: config.mesh_http1_upgrade,
            };
            for (dst, peer) in &config.mesh_destinations {
                let endpoint = endpoints
                    .mesh_connect(&peer.id, peer.proxy)
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
                let series = endpoints.peer_series(&peer.id.to_string());
                outbound_stack
                    .peers
                    .insert(*dst, StaticPeer { endpoint, series });
            }
            let discovery = weft_proxy_discovery::Discovery::new(
                certifier.dialer().clone(),
                own_id.to_string(),
                weft_proxy_discovery::Settings::default(),
                metrics.clone(),
                shutdown_identity.clone(),
                Some(certifier.subscribe()),
            );
            let destinations = Destinations::new(
                discovery,
                config.discovery.clone(),
                config.balance,
                endpoints,
            );
            let view = destinations.clone();
            config_view.set(move || view.view());
            outbound_stack.destinations = Some(destinations);
            inbound_stack.mesh = Some(InboundMesh {
                tls,
                own_id,
                mode: config.inbound_mtls,
                own_ports: vec![
                    addrs.outbound.port(),
                    addrs.inbound.port(),
                    addrs.admin.port(),
                    config.redirect_check_port,
                ],
            });
            tokio::spawn(certifier.run(shutdown_identity.clone()));
        }
        let outbound_stack = Arc::new(outbound_stack);
        for listener in outbound {
            tokio::spawn(accept::serve(listener, outbound_stack.clone()));
        }
        tokio::spawn(accept::serve(inbound, Arc::new(inbound_stack)));

        info!(
            outbound = %addrs.outbound,
            inbound = %addrs.inbound,
            admin = %addrs.admin,
            outbound_mode = mode(config.outbound_target),
            inbound_mode = mode(config.inbound_target),
            redirect_check = %config.redirect_check.map_or("off".into(), |i| format!("every {i:?}")),
            "listening"
        );
        if let (Some(interval), Some(status)) = (config.redirect_check, redirect) {
            let checker = Checker {
                probe: check.probe(addrs.outbound.port(), redirect_check::PROBE_TIMEOUT),
                interval,
                status,
                metrics: metrics.clone(),
            };
            // Stops when the drain starts: the listeners close then, and the check with them.
            drain.tasks().spawn(checker.run(drain.signal().clone()));
        }
        match certified {
            // Ready once a certificate is held; the expiry metric follows every renewal.
            Some(mut held) => {
                let (metrics, ready) = (metrics.clone(), ready.clone());
                tokio::spawn(async move {
                    while held.changed().await.is_ok() {
                        let Some(h) = *held.borrow_and_update() else {
                            continue;
                        };
                        let expiry = h
                            .not_after
                            .duration_since(std::time::UNIX_EPOCH)
                            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
                        metrics.cert_expires_at(expiry);
                        ready.store(true, Ordering::Release);
                    }
                });
            }
            None => ready.store(true, Ordering::Release),
        }

        let drained = drain.wait(config.shutdown_grace).await;
        match drained {
            Drained::Clean => info!("drained: every connection finished"),
            Drained::GraceExpired => warn!(
                grace = ?config.shutdown_grace,
                "grace period over with connections still open; closing them"
            ),
        }
        shutdown_identity.cancel();
        stop_admin.cancel();
        if tokio::task::spawn_blocking(move || admin_thread.join())
            .await
            .is_err()
        {
            warn!("admin thread did not stop cleanly");
        }
        Ok(drained)
    }
}

/// The identity's trust anchors and TLS configs, and the certifier that fills the certificate
/// store: everything the config names on disk, read before a port is bound.
fn identity(config: &Config, identity: &IdentityConfig) -> Result<Identity, BuildError> {
    // The anchors' text, and the setting it came from for errors.
    let (pem, source): (std::borrow::Cow<'_, str>, String) = match &identity.trust_anchors {
        TrustAnchors::File(path) => {
            let named = format!("{}={}", keys::TRUST_ANCHORS, path.display());
            let pem = std::fs::read_to_string(path)
                .map_err(|e| BuildError::Identity(format!("{named}: {e}")))?;
            (pem.into(), named)
        }
        TrustAnchors::Pem(pem) => (pem.as_str().into(), keys::TRUST_ANCHORS_PEM.to_string()),
    };
    let anchors = |e: &dyn std::fmt::Display| BuildError::Identity(format!("{source}: {e}"));
    let bundle = TrustBundle::from_pem(&pem).map_err(|e| anchors(&e))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = Arc::new(
        MeshTls::new(identity.id.clone(), bundle, provider, CertStore::new())
            .map_err(|e| BuildError::Identity(format!("TLS config: {e}")))?,
    );
    for peer in config.mesh_destinations.values() {
        tls.client_config(&peer.id).map_err(|e| {
            BuildError::Identity(format!(
                "{}: TLS config for {}: {e}",
                keys::MESH_DESTINATIONS,
                peer.id
            ))
        })?;
    }
    let certifier = Certifier::new(
        CertifyConfig {
            control_plane: identity.control_plane.clone(),
            control_plane_id: identity.control_plane_id.clone(),
            token_file: identity.token_file.clone(),
            connect_timeout: config.client.connect_timeout.max(Duration::from_secs(2)),
            request_timeout: Duration::from_secs(10),
            min_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(10),
        },
        tls.clone(),
    )
    .map_err(|e| BuildError::Identity(format!("TLS config: {e}")))?;
    info!(identity = %identity.id, control_plane = %identity.control_plane, mtls = ?config.inbound_mtls, mesh_destinations = config.mesh_destinations.len(), "identity");
    Ok(Identity {
        tls,
        own_id: identity.id.to_string().into(),
        certifier,
    })
}

fn mode(target: Target) -> String {
    match target {
        Target::Transparent => "transparent".into(),
        Target::Explicit(addr) => format!("explicit to {addr}"),
    }
}

fn bind_as(listener: &'static str, addr: SocketAddr) -> Result<TcpListener, BuildError> {
    bind(addr).map_err(|source| BuildError::Bind {
        listener,
        addr,
        source,
    })
}

/// Binds `[::]:port` dual-stack, or `0.0.0.0:port` on a host without IPv6.
fn bind_any(listener: &'static str, port: u16) -> Result<TcpListener, BuildError> {
    let any = SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), port);
    match bind(any) {
        Ok(l) => Ok(l),
        Err(e) if no_ipv6(&e) => bind_as(
            listener,
            SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port),
        ),
        Err(source) => Err(BuildError::Bind {
            listener,
            addr: any,
            source,
        }),
    }
}

/// Whether a bind error means the host has no IPv6 (module absent, disabled, no `::1`), as
/// opposed to a conflict that must not be papered over.
fn no_ipv6(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(EAFNOSUPPORT | EADDRNOTAVAIL))
}

/// Linux errno values (a stable ABI).
const EAFNOSUPPORT: i32 = 97;
const EADDRNOTAVAIL: i32 = 99;

fn local_addr(
    listener: &'static str,
    l: &TcpListener,
    addr: SocketAddr,
) -> Result<SocketAddr, BuildError> {
    l.local_addr().map_err(|source| BuildError::Bind {
        listener,
        addr,
        source,
    })
}

/// The two listeners' tracing, one exporter between them.
struct Tracers {
    outbound: Arc<weft_proxy_trace::Tracing>,
    inbound: Arc<weft_proxy_trace::Tracing>,
}

impl Tracers {
    fn for_direction(&self, direction: Direction) -> Arc<weft_proxy_trace::Tracing> {
        match direction {
            Direction::Outbound => self.outbound.clone(),
            Direction::Inbound => self.inbound.clone(),
        }
    }
}

/// Starts the span exporter when a collector is configured, and exports its counts.
fn start_tracing(config: &Config, metrics: &Metrics) -> io::Result<Option<Tracers>> {
    let Some(trace) = &config.trace else {
        return Ok(None);
    };
    let mut attributes = Vec::new();
    if let Some(identity) = &config.identity {
        attributes.push(("k8s.namespace.name", identity.id.namespace().to_string()));
        attributes.push(("weft.identity", identity.id.to_string()));
    }
    let resource = weft_proxy_otlp::Resource {
        service_name: trace.service_name.clone(),
        attributes,
    };
    let sink = weft_proxy_otlp::start(
        weft_proxy_otlp::Settings::new(trace.collector.clone()),
        resource,
    )?;
    let counters = sink.counters().clone();
    metrics
        .enable_trace_spans(move || {
            let c = counters.get();
            [
                ("exported", c.exported),
                ("queue_full", c.queue_full),
                ("export_failed", c.export_failed),
                ("rejected", c.rejected),
            ]
        })
        .map_err(io::Error::other)?;
    let ratio = weft_proxy_trace::Ratio::new(trace.sampling)
        .ok_or_else(|| io::Error::other("the sampling share is not in [0, 1]"))?;
    let recorder: Arc<dyn weft_proxy_trace::Recorder> = Arc::new(sink);
    let tracing = |kind| {
        Arc::new(weft_proxy_trace::Tracing {
            kind,
            ratio,
            recorder: recorder.clone(),
        })
    };
    tracing::info!(
        collector = %trace.collector,
        sampling = trace.sampling,
        "tracing: spans go to the collector"
    );
    Ok(Some(Tracers {
        outbound: tracing(weft_proxy_trace::Kind::Client),
        inbound: tracing(weft_proxy_trace::Kind::Server),
    }))
}
