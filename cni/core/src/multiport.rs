//! Port lists in iptables' own spelling: `multiport --dports` takes at most 15 slots per rule
//! (a single port takes one, a range two) and writes a range `8000:8100`. The lists themselves,
//! their syntax and their parser, are `weft_pod::ports`.

use std::fmt::Write as _;

use weft_pod::PortRange;

/// How many of `multiport`'s slots a rule may use.
const SLOTS: usize = 15;

/// Splits ranges into groups that each fit one `multiport` match.
pub(crate) fn groups(ranges: &[PortRange]) -> Vec<&[PortRange]> {
    let mut groups = Vec::new();
    let mut start = 0;
    let mut used = 0;
    for (i, r) in ranges.iter().enumerate() {
        if used + slots(r) > SLOTS {
            groups.push(&ranges[start..i]);
            start = i;
            used = 0;
        }
        used += slots(r);
    }
    if start < ranges.len() {
        groups.push(&ranges[start..]);
    }
    groups
}

/// One group as `--dports` takes it, and `iptables-save` prints it back: `22,9000:9100`.
pub(crate) fn dports(group: &[PortRange]) -> String {
    let mut s = String::new();
    for (i, r) in group.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        if r.is_single() {
            let _ = write!(s, "{}", r.start());
        } else {
            let _ = write!(s, "{}:{}", r.start(), r.end());
        }
    }
    s
}

/// A range takes two slots, a single port one.
fn slots(r: &PortRange) -> usize {
    if r.is_single() {
        1
    } else {
        2
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(a: u16, b: u16) -> PortRange {
        PortRange::new(a, b).expect("a valid range")
    }

    #[test]
    fn groups_hold_at_most_fifteen_slots() {
        let singles: Vec<_> = (1..=16).map(|p| r(p * 10, p * 10)).collect();
        let split = groups(&singles);
        assert_eq!(split.iter().map(|g| g.len()).collect::<Vec<_>>(), [15, 1]);
        let ranges: Vec<_> = (1..=8).map(|p| r(p * 10, p * 10 + 1)).collect();
        let split = groups(&ranges);
        assert_eq!(split.iter().map(|g| g.len()).collect::<Vec<_>>(), [7, 1]);
        assert!(groups(&[]).is_empty());
    }

    #[test]
    fn dports_are_in_iptables_spelling() {
        assert_eq!(dports(&[r(80, 80)]), "80");
        assert_eq!(dports(&[r(22, 22), r(8000, 8100)]), "22,8000:8100");
    }
}
