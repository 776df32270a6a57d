//! Port lists as operators write them in annotations and flags: `80`, `8000-8100`, and comma
//! lists of both (`22, 8000-8100`). Whitespace around items is ignored; an empty list is empty.

use std::fmt;

/// An inclusive range of TCP ports; a single port is a range of one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PortRange {
    start: u16,
    end: u16,
}

/// Why a port list was refused; the message names the item.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PortListError {
    #[error("{item:?} is not a port: expected a number from 1 to 65535")]
    NotAPort { item: String },
    #[error("{item:?} is not a port range: its start is above its end")]
    Backwards { item: String },
    #[error("the list has an empty item (two commas in a row, or a comma at an end)")]
    EmptyItem,
}

impl PortRange {
    /// A range from `start` to `end`, both included; `None` if `start > end` or `start` is 0.
    pub fn new(start: u16, end: u16) -> Option<Self> {
        (start != 0 && start <= end).then_some(Self { start, end })
    }

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

    /// How many of iptables `multiport`'s 15 slots this item takes: a range takes two.
    pub(crate) fn multiport_slots(&self) -> usize {
        if self.start == self.end {
            1
        } else {
            2
        }
    }
}

/// iptables' spelling: `80` or `8000:8100`.
impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.start == self.end {
            write!(f, "{}", self.start)
        } else {
            write!(f, "{}:{}", self.start, self.end)
        }
    }
}

/// Parses `22, 8000-8100`; the result is sorted, with overlapping and adjacent ranges merged, so
/// equal sets render equal rules.
pub fn parse_port_list(text: &str) -> Result<Vec<PortRange>, PortListError> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(Vec::new());
    }
    let mut ranges = Vec::new();
    for item in text.split(',') {
        let item = item.trim();
        if item.is_empty() {
            return Err(PortListError::EmptyItem);
        }
        let (start, end) = match item.split_once('-') {
            Some((a, b)) => (parse_port(a.trim(), item)?, parse_port(b.trim(), item)?),
            None => {
                let p = parse_port(item, item)?;
                (p, p)
            }
        };
        let range = PortRange::new(start, end).ok_or_else(|| PortListError::Backwards {
            item: item.to_owned(),
        })?;
        ranges.push(range);
    }
    Ok(merge(ranges))
}

/// Sorts and merges overlapping or adjacent ranges.
pub fn merge(mut ranges: Vec<PortRange>) -> Vec<PortRange> {
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
    merged
}

fn parse_port(text: &str, item: &str) -> Result<u16, PortListError> {
    // Only ASCII digits: `u16::from_str` would also take a leading `+`.
    let ok = !text.is_empty() && text.len() <= 5 && text.bytes().all(|b| b.is_ascii_digit());
    match text.parse::<u16>() {
        Ok(p) if ok && p != 0 => Ok(p),
        _ => Err(PortListError::NotAPort {
            item: item.to_owned(),
        }),
    }
}

/// Splits ranges into groups that each fit one `multiport` match (at most 15 slots).
pub(crate) fn multiport_groups(ranges: &[PortRange]) -> Vec<&[PortRange]> {
    const SLOTS: usize = 15;
    let mut groups = Vec::new();
    let mut start = 0;
    let mut used = 0;
    for (i, r) in ranges.iter().enumerate() {
        if used + r.multiport_slots() > SLOTS {
            groups.push(&ranges[start..i]);
            start = i;
            used = 0;
        }
        used += r.multiport_slots();
    }
    if start < ranges.len() {
        groups.push(&ranges[start..]);
    }
    groups
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(a: u16, b: u16) -> PortRange {
        PortRange::new(a, b).expect("a valid range")
    }

    #[test]
    fn parses_ports_and_ranges_sorted_and_merged() {
        assert_eq!(parse_port_list(""), Ok(vec![]));
        assert_eq!(parse_port_list("  "), Ok(vec![]));
        assert_eq!(
            parse_port_list("8080, 22,8000-8100,8100-8101, 23"),
            Ok(vec![r(22, 23), r(8000, 8101)])
        );
        assert_eq!(parse_port_list("65535"), Ok(vec![r(65535, 65535)]));
        assert_eq!(parse_port_list("1-65535"), Ok(vec![r(1, 65535)]));
    }

    #[test]
    fn refuses_what_is_not_a_port_and_names_it() {
        let cases = [
            ("0", "\"0\" is not a port"),
            ("65536", "\"65536\" is not a port"),
            ("+80", "\"+80\" is not a port"),
            ("80,http", "\"http\" is not a port"),
            ("90-80", "\"90-80\" is not a port range"),
            ("80-", "\"80-\" is not a port"),
            ("1-2-3", "\"1-2-3\" is not a port"),
            ("80,,81", "empty item"),
            ("80,", "empty item"),
        ];
        for (input, message) in cases {
            let err = parse_port_list(input).expect_err(input);
            assert!(err.to_string().contains(message), "{input}: {err}");
        }
    }

    #[test]
    fn displays_in_iptables_spelling() {
        assert_eq!(r(80, 80).to_string(), "80");
        assert_eq!(r(8000, 8100).to_string(), "8000:8100");
    }

    #[test]
    fn multiport_groups_hold_at_most_fifteen_slots() {
        let singles: Vec<_> = (1..=16).map(|p| r(p * 10, p * 10)).collect();
        let groups = multiport_groups(&singles);
        assert_eq!(groups.iter().map(|g| g.len()).collect::<Vec<_>>(), [15, 1]);
        let ranges: Vec<_> = (1..=8).map(|p| r(p * 10, p * 10 + 1)).collect();
        let groups = multiport_groups(&ranges);
        assert_eq!(groups.iter().map(|g| g.len()).collect::<Vec<_>>(), [7, 1]);
        assert!(multiport_groups(&[]).is_empty());
    }
}
