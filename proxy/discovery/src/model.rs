//! What the proxy holds of a destination, and how an update from the control plane applies
//! to it. Pure. Every field that crosses the wire is checked here: the control plane is
//! trusted, but an update that does not parse is refused whole, never half-applied.

use std::{collections::BTreeMap, net::SocketAddr, sync::Arc};

use weft_api::destination::{self as pb, update::Kind};
use weft_certs::SpiffeId;

/// What a proxy watches: the address a connection was for, or a Service port by name (a
/// backend Service of a route).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum DiscoveryTarget {
    /// `ip:port`: a Service's cluster IP (a redirected connection's original destination) or a
    /// pod's IP.
    Addr(SocketAddr),
    /// A Service port, asked for by name: the proxy does not know the cluster's DNS domain, so
    /// it sends the parts (`WatchRequest.service`), not a DNS name.
    Service(ServiceName),
}

impl From<SocketAddr> for DiscoveryTarget {
    fn from(addr: SocketAddr) -> Self {
        DiscoveryTarget::Addr(addr)
    }
}

impl From<ServiceName> for DiscoveryTarget {
    fn from(service: ServiceName) -> Self {
        DiscoveryTarget::Service(service)
    }
}

impl std::fmt::Display for DiscoveryTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DiscoveryTarget::Addr(a) => write!(f, "{a}"),
            DiscoveryTarget::Service(s) => write!(f, "{s}"),
        }
    }
}

impl DiscoveryTarget {
    /// The request that watches this target.
    pub fn watch_request(&self, proxy_id: String) -> pb::WatchRequest {
        match self {
            DiscoveryTarget::Addr(a) => pb::WatchRequest {
                target: a.to_string(),
                proxy_id,
                service: None,
            },
            DiscoveryTarget::Service(s) => pb::WatchRequest {
                // For the control plane's logs only (and what an older one, which does not
                // read `service`, refuses by name).
                target: format!("{}.{}.svc:{}", s.name, s.namespace, s.port),
                proxy_id,
                service: Some(pb::ServiceRef {
                    namespace: s.namespace.clone(),
                    name: s.name.clone(),
                    port: u32::from(s.port),
                }),
            },
        }
    }
}

/// What is known of one destination.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Resolved {
    /// Not yet answered.
    Pending,
    /// Not a Service: forward to the address as it is.
    NotAService,
    /// Balance over these endpoints.
    Service(Arc<EndpointSet>),
}

/// A Service port's endpoints.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndpointSet {
    /// The control plane's version of this state.
    pub version: u64,
    /// The Service and port; `None` for a pod's own address.
    pub service: Option<ServiceName>,
    pub endpoints: BTreeMap<SocketAddr, EndpointInfo>,
}

/// `namespace/name:port`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ServiceName {
    pub namespace: String,
    pub name: String,
    pub port: u16,
}

impl std::fmt::Display for ServiceName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}:{}", self.namespace, self.name, self.port)
    }
}

/// One endpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndpointInfo {
    /// Where the app's traffic is for.
    pub addr: SocketAddr,
    pub weight: u32,
    /// Reach it through its proxy with mTLS.
    pub mesh: Option<MeshPeer>,
    /// `namespace/name`, when known.
    pub pod: String,
    pub zone: String,
}

/// A meshed endpoint's proxy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MeshPeer {
    /// Who the peer must be.
    pub identity: SpiffeId,
    /// Its inbound port on the endpoint's IP.
    pub inbound_port: u16,
}

/// Why an update was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UpdateError {
    #[error("a delta with nothing to apply it to")]
    DeltaFirst,
    #[error("endpoint {address:?}: {reason}")]
    Endpoint { address: String, reason: String },
    #[error("service {0:?}: the port is not 1-65535")]
    ServicePort(String),
    #[error("routes: {0}")]
    Routes(String),
}

/// The update's kind, for metrics: `unknown` for a kind this proxy does not know.
pub fn kind(update: &pb::Update) -> &'static str {
    match update.kind {
        Some(Kind::Snapshot(_)) => "snapshot",
        Some(Kind::Delta(_)) => "delta",
        Some(Kind::NotAService(_)) => "not_a_service",
        None => "unknown",
    }
}

/// The state after `update`, given the state `held` on this stream (`None` before its first
/// update it applied). A delta applies only to an endpoint set.
///
/// `Ok(None)`: a kind this proxy does not know, to be ignored with the state held kept (see
/// "Growing the protocol" in `destination.proto`). Protobuf skips a oneof member it has no
/// field for, so a newer control plane's kind arrives here as an update with no kind; the
/// two cannot be told apart, and neither is an error.
pub fn apply(held: Option<&Resolved>, update: pb::Update) -> Result<Option<Resolved>, UpdateError> {
    let Some(kind) = update.kind else {
        return Ok(None);
    };
    known(held, update.version, kind).map(Some)
}

