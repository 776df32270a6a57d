//! Weft's control plane: the identity service, a CA that signs each proxy's certificate for the
//! workload its token proves; the destination service, which tells proxies where a
//! destination's endpoints are and who each must be; and the route service, which tells them
//! how requests to a Service are routed (HTTPRoutes and TrafficSplits).
//!
//! # Layout
//! - [`issuer`]: the issuer and trust anchors from a directory, reloaded when they change.
//! - [`tokens`]: which workload a token proves: the [`tokens::TokenReviewer`] trait and the
//!   local tokens file; [`kube_tokens`]: Kubernetes TokenReview.
//! - [`identity`]: the `Certify` RPC.
//! - [`serving`]: the control plane's own certificate for its gRPC port.
//! - [`source`]: the config source trait, with [`local`] (a YAML folder) and [`kube_source`]
//!   (the API); both publish a [`weft_control_plane_config::model::Snapshot`]. The config
//!   model, the YAML reader and the index live in `weft-control-plane-config`
//!   (`control-plane/config`), pure code the fuzz targets build without this crate.
//! - [`hub`]: what every watch service shares, generic over the kind of answer
//!   ([`hub::Answers`]): one index per snapshot, one lookup per watched target, coalescing
//!   for slow readers.
//! - [`discovery`]: the destination service, the first kind of answer: endpoints from the
//!   [`index`](weft_control_plane_config::index).
//! - [`routes`]: the route service, the second: a Service port's route table for a client's
//!   namespace, from the [`routes`](weft_control_plane_config::routes) index.
//! - [`route_status`]: in Kubernetes mode, each HTTPRoute's `status.parents` written back.
//! - [`grpc`]: TLS and HTTP/2 serving of every service; [`peer`]: who a caller is, from the
//!   client certificate it presented; [`admin`]: `/metrics`, `/ready`, `/live`;
//!   [`addresses`]: the file that reports the addresses they got.
//! - [`Error`]: why [`run`] failed, and whether that is configuration (exit 64) or a failure
//!   at run time (exit 1).

pub mod addresses;
pub mod admin;
pub mod config_thread;
pub mod discovery;
mod error;
mod files;
pub mod grpc;
pub mod hub;
pub mod identity;
pub mod issuer;
pub mod kube_source;
pub mod kube_tokens;
pub mod local;
pub mod metrics;
pub mod peer;
pub mod route_status;
pub mod routes;
pub mod serving;
pub mod source;
pub mod tokens;

use std::{net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use tokio::net::TcpListener;
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tracing::{info, warn};
use weft_certs::SpiffeId;
use weft_control_plane_config::model::Snapshot;

pub use crate::error::{Error, EXIT_CONFIG, EXIT_RUNTIME};
use crate::{
    config_thread::ConfigThread, identity::IdentityService, issuer::IssuerSource, metrics::Metrics,
    serving::ServingCert, tokens::TokenReviewer,
};

/// How long calls in flight at shutdown may run before their connections are closed.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Command-line arguments (each also read from a `WEFT_CP_*` environment variable).
#[derive(clap::Parser, Debug, Clone)]
#[command(name = "weft-control-plane", version, about)]
pub struct Args {
    /// Directory holding issuer.crt, issuer.key and anchors.pem (reloaded on change).
    #[arg(long, env = "WEFT_CP_ISSUER")]
    pub issuer: PathBuf,
    /// Local mode: a tokens file (`token namespace service-account` per line, reloaded on
    /// change). Without it, tokens are checked with Kubernetes TokenReview (in-cluster config
    /// or $KUBECONFIG).
    #[arg(long, env = "WEFT_CP_TOKENS")]
    pub tokens: Option<PathBuf>,
    /// The trust domain of every identity issued.
    #[arg(long, env = "WEFT_CP_TRUST_DOMAIN", default_value = "cluster.local")]
    pub trust_domain: String,
    /// Where Services, EndpointSlices and Pods come from: `kubernetes` (watch the API) or
    /// `local:DIR` (a folder of the same YAML, reloaded on change). Default: `kubernetes`
    /// without --tokens; with --tokens (local mode), an empty config (no Services known).
    #[arg(long, env = "WEFT_CP_SOURCE", value_parser = parse_source)]
    pub source: Option<SourceArg>,
    /// How often a local config folder is checked for changes (also at once when inotify
    /// reports one).
    #[arg(long, env = "WEFT_CP_CONFIG_POLL_INTERVAL", default_value = "1s", value_parser = humantime::parse_duration)]
    pub config_poll_interval: Duration,
    /// The cluster's DNS domain, for targets named `name.namespace.svc.<domain>:port`.
    #[arg(long, env = "WEFT_CP_CLUSTER_DOMAIN", default_value = "cluster.local")]
    pub cluster_domain: String,
    /// The gRPC address (identity and destination services), TLS.
    #[arg(long, env = "WEFT_CP_GRPC_ADDR", default_value = "[::]:8443")]
    pub grpc_addr: SocketAddr,
    /// The admin address: /metrics, /ready, /live.
    #[arg(long, env = "WEFT_CP_ADMIN_ADDR", default_value = "[::]:9990")]
    pub admin_addr: SocketAddr,
    /// Once the gRPC and admin listeners are bound, write the addresses they got to this file
    /// as JSON (`{"grpc":"127.0.0.1:41234","admin":"127.0.0.1:41235"}`), atomically: how a
    /// test or script that asked for port 0 learns its ports.
    #[arg(long, env = "WEFT_CP_ADDRESSES_FILE")]
    pub addresses_file: Option<PathBuf>,
    /// How long workload certificates live (clamped to the issuer's own expiry).
    #[arg(long, env = "WEFT_CP_CERT_LIFETIME", default_value = "24h", value_parser = humantime::parse_duration)]
    pub cert_lifetime: Duration,
    /// How often the issuer and tokens files are checked for changes.
    #[arg(long, env = "WEFT_CP_RELOAD_INTERVAL", default_value = "5s", value_parser = humantime::parse_duration)]
    pub reload_interval: Duration,
    /// The control plane's own namespace: its identity is
    /// spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>.
    #[arg(long, env = "POD_NAMESPACE", default_value = "weft")]
    pub namespace: String,
    /// The control plane's own service account.
    #[arg(
        long,
        env = "WEFT_CP_SERVICE_ACCOUNT",
        default_value = "weft-control-plane"
    )]
    pub service_account: String,
    /// Log filter (tracing-subscriber syntax).
    #[arg(long, env = "WEFT_LOG", default_value = "info")]
    pub log: String,
    /// Log format: plain or json.
    #[arg(long, env = "WEFT_LOG_FORMAT", default_value = "plain")]
    pub log_format: String,
}

