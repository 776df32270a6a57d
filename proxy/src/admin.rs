//! The admin server on its own thread and runtime, so a busy data path never delays a probe
//! or a scrape.
//!
//! `GET /live`, `GET /ready`, `GET /metrics`, `GET /config`, `GET|PUT /log-level`,
//! `POST /shutdown`, `GET /tap`. `/ready` is 200 once the proxy holds a certificate (with a
//! control plane) and, with the redirect check on, the last check proved the redirection.
//! Anything that changes the proxy (`PUT /log-level`, `POST /shutdown`) is accepted from
//! loopback only: the port is reachable from the pod network so Prometheus can scrape it.
//! `/tap` shows the proxy's requests, so it is served to loopback clients (a port-forward on
//! Kubernetes arrives there) and to the identities `WEFT_TAP_IDENTITIES` names, proved over
//! mTLS: with a control plane, a connection whose first byte opens a TLS handshake is
//! terminated with the proxy's own certificate and must present one of the mesh's; over mTLS
//! the caller's SPIFFE ID decides, wherever it connects from.
//!
//! `GET /tap?direction=&method=&authority=&path=&limit=&headers=` streams the requests the
//! proxy serves as JSON lines (`weft_proxy_tap`): 200 and the stream, or at once an error that
//! says why (400 for a bad query naming the parameter, 403 from elsewhere than loopback, 404
//! with `WEFT_TAP=off`, 503 when the most taps are open).

use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Either, Full, Limited};
use hyper::{body::Incoming, server::conn::http1, service::service_fn};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};
use weft_proxy_identity::MeshTls;
use weft_proxy_metrics::Metrics;
use weft_proxy_tap::{Spec, Tap};

use crate::{drain::Drain, redirect_check::RedirectStatus, telemetry::LogHandle};

/// The largest body `PUT /log-level` accepts.
const MAX_LOG_LEVEL_BODY: usize = 4 * 1024;

/// What the admin server reports on and acts on.
#[derive(Clone, Debug)]
pub struct Admin {
    pub metrics: Arc<Metrics>,
    pub ready: Arc<AtomicBool>,
    pub drain: Drain,
    pub log: Option<LogHandle>,
    /// The proxy's current view of its destinations, once discovery runs.
    pub config: ConfigView,
    /// The redirect check's last outcome; `None` when the check is off.
    pub redirect: Option<Arc<RedirectStatus>>,
    /// The proxy's tap; `None` with `WEFT_TAP=off`.
    pub tap: Option<Arc<Tap>>,
    /// The SPIFFE IDs that may tap over mTLS besides loopback.
    pub tap_identities: Arc<[String]>,
    /// The proxy's mesh TLS, with a control plane: the admin port then also takes mTLS.
    pub tls: Option<Arc<MeshTls>>,
}

/// Who is calling: its address and whether over mTLS, with which SPIFFE ID.
#[derive(Clone, Debug)]
struct Caller {
    addr: SocketAddr,
    tls: bool,
    identity: Option<String>,
}

/// The TLS handshake's first byte (a handshake record).
const TLS_HANDSHAKE: u8 = 0x16;
/// How long a connection may take to send its first byte, and a TLS client its handshake.
const FIRST_BYTE_PATIENCE: Duration = Duration::from_secs(10);

/// What the admin server answers with: a whole body, or a tap's stream.
type AdminBody = Either<Full<Bytes>, weft_proxy_tap::Stream>;

/// Renders `/config`: set once when discovery starts.
#[derive(Clone, Default)]
pub struct ConfigView(Arc<std::sync::OnceLock<ViewFn>>);

type ViewFn = Box<dyn Fn() -> serde_json::Value + Send + Sync>;

impl std::fmt::Debug for ConfigView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConfigView")
            .field("set", &self.0.get().is_some())
            .finish()
    }
}

impl ConfigView {
    /// Installs the renderer; a second call is ignored.
    pub fn set(&self, view: impl Fn() -> serde_json::Value + Send + Sync + 'static) {
        let _ = self.0.set(Box::new(view));
    }

