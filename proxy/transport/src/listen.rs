//! Listener setup.

use std::{io, net::SocketAddr};

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::TcpListener;

/// Pending connections the kernel queues for each listener before `accept`.
const BACKLOG: i32 = 4096;

/// Binds a TCP listener.
///
/// `SO_REUSEADDR` lets a restarted proxy bind while old connections sit in `TIME_WAIT`. An IPv6
/// unspecified address (`[::]`) is bound dual-stack so one listener takes IPv4 too.
pub fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    if addr.is_ipv6() && addr.ip().is_unspecified() {
        socket.set_only_v6(false)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    TcpListener::from_std(socket.into())
}
