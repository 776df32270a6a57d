//! The simulated proxies. Each dials the control plane as a proxy does (TCP, TLS 1.3 checked
//! against the trust anchors and the control plane's SPIFFE ID, HTTP/2), then opens one `Watch`
//! per destination on that one connection and keeps it open. Every update is stamped on
//! arrival with the monotonic clock and reported, with what it said, on one channel.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::{
    net::TcpStream,
    sync::{mpsc, Semaphore},
    task::JoinSet,
    time::Instant,
};
use tokio_rustls::TlsConnector;
use weft_api::{
    client::H2Connection,
    destination::{self as pb, destination_client::DestinationClient},
};
use weft_certs::{SpiffeId, SpiffeServerVerifier, TrustBundle};

/// The control plane's identity with its default flags, which the proxies check.
const CONTROL_PLANE_ID: (&str, &str, &str) = ("cluster.local", "weft", "weft-control-plane");
/// Bound on one proxy's TCP + TLS + HTTP/2 set-up.
const DIAL_TIMEOUT: Duration = Duration::from_secs(30);

/// Dials the control plane as a proxy: TLS 1.3 only, ALPN `h2`, the server's certificate
/// checked against the anchors and its SPIFFE ID.
#[derive(Clone)]
pub struct Dialer {
    addr: SocketAddr,
    tls: TlsConnector,
}

impl std::fmt::Debug for Dialer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dialer").field("addr", &self.addr).finish()
    }
}

impl Dialer {
    pub fn new(addr: SocketAddr, anchors_pem: &str) -> anyhow::Result<Dialer> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let bundle = TrustBundle::from_pem(anchors_pem).context("the trust anchors")?;
        let (td, ns, sa) = CONTROL_PLANE_ID;
        let expected = SpiffeId::new(td, ns, sa).context("the control plane's SPIFFE ID")?;
        let verifier = SpiffeServerVerifier::new(bundle, expected, provider.as_ref());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .context("TLS 1.3")?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_no_client_auth();
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Dialer {
            addr,
            tls: TlsConnector::from(Arc::new(config)),
        })
    }

    async fn dial(&self) -> anyhow::Result<DestinationClient<H2Connection>> {
        let addr = self.addr;
        let tcp = TcpStream::connect(addr)
            .await
            .with_context(|| format!("TCP connect to the control plane at {addr}"))?;
        tcp.set_nodelay(true)?;
        let name = ServerName::try_from("control-plane")?;
        let tls = self
            .tls
            .connect(name, tcp)
            .await
            .with_context(|| format!("TLS handshake with the control plane at {addr}"))?;
        let conn = H2Connection::handshake(TokioIo::new(tls))
            .await
            .with_context(|| format!("HTTP/2 handshake with the control plane at {addr}"))?;
        Ok(DestinationClient::with_origin(
            conn,
            "https://control-plane".parse()?,
        ))
    }
}

/// What one update said, in short.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Got {
    /// A whole endpoint set: how many, and the identity they all share (`None` if they differ
    /// or one is not meshed).
    Snapshot {
        endpoints: usize,
        identity: Option<String>,
    },
    Delta {
        upserts: usize,
        removed: usize,
    },
    NotAService,
    Empty,
}

impl Got {
    fn of(update: &pb::Update) -> Got {
        match &update.kind {
            Some(pb::update::Kind::Snapshot(s)) => {
                let mut ids = s
                    .endpoints
                    .iter()
                    .map(|e| e.mesh.as_ref().map(|m| m.identity.as_str()));
                let first = ids.next().flatten();
                let identity = match first {
                    Some(id) if ids.all(|i| i == Some(id)) => Some(id.to_string()),
                    _ => None,
                };
                Got::Snapshot {
                    endpoints: s.endpoints.len(),
                    identity,
                }
            }
            Some(pb::update::Kind::Delta(d)) => Got::Delta {
                upserts: d.upserts.len(),
                removed: d.removed.len(),
            },
            Some(pb::update::Kind::NotAService(_)) => Got::NotAService,
            None => Got::Empty,
        }
    }
}

/// What the proxies report.
#[derive(Debug)]
pub enum Event {
    /// Proxy `proxy`'s connection is up.
    Connected { proxy: usize, at: Instant },
    /// Subscriber `sub` received an update at `at`.
    Update { sub: usize, at: Instant, got: Got },
    /// Subscriber `sub`'s connection or stream failed.
    Failed { sub: usize, error: String },
}

/// One simulated proxy: its index and the (subscriber, target) pairs it watches.
#[derive(Clone, Debug)]
pub struct Proxy {
    pub index: usize,
    pub watches: Vec<(usize, String)>,
}

/// Every simulated proxy, running; dropping it aborts them all, which closes their streams
/// and connections.
#[derive(Debug)]
pub struct Fleet {
    _tasks: JoinSet<()>,
}