/// Where the config comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceArg {
    /// The Kubernetes API, through the in-cluster config or `$KUBECONFIG`.
    Kubernetes,
    /// A folder of YAML.
    Local(PathBuf),
}

fn parse_source(s: &str) -> Result<SourceArg, String> {
    match s {
        "kubernetes" => Ok(SourceArg::Kubernetes),
        _ => match s.strip_prefix("local:") {
            Some(dir) if !dir.is_empty() => Ok(SourceArg::Local(PathBuf::from(dir))),
            _ => Err(format!("{s:?}: expected kubernetes or local:DIR")),
        },
    }
}

/// How long the Kubernetes source waits for a burst of changes to settle before publishing.
const KUBE_SETTLE: Duration = Duration::from_millis(100);

/// What [`config_source`] gives: the first snapshot, the source, the status writer.
type Sourced = (
    Arc<Snapshot>,
    Option<Box<dyn source::ConfigSource>>,
    Option<StatusWriting>,
);

/// Kubernetes mode's route status writer, with the source's refused routes it reports.
struct StatusWriting {
    writer: route_status::StatusWriter,
    refused: tokio::sync::watch::Receiver<Arc<Vec<kube_source::RefusedRoute>>>,
}

/// The config source `args` name, loaded (a local folder) or connected (Kubernetes), and in
/// Kubernetes mode the route status writer.
async fn config_source(
    args: &Args,
    metrics: &Arc<Metrics>,
    work: &ConfigThread,
) -> Result<Sourced, Error> {
    let source = match (&args.source, &args.tokens) {
        (Some(s), _) => s.clone(),
        (None, None) => SourceArg::Kubernetes,
        (None, Some(_)) => {
            info!("no --source: no Services known, every destination is forwarded as it is");
            return Ok((Arc::default(), None, None));
        }
    };
    match source {
        SourceArg::Local(dir) => {
            let local = local::LocalSource::load(
                dir.clone(),
                args.config_poll_interval,
                metrics.clone(),
                work.clone(),
            )
            .map_err(|source| Error::LocalSource {
                dir: dir.clone(),
                source,
            })?;
            let snapshot = local.snapshot();
            info!(dir = %dir.display(), services = snapshot.services.len(), endpoint_slices = snapshot.endpoint_slices.len(), pods = snapshot.pods.len(), "config from a local folder");
            Ok((snapshot, Some(Box::new(local)), None))
        }
        SourceArg::Kubernetes => {
            let client = kube::Client::try_default()
                .await
                .map_err(|source| Error::KubeConfig {
                    what: "--source kubernetes",
                    source,
                })?;
            info!("config from the Kubernetes API");
            let source = kube_source::KubeSource::new(client.clone(), metrics.clone(), KUBE_SETTLE);
            let status = StatusWriting {
                writer: route_status::StatusWriter::new(
                    client,
                    metrics.clone(),
                    route_status::SETTLE,
                ),
                refused: source.refused_routes(),
            };
            Ok((Arc::default(), Some(Box::new(source)), Some(status)))
        }
    }
}

