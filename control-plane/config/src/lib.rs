//! The control plane's config, as pure code: what the cluster's state is, how YAML becomes
//! that state, and what a proxy is told about one destination. No I/O, no clock, no runtime.
//!
//! A crate of its own so the fuzz targets (`control-plane/fuzz`) and anything else that only
//! needs the config build it alone, without kube-rs, tonic, tokio, rustls or hyper:
//! the fuzz build is a few dependencies instead of the whole control plane under
//! AddressSanitizer. The control plane wires it to the Kubernetes API, a local folder and
//! gRPC.
//!
//! # Layout
//! - [`model`]: the Kubernetes kinds the control plane reads, their checks, and the [`model::Snapshot`]
//!   every config source publishes.
//! - [`yaml`]: the text of a YAML file (several documents) read into a snapshot, with every
//!   refused document named by file, document, field and reason.
//! - [`index`]: from a snapshot to what a proxy is told about one destination.
//! - [`gateway`] and [`smi`]: the route kinds (Gateway API HTTPRoute and ReferenceGrant, SMI
//!   TrafficSplit), as serde types of our own, and their checks.
//! - [`fault`]: Weft's `HTTPFault`, its checks, and the Gateway API `Duration`.
//! - [`routes`]: from a snapshot to the route table one client sees for one Service port
//!   (GAMMA's producer and consumer routes, the specification's precedence), and every
//!   route's status conditions.

#![forbid(unsafe_code)]

pub mod fault;
pub mod gateway;
pub mod index;
pub mod model;
pub mod routes;
pub mod smi;
pub mod yaml;
