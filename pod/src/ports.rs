//! Port lists as operators write them in annotations, flags and variables: `80`, `8000-8100`,
//! and comma lists of both (`22, 8000-8100`). Whitespace around items and around a range's `-`
//! is ignored; an empty or blank list is empty; an empty item (`25,,587`, `80,`) is refused, as
//! it is most likely a value cut short or a typo.
//!
//! One syntax for every list: the skip-port annotations and flags of the CNI, the CNI's network
//! config, `weft.dev/opaque-ports` and the proxy's `WEFT_OPAQUE_PORTS`.

use std::{fmt, str::FromStr};

use crate::quoted;

/// An inclusive range of TCP ports (never port 0); a single port is a range of one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PortRange {
    start: u16,
    end: u16,
}

/// A port list: sorted, with overlapping and adjacent ranges merged, so equal sets of ports are
/// equal lists and print the same. Prints back in the syntax it parses (`22-23,8000-8101`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct PortList {
    ranges: Vec<PortRange>,
}

/// A set of ports answering [`PortSet::contains`] in one load: for the data path, which asks
/// once per accepted connection.
#[derive(Clone, PartialEq, Eq)]
pub struct PortSet {
    /// One bit per port.
    bits: Box<[u64; 1024]>,
}

/// Why a port list was refused; the message names the item.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PortListError {
    /// An item (or one end of a range) is not a number from 1 to 65535.
    NotAPort {
        /// The item, cut to 64 characters.
        item: String,
    },
    /// A range's start is above its end.
    Backwards {
        /// The item, cut to 64 characters.
        item: String,
    },
    /// An item is empty: two commas in a row, or a comma at either end.
    EmptyItem {
        /// Which item, counting from 1.
        position: usize,
    },
}

impl PortRange {
    /// A range from `start` to `end`, both included; `None` if `start > end` or `start` is 0.
    pub fn new(start: u16, end: u16) -> Option<Self> {
        (start != 0 && start <= end).then_some(Self { start, end })
    }

    /// The range of one port; `None` for port 0.
    pub fn single(port: u16) -> Option<Self> {
        Self::new(port, port)
    }

    pub fn start(&self) -> u16 {
        self.start
    }

    pub fn end(&self) -> u16 {
        self.end
    }

    pub fn contains(&self, port: u16) -> bool {
        self.start <= port && port <= self.end
    }

    /// Whether this is one port rather than a range of several.
    pub fn is_single(&self) -> bool {
        self.start == self.end
    }
}

/// One item of a list: `80` or `8000-8100` (spaces around the `-` allowed).
impl FromStr for PortRange {
    type Err = PortListError;

    fn from_str(item: &str) -> Result<Self, PortListError> {
        let item = item.trim();
        let (start, end) = match item.split_once('-') {
            Some((a, b)) => (port(a.trim(), item)?, port(b.trim(), item)?),
            None => {
                let p = port(item, item)?;
                (p, p)
            }
        };
        Self::new(start, end).ok_or_else(|| PortListError::Backwards { item: quoted(item) })
    }
}

/// The list syntax: `80` or `8000-8100`.
impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_single() {
            write!(f, "{}", self.start)
        } else {
            write!(f, "{}-{}", self.start, self.end)
        }
    }
}

impl PortList {
    /// Parses `22, 8000-8100`.
    pub fn parse(text: &str) -> Result<Self, PortListError> {
        let text = text.trim();
        if text.is_empty() {
            return Ok(Self::default());
        }
        let mut ranges = Vec::new();
        for (i, item) in text.split(',').enumerate() {
            let item = item.trim();
            if item.is_empty() {
                return Err(PortListError::EmptyItem { position: i + 1 });
            }
            ranges.push(item.parse()?);
        }
        Ok(Self::from_ranges(ranges))
    }

