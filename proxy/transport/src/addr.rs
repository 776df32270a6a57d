//! Address newtypes.
//!
//! (A `ClientAddr` joins when inbound policy first needs the client's address typed.)

use std::{fmt, net::SocketAddr};

/// Where the client meant to connect: recovered with `SO_ORIGINAL_DST`, or configured in explicit
/// mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct OrigDstAddr(pub SocketAddr);

impl fmt::Display for OrigDstAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}
