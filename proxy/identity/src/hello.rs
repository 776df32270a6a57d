//! Is an inbound connection a peer proxy's mesh TLS, an app's own TLS, or not TLS at all?
//!
//! A peer proxy offers ALPN [`MESH_ALPN`](crate::MESH_ALPN) or
//! [`MESH_HTTP1_ALPN`](crate::MESH_HTTP1_ALPN) in its ClientHello; any other
//! ClientHello belongs to the app (its own TLS, passed through untouched). The ClientHello is
//! parsed by rustls's [`Acceptor`](rustls::server::Acceptor), not by hand, from a copy of the
//! bytes read so far; the connection then replays them into the real handshake.

use rustls::server::Acceptor;

use crate::{MESH_ALPN, MESH_HTTP1_ALPN};

/// The most bytes read to find a whole ClientHello: one maximal TLS record and its header.
pub const MAX_HELLO_BYTES: usize = 5 + (1 << 14);

/// What the first bytes of a connection are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hello {
    /// A ClientHello offering a mesh ALPN: terminate TLS here.
    Mesh,
    /// A ClientHello without it: the app's own TLS.
    OtherTls,
    /// Not a TLS handshake (or a broken one): treat as plaintext.
    NotTls,
    /// Could be a ClientHello still arriving: read more (up to [`MAX_HELLO_BYTES`]).
    NeedMore,
}

/// Classifies the bytes read so far. Monotonic: once the answer is not `NeedMore`, more bytes
/// do not change it; at [`MAX_HELLO_BYTES`] it is never `NeedMore`.
pub fn classify(buf: &[u8]) -> Hello {
    // A TLS handshake record: type 22, then a legacy version 3.x.
    match buf {
        [] => return Hello::NeedMore,
        [0x16] | [0x16, 0x03] => return Hello::NeedMore,
        [0x16, 0x03, ..] => {}
        _ => return Hello::NotTls,
    }
    let mut acceptor = Acceptor::default();
    let mut rest = buf;
    // `read_tls` takes at most one chunk per call: feed until the buffer is used up.
    while !rest.is_empty() {
        match acceptor.read_tls(&mut rest) {
            Ok(0) => break,
            Ok(_) => {}
            Err(_) => return Hello::NotTls,
        }
        match acceptor.accept() {
            Ok(Some(accepted)) => {
                let mesh = accepted.client_hello().alpn().is_some_and(|mut protocols| {
                    protocols.any(|p| p == MESH_ALPN || p == MESH_HTTP1_ALPN)
                });
                return if mesh { Hello::Mesh } else { Hello::OtherTls };
            }
            Ok(None) => {}
            Err(_) => return Hello::NotTls,
        }
    }
    if buf.len() >= MAX_HELLO_BYTES {
        Hello::NotTls
    } else {
        Hello::NeedMore
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use rustls::{pki_types::ServerName, ClientConfig, ClientConnection, RootCertStore};

    use super::*;

    fn client_hello(alpn: &[&[u8]]) -> Vec<u8> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(RootCertStore::empty())
            .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        let mut conn = ClientConnection::new(
            Arc::new(config),
            ServerName::try_from("example.test").expect("name"),
        )
        .expect("client");
        let mut out = Vec::new();
        conn.write_tls(&mut out).expect("hello");
        out
    }

    #[test]
    fn a_mesh_hello_is_recognised_only_when_whole() {
        let hello = client_hello(&[b"h2", MESH_ALPN]);
        for cut in 0..hello.len() {
            assert_eq!(classify(&hello[..cut]), Hello::NeedMore, "cut at {cut}");
        }
        assert_eq!(classify(&hello), Hello::Mesh);
        let mut more = hello.clone();
        more.extend_from_slice(b"trailing application bytes");
        assert_eq!(classify(&more), Hello::Mesh);
        // A pooled HTTP/1 connection's hello, as a peer offers it.
        assert_eq!(
            classify(&client_hello(&[MESH_HTTP1_ALPN, MESH_ALPN])),
            Hello::Mesh
        );
        assert_eq!(classify(&client_hello(&[MESH_HTTP1_ALPN])), Hello::Mesh);
    }

    #[test]
    fn the_apps_own_tls_is_not_mesh() {
        assert_eq!(
            classify(&client_hello(&[b"h2", b"http/1.1"])),
            Hello::OtherTls
        );
        assert_eq!(classify(&client_hello(&[])), Hello::OtherTls);
    }

    #[test]
    fn plaintext_and_garbage_are_not_tls() {
        assert_eq!(classify(b"GET / HTTP/1.1\r\n"), Hello::NotTls);
        assert_eq!(classify(b"PRI * HTTP/2.0"), Hello::NotTls);
        assert_eq!(
            classify(&[0x16, 0x03, 0x01, 0x00, 0x05, 9, 9, 9, 9, 9]),
            Hello::NotTls
        );
        // A record header promising more than fits: never NeedMore at the bound.
        let mut big = vec![0x16, 0x03, 0x01, 0xff, 0xff];
        big.resize(MAX_HELLO_BYTES, 0);
        assert_ne!(classify(&big), Hello::NeedMore);
    }
}
