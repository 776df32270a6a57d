//! `weft-injector`: Weft's mutating admission webhook. HTTPS on 9443 (`POST /inject`, the
//! serving certificate read again when its files change), answering AdmissionReviews with
//! `weft-injector-core`; namespaces' labels from a reflector on the API server; `/metrics`,
//! `/ready` (once the namespaces are listed) and `/live` on 9990. SIGTERM stops it after the
//! reviews in flight.

mod metrics;
mod namespaces;
mod tls;
mod webhook;

use std::{convert::Infallible, net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use anyhow::Context as _;
use bytes::Bytes;
use clap::Parser;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::conn::auto,
};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use weft_injector_core::{inject, review::Settings};
use weft_pod::ids;

use crate::{metrics::Metrics, namespaces::KubeNamespaces, webhook::State};

/// How long a client has to finish the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Parser, Debug)]
#[command(name = "weft-injector", version, about)]
struct Args {
    /// The webhook's listen address.
    #[arg(long, env = "WEFT_INJECTOR_LISTEN", default_value_t = SocketAddr::from(([0, 0, 0, 0], ids::INJECTOR_PORT)))]
    listen: SocketAddr,
    /// The admin listen address (`/metrics`, `/ready`, `/live`).
    #[arg(long, env = "WEFT_INJECTOR_ADMIN", default_value_t = SocketAddr::from(([0, 0, 0, 0], ids::INJECTOR_ADMIN_PORT)))]
    admin: SocketAddr,
    /// The serving certificate (PEM), read again when it changes.
    #[arg(long, env = "WEFT_INJECTOR_TLS_CERT")]
    tls_cert: PathBuf,
    /// Its key (PEM).
    #[arg(long, env = "WEFT_INJECTOR_TLS_KEY")]
    tls_key: PathBuf,
    /// The trust anchors (PEM) given to every injected proxy.
    #[arg(long, env = "WEFT_INJECTOR_TRUST_ANCHORS")]
    trust_anchors: PathBuf,
    /// The proxy's image.
    #[arg(long, env = "WEFT_INJECTOR_PROXY_IMAGE")]
    proxy_image: String,
    /// The init container's image.
    #[arg(long, env = "WEFT_INJECTOR_INIT_IMAGE")]
    init_image: String,
    /// Both images' pull policy (the cluster's default when unset).
    #[arg(long, env = "WEFT_INJECTOR_IMAGE_PULL_POLICY")]
    image_pull_policy: Option<String>,
    /// The proxy's `command`, for an image without an entrypoint.
    #[arg(long, env = "WEFT_INJECTOR_PROXY_COMMAND")]
    proxy_command: Option<String>,
    /// The init container's `command`, for an image without an entrypoint.
    #[arg(long, env = "WEFT_INJECTOR_INIT_COMMAND")]
    init_command: Option<String>,
    /// The control plane's gRPC address, as proxies reach it.
    #[arg(long, env = "WEFT_INJECTOR_CONTROL_PLANE", default_value = weft_injector_core::DEFAULT_CONTROL_PLANE)]
    control_plane: String,
    /// The SPIFFE ID the control plane presents, for proxies to check (their default:
    /// spiffe://<trust domain>/ns/weft/sa/weft-control-plane). The chart always sets it.
    #[arg(long, env = "WEFT_INJECTOR_CONTROL_PLANE_IDENTITY")]
    control_plane_identity: Option<String>,
    /// The trust domain, given to proxies (their default: `cluster.local`).
    #[arg(long, env = "WEFT_INJECTOR_TRUST_DOMAIN")]
    trust_domain: Option<String>,
    /// Weft's own namespace (never injected).
    #[arg(long, env = "WEFT_NAMESPACE", default_value = weft_injector_core::DEFAULT_NAMESPACE)]
    weft_namespace: String,
    /// The CNI plugin redirects pods' traffic: no init container, nothing privileged.
    #[arg(long, env = "WEFT_INJECTOR_CNI")]
    cni: bool,
    /// Native sidecars (Kubernetes 1.29): `auto` asks the API server's version.
    #[arg(long, env = "WEFT_INJECTOR_NATIVE_SIDECARS", default_value = "auto", value_parser = ["auto", "true", "false"])]
    native_sidecars: String,
    /// The proxies' log filter unless a pod says otherwise.
    #[arg(long, env = "WEFT_INJECTOR_PROXY_LOG_LEVEL", default_value = "info")]
    proxy_log_level: String,
    #[arg(long, env = "WEFT_INJECTOR_PROXY_CPU_REQUEST", default_value = "10m")]
    proxy_cpu_request: String,
    #[arg(
        long,
        env = "WEFT_INJECTOR_PROXY_MEMORY_REQUEST",
        default_value = "20Mi"
    )]
    proxy_memory_request: String,
    #[arg(long, env = "WEFT_INJECTOR_PROXY_CPU_LIMIT")]
    proxy_cpu_limit: Option<String>,
    #[arg(long, env = "WEFT_INJECTOR_PROXY_MEMORY_LIMIT")]
    proxy_memory_limit: Option<String>,
    /// An OpenTelemetry collector's OTLP/gRPC address (`host:port`) for every proxy's spans;
    /// unset: proxies do not trace.
    #[arg(long, env = "WEFT_INJECTOR_TRACE_COLLECTOR")]
    trace_collector: Option<String>,
    /// The share of requests proxies sample when a trace starts with them (0 to 1).
    #[arg(long, env = "WEFT_INJECTOR_TRACE_SAMPLING", value_parser = sampling)]
    trace_sampling: Option<String>,
}