/// Runs until `shutdown` is cancelled, then lets calls in flight finish for at most
/// [`SHUTDOWN_GRACE`].
/// Configuration errors ([`Error::is_config`]) are all found before a port is bound.
pub async fn run(args: Args, shutdown: CancellationToken) -> Result<(), Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let metrics = Arc::new(Metrics::new().map_err(Error::Metrics)?);
    let issuer = IssuerSource::load(args.issuer.clone(), &args.trust_domain, provider.clone())
        .map_err(Error::Issuer)?;
    metrics.issuer_in_force(&issuer.current());
    let own_id = SpiffeId::new(&args.trust_domain, &args.namespace, &args.service_account)
        .map_err(Error::OwnIdentity)?;
    let serving = Arc::new(
        ServingCert::new(
            own_id,
            args.cert_lifetime,
            provider.clone(),
            &issuer.current(),
        )
        .map_err(Error::Serving)?,
    );

    let (reviewer, tokens_file): (Arc<dyn TokenReviewer>, _) = match &args.tokens {
        Some(path) => {
            let file = tokens::TokensFile::load(path.clone()).map_err(Error::Tokens)?;
            info!(path = %path.display(), tokens = file.len(), "local mode: tokens from a file");
            (file.clone(), Some(file))
        }
        None => {
            let client = kube::Client::try_default()
                .await
                .map_err(|source| Error::KubeConfig {
                    what: "no --tokens file, so TokenReview",
                    source,
                })?;
            info!(
                audience = kube_tokens::AUDIENCE,
                "tokens checked with Kubernetes TokenReview"
            );
            (
                Arc::new(kube_tokens::KubeTokenReviewer::new(
                    client,
                    kube_tokens::AUDIENCE,
                )),
                None,
            )
        }
    };

    let work = ConfigThread::start().map_err(Error::ConfigThread)?;
    let (snapshot, source, status) = config_source(&args, &metrics, &work).await?;
    let hub = hub::Hub::new(
        discovery::Endpoints::new(&args.trust_domain),
        snapshot.clone(),
        metrics.discovery.clone(),
    );
    let route_hub = hub::Hub::new(routes::Routes, snapshot.clone(), metrics.routes.clone());
    // A watched source publishes its first state once it has read the whole cluster: until
    // then, an empty index would tell every proxy that no Service exists.
    if source.as_ref().is_some_and(|s| !s.ready_at_start()) {
        hub.set_synced(false);
        route_hub.set_synced(false);
    }

    let grpc = TcpListener::bind(args.grpc_addr)
        .await
        .map_err(|e| bind_error("gRPC", args.grpc_addr, e))?;
    let admin = TcpListener::bind(args.admin_addr)
        .await
        .map_err(|e| bind_error("admin", args.admin_addr, e))?;
    let grpc_addr = local_addr(&grpc, "gRPC", args.grpc_addr)?;
    let admin_addr = local_addr(&admin, "admin", args.admin_addr)?;
    info!(grpc = %grpc_addr, admin = %admin_addr, identity = %serving.id(), "control plane serving");
    if let Some(path) = &args.addresses_file {
        addresses::write(path, grpc_addr, admin_addr)?;
    }

    let identity = IdentityService::new(
        args.trust_domain.clone(),
        issuer.clone(),
        reviewer,
        args.cert_lifetime,
        metrics.clone(),
    );
    let tasks = TaskTracker::new();
    let (tx, rx) = tokio::sync::watch::channel(snapshot);
    tasks.spawn(admin::serve(
        admin,
        metrics.clone(),
        rx.clone(),
        shutdown.clone(),
    ));
    if let Some(source) = source {
        info!(source = source.name(), "watching the config source");
        tasks.spawn(source.run(tx, shutdown.clone()));
        tasks.spawn(
            hub.clone()
                .follow(rx.clone(), work.clone(), shutdown.clone()),
        );
        if let Some(status) = status {
            tasks.spawn(
                status
                    .writer
                    .run(rx.clone(), status.refused, shutdown.clone()),
            );
        }
        tasks.spawn(route_hub.clone().follow(rx, work, shutdown.clone()));
    }
    let destination =
        discovery::DestinationService::new(hub, &args.cluster_domain, shutdown.clone());
    let routes = routes::RouteService::new(route_hub, &args.cluster_domain, shutdown.clone());
    let identify = peer::Identify::new(issuer.clone(), &args.trust_domain, provider.clone());
    tasks.spawn(maintain(
        issuer,
        tokens_file,
        serving.clone(),
        metrics,
        args.reload_interval,
        shutdown.clone(),
    ));
    grpc::serve(
        grpc,
        serving.server_config().map_err(Error::Serving)?,
        grpc::Served {
            identity,
            destination,
            routes,
        },
        identify,
        grpc::Limits::default(),
        shutdown,
        tasks.clone(),
    )
    .await;
    tasks.close();
    // Connections drain gracefully, but a client that never finishes its request must not
    // keep the process alive: past the grace, return; what is left ends with the runtime.
    if tokio::time::timeout(SHUTDOWN_GRACE, tasks.wait())
        .await
        .is_err()
    {
        warn!(
            grace = ?SHUTDOWN_GRACE,
            connections = tasks.len(),
            "calls still in flight after the shutdown grace; exiting without them"
        );
    }
    Ok(())
}

