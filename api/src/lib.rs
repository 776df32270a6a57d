//! Weft's wire protocol between the control plane and the proxies.
//!
//! The `.proto` files under `proto/` are the contract; the Rust types are generated from them
//! at build time with protox, so no system `protoc` is needed. Without features the crate is
//! the message types alone (prost), with no tonic, tokio or hyper: what a pure crate needs.
//! Feature `server` adds the server traits (the control plane), `client` the clients (the
//! proxy).

#![allow(unreachable_pub, missing_debug_implementations)]

/// Certificates for workloads: `weft.identity.v1`.
pub mod identity {
    // `tonic::include_proto!` without tonic: the same file from the build script.
    include!(concat!(env!("OUT_DIR"), "/weft.identity.v1.rs"));

    impl std::fmt::Debug for CertifyRequest {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("CertifyRequest")
                .field("identity", &self.identity)
                .field("token", &format_args!("<{} bytes>", self.token.len()))
                .field(
                    "certificate_signing_request",
                    &format_args!("<{} bytes>", self.certificate_signing_request.len()),
                )
                .finish()
        }
    }
}

/// Discovery, endpoints and identities of destinations: `weft.destination.v1`.
pub mod destination {
    include!(concat!(env!("OUT_DIR"), "/weft.destination.v1.rs"));
}

/// Routes, a client's view of the HTTPRoutes and TrafficSplits of one Service port:
/// `weft.route.v1`.
pub mod route {
    include!(concat!(env!("OUT_DIR"), "/weft.route.v1.rs"));
}

#[cfg(feature = "client")]
pub mod client;

#[cfg(any(feature = "server", feature = "client"))]
pub mod codec;

/// Largest gRPC message either side accepts. A CSR or a certificate chain is a few KiB; this
/// bounds what a misbehaving peer can make the other buffer.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;

/// Largest discovery or route update either side accepts: a snapshot of a Service with ~20,000
/// endpoints (about 100 bytes each), or a route table of a few hundred rules. Larger ones are
/// refused by the control plane with a clear error rather than cut short.
pub const MAX_UPDATE_BYTES: usize = 2 * 1024 * 1024;

#[cfg(test)]
mod tests {
    #[test]
    fn a_certify_request_debugs_without_its_token() {
        let req = crate::identity::CertifyRequest {
            identity: "spiffe://cluster.local/ns/a/sa/b".into(),
            token: "secret-token-value".into(),
            certificate_signing_request: vec![1, 2, 3],
        };
        let shown = format!("{req:?}");
        assert!(!shown.contains("secret-token-value"), "{shown}");
        assert!(
            shown.contains("spiffe://cluster.local/ns/a/sa/b"),
            "{shown}"
        );
    }
}