/// A sampling share, checked here so that a bad value stops the injector rather than every
/// proxy it injects.
fn sampling(v: &str) -> Result<String, String> {
    match v.trim().parse::<f64>() {
        Ok(p) if (0.0..=1.0).contains(&p) => Ok(v.trim().to_string()),
        _ => Err(format!("{v:?} is not a share from 0 to 1, such as 0.01")),
    }
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("WEFT_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("weft-injector: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("weft-injector: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let certs = Arc::new(tls::Reloading::load(
        &args.tls_cert,
        &args.tls_key,
        provider.clone(),
    )?);
    let anchors = std::fs::read_to_string(&args.trust_anchors)
        .with_context(|| format!("read the trust anchors {}", args.trust_anchors.display()))?;
    if !anchors.contains("-----BEGIN CERTIFICATE-----") {
        anyhow::bail!("{}: no PEM certificate in it", args.trust_anchors.display());
    }
    let client = kube::Client::try_default()
        .await
        .context("connect to the Kubernetes API")?;
    let native_sidecars = match args.native_sidecars.as_str() {
        "true" => true,
        "false" => false,
        _ => {
            let version = client
                .apiserver_version()
                .await
                .context("ask the API server's version (or set --native-sidecars)")?;
            let minor: u32 = version
                .minor
                .trim_end_matches('+')
                .parse()
                .unwrap_or_default();
            version.major == "1" && minor >= 29
        }
    };
    info!(native_sidecars, cni = args.cni, "injecting");
    let settings = Settings {
        inject: inject::Config {
            version: env!("CARGO_PKG_VERSION").into(),
            proxy_image: args.proxy_image,
            init_image: args.init_image,
            image_pull_policy: args.image_pull_policy,
            proxy_command: args.proxy_command.map(|c| vec![c]),
            init_command: args.init_command.map(|c| vec![c]),
            control_plane: args.control_plane,
            control_plane_identity: args.control_plane_identity,
            trust_domain: args.trust_domain,
            trust_anchors_pem: anchors,
            cni: args.cni,
            native_sidecars,
            log_level: args.proxy_log_level,
            proxy_cpu_request: args.proxy_cpu_request,
            proxy_memory_request: args.proxy_memory_request,
            proxy_cpu_limit: args.proxy_cpu_limit,
            proxy_memory_limit: args.proxy_memory_limit,
            trace_collector: args.trace_collector.filter(|c| !c.trim().is_empty()),
            trace_sampling: args.trace_sampling,
        },
        weft_namespace: args.weft_namespace,
    };
    let metrics = Arc::new(Metrics::new().context("metrics")?);
    let shutdown = CancellationToken::new();
    let namespaces = KubeNamespaces::start(client, shutdown.clone());
    let ready = namespaces.ready();
    let state = Arc::new(State {
        settings,
        namespaces,
        metrics: metrics.clone(),
    });

    let mut server = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .context("TLS versions")?
        .with_no_client_auth()
        .with_cert_resolver(certs.clone());
    server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = TlsAcceptor::from(Arc::new(server));
    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("listen on {}", args.listen))?;
    let admin = TcpListener::bind(args.admin)
        .await
        .with_context(|| format!("listen on {}", args.admin))?;
    info!(listen = %args.listen, admin = %args.admin, "serving");

    let reload = {
        let (certs, metrics, shutdown) = (certs.clone(), metrics.clone(), shutdown.clone());
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(tls::RELOAD_EVERY) => {}
                }
                match certs.reload() {
                    Ok(false) => {}
                    Ok(true) => {
                        info!("serving certificate reloaded");
                        metrics.reload(true);
                    }
                    Err(e) => {
                        warn!(error = %format!("{e:#}"), "serving certificate not reloaded; the last good one serves on");
                        metrics.reload(false);
                    }
                }
            }
        })
    };
    let admin_task = tokio::spawn(serve_admin(admin, metrics.clone(), ready, shutdown.clone()));
    let signals = {
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            use tokio::signal::unix::{signal, SignalKind};
            let (Ok(mut term), Ok(mut int)) = (
                signal(SignalKind::terminate()),
                signal(SignalKind::interrupt()),
            ) else {
                return;
            };
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
            info!("stopping");
            shutdown.cancel();
        })
    };

    let tracker = tokio_util::task::TaskTracker::new();
    loop {
        let (tcp, _) = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(c) => c,
                Err(e) => {
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let (acceptor, state, shutdown) = (acceptor.clone(), state.clone(), shutdown.clone());
        tracker.spawn(async move {
            let Ok(Ok(tls)) = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await
            else {
                return;
            };
            let svc = service_fn(move |req: Request<hyper::body::Incoming>| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(webhook::handle(req, &state).await) }
            });
            let mut builder = auto::Builder::new(TokioExecutor::new());
            builder
                .http1()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10));
            let conn = builder.serve_connection(TokioIo::new(tls), svc);
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                () = shutdown.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(Duration::from_secs(10), conn).await;
                }
            }
        });
    }
    tracker.close();
    let _ = tokio::time::timeout(Duration::from_secs(15), tracker.wait()).await;
    let _ = tokio::join!(reload, admin_task, signals);
    Ok(())
}

