//! HTTP proxying for the Weft proxy: the per-request stages and the connection pools under
//! them.
//!
//! # Layout
//! - [`stage`]: the [`Stage`](stage::Stage) trait every per-request step implements, and the
//!   request's context [`Cx`](stage::Cx).
//! - [`server`]: the edge: serving one accepted connection as HTTP/1 or HTTP/2 through a stack
//!   of stages, with graceful shutdown; failures become responses there. HTTP/1 is hyper's
//!   server; HTTP/2 is [`h2_server`], on `h2` directly (as [`h2_client`] is towards upstreams).
//! - Stages, one per file, outermost first: [`split`] (which backend Service of a logical
//!   one, by weight), [`balance`] (which endpoint of a backend Service: power of two choices
//!   over peak-EWMA latency, with ejection), [`forward`] (one request to one endpoint's pool:
//!   hop-by-hop headers, URI form, the mesh hop's marks, upgrades and CONNECT).
//! - [`error`]: [`ProxyError`], the one place a failure becomes a status.
//! - [`body`]: [`RequestBody`](body::RequestBody), the one request body type of every stage
//!   and pool, and [`ResponseBody`](body::ResponseBody), which records the request's metrics
//!   when it ends; [`replay`]: a request body that can be sent again (retries, mirroring).
//! - [`client`]: [`Upstreams`], keep-alive connection pools per endpoint and HTTP version, and
//!   the mesh hop's mTLS HTTP/2 connection per peer proxy.
//! - [`headers`]: hop-by-hop header removal (RFC 9110 §7.6.1) and upgrade detection; pure.
//! - [`mesh`]: how requests are marked for the mesh hop between two proxies;
//!   [`mesh_server`]: the receiving end, serving a peer proxy's HTTP/2 connection.
//!
//! Bodies stream: a request or response body is passed frame by frame (trailers included) from
//! one side to the other and never buffered whole; a replayable body keeps at most its cap.

#![forbid(unsafe_code)]

pub mod answer;
pub mod balance;
pub mod body;
pub mod client;
pub mod error;
pub mod forward;
pub mod h2_client;
pub mod h2_server;
pub mod h2_stream;
pub mod headers;
pub mod mesh;
pub mod mesh_server;
pub mod replay;
pub mod server;
pub mod split;
pub mod stage;
mod tap;
pub mod trace;

pub use client::{ClientSettings, Upstreams};
pub use error::ProxyError;
pub use server::{serve, ServerSettings};

/// The response header that carries the proxy's reason for a status it made up itself
/// (502, 504, ...), so the caller sees why without reading the proxy's logs.
pub const ERROR_HEADER: &str = "weft-proxy-error";