/// Every `interval`: take changed issuer and tokens files, and renew the serving certificate
/// when due or when the issuer changed.
async fn maintain(
    issuer: Arc<IssuerSource>,
    tokens: Option<Arc<tokens::TokensFile>>,
    serving: Arc<ServingCert>,
    metrics: Arc<Metrics>,
    interval: Duration,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut issuer_file = Watched::new("issuer", "the previous issuer stays in force");
    let mut tokens_file = Watched::new("tokens", "the previous tokens stay in force");
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let mut renew = serving.due();
        if issuer_file.seen(issuer.reload(), &metrics) {
            let current = issuer.current();
            info!(dir = %issuer.dir().display(), not_after = %current.ca.not_after(), anchors = current.anchors.len(), "new issuer in force");
            metrics.issuer_in_force(&current);
            renew = true;
        }
        if renew {
            if let Err(e) = serving.issue(&issuer.current()) {
                warn!(error = %e, "renewing the serving certificate failed; will retry");
            }
        }
        if let Some(tokens) = &tokens {
            if tokens_file.seen(tokens.reload(), &metrics) {
                info!(path = %tokens.path().display(), tokens = tokens.len(), "tokens file reloaded");
            }
        }
    }
}

/// The reload outcomes of one watched file set. A refusal repeats every tick until the files
/// are fixed, so each distinct one is logged and counted once; back to the files in force (a
/// bad edit reverted), the next bad edit, even the same one, is news again.
struct Watched {
    file: &'static str,
    kept: &'static str,
    last_error: Option<String>,
}

impl Watched {
    fn new(file: &'static str, kept: &'static str) -> Self {
        Self {
            file,
            kept,
            last_error: None,
        }
    }

    /// Records one reload's result; returns whether new files took effect.
    fn seen<E: std::fmt::Display>(&mut self, result: Result<bool, E>, metrics: &Metrics) -> bool {
        match result {
            Ok(applied) => {
                self.last_error = None;
                if applied {
                    metrics.reload(self.file, true);
                }
                applied
            }
            Err(e) => {
                let msg = e.to_string();
                if self.last_error.as_ref() != Some(&msg) {
                    warn!(error = %msg, "{} files refused; {}", self.file, self.kept);
                    metrics.reload(self.file, false);
                    self.last_error = Some(msg);
                }
                false
            }
        }
    }
}

fn bind_error(what: &'static str, addr: SocketAddr, source: std::io::Error) -> Error {
    Error::Bind { what, addr, source }
}

/// The address `listener`, bound for `asked`, got (the port, when asked for port 0).
fn local_addr(
    listener: &TcpListener,
    what: &'static str,
    asked: SocketAddr,
) -> Result<SocketAddr, Error> {
    listener
        .local_addr()
        .map_err(|e| bind_error(what, asked, e))
}

/// Sets up logging from `--log` and `--log-format`.
pub fn init_logging(filter: &str, format: &str) -> Result<(), Error> {
    let env_filter =
        tracing_subscriber::EnvFilter::try_new(filter).map_err(|source| Error::LogFilter {
            filter: filter.to_string(),
            source,
        })?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(env_filter)
        .with_writer(std::io::stderr);
    match format {
        "plain" => builder.init(),
        "json" => builder.json().init(),
        other => return Err(Error::LogFormat(other.to_string())),
    }
    Ok(())
}
