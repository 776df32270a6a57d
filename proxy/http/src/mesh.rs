//! The mesh hop: what travels between two proxies over their mTLS connections.
//!
//! An app's HTTP/2 request crosses as HTTP/2 on the one shared connection to the peer proxy;
//! its HTTP/1 request as HTTP/1 on a pooled connection (or as HTTP/2 with
//! `WEFT_MESH_HTTP1_UPGRADE`, or to a peer without HTTP/1 connections). Two headers say how to
//! hand it on at the other end, and are removed there:
//! - [`DST_PORT_HEADER`]: the port the app called. The receiving proxy delivers to that port on
//!   its own pod (never to an address a peer names), so a peer can reach nothing it could not
//!   reach directly.
//! - [`ORIG_PROTO_HEADER`]: `HTTP/1.1` when the app spoke HTTP/1, so the receiving proxy speaks
//!   HTTP/1 to the destination app; absent for HTTP/2.
//!
//! Opaque TCP, and HTTP/1 upgrades (WebSocket), cross as an HTTP/2 CONNECT stream to the port
//! on the shared connection.

use http::{
    header::{HeaderName, HeaderValue},
    HeaderMap, Version,
};

// Header names as `HeaderName` constants, not `&str`: a `&str` key is parsed and checked again
// on every insert and lookup (`HdrName::from_static`, 2 % of the sending proxy's instructions
// per HTTP/1 request, BENCHMARKS.md); a constant is checked once, at compile time.

/// The destination port on the receiving pod.
pub const DST_PORT_HEADER: HeaderName = HeaderName::from_static("weft-dst-port");
/// The protocol the calling app spoke, when it was not HTTP/2.
pub const ORIG_PROTO_HEADER: HeaderName = HeaderName::from_static("weft-orig-proto");

const HTTP_11: &str = "HTTP/1.1";
const HTTP_10: &str = "HTTP/1.0";

/// Marks an app's request (of `version`, to `port`) for the mesh hop.
pub fn mark_outbound(headers: &mut HeaderMap, version: Version, port: u16) {
    headers.insert(DST_PORT_HEADER, HeaderValue::from(port));
    match version {
        Version::HTTP_11 => {
            headers.insert(ORIG_PROTO_HEADER, HeaderValue::from_static(HTTP_11));
        }
        Version::HTTP_10 => {
            headers.insert(ORIG_PROTO_HEADER, HeaderValue::from_static(HTTP_10));
        }
        _ => {}
    }
}

/// What the sending proxy said about a request arriving over the mesh, its headers removed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Marked {
    pub port: u16,
    /// The version to speak to the app.
    pub version: Version,
}

/// Why a request on the mesh hop cannot be delivered.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum MarkError {
    #[error("missing or invalid {DST_PORT_HEADER} header")]
    Port,
    #[error("unknown {ORIG_PROTO_HEADER} {0:?}")]
    Proto(String),
}

/// Reads and removes the mesh headers of an inbound request.
pub fn take_inbound(headers: &mut HeaderMap) -> Result<Marked, MarkError> {
    let port = headers
        .remove(&DST_PORT_HEADER)
        .and_then(|v| v.to_str().ok()?.parse::<u16>().ok())
        .filter(|p| *p != 0)
        .ok_or(MarkError::Port)?;
    let version = match headers.remove(&ORIG_PROTO_HEADER) {
        None => Version::HTTP_2,
        Some(v) if v == HTTP_11 => Version::HTTP_11,
        Some(v) if v == HTTP_10 => Version::HTTP_10,
        Some(v) => {
            return Err(MarkError::Proto(
                String::from_utf8_lossy(v.as_bytes()).into(),
            ))
        }
    };
    Ok(Marked { port, version })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_round_trip() {
        for v in [Version::HTTP_10, Version::HTTP_11, Version::HTTP_2] {
            let mut h = HeaderMap::new();
            mark_outbound(&mut h, v, 8080);
            assert_eq!(
                take_inbound(&mut h),
                Ok(Marked {
                    port: 8080,
                    version: v
                })
            );
            assert!(h.is_empty(), "headers removed");
        }
    }

    #[test]
    fn bad_marks_are_named() {
        let mut h = HeaderMap::new();
        assert_eq!(take_inbound(&mut h), Err(MarkError::Port));
        for bad in ["0", "65536", "x", ""] {
            let mut h = HeaderMap::new();
            h.insert(DST_PORT_HEADER, HeaderValue::from_static(bad));
            assert_eq!(take_inbound(&mut h), Err(MarkError::Port), "{bad:?}");
        }
        let mut h = HeaderMap::new();
        h.insert(DST_PORT_HEADER, HeaderValue::from_static("80"));
        h.insert(ORIG_PROTO_HEADER, HeaderValue::from_static("SPDY/3"));
        assert_eq!(take_inbound(&mut h), Err(MarkError::Proto("SPDY/3".into())));
    }
}
