//! The admin port (9990): `/metrics`, `/ready`, `/live`, and `/routes`: every HTTPRoute's
//! conditions per Service parent and every TrafficSplit's state, for the config in force (in
//! local mode the only place they show besides the log; in Kubernetes mode also what the
//! routes' status says).

use std::{convert::Infallible, sync::Arc, time::Duration};

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::{body::Incoming, service::service_fn};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::json;
use tokio::{net::TcpListener, sync::watch};
use tokio_util::sync::CancellationToken;
use weft_control_plane_config::{model::Snapshot, routes};

use crate::metrics::Metrics;

/// Serves the admin endpoints until `shutdown`; `/routes` reads the config in force from
/// `snapshot`.
pub async fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    snapshot: watch::Receiver<Arc<Snapshot>>,
    shutdown: CancellationToken,
) {
    loop {
        let (tcp, _) = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let metrics = metrics.clone();
        let shutdown = shutdown.clone();
        let snapshot = snapshot.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let rsp = respond(&req, &metrics, &snapshot, &shutdown);
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

fn respond(
    req: &Request<Incoming>,
    metrics: &Metrics,
    snapshot: &watch::Receiver<Arc<Snapshot>>,
    shutdown: &CancellationToken,
) -> Response<Full<Bytes>> {
    let (status, content_type, body) = match (req.method(), req.uri().path()) {
        (&Method::GET, "/metrics") => (
            StatusCode::OK,
            "text/plain; version=0.0.4; charset=utf-8",
            metrics.encode(),
        ),
        (&Method::GET, "/live") => (StatusCode::OK, "text/plain", "live\n".to_string()),
        (&Method::GET, "/ready") if shutdown.is_cancelled() => (
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain",
            "shutting down\n".to_string(),
        ),
        (&Method::GET, "/ready") => (StatusCode::OK, "text/plain", "ready\n".to_string()),
        (&Method::GET, "/routes") => {
            let snapshot = snapshot.borrow().clone();
            let body = serde_json::to_string_pretty(&routes_view(&snapshot)).unwrap_or_default();
            (StatusCode::OK, "application/json", body + "\n")
        }
        _ => (
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found: try /metrics, /ready, /live, /routes\n".to_string(),
        ),
    };
    let mut rsp = Response::new(Full::new(Bytes::from(body)));
    *rsp.status_mut() = status;
    if let Ok(v) = content_type.parse() {
        rsp.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    rsp
}

/// The routes' conditions and the splits' states, as `/routes` shows them.
fn routes_view(snapshot: &Snapshot) -> serde_json::Value {
    let routes: Vec<serde_json::Value> = routes::route_statuses(snapshot)
        .into_iter()
        .map(|status| {
            let parents: Vec<serde_json::Value> = status
                .parents
                .iter()
                .map(|parent| {
                    let conditions: Vec<serde_json::Value> = parent
                        .conditions
                        .iter()
                        .map(|c| {
                            json!({
                                "type": c.type_,
                                "status": if c.status { "True" } else { "False" },
                                "reason": c.reason,
                                "message": c.message,
                            })
                        })
                        .collect();
                    json!({"parentRef": parent.parent_ref, "conditions": conditions})
                })
                .collect();
            json!({
                "route": format!("{}/{}", status.route.0, status.route.1),
                "parents": parents,
                "ignoredServiceParents": status.ignored_service_parents,
            })
        })
        .collect();
    let splits: Vec<serde_json::Value> = routes::split_statuses(snapshot)
        .into_iter()
        .map(|split| {
            json!({
                "split": format!("{}/{}", split.split.0, split.split.1),
                "inForce": split.in_force,
                "missingBackends": split.missing_backends,
                "message": split.message,
            })
        })
        .collect();
    json!({"httpRoutes": routes, "trafficSplits": splits})
}
