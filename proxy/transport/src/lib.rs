//! Sockets for the Weft proxy.
//!
//! # Layout
//! - [`addr`]: [`OrigDstAddr`], so a client's address can never be passed where the original
//!   destination was meant.
//! - [`orig_dst`]: `SO_ORIGINAL_DST`, the destination an iptables `REDIRECT` rewrote (IPv4/IPv6).
//! - [`listen`]: binding listeners with the socket options a proxy wants.
//! - [`connect`]: upstream connects with a timeout and errors that tell the operator what to check.
//! - [`prefixed`]: an I/O that replays bytes already read (by protocol detection) before the socket.
//! - [`copy`]: both directions of a forwarded connection, with buffers only while bytes flow.
//! - [`coalesce`]: an I/O whose flushes wait for the scheduler's turn, so that what several
//!   tasks write to one HTTP/2 connection leaves in one write.
//!
//! There is no `unsafe` here: socket2 wraps the `getsockopt` calls.

#![forbid(unsafe_code)]

pub mod addr;
pub mod coalesce;
pub mod connect;
pub mod copy;
pub mod listen;
pub mod orig_dst;
pub mod prefixed;

pub use addr::OrigDstAddr;
pub use coalesce::Coalesce;
pub use connect::{connect, ConnectError};
pub use listen::bind;
pub use orig_dst::orig_dst;
pub use prefixed::PrefixedIo;
