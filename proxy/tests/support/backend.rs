//! Test backends for load balancing: HTTP/1.1 servers on their own loopback address that answer
//! with their name, count what they served, and can be made slow or failing at run time.

use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::{
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// One backend; stops accepting when dropped.
pub struct Backend {
    pub name: String,
    pub addr: SocketAddr,
    state: Arc<BackendState>,
    task: tokio::task::JoinHandle<()>,
}

#[derive(Default)]
struct BackendState {
    served: AtomicUsize,
    delay_ms: AtomicU64,
    failing: AtomicBool,
}

impl Backend {
    /// Serves on `ip:0` (a loopback address: every 127.0.0.0/8 address is local on Linux).
    pub async fn start(name: &str, ip: [u8; 4]) -> Self {
        let listener = TcpListener::bind(SocketAddr::from((ip, 0)))
            .await
            .expect("bind backend");
        let addr = listener.local_addr().expect("addr");
        let state = Arc::new(BackendState::default());
        let (accept_state, body) = (state.clone(), Bytes::from(name.to_string()));
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (state, body) = (accept_state.clone(), body.clone());
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |_req| {
                        let (state, body) = (state.clone(), body.clone());
                        async move {
                            let delay = state.delay_ms.load(Ordering::SeqCst);
                            if delay > 0 {
                                tokio::time::sleep(Duration::from_millis(delay)).await;
                            }
                            state.served.fetch_add(1, Ordering::SeqCst);
                            let mut rsp = Response::new(Full::new(body));
                            if state.failing.load(Ordering::SeqCst) {
                                *rsp.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
                            }
                            Ok::<_, Infallible>(rsp)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Self {
            name: name.to_string(),
            addr,
            state,
            task,
        }
    }

    /// Requests answered so far.
    pub fn served(&self) -> usize {
        self.state.served.load(Ordering::SeqCst)
    }

    /// Every answer waits this long first.
    pub fn set_delay(&self, delay: Duration) {
        self.state
            .delay_ms
            .store(delay.as_millis() as u64, Ordering::SeqCst);
    }

    /// Answers 500 while set.
    pub fn set_failing(&self, failing: bool) {
        self.state.failing.store(failing, Ordering::SeqCst);
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A free port on `ip` (bound and released): a Service cluster IP:port nothing listens on, so
/// a connection that bypassed discovery would be refused on loopback, never sent anywhere.
pub fn unused_addr(ip: [u8; 4]) -> SocketAddr {
    std::net::TcpListener::bind(SocketAddr::from((ip, 0)))
        .and_then(|l| l.local_addr())
        .expect("free port")
}

/// A Service with `cluster_ip` and one port, and an EndpointSlice with `endpoints`
/// (`(address, pod name)`; a pod name of `""` means no targetRef).
pub fn service_yaml(
    name: &str,
    cluster_ip: SocketAddr,
    endpoints: &[(SocketAddr, &str)],
) -> String {
    let mut ports: Vec<u16> = endpoints.iter().map(|(a, _)| a.port()).collect();
    ports.dedup();
    let mut yaml = format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: shop}}\n\
         spec:\n  clusterIP: {}\n  ports: [{{name: http, port: {}}}]\n",
        cluster_ip.ip(),
        cluster_ip.port()
    );
    // One slice per endpoint: each endpoint has its own port on loopback.
    for (i, (addr, pod)) in endpoints.iter().enumerate() {
        let target = if pod.is_empty() {
            String::new()
        } else {
            format!("\n    targetRef: {{kind: Pod, name: {pod}, namespace: shop}}")
        };
        yaml.push_str(&format!(
            "---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
             metadata: {{name: {name}-{i}, namespace: shop, labels: {{kubernetes.io/service-name: {name}}}}}\n\
             addressType: IPv4\nports: [{{name: http, port: {}}}]\n\
             endpoints:\n  - addresses: [{}]{target}\n",
            addr.port(),
            addr.ip()
        ));
    }
    yaml
}

/// A meshed pod: service account `sa`, its proxy's inbound on `inbound_port`, at `ip`.
pub fn meshed_pod_yaml(name: &str, sa: &str, ip: std::net::IpAddr, inbound_port: u16) -> String {
    format!(
        "---\napiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: shop}}\n\
         spec:\n  serviceAccountName: {sa}\n  containers:\n  - {{name: app, image: app}}\n\
         \x20 - name: weft-proxy\n    image: weft-proxy\n    ports: [{{name: weft-inbound, containerPort: {inbound_port}}}]\n\
         status: {{podIP: {ip}}}\n"
    )
}
