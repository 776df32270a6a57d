//! HTTP proxying for the Weft proxy.
//!
//! # Layout
//! - [`headers`]: hop-by-hop header removal (RFC 9110 §7.6.1) and upgrade detection; pure.
//! - [`client`]: [`Upstreams`], keep-alive connection pools per endpoint and HTTP version.
//! - [`proxy`]: [`Proxy`], the per-connection service that forwards a request to its endpoint,
//!   tunnels upgrades and CONNECT, and maps failures to statuses.
//! - [`mesh`]: how requests are marked for the mesh hop between two proxies; the hop itself
//!   is an [`Endpoint`](client::Endpoint) with [`MeshConnect`](client::MeshConnect) (outbound)
//!   and [`serve_mesh`](mesh_server::serve_mesh) (inbound).
//! - [`balanced`]: [`Balanced`](balanced::Balanced), a Service's endpoints as one backend,
//!   picked per request (power of two choices over peak-EWMA latency, with ejection).
//! - [`body`]: the response body type, which records the request's metrics when it ends.
//! - [`server`]: serving one accepted connection as HTTP/1 or HTTP/2, with graceful shutdown.
//!
//! Bodies stream: a request or response body is passed frame by frame (trailers included) from
//! one side to the other and never buffered whole.

#![forbid(unsafe_code)]

pub mod balanced;
pub mod body;
pub mod client;
pub mod headers;
pub mod mesh;
pub mod mesh_server;
pub mod proxy;
pub mod server;

pub use client::{ClientSettings, Upstreams};
pub use proxy::{Backend, Proxy, ProxyError};
pub use server::{serve, ServerSettings};

/// The response header that carries the proxy's reason for a status it made up itself
/// (502, 504, ...), so the caller sees why without reading the proxy's logs.
pub const ERROR_HEADER: &str = "weft-proxy-error";
