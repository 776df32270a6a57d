use super::*;

fn list(text: &str) -> CidrList {
    CidrList::parse(text).unwrap_or_else(|e| panic!("{text:?}: {e}"))
}

fn printed(text: &str) -> Vec<String> {
    list(text).iter().map(Cidr::to_string).collect()
}

#[test]
fn parses_networks_and_addresses_normalised_and_deduplicated() {
    assert!(list("").is_empty());
    assert!(list(" ").is_empty());
    assert_eq!(
        printed("10.1.2.3/8, fd00::/8, 192.0.2.7, 10.0.0.0/8"),
        ["10.0.0.0/8", "fd00::/8", "192.0.2.7/32"]
    );
    assert_eq!(
        printed("2001:db8::1, fd00::1:2/112, ::ffff:192.0.2.1/96"),
        ["2001:db8::1/128", "fd00::1:0/112", "::ffff:0.0.0.0/96"]
    );
    assert_eq!(printed("0.0.0.0/0, ::/0, 1.2.3.4/0"), ["0.0.0.0/0", "::/0"]);
    assert_eq!(
        printed("10.0.0.0/08"),
        ["10.0.0.0/8"],
        "two digits, as before"
    );
    assert_eq!(
        printed("fd00::/064"),
        ["fd00::/64"],
        "three digits for IPv6"
    );
    assert_eq!(list("10.0.0.0/8, 198.18.0.0/15").len(), 2);
}

#[test]
fn refuses_what_is_not_a_cidr_and_names_it() {
    for bad in [
        "10.0.0.0/33",
        "fd00::/129",
        "10.0.0.0/",
        "10.0.0.0/+8",
        "10.0.0.0/008",
        "fd00::/0064",
        "10.0.0.0 /8",
        "10.0.0/8",
        "010.0.0.0/8",
        "10.0.0.256",
        "fe80::1%eth0",
        "[fd00::1]",
        "example.com",
        "10.0.0.0/8/8",
    ] {
        let err = CidrList::parse(&format!("192.0.2.0/24, {bad}")).expect_err(bad);
        assert_eq!(
            err.to_string(),
            format!("{bad:?} is not a CIDR (like 10.0.0.0/8 or fd00::/8) or an IP address"),
        );
    }
    for (bad, position) in [("10.0.0.0/8,,fd00::/8", 2), ("10.0.0.0/8,", 2), (",::1", 1)] {
        let err = CidrList::parse(bad).expect_err(bad);
        assert_eq!(err, CidrListError::EmptyItem { position }, "{bad}");
        assert!(
            err.to_string()
                .starts_with(&format!("item {position} of the list is empty")),
            "{err}"
        );
    }
    let err = CidrList::parse(&"x".repeat(1000)).expect_err("long");
    assert!(err.to_string().len() < 200, "{err}");
}

#[test]
fn prints_back_in_the_syntax_it_parses() {
    for text in ["", "10.1.2.3/8, fd00::/8, 192.0.2.7", "::/0,0.0.0.0/0"] {
        let l = list(text);
        assert_eq!(list(&l.to_string()), l, "{text}");
    }
    assert_eq!(
        list("192.0.2.7, fd00::/8").to_string(),
        "192.0.2.7/32,fd00::/8"
    );
}

#[test]
fn new_and_contains() {
    let net = Cidr::new("10.1.2.3".parse().expect("ip"), 8).expect("a /8");
    assert_eq!(net.addr(), "10.0.0.0".parse::<IpAddr>().expect("ip"));
    assert_eq!(net.prefix_len(), 8);
    assert!(net.contains("10.255.0.1".parse().expect("ip")));
    assert!(!net.contains("11.0.0.1".parse().expect("ip")));
    assert!(
        !net.contains("::a00:1".parse().expect("ip")),
        "another family"
    );
    assert_eq!(Cidr::new("10.0.0.0".parse().expect("ip"), 33), None);
    assert_eq!(Cidr::new("::".parse().expect("ip"), 129), None);
    let all: Cidr = "::/0".parse().expect("v6 /0");
    assert!(all.contains("2001:db8::1".parse().expect("ip")));

    let mut l = list("10.0.0.0/8");
    l.extend([net, "fd00::/8".parse().expect("v6")]);
    assert_eq!(l.to_string(), "10.0.0.0/8,fd00::/8");
}