impl Fleet {
    /// Starts every proxy at once, at most `dial_concurrency` dialling at a time (as proxies
    /// coming up together would back off from a full accept queue), each opening all its
    /// watches as soon as its connection is up. Must be called on a Tokio runtime.
    pub fn start(
        dialer: &Dialer,
        proxies: Vec<Proxy>,
        dial_concurrency: usize,
        events: mpsc::UnboundedSender<Event>,
    ) -> Fleet {
        let permits = Arc::new(Semaphore::new(dial_concurrency));
        let mut tasks = JoinSet::new();
        for proxy in proxies {
            tasks.spawn(run_proxy(
                dialer.clone(),
                proxy,
                permits.clone(),
                events.clone(),
            ));
        }
        Fleet { _tasks: tasks }
    }
}

async fn run_proxy(
    dialer: Dialer,
    proxy: Proxy,
    permits: Arc<Semaphore>,
    events: mpsc::UnboundedSender<Event>,
) {
    let dialled = {
        let _permit = permits.acquire().await;
        tokio::time::timeout(DIAL_TIMEOUT, dialer.dial()).await
    };
    let client = match dialled {
        Ok(Ok(client)) => client,
        Ok(Err(e)) => return fail_all(&proxy, &format!("{e:#}"), &events),
        Err(_) => {
            return fail_all(
                &proxy,
                &format!("connecting took more than {DIAL_TIMEOUT:?}"),
                &events,
            )
        }
    };
    let _ = events.send(Event::Connected {
        proxy: proxy.index,
        at: Instant::now(),
    });
    let proxy_id = format!("spiffe://cluster.local/ns/bench/sa/proxy-{}", proxy.index);
    let streams = proxy.watches.into_iter().map(|(sub, target)| {
        let client = client.clone();
        let events = events.clone();
        let proxy_id = proxy_id.clone();
        async move {
            if let Err(e) = watch(client, sub, target, proxy_id, &events).await {
                let _ = events.send(Event::Failed {
                    sub,
                    error: format!("{e:#}"),
                });
            }
        }
    });
    futures_util::future::join_all(streams).await;
}

fn fail_all(proxy: &Proxy, error: &str, events: &mpsc::UnboundedSender<Event>) {
    for (sub, _) in &proxy.watches {
        let _ = events.send(Event::Failed {
            sub: *sub,
            error: format!("proxy {}: {error}", proxy.index),
        });
    }
}

/// One subscriber: watches `target` and reports every update until the stream ends.
async fn watch(
    mut client: DestinationClient<H2Connection>,
    sub: usize,
    target: String,
    proxy_id: String,
    events: &mpsc::UnboundedSender<Event>,
) -> anyhow::Result<()> {
    let request = pb::WatchRequest {
        target: target.clone(),
        proxy_id,
        service: None,
    };
    let mut stream = client
        .watch(request)
        .await
        .with_context(|| format!("Watch {target}"))?
        .into_inner();
    while let Some(update) = stream
        .message()
        .await
        .with_context(|| format!("Watch {target}: reading the stream"))?
    {
        let at = Instant::now();
        let _ = events.send(Event::Update {
            sub,
            at,
            got: Got::of(&update),
        });
    }
    anyhow::bail!("Watch {target}: the control plane ended the stream")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint(identity: Option<&str>) -> pb::Endpoint {
        pb::Endpoint {
            address: "198.18.0.1:8080".into(),
            weight: 1,
            mesh: identity.map(|id| pb::MeshEndpoint {
                identity: id.into(),
                inbound_port: 15143,
            }),
            pod: String::new(),
            zone: String::new(),
        }
    }

    fn snapshot(endpoints: Vec<pb::Endpoint>) -> pb::Update {
        pb::Update {
            version: 1,
            kind: Some(pb::update::Kind::Snapshot(pb::Snapshot {
                service: None,
                endpoints,
            })),
        }
    }

    #[test]
    fn a_snapshot_is_summed_up_with_its_shared_identity() {
        let a = "spiffe://cluster.local/ns/bench/sa/a";
        assert_eq!(
            Got::of(&snapshot(vec![endpoint(Some(a)), endpoint(Some(a))])),
            Got::Snapshot {
                endpoints: 2,
                identity: Some(a.into())
            }
        );
        let mixed = snapshot(vec![endpoint(Some(a)), endpoint(None)]);
        assert_eq!(
            Got::of(&mixed),
            Got::Snapshot {
                endpoints: 2,
                identity: None
            }
        );
        let delta = pb::Update {
            version: 2,
            kind: Some(pb::update::Kind::Delta(pb::Delta {
                upserts: vec![],
                removed: vec!["198.18.0.1:8080".into()],
            })),
        };
        assert_eq!(
            Got::of(&delta),
            Got::Delta {
                upserts: 0,
                removed: 1
            }
        );
    }
}
