//! Weft's end-to-end harness: real pods as network namespaces on the reference CNI bridge,
//! real iptables, the real `weft-proxy`, `weft-control-plane` and `weft-cni` binaries.
//!
//! A [`Cluster`] is one node: a dedicated network namespace (`weft-e2e-<pid>-<n>-node`) with
//! loopback and the bridge [`BRIDGE`], and no route anywhere else. Each [`Pod`] is a network
//! namespace attached the way a container runtime attaches one: the harness plays the
//! runtime's part of CNI 1.0 ([`cni`]) and runs `loopback`, then the network list `bridge`
//! (host-local IPAM from `198.18.0.0/24`, gateway `198.18.0.1`) and `weft-cni`, inside the
//! node's namespace. The control plane runs in the node's namespace in local mode, on
//! `198.18.0.1:8443`, reading YAML the harness writes for its pods and Services (cluster IPs
//! from `198.19.0.0/24`, which no interface holds). A meshed pod's proxy runs in the pod's
//! namespace as UID 2121. Each pod runs a small test [`App`] (HTTP answering with the pod's
//! name and the peer it saw; a line echo), and clients run inside pods.
//!
//! ```no_run
//! use weft_e2e::{Cluster, PodSpec, ServiceSpec};
//!
//! # fn main() -> weft_e2e::Result<()> {
//! let cluster = Cluster::start()?;
//! let api = cluster.service(ServiceSpec::new("shop", "api").selector("app", "api").port("http", 80, 8080))?;
//! let _b1 = cluster.pod(PodSpec::new("shop", "b1").service_account("api").label("app", "api").meshed())?;
//! let a = cluster.pod(PodSpec::new("shop", "a").service_account("web").meshed())?;
//! let reply = a.get(api.addr(80), "/")?;
//! assert_eq!(reply.field("pod"), Some("b1"));
//! # Ok(())
//! # }
//! ```
//!
//! Cleanup is by guards: dropping a [`Pod`] stops its app and proxy (by PID), runs CNI `DEL`
//! and deletes its namespace; when the last handle of a [`Cluster`] goes, the control plane is
//! killed and the node's namespace (with the bridge) and the temp dir are deleted. This holds
//! on panic too, and then the proxy, control-plane and `weft-cni` logs are printed. Nothing is
//! ever sent from the machine's own namespace, and the harness signals only processes it
//! started.
//!
//! # Layout
//! - [`cluster`]: [`Cluster`] and [`Pod`], the API tests use.
//! - [`spec`]: [`PodSpec`], [`ServiceSpec`] and the YAML written for the control plane.
//! - [`cni`]: the runtime side of CNI 1.0 (network lists, `ADD`/`DEL`, results, errors).
//! - [`redirect`]: `weft-cni`'s network-list entry and per-pod args, or `weft-init` run in the
//!   pod (the init-container way).
//! - [`control_plane`]: `weft-control-plane` in the node's namespace.
//! - [`app`]: the test app and the echo client; [`http`]: the HTTP client.
//! - [`metrics`]: Prometheus text parsing; [`capture`] and [`pcap`]: `tcpdump` on the bridge
//!   and reading its pcap file down to TLS records.
//! - [`netns`], [`process`], [`wait`], [`bins`], [`pki`], [`prereq`]: namespaces, child
//!   processes and bounded waits, the binaries under test, identity files, and the skip rule.

#![forbid(unsafe_code)]

pub mod app;
pub mod bins;
pub mod capture;
pub mod cluster;
pub mod cni;
pub mod control_plane;
pub mod error;
pub mod http;
pub mod metrics;
pub mod netns;
pub mod pcap;
pub mod pki;
pub mod prereq;
pub mod process;
pub mod redirect;
pub mod spec;
pub mod wait;

pub use app::{App, EchoReply, Seen, ECHO_PORT, HTTP_PORT};
pub use cluster::{Cluster, ClusterOptions, Pod, BRIDGE, GATEWAY, POD_SUBNET};
pub use error::{Error, Result};
pub use http::HttpReply;
pub use metrics::Metrics;
pub use pki::spiffe_id;
pub use redirect::Redirect;
pub use spec::{PodSpec, Service, ServicePort, ServiceSpec};