    fn render(&self) -> serde_json::Value {
        match self.0.get() {
            Some(view) => view(),
            None => serde_json::json!({ "control_plane": null, "destinations": [] }),
        }
    }
}

/// How often the admin thread looks at what the allocator holds free.
const TRIM_EVERY: Duration = Duration::from_secs(2);

/// Free heap grown by more than this since the last look is given back to the system.
const TRIM_ABOVE: usize = 4 << 20;

/// Every [`TRIM_EVERY`] until `stop`, gives back the heap a burst of connections freed (see
/// `weft_proxy_heap`). On the admin thread, so the data path never runs the walk itself; it
/// waits only if it allocates in an arena while that arena is walked.
async fn trim_heap(stop: CancellationToken) {
    let mut trimmer = weft_proxy_heap::Trimmer::new(TRIM_ABOVE);
    let mut tick = tokio::time::interval(TRIM_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        if let weft_proxy_heap::Tick::Trimmed { free } = trimmer.tick() {
            debug!(
                free_kib = free >> 10,
                "gave the heap's free pages back to the system"
            );
        }
    }
}

/// Serves `listener` on a dedicated thread until `stop` fires. The listener was bound by the
/// caller, so bind errors surface before anything starts.
pub fn spawn(
    admin: Admin,
    listener: std::net::TcpListener,
    stop: CancellationToken,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    std::thread::Builder::new()
        .name("weft-admin".into())
        .spawn(move || rt.block_on(serve(admin, listener, stop)))
}

async fn serve(admin: Admin, listener: std::net::TcpListener, stop: CancellationToken) {
    let listener = match listener
        .set_nonblocking(true)
        .and_then(|()| TcpListener::from_std(listener))
    {
        Ok(l) => l,
        Err(e) => {
            warn!(error = %e, "admin listener unusable");
            return;
        }
    };
    let admin = Arc::new(admin);
    tokio::spawn(trim_heap(stop.clone()));
    loop {
        let (stream, peer) = tokio::select! {
            () = stop.cancelled() => return,
            res = listener.accept() => match res {
                Ok(conn) => conn,
                Err(e) => {
                    debug!(error = %e, "admin accept failed");
                    continue;
                }
            },
        };
        let admin = admin.clone();
        tokio::spawn(async move {
            let mut first = [0u8; 1];
            let tls = match &admin.tls {
                None => None,
                Some(tls) => {
                    match tokio::time::timeout(FIRST_BYTE_PATIENCE, stream.peek(&mut first)).await {
                        Ok(Ok(1)) if first[0] == TLS_HANDSHAKE => Some(tls.clone()),
                        Ok(Ok(_)) => None,
                        Ok(Err(_)) | Err(_) => return,
                    }
                }
            };
            match tls {
                None => {
                    let caller = Caller {
                        addr: peer,
                        tls: false,
                        identity: None,
                    };
                    serve_http(admin, caller, stream).await;
                }
                Some(tls) => {
                    let acceptor = tokio_rustls::TlsAcceptor::from(tls.server_config());
                    let stream =
                        match tokio::time::timeout(FIRST_BYTE_PATIENCE, acceptor.accept(stream))
                            .await
                        {
                            Ok(Ok(stream)) => stream,
                            Ok(Err(e)) => {
                                debug!(%peer, error = %e, "admin TLS handshake refused");
                                return;
                            }
                            Err(_) => return,
                        };
                    let identity = stream
                        .get_ref()
                        .1
                        .peer_certificates()
                        .and_then(|c| c.first())
                        .and_then(weft_certs::peer_identity)
                        .map(|id| id.to_string());
                    let caller = Caller {
                        addr: peer,
                        tls: true,
                        identity,
                    };
                    serve_http(admin, caller, stream).await;
                }
            }
        });
    }
}

/// Serves the admin HTTP/1.1 on one connection.
async fn serve_http<I>(admin: Arc<Admin>, caller: Caller, io: I)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let svc = service_fn(move |req| {
        let admin = admin.clone();
        let caller = caller.clone();
        async move {
            let rsp = if req.uri().path() == "/tap" {
                tap(&admin, &caller, &req)
            } else {
                handle(&admin, caller.addr, req).await.map(Either::Left)
            };
            Ok::<_, Infallible>(rsp)
        }
    });
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .serve_connection(TokioIo::new(io), svc);
    if let Err(e) = conn.await {
        debug!(error = %e, "admin connection failed");
    }
}

