use super::*;

fn r(a: u16, b: u16) -> PortRange {
    PortRange::new(a, b).expect("a valid range")
}

fn list(text: &str) -> PortList {
    PortList::parse(text).unwrap_or_else(|e| panic!("{text:?}: {e}"))
}

#[test]
fn parses_ports_and_ranges_sorted_and_merged() {
    assert!(list("").is_empty());
    assert!(list("  ").is_empty());
    assert_eq!(
        list("8080, 22,8000-8100,8100-8101, 23").ranges(),
        [r(22, 23), r(8000, 8101)]
    );
    assert_eq!(list("65535").ranges(), [r(65535, 65535)]);
    assert_eq!(list("1-65535").ranges(), [r(1, 65535)]);
    assert_eq!(list(" 9000 - 9002 ").ranges(), [r(9000, 9002)]);
    assert_eq!(
        list("080").ranges(),
        [r(80, 80)],
        "leading zeros are decimal"
    );
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
        ("8 0", "\"8 0\" is not a port"),
        ("80,,81", "item 2 of the list is empty"),
        ("25,,587", "item 2 of the list is empty"),
        ("80,", "item 2 of the list is empty"),
        (",80", "item 1 of the list is empty"),
        ("80, ,81", "item 2 of the list is empty"),
    ];
    for (input, message) in cases {
        let err = PortList::parse(input).expect_err(input);
        assert!(err.to_string().contains(message), "{input}: {err}");
        assert_eq!(input.parse::<PortSet>().expect_err(input), err, "{input}");
    }
}

#[test]
fn a_long_bad_item_is_quoted_cut_short() {
    let err = PortList::parse(&"9".repeat(1000)).expect_err("no port");
    let PortListError::NotAPort { item } = &err else {
        panic!("{err:?}")
    };
    assert_eq!(item.len(), 64);
}

#[test]
fn prints_back_in_the_syntax_it_parses() {
    assert_eq!(r(80, 80).to_string(), "80");
    assert_eq!(r(8000, 8100).to_string(), "8000-8100");
    for (input, printed) in [
        ("", ""),
        (" 23 ,22, 8000 - 8100", "22-23,8000-8100"),
        ("25,587,3306,5432,6379,11211", "25,587,3306,5432,6379,11211"),
    ] {
        let l = list(input);
        assert_eq!(l.to_string(), printed);
        assert_eq!(list(printed), l);
    }
}

#[test]
fn contains_and_union() {
    let a = list("22, 8000-8100");
    for (port, want) in [
        (21, false),
        (22, true),
        (23, false),
        (8000, true),
        (8100, true),
    ] {
        assert_eq!(a.contains(port), want, "{port}");
    }
    assert!(!PortList::default().contains(22));
    let b = list("23, 9000");
    assert_eq!(a.union(&b), list("22-23,8000-8100,9000"));
    assert_eq!(a.union(&PortList::default()), a);
}

#[test]
fn a_port_set_holds_exactly_the_listed_ports() {
    let set: PortSet = "4222, 9000-9002, 65535".parse().expect("valid");
    assert_eq!(
        set.iter().collect::<Vec<_>>(),
        [4222, 9000, 9001, 9002, 65535]
    );
    assert!(set.contains(9001) && !set.contains(9003) && !set.contains(0));
    assert!(!set.is_empty());
    let empty: PortSet = "".parse().expect("valid");
    assert!(empty.is_empty());
    assert_eq!(empty, PortSet::empty());
    assert_eq!(format!("{set:?}"), "{4222, 9000, 9001, 9002, 65535}");
}