fn known(held: Option<&Resolved>, version: u64, kind: Kind) -> Result<Resolved, UpdateError> {
    match kind {
        Kind::NotAService(_) => Ok(Resolved::NotAService),
        Kind::Snapshot(snap) => {
            let service = snap.service.map(service_name).transpose()?;
            let mut endpoints = BTreeMap::new();
            for ep in snap.endpoints {
                let ep = endpoint(ep)?;
                endpoints.insert(ep.addr, ep);
            }
            Ok(Resolved::Service(Arc::new(EndpointSet {
                version,
                service,
                endpoints,
            })))
        }
        Kind::Delta(delta) => {
            let Some(Resolved::Service(set)) = held else {
                return Err(UpdateError::DeltaFirst);
            };
            let mut next = EndpointSet::clone(set);
            next.version = version;
            for addr in delta.removed {
                let parsed = addr
                    .parse::<SocketAddr>()
                    .map_err(|_| UpdateError::Endpoint {
                        address: addr.clone(),
                        reason: "not an ip:port".into(),
                    })?;
                next.endpoints.remove(&canonical(parsed));
            }
            for ep in delta.upserts {
                let ep = endpoint(ep)?;
                next.endpoints.insert(ep.addr, ep);
            }
            Ok(Resolved::Service(Arc::new(next)))
        }
    }
}

fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}

fn service_name(s: pb::ServiceRef) -> Result<ServiceName, UpdateError> {
    let port = u16::try_from(s.port)
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| UpdateError::ServicePort(format!("{}/{}", s.namespace, s.name)))?;
    Ok(ServiceName {
        namespace: s.namespace,
        name: s.name,
        port,
    })
}

