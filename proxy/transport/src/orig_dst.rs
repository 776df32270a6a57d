//! The original destination of a redirected connection.

use std::{io, net::SocketAddr};

use socket2::SockRef;
use tokio::net::TcpStream;

use crate::OrigDstAddr;

/// Errors recovering a connection's original destination.
#[derive(Debug, thiserror::Error)]
pub enum OrigDstError {
    /// The kernel has no NAT record for the socket: it reached the listener directly.
    #[error("no original destination for this connection (SO_ORIGINAL_DST: {0}); was it redirected by iptables?")]
    Unavailable(#[source] io::Error),
    /// The original destination is the listener itself: forwarding would loop.
    #[error("connection was addressed to the proxy's own listener {0}, not redirected to it; refusing to loop")]
    Loop(SocketAddr),
}

/// Reads `SO_ORIGINAL_DST` (or `IP6T_SO_ORIGINAL_DST` for IPv6 connections).
///
/// The option follows the connection's family, not the socket's: an IPv4 client of a dual-stack
/// listener (local address `::ffff:a.b.c.d`) was redirected by iptables, not ip6tables, and the
/// IPv6 option finds no NAT record for it (ENOENT), as Envoy also notes.
///
/// A socket that was not redirected has no NAT record on some kernels, and on others reports its
/// own local address; both are refused, because forwarding them would connect to ourselves.
pub fn orig_dst(stream: &TcpStream) -> Result<OrigDstAddr, OrigDstError> {
    let local = stream.local_addr().map_err(OrigDstError::Unavailable)?;
    let sock = SockRef::from(stream);
    let addr = match local {
        SocketAddr::V6(v6) if v6.ip().to_ipv4_mapped().is_none() => sock.original_dst_v6(),
        _ => sock.original_dst_v4(),
    }
    .map_err(OrigDstError::Unavailable)?;
    let addr = addr.as_socket().ok_or_else(|| {
        OrigDstError::Unavailable(io::Error::new(
            io::ErrorKind::InvalidData,
            "not an IP address",
        ))
    })?;
    // A dual-stack listener sees IPv4 clients as v4-mapped IPv6.
    let addr = SocketAddr::new(addr.ip().to_canonical(), addr.port());
    if addr == SocketAddr::new(local.ip().to_canonical(), local.port()) {
        return Err(OrigDstError::Loop(addr));
    }
    Ok(OrigDstAddr(addr))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_direct_connection_has_no_usable_original_destination() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let _client = TcpStream::connect(addr).await.expect("connect");
        let (server, _) = listener.accept().await.expect("accept");
        // Without a REDIRECT rule, either the lookup fails or it names the listener: never a
        // destination the proxy would forward to.
        let err = orig_dst(&server).expect_err("not redirected");
        let msg = err.to_string();
        assert!(msg.contains("redirect"), "{msg}");
    }
}
