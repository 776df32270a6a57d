//! Weft's lab: a small cluster on one machine, with real pods as network namespaces on the
//! reference CNI bridge, real iptables, and the real `weft-proxy`, `weft-control-plane` and
//! `weft-cni` binaries. `weftctl demo` runs it for people to watch; the end-to-end tests in
//! `e2e/` drive it to prove the mesh works. It is a library of its own so that the shipped CLI
//! depends on a lab, not on a test crate.
//!
//! A [`Cluster`] is one node: a dedicated network namespace (`weft-lab-<pid>-<n>-node`) with
//! loopback and the bridge [`BRIDGE`], and no route anywhere else. Each [`Pod`] is a network
//! namespace attached the way a container runtime attaches one: the lab plays the runtime's
//! part of CNI 1.0 ([`cni`]) and runs `loopback`, then the network list `bridge` (host-local
//! IPAM from `198.18.0.0/24`, gateway `198.18.0.1`) and `weft-cni`, inside the node's
//! namespace. The control plane runs in the node's namespace in local mode, on
//! `198.18.0.1:8443`, reading YAML the lab writes for its pods and Services (cluster IPs from
//! `198.19.0.0/24`, which no interface holds). A meshed pod's proxy runs in the pod's namespace
//! as UID 2121. Each pod runs a small [`App`] (HTTP answering with the pod's name and the peer
//! it saw; a line echo), and clients run inside pods.
//!
//! ```no_run
//! use weft_lab::{Cluster, PodSpec, ServiceSpec};
//!
//! # fn main() -> weft_lab::Result<()> {
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
//! ever sent from the machine's own namespace, and the lab signals only processes it started.
//!
//! # Layout
//! - [`cluster`]: [`Cluster`] and [`Pod`], the API the demo and the tests use.
//! - [`spec`]: [`PodSpec`], [`ServiceSpec`] and the YAML written for the control plane.
//! - [`folder`]: a folder of Kubernetes YAML (Namespaces, ServiceAccounts, Pods, Deployments,
//!   Services, EndpointSlices and the kinds the control plane reads) read into the pods,
//!   addresses, identities and EndpointSlices a lab builds for it, the YAML the control plane
//!   reads, and what changed between two reads: the pure model of `weftctl lab up DIR`.
//! - [`cni`]: the runtime side of CNI 1.0 (network lists, `ADD`/`DEL`, results, errors).
//! - [`redirect`]: `weft-cni`'s network-list entry and per-pod args, or `weft-init` run in the
//!   pod (the init-container way).
//! - [`control_plane`]: `weft-control-plane` in the node's namespace.
//! - [`app`]: the pods' app and the echo client; [`http`]: the HTTP client.
//! - [`capture`] and [`pcap`]: `tcpdump` on the bridge and reading its pcap file down to TLS
//!   records. `/metrics` pages are read with `weft-metrics-text` ([`Metrics`]).
//! - [`run`]: [`run::LabRun`], a folder of YAML running as a live mesh (`weftctl lab up`).
//! - [`registry`]: running labs as `weftctl lab exec | status | down` find them
//!   (`/run/weft-lab/<name>.json`).
//! - [`jaeger`]: a real Jaeger (built from its Go module by `scripts/jaeger-build.sh`) taking
//!   OTLP on loopback, and the traces its query API returns.
//! - [`prometheus`]: a real Prometheus (Debian's) in the node namespace scraping the proxies
//!   and the control plane as docs/observability.md says, with Weft's rules, and its query
//!   API; what the dashboards' tests, their previews and the demo read.
//! - [`forward`]: a TCP forwarder from this machine's loopback into a namespace (the demo's
//!   Prometheus and Jaeger for a browser).
//! - [`observe`]: the demo's Prometheus and Jaeger in the node namespace, forwarded to this
//!   machine's loopback for a browser, and the check `weftctl demo --once` makes of them.
//! - [`netns`]: named network namespaces (create, run in, enter, delete on drop), also what the
//!   proxy's and the CNI plugin's root-only tests use.
//! - [`process`], [`wait`], [`bins`], [`pki`], [`prereq`]: child processes and bounded waits,
//!   the Weft binaries it runs, identity files, and what the machine must have (with the loud
//!   skip that tests use).
//! - [`error`]: [`Error`], one variant per kind of failure, each naming what to check.

#![forbid(unsafe_code)]

pub mod app;
pub mod bins;
pub mod capture;
pub mod cluster;
pub mod cni;
pub mod control_plane;
pub mod error;
pub mod folder;
pub mod forward;
pub mod http;
pub mod jaeger;
pub mod netns;
pub mod observe;
pub mod pcap;
pub mod pki;
pub mod prereq;
pub mod process;
pub mod prometheus;
pub mod redirect;
pub mod registry;
pub mod run;
pub mod services;
pub mod spec;
pub mod wait;

pub use app::{App, EchoReply, Seen, ECHO_PORT, HTTP_PORT};
pub use cluster::{Cluster, ClusterOptions, Pod, BRIDGE, GATEWAY, POD_SUBNET};
pub use error::{Error, Result};
pub use http::HttpReply;
pub use pki::spiffe_id;
pub use redirect::Redirect;
pub use spec::{PodSpec, Service, ServicePort, ServiceSpec};
pub use weft_metrics_text::{Metrics, Sample};