async fn handle(admin: &Admin, peer: SocketAddr, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let local = may_change_state(peer);
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/live") => text(StatusCode::OK, "live\n"),
        (&Method::GET, "/ready") => {
            if admin.drain.is_draining() {
                text(StatusCode::SERVICE_UNAVAILABLE, "draining\n")
            } else if !admin.ready.load(Ordering::Acquire) {
                text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
            } else if let Some(why) = admin.redirect.as_ref().and_then(|r| r.not_ready()) {
                text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("not ready: {why}\n"),
                )
            } else {
                text(StatusCode::OK, "ready\n")
            }
        }
        (&Method::GET, "/metrics") => match admin.metrics.encode() {
            Ok(body) => {
                let mut rsp = Response::new(Full::new(Bytes::from(body)));
                rsp.headers_mut().insert(
                    header::CONTENT_TYPE,
                    header::HeaderValue::from_static(Metrics::content_type()),
                );
                rsp
            }
            Err(e) => text(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("encoding metrics failed: {e}\n"),
            ),
        },
        (&Method::GET, "/config") => {
            let mut view = admin.config.render();
            view["redirect_check"] = match &admin.redirect {
                Some(status) => status.view(),
                None => serde_json::json!({ "enabled": false }),
            };
            let body = serde_json::to_vec_pretty(&view).unwrap_or_default();
            let mut rsp = Response::new(Full::new(Bytes::from(body)));
            rsp.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static("application/json"),
            );
            rsp
        }
        (&Method::GET, "/log-level") => match &admin.log {
            Some(log) => text(StatusCode::OK, format!("{}\n", log.get())),
            None => text(
                StatusCode::NOT_FOUND,
                "no run-time log control in this process\n",
            ),
        },
        (&Method::PUT, "/log-level") if !local => forbidden(),
        (&Method::PUT, "/log-level") => {
            let Some(log) = &admin.log else {
                return text(
                    StatusCode::NOT_FOUND,
                    "no run-time log control in this process\n",
                );
            };
            let body = match Limited::new(req.into_body(), MAX_LOG_LEVEL_BODY)
                .collect()
                .await
            {
                Ok(b) => b.to_bytes(),
                Err(e) => return text(StatusCode::PAYLOAD_TOO_LARGE, format!("{e}\n")),
            };
            let Ok(filter) = std::str::from_utf8(&body) else {
                return text(StatusCode::BAD_REQUEST, "the log filter must be UTF-8\n");
            };
            match log.set(filter.trim()) {
                Ok(()) => {
                    info!(filter = filter.trim(), "log filter changed");
                    text(StatusCode::OK, format!("{}\n", filter.trim()))
                }
                Err(e) => text(StatusCode::BAD_REQUEST, format!("{e}\n")),
            }
        }
        (&Method::POST, "/shutdown") if !local => forbidden(),
        (&Method::POST, "/shutdown") => {
            info!(%peer, "shutdown requested through the admin server");
            admin.drain.start();
            text(StatusCode::OK, "shutdown\n")
        }
        (_, "/live" | "/ready" | "/metrics" | "/log-level" | "/shutdown") => {
            text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n")
        }
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

