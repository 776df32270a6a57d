//! The pod contract's list parsers (`weft-pod`), which read annotations: untrusted text that
//! anyone who can create a pod writes. Never a panic, and:
//! - what parses prints back in the same syntax and parses to the same value (so the rules and
//!   the proxy's config say what the annotation said);
//! - a port list is sorted and merged, holds no port 0, and `PortSet` (the data path's) answers
//!   `contains` exactly as the list does;
//! - every network of a CIDR list has its host bits clear and is listed once;
//! - a refusal names what it refused: an empty item by a position that is blank in the input,
//!   any other item quoted, cut to 64 characters;
//! - a meshed pod's settings (`weft_pod::settings`) from any value of any `weft.dev/` annotation:
//!   used as written or refused naming that annotation; quantities never overflow.
#![no_main]

use std::{collections::BTreeMap, net::IpAddr, str::FromStr};

use libfuzzer_sys::fuzz_target;
use weft_pod::{
    annotations as a, proxy_settings, Cidr, CidrList, CidrListError, PortList, PortListError,
    PortSet, Quantity,
};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    ports(&text, data);
    cidrs(&text);
    settings(&text);
});

fn settings(text: &str) {
    let pod_keys = [
        a::SKIP_INBOUND_PORTS,
        a::SKIP_OUTBOUND_PORTS,
        a::SKIP_OUTBOUND_CIDRS,
        a::OPAQUE_PORTS,
        a::PROXY_LOG_LEVEL,
        a::PROXY_CPU_LIMIT,
        a::PROXY_MEMORY_LIMIT,
    ];
    let one = |key: &str| BTreeMap::from([(key.to_string(), text.to_string())]);
    for key in pod_keys {
        match proxy_settings(&one(key), &BTreeMap::new()) {
            Ok(s) => {
                assert!(s.cpu_limit_millis != Some(0) && s.memory_limit_bytes != Some(0));
                for (_, value) in &s.env {
                    assert!(!value.contains('\n'), "{value:?}");
                }
            }
            Err(e) => assert_eq!(e.annotation, key, "{e}"),
        }
    }
    if let Err(e) = proxy_settings(&BTreeMap::new(), &one(a::MTLS)) {
        assert_eq!(e.annotation, a::MTLS);
    }
    if let Some(q) = Quantity::parse(text) {
        for scale in [-3, 0, 3, 9] {
            let _ = q.ceil_scaled(scale);
        }
    }
}

fn ports(text: &str, data: &[u8]) {
    let set = PortSet::from_str(text);
    let list = match PortList::parse(text) {
        Ok(list) => list,
        Err(e) => {
            assert_eq!(set.as_ref().err(), Some(&e), "PortSet parses as PortList does");
            match &e {
                PortListError::EmptyItem { position } => blank_item(text, *position),
                PortListError::NotAPort { item } | PortListError::Backwards { item } => {
                    assert!(item.chars().count() <= 64, "{item:?}")
                }
            }
            assert!(!e.to_string().is_empty());
            return;
        }
    };
    let printed = list.to_string();
    assert_eq!(PortList::parse(&printed).as_ref(), Ok(&list), "{printed:?}");
    let ranges = list.ranges();
    for r in ranges {
        assert!(r.start() >= 1 && r.start() <= r.end(), "{r:?}");
    }
    for pair in ranges.windows(2) {
        assert!(
            u32::from(pair[0].end()) + 1 < u32::from(pair[1].start()),
            "not merged: {pair:?}"
        );
    }
    let set = set.expect("PortSet parses as PortList does");
    let edges = ranges.iter().flat_map(|r| {
        [r.start().wrapping_sub(1), r.start(), r.end(), r.end().wrapping_add(1)]
    });
    let probes = data
        .chunks_exact(2)
        .map(|b| u16::from_le_bytes([b[0], b[1]]));
    for port in edges.chain(probes).chain([0, 1, u16::MAX]) {
        assert_eq!(set.contains(port), list.contains(port), "port {port}");
    }
    assert_eq!(set.is_empty(), list.is_empty());
}

fn cidrs(text: &str) {
    let list = match CidrList::parse(text) {
        Ok(list) => list,
        Err(CidrListError::EmptyItem { position }) => return blank_item(text, position),
        Err(CidrListError::NotACidr { item }) => {
            assert!(item.chars().count() <= 64, "{item:?}");
            return;
        }
    };
    let printed = list.to_string();
    assert_eq!(CidrList::parse(&printed).as_ref(), Ok(&list), "{printed:?}");
    for (i, cidr) in list.iter().enumerate() {
        assert_eq!(Cidr::new(cidr.addr(), cidr.prefix_len()), Some(*cidr), "host bits");
        assert!(cidr.contains(cidr.addr()));
        assert!(!list.cidrs()[..i].contains(cidr), "{cidr} twice");
        let item = cidr.to_string();
        assert_eq!(item.parse::<Cidr>().as_ref(), Ok(cidr), "{item}");
        // A bare address is the network of that one address.
        let one = Cidr::from_str(&cidr.addr().to_string()).expect("an address");
        let bits = match cidr.addr() {
            IpAddr::V4(_) => 32,
            IpAddr::V6(_) => 128,
        };
        assert_eq!(one.prefix_len(), bits);
    }
}

/// The `position`th item of the comma list `text` (from 1) is blank.
fn blank_item(text: &str, position: usize) {
    let item = text.trim().split(',').nth(position - 1);
    assert!(
        item.is_some_and(|i| i.trim().is_empty()),
        "item {position} of {text:?} is not blank"
    );
}
