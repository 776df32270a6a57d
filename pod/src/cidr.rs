//! CIDR lists as operators write them: `10.0.0.0/8, fd00::/8, 192.0.2.7`. A bare address is a
//! network of one address (`/32`, `/128`); host bits are cleared (`10.1.2.3/8` is `10.0.0.0/8`),
//! as iptables does when it prints a rule back; a network listed twice counts once.
//!
//! The address is what `std::net` reads: dotted decimal with no leading zeros for IPv4 (`010.0.0.1`
//! is refused, since `inet_aton` would read `010` as octal 8), the RFC 5952 forms for IPv6. The
//! prefix length is decimal digits, at most 2 for IPv4 and 3 for IPv6, and no longer than the
//! address.

use std::{
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    str::FromStr,
};

use crate::quoted;

/// An IPv4 or IPv6 network: its address with the host bits cleared, and its prefix length.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cidr {
    addr: IpAddr,
    prefix_len: u8,
}

/// A CIDR list: networks in the order first listed, none twice. Prints back in the syntax it
/// parses (`10.0.0.0/8,fd00::/8`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct CidrList {
    cidrs: Vec<Cidr>,
}

/// Why a CIDR or a CIDR list was refused; the message names the item.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CidrListError {
    /// An item is neither `address/prefix-length` nor an address.
    NotACidr {
        /// The item, cut to 64 characters.
        item: String,
    },
    /// An item is empty: two commas in a row, or a comma at either end.
    EmptyItem {
        /// Which item, counting from 1.
        position: usize,
    },
}

impl Cidr {
    /// The network of `addr` with `prefix_len` bits; host bits are cleared. `None` if the prefix
    /// is longer than the address (32 bits for IPv4, 128 for IPv6).
    pub fn new(addr: IpAddr, prefix_len: u8) -> Option<Self> {
        if prefix_len > max_prefix(addr) {
            return None;
        }
        let addr = match addr {
            // `checked_shl` by the whole width (a /0) is `None`: no network bits at all.
            IpAddr::V4(a) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(prefix_len));
                IpAddr::V4(Ipv4Addr::from(u32::from(a) & mask.unwrap_or(0)))
            }
            IpAddr::V6(a) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(prefix_len));
                IpAddr::V6(Ipv6Addr::from(u128::from(a) & mask.unwrap_or(0)))
            }
        };
        Some(Self { addr, prefix_len })
    }

    /// The network address (host bits clear).
    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    pub fn prefix_len(&self) -> u8 {
        self.prefix_len
    }

    /// Whether `ip` is in this network; an address of the other family never is.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(_), IpAddr::V4(_)) | (IpAddr::V6(_), IpAddr::V6(_)) => {
                Self::new(ip, self.prefix_len).is_some_and(|n| n.addr == self.addr)
            }
            _ => false,
        }
    }
}

/// One item of a list: `10.0.0.0/8`, `fd00::/8`, or a bare address.
impl FromStr for Cidr {
    type Err = CidrListError;

    fn from_str(item: &str) -> Result<Self, CidrListError> {
        let refused = || CidrListError::NotACidr { item: quoted(item) };
        let (addr, prefix) = match item.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (item, None),
        };
        let addr = IpAddr::from_str(addr).map_err(|_| refused())?;
        let max_digits = match addr {
            IpAddr::V4(_) => 2,
            IpAddr::V6(_) => 3,
        };
        let prefix_len = match prefix {
            None => max_prefix(addr),
            Some(p)
                if (1..=max_digits).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit()) =>
            {
                p.parse::<u8>().map_err(|_| refused())?
            }
            Some(_) => return Err(refused()),
        };
        Self::new(addr, prefix_len).ok_or_else(refused)
    }
}

/// `10.0.0.0/8`, `fd00::/8`, `192.0.2.7/32`: always with the prefix length.
impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix_len)
    }
}

impl CidrList {
    /// Parses `10.0.0.0/8, fd00::/8, 192.0.2.7`.
    pub fn parse(text: &str) -> Result<Self, CidrListError> {
        let text = text.trim();
        let mut list = Self::default();
        if text.is_empty() {
            return Ok(list);
        }
        for (i, item) in text.split(',').enumerate() {
            let item = item.trim();
            if item.is_empty() {
                return Err(CidrListError::EmptyItem { position: i + 1 });
            }
            list.push(item.parse()?);
        }
        Ok(list)
    }

    /// Adds `cidr` at the end, unless the list holds it already.
    pub fn push(&mut self, cidr: Cidr) {
        if !self.cidrs.contains(&cidr) {
            self.cidrs.push(cidr);
        }
    }

    /// The networks, in the order first listed.
    pub fn cidrs(&self) -> &[Cidr] {
        &self.cidrs
    }

    pub fn iter(&self) -> impl Iterator<Item = &Cidr> + '_ {
        self.cidrs.iter()
    }

    pub fn is_empty(&self) -> bool {
        self.cidrs.is_empty()
    }

    pub fn len(&self) -> usize {
        self.cidrs.len()
    }
}

impl FromStr for CidrList {
    type Err = CidrListError;

    fn from_str(text: &str) -> Result<Self, CidrListError> {
        Self::parse(text)
    }
}

impl Extend<Cidr> for CidrList {
    fn extend<I: IntoIterator<Item = Cidr>>(&mut self, cidrs: I) {
        for c in cidrs {
            self.push(c);
        }
    }
}

/// `10.0.0.0/8,fd00::/8`; the empty list prints as nothing.
impl fmt::Display for CidrList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, c) in self.cidrs.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{c}")?;
        }
        Ok(())
    }
}

/// The length of `addr` in bits: the longest prefix of its family.
fn max_prefix(addr: IpAddr) -> u8 {
    match addr {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    }
}

impl fmt::Display for CidrListError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotACidr { item } => write!(
                f,
                "{item:?} is not a CIDR (like 10.0.0.0/8 or fd00::/8) or an IP address"
            ),
            Self::EmptyItem { position } => write!(
                f,
                "item {position} of the list is empty (two commas in a row, or a comma at an end)"
            ),
        }
    }
}

impl std::error::Error for CidrListError {}

#[cfg(test)]
mod tests;