    /// The list holding these ranges: sorted, overlapping and adjacent ranges merged.
    pub fn from_ranges(ranges: impl IntoIterator<Item = PortRange>) -> Self {
        let mut ranges: Vec<PortRange> = ranges.into_iter().collect();
        ranges.sort_unstable();
        let mut merged: Vec<PortRange> = Vec::with_capacity(ranges.len());
        for r in ranges {
            match merged.last_mut() {
                Some(last) if u32::from(r.start) <= u32::from(last.end) + 1 => {
                    last.end = last.end.max(r.end);
                }
                _ => merged.push(r),
            }
        }
        Self { ranges: merged }
    }

    /// The ranges, sorted, none overlapping or adjacent.
    pub fn ranges(&self) -> &[PortRange] {
        &self.ranges
    }

    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// Whether `port` is in the list (a binary search; [`PortSet`] answers in one load).
    pub fn contains(&self, port: u16) -> bool {
        self.ranges
            .binary_search_by(|r| {
                if r.end < port {
                    std::cmp::Ordering::Less
                } else if r.start > port {
                    std::cmp::Ordering::Greater
                } else {
                    std::cmp::Ordering::Equal
                }
            })
            .is_ok()
    }

    /// The ports of both lists.
    pub fn union(&self, other: &PortList) -> PortList {
        Self::from_ranges(self.ranges.iter().chain(&other.ranges).copied())
    }

    /// Every port in the list, in order.
    pub fn ports(&self) -> impl Iterator<Item = u16> + '_ {
        self.ranges.iter().flat_map(|r| r.start..=r.end)
    }
}

impl FromStr for PortList {
    type Err = PortListError;

    fn from_str(text: &str) -> Result<Self, PortListError> {
        Self::parse(text)
    }
}

/// `22-23,8000-8101`; the empty list prints as nothing.
impl fmt::Display for PortList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.ranges.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{r}")?;
        }
        Ok(())
    }
}

impl PortSet {
    /// The empty set.
    pub fn empty() -> Self {
        Self {
            bits: Box::new([0; 1024]),
        }
    }

    /// Whether `port` is in the set.
    pub fn contains(&self, port: u16) -> bool {
        self.bits[usize::from(port / 64)] & (1 << (port % 64)) != 0
    }

    /// Every port in the set, in order.
    pub fn iter(&self) -> impl Iterator<Item = u16> + '_ {
        (0..=u16::MAX).filter(|p| self.contains(*p))
    }

    pub fn is_empty(&self) -> bool {
        self.bits.iter().all(|w| *w == 0)
    }

    fn insert(&mut self, port: u16) {
        self.bits[usize::from(port / 64)] |= 1 << (port % 64);
    }
}

impl Default for PortSet {
    fn default() -> Self {
        Self::empty()
    }
}

impl From<&PortList> for PortSet {
    fn from(list: &PortList) -> Self {
        let mut set = PortSet::empty();
        for p in list.ports() {
            set.insert(p);
        }
        set
    }
}

/// The port list syntax.
impl FromStr for PortSet {
    type Err = PortListError;

    fn from_str(text: &str) -> Result<Self, PortListError> {
        Ok(Self::from(&PortList::parse(text)?))
    }
}

impl fmt::Debug for PortSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

impl fmt::Display for PortListError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotAPort { item } => {
                write!(
                    f,
                    "{item:?} is not a port: expected a number from 1 to 65535"
                )
            }
            Self::Backwards { item } => {
                write!(
                    f,
                    "{item:?} is not a port range: its start is above its end"
                )
            }
            Self::EmptyItem { position } => write!(
                f,
                "item {position} of the list is empty (two commas in a row, or a comma at an end)"
            ),
        }
    }
}

impl std::error::Error for PortListError {}

/// One port: ASCII digits only (`u16::from_str` would also take a leading `+`), 1 to 65535.
fn port(text: &str, item: &str) -> Result<u16, PortListError> {
    let digits = !text.is_empty() && text.len() <= 5 && text.bytes().all(|b| b.is_ascii_digit());
    match text.parse::<u16>() {
        Ok(p) if digits && p != 0 => Ok(p),
        _ => Err(PortListError::NotAPort { item: quoted(item) }),
    }
}

#[cfg(test)]
mod tests;