/// `/metrics`, `/ready` (once the namespaces are listed, and until the injector stops), `/live`.
async fn serve_admin(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    ready: tokio::sync::watch::Receiver<bool>,
    shutdown: CancellationToken,
) {
    loop {
        let (tcp, _) = tokio::select! {
            () = shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(c) => c,
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let (metrics, ready, shutdown) = (metrics.clone(), ready.clone(), shutdown.clone());
        tokio::spawn(async move {
            let svc = service_fn(move |req: Request<hyper::body::Incoming>| {
                let rsp = admin(&req, &metrics, *ready.borrow() && !shutdown.is_cancelled());
                async move { Ok::<_, Infallible>(rsp) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .serve_connection(TokioIo::new(tcp), svc)
                .await;
        });
    }
}

fn admin<B>(req: &Request<B>, metrics: &Metrics, ready: bool) -> Response<Full<Bytes>> {
    let (status, content_type, body) = match (req.method(), req.uri().path()) {
        (&Method::GET, "/metrics") => (
            StatusCode::OK,
            "text/plain; version=0.0.4; charset=utf-8",
            metrics.encode(),
        ),
        (&Method::GET, "/live") => (StatusCode::OK, "text/plain", "live\n".into()),
        (&Method::GET, "/ready") if ready => (StatusCode::OK, "text/plain", "ready\n".into()),
        (&Method::GET, "/ready") => (
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain",
            "not ready: namespaces not listed yet, or stopping\n".into(),
        ),
        _ => (
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found: try /metrics, /ready, /live\n".into(),
        ),
    };
    let mut rsp = Response::new(Full::new(Bytes::from(body)));
    *rsp.status_mut() = status;
    rsp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    rsp
}