fn endpoint(ep: pb::Endpoint) -> Result<EndpointInfo, UpdateError> {
    let fail = |reason: &str| UpdateError::Endpoint {
        address: ep.address.chars().take(64).collect(),
        reason: reason.to_string(),
    };
    let addr = ep
        .address
        .parse::<SocketAddr>()
        .map_err(|_| fail("not an ip:port"))?;
    if addr.port() == 0 {
        return Err(fail("port 0"));
    }
    let mesh = match &ep.mesh {
        None => None,
        Some(m) => Some(MeshPeer {
            identity: m
                .identity
                .parse()
                .map_err(|e| fail(&format!("identity {:?}: {e}", m.identity)))?,
            inbound_port: u16::try_from(m.inbound_port)
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| fail("the inbound port is not 1-65535"))?,
        }),
    };
    Ok(EndpointInfo {
        addr: canonical(addr),
        weight: ep.weight.max(1),
        mesh,
        pod: ep.pod,
        zone: ep.zone,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(addr: &str, id: Option<&str>) -> pb::Endpoint {
        pb::Endpoint {
            address: addr.into(),
            weight: 0,
            mesh: id.map(|i| pb::MeshEndpoint {
                identity: i.into(),
                inbound_port: 15143,
            }),
            pod: String::new(),
            zone: String::new(),
        }
    }

    fn snapshot(version: u64, eps: Vec<pb::Endpoint>) -> pb::Update {
        pb::Update {
            version,
            kind: Some(Kind::Snapshot(pb::Snapshot {
                service: Some(pb::ServiceRef {
                    namespace: "shop".into(),
                    name: "api".into(),
                    port: 80,
                }),
                endpoints: eps,
            })),
        }
    }

    fn applied(held: Option<&Resolved>, update: pb::Update) -> Resolved {
        apply(held, update)
            .expect("valid")
            .expect("a kind this proxy knows")
    }

    fn addrs(r: &Resolved) -> Vec<String> {
        match r {
            Resolved::Service(s) => s.endpoints.keys().map(|a| a.to_string()).collect(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn snapshots_replace_and_deltas_apply() {
        let id = "spiffe://cluster.local/ns/shop/sa/api";
        let first = applied(
            None,
            snapshot(
                3,
                vec![ep("198.18.0.1:80", Some(id)), ep("198.18.0.2:80", None)],
            ),
        );
        assert_eq!(addrs(&first), ["198.18.0.1:80", "198.18.0.2:80"]);
        let Resolved::Service(set) = &first else {
            unreachable!()
        };
        assert_eq!(set.version, 3);
        assert_eq!(set.endpoints.values().next().map(|e| e.weight), Some(1));
        assert_eq!(
            set.service.as_ref().map(|s| s.to_string()).as_deref(),
            Some("shop/api:80")
        );

        let delta = pb::Update {
            version: 4,
            kind: Some(Kind::Delta(pb::Delta {
                upserts: vec![ep("198.18.0.3:80", None)],
                removed: vec!["198.18.0.1:80".into()],
            })),
        };
        let next = applied(Some(&first), delta);
        assert_eq!(addrs(&next), ["198.18.0.2:80", "198.18.0.3:80"]);

        let gone = pb::Update {
            version: 5,
            kind: Some(Kind::NotAService(pb::NotAService {})),
        };
        assert_eq!(applied(Some(&next), gone), Resolved::NotAService);
    }

    #[test]
    fn unusable_updates_are_refused_whole() {
        let delta = pb::Update {
            version: 1,
            kind: Some(Kind::Delta(pb::Delta::default())),
        };
        assert_eq!(apply(None, delta.clone()), Err(UpdateError::DeltaFirst));
        assert_eq!(
            apply(Some(&Resolved::NotAService), delta),
            Err(UpdateError::DeltaFirst)
        );
        for bad in [
            ep("198.18.0.1", None),
            ep("198.18.0.1:0", None),
            ep("198.18.0.1:80", Some("spiffe://x/not-a-workload")),
            pb::Endpoint {
                mesh: Some(pb::MeshEndpoint {
                    identity: "spiffe://cluster.local/ns/a/sa/b".into(),
                    inbound_port: 70000,
                }),
                ..ep("198.18.0.1:80", None)
            },
        ] {
            let e = apply(
                None,
                snapshot(1, vec![ep("198.18.0.9:80", None), bad.clone()]),
            )
            .expect_err("refused");
            assert!(e.to_string().contains("endpoint"), "{e}");
        }
    }

    /// An `Update` as a newer control plane encodes one: `version`, then a oneof member with a
    /// field number this proxy has no field for (length-delimited, 3 bytes of content).
    fn newer_kind(version: u8, field: u8) -> Vec<u8> {
        vec![0x08, version, (field << 3) | 2, 3, 0x0a, 1, b'x']
    }

    #[test]
    fn a_kind_this_proxy_does_not_know_is_ignored_not_refused() {
        use prost::Message;
        let update = pb::Update::decode(&newer_kind(9, 15)[..]).expect("decodes");
        assert_eq!(update.version, 9);
        assert_eq!(kind(&update), "unknown");
        // Before anything is held, and on top of an endpoint set: nothing applies.
        assert_eq!(apply(None, update.clone()), Ok(None));
        let held = applied(None, snapshot(3, vec![ep("198.18.0.1:80", None)]));
        assert_eq!(apply(Some(&held), update), Ok(None));

        // New fields in a kind this proxy knows are skipped the same way: a snapshot with an
        // extra field (number 9, a varint) applies as it would without it.
        let snap = pb::Snapshot {
            service: None,
            endpoints: vec![ep("198.18.0.2:80", None)],
        };
        let mut body = snap.encode_to_vec();
        body.extend_from_slice(&[9 << 3, 1]);
        let len = u8::try_from(body.len()).expect("short");
        let mut bytes = vec![0x08, 4, (2 << 3) | 2, len];
        bytes.extend_from_slice(&body);
        let newer = pb::Update::decode(&bytes[..]).expect("decodes");
        assert_eq!(addrs(&applied(Some(&held), newer)), ["198.18.0.2:80"]);
    }

    #[test]
    fn a_target_is_watched_by_address_or_by_service_parts() {
        let addr: SocketAddr = "198.19.0.10:80".parse().expect("addr");
        let by_addr = DiscoveryTarget::from(addr).watch_request("me".into());
        assert_eq!(by_addr.target, "198.19.0.10:80");
        assert_eq!(by_addr.service, None);
        assert_eq!(by_addr.proxy_id, "me");

        let api = ServiceName {
            namespace: "shop".into(),
            name: "api".into(),
            port: 80,
        };
        let target = DiscoveryTarget::from(api.clone());
        assert_eq!(target.to_string(), "shop/api:80");
        let by_name = target.watch_request("me".into());
        assert_eq!(by_name.target, "api.shop.svc:80");
        assert_eq!(
            by_name.service,
            Some(pb::ServiceRef {
                namespace: "shop".into(),
                name: "api".into(),
                port: 80,
            })
        );
        // The same Service by name and its cluster IP are different keys: the control plane
        // answers each (with the same endpoints), and a proxy holds what it asked for.
        assert_ne!(DiscoveryTarget::from(addr), DiscoveryTarget::from(api));
    }
}
