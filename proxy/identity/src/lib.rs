//! The proxy's identity and the mesh's TLS.
//!
//! # Layout
//! - [`tls`]: the rustls configs of the mesh hop: TLS 1.3 only, ALPN [`MESH_ALPN`] or
//!   [`MESH_HTTP1_ALPN`], both sides presenting the proxy's current certificate and checking the
//!   peer's SPIFFE ID.
//! - [`hello`]: recognising a mesh ClientHello among the bytes an inbound connection starts with.
//! - [`certify`]: getting the proxy's certificate from the control plane, and renewing it.
//! - [`control_plane`]: dialing the control plane (TLS checked against its SPIFFE ID), for
//!   the certifier and discovery alike.

#![forbid(unsafe_code)]

pub mod certify;
pub mod control_plane;
pub mod hello;
pub mod tls;

pub use certify::{Certifier, CertifyConfig};
pub use control_plane::{ControlPlaneDialer, DialError};
pub use hello::{classify, Hello};
pub use tls::{ClientConfigs, MeshTls, MESH_ALPN, MESH_HTTP1_ALPN};