/// `GET /tap`: the stream, or an answer saying why not.
fn tap(admin: &Admin, caller: &Caller, req: &Request<Incoming>) -> Response<AdminBody> {
    let peer = caller.addr;
    let refused = |status, why: String| text(status, why).map(Either::Left);
    if req.method() != Method::GET {
        return refused(
            StatusCode::METHOD_NOT_ALLOWED,
            "method not allowed\n".into(),
        );
    }
    let Some(tap) = &admin.tap else {
        return refused(
            StatusCode::NOT_FOUND,
            "tap is off on this proxy (WEFT_TAP=off)\n".into(),
        );
    };
    if !may_tap(caller, &admin.tap_identities) {
        let why = match (caller.tls, &caller.identity) {
            (true, Some(id)) => format!(
                "over mTLS, tap is served to the identities WEFT_TAP_IDENTITIES names, and {id} \
                 is not one of them"
            ),
            (true, None) => "over mTLS, tap needs a certificate with one SPIFFE ID".to_string(),
            (false, _) => format!(
                "without mTLS, tap is served to loopback clients only, and {peer} is not one: \
                 run the tap inside the pod (weftctl lab exec POD -- weftctl tap) or through a \
                 port-forward (weftctl tap deploy/NAME)"
            ),
        };
        return refused(StatusCode::FORBIDDEN, format!("{why}\n"));
    }
    let spec = match Spec::parse(req.uri().query()) {
        Ok(spec) => spec,
        Err(e) => return refused(StatusCode::BAD_REQUEST, format!("bad tap query: {e}\n")),
    };
    match tap.subscribe(spec) {
        Ok(stream) => {
            debug!(%peer, "tap opened");
            let mut rsp = Response::new(Either::Right(stream));
            let headers = rsp.headers_mut();
            headers.insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static("application/x-ndjson"),
            );
            headers.insert(
                header::CACHE_CONTROL,
                header::HeaderValue::from_static("no-store"),
            );
            rsp
        }
        Err(busy) => refused(StatusCode::SERVICE_UNAVAILABLE, format!("{busy}\n")),
    }
}

/// Whether `caller` may tap: over mTLS, as one of `allowed` (wherever it connects from);
/// otherwise from loopback.
fn may_tap(caller: &Caller, allowed: &[String]) -> bool {
    if caller.tls {
        caller
            .identity
            .as_ref()
            .is_some_and(|id| allowed.iter().any(|a| a == id))
    } else {
        may_change_state(caller.addr)
    }
}

/// Whether `peer` may change the proxy (log level, shutdown): loopback only, including an IPv4
/// loopback client seen on the dual-stack listener as `::ffff:127.0.0.1`.
fn may_change_state(peer: SocketAddr) -> bool {
    peer.ip().to_canonical().is_loopback()
}

fn forbidden() -> Response<Full<Bytes>> {
    text(StatusCode::FORBIDDEN, "accepted from loopback only\n")
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut rsp = Response::new(Full::new(body.into()));
    *rsp.status_mut() = status;
    rsp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    rsp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_and_the_allowed_identities_may_tap() {
        let allowed = ["spiffe://cluster.local/ns/weft/sa/weft-tap".to_string()];
        let caller = |addr: &str, identity: Option<&str>| Caller {
            addr: addr.parse().expect("addr"),
            tls: identity.is_some(),
            identity: identity.map(str::to_string),
        };
        assert!(may_tap(&caller("127.0.0.1:1", None), &allowed));
        assert!(
            !may_tap(
                &caller("127.0.0.1:1", Some("spiffe://cluster.local/ns/shop/sa/web")),
                &allowed
            ),
            "over mTLS the identity decides, even from loopback"
        );
        assert!(may_tap(
            &caller(
                "198.18.0.5:1",
                Some("spiffe://cluster.local/ns/weft/sa/weft-tap")
            ),
            &allowed
        ));
        assert!(!may_tap(
            &caller(
                "198.18.0.5:1",
                Some("spiffe://cluster.local/ns/shop/sa/web")
            ),
            &allowed
        ));
        assert!(!may_tap(&caller("198.18.0.5:1", None), &allowed));
        assert!(!may_tap(
            &caller(
                "198.18.0.5:1",
                Some("spiffe://cluster.local/ns/weft/sa/weft-tap")
            ),
            &[]
        ));
    }

    #[test]
    fn only_loopback_peers_change_state() {
        for ok in [
            "127.0.0.1:1",
            "127.9.9.9:1",
            "[::1]:1",
            "[::ffff:127.0.0.1]:1",
        ] {
            assert!(may_change_state(ok.parse().expect("addr")), "{ok}");
        }
        for no in [
            "198.18.0.5:1",
            "[2001:2::5]:1",
            "[::ffff:198.18.0.5]:1",
            "0.0.0.0:1",
        ] {
            assert!(!may_change_state(no.parse().expect("addr")), "{no}");
        }
    }
}
