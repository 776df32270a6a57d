//! Upstream connects.

use std::{io, net::SocketAddr, time::Duration};

use tokio::net::TcpStream;

/// Why a connect to an upstream failed, worded for the operator reading a log or a response
/// header.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// Nothing listens there, or a firewall rejected the SYN.
    #[error("connect to {addr} refused; is the server listening on that port?")]
    Refused { addr: SocketAddr },
    /// No answer within the connect timeout.
    #[error("connect to {addr} timed out after {timeout:?}; is a NetworkPolicy or firewall dropping it?")]
    TimedOut { addr: SocketAddr, timeout: Duration },
    /// Any other socket error.
    #[error("connect to {addr} failed: {source}")]
    Io {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
}

impl ConnectError {
    /// Whether the cause was the connect timeout (a gateway timeout rather than a bad gateway).
    pub fn is_timeout(&self) -> bool {
        matches!(self, ConnectError::TimedOut { .. })
    }
}

/// Connects to `addr` within `timeout`, with `TCP_NODELAY` set: the proxy writes whole frames
/// and never wants Nagle's delay on top of the app's.
pub async fn connect(addr: SocketAddr, timeout: Duration) -> Result<TcpStream, ConnectError> {
    let stream = match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
        Err(_) => return Err(ConnectError::TimedOut { addr, timeout }),
        Ok(Err(e)) if e.kind() == io::ErrorKind::ConnectionRefused => {
            return Err(ConnectError::Refused { addr })
        }
        Ok(Err(source)) => return Err(ConnectError::Io { addr, source }),
        Ok(Ok(stream)) => stream,
    };
    stream
        .set_nodelay(true)
        .map_err(|source| ConnectError::Io { addr, source })?;
    Ok(stream)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn refused_names_the_address() {
        // Bind then drop to find a port nobody listens on.
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("bind");
        let err = connect(addr, Duration::from_secs(1))
            .await
            .expect_err("refused");
        assert!(matches!(err, ConnectError::Refused { .. }), "{err:?}");
        assert!(err.to_string().contains(&addr.to_string()));
        assert!(!err.is_timeout());
    }
}
