//! Golden files: `cni/core/tests/golden/<name>.rules` hold the `iptables-restore` input of each
//! case. `WEFT_UPDATE_GOLDEN=1 cargo test -p weft-cni-core` rewrites them; review the diff.

use std::path::PathBuf;

use super::*;

fn golden(name: &str, actual: &str) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("tests/golden/{name}.rules"));
    if std::env::var_os("WEFT_UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, actual).expect("write the golden file");
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "read {}: {e} (WEFT_UPDATE_GOLDEN=1 writes it)",
            path.display()
        )
    });
    assert_eq!(
        actual,
        expected,
        "{} differs; if the change is meant, rerun with WEFT_UPDATE_GOLDEN=1 and review the diff",
        path.display()
    );
}

fn skipping() -> Redirect {
    Redirect {
        skip_inbound_ports: "22,9000-9100".parse().expect("ports"),
        skip_outbound_ports: "5432, 6379".parse().expect("ports"),
        skip_outbound_cidrs: "10.96.0.0/12, 169.254.169.254, fd00::/8"
            .parse()
            .expect("cidrs"),
        ..Redirect::default()
    }
}

#[test]
fn default_rules_match_the_golden_files() {
    let r = Redirect::default();
    golden(
        "default-v4",
        &r.render(Family::V4).expect("valid").restore_input(),
    );
    golden(
        "default-v6",
        &r.render(Family::V6).expect("valid").restore_input(),
    );
}

#[test]
fn skip_rules_match_the_golden_files() {
    let r = skipping();
    golden(
        "skip-v4",
        &r.render(Family::V4).expect("valid").restore_input(),
    );
    golden(
        "skip-v6",
        &r.render(Family::V6).expect("valid").restore_input(),
    );
}

#[test]
fn many_skip_ports_split_into_multiport_rules_of_fifteen() {
    let list: Vec<String> = (1..=20).map(|p| (p * 100).to_string()).collect();
    let r = Redirect {
        skip_outbound_ports: list.join(",").parse().expect("ports"),
        ..Redirect::default()
    };
    let rules = r.render(Family::V4).expect("valid");
    let multiport: Vec<&String> = rules.chains[1]
        .1
        .iter()
        .filter(|l| l.contains("multiport"))
        .collect();
    assert_eq!(multiport.len(), 2, "{multiport:#?}");
    assert!(multiport[0].contains("--dports 100,200,") && multiport[0].contains(",1500 "));
    assert!(multiport[1].contains("--dports 1600,1700,1800,1900,2000 "));
}

#[test]
fn every_rule_is_commented_and_the_order_is_the_contract() {
    for family in [Family::V4, Family::V6] {
        let rules = skipping().render(family).expect("valid");
        for line in rules.chains.iter().flat_map(|(_, r)| r).chain(&rules.jumps) {
            assert!(line.contains(" -m comment --comment \"weft: "), "{line}");
        }
        let out = &rules.chains[1].1;
        // The check rule comes before the UID exemption, which comes before everything else.
        assert!(
            out[0].contains("--dport 15141 -m owner --uid-owner 2121"),
            "{}",
            out[0]
        );
        assert!(out[0].ends_with("-j REDIRECT --to-ports 15140"));
        assert!(out[1].contains("--uid-owner 2121") && out[1].ends_with("-j RETURN"));
        assert!(out[2].contains(" -o lo "));
        assert!(out
            .last()
            .is_some_and(|l| l.ends_with("-j REDIRECT --to-ports 15140")));
        let inbound = &rules.chains[0].1;
        assert!(inbound
            .last()
            .is_some_and(|l| l.ends_with("-j REDIRECT --to-ports 15143")));
    }
}

#[test]
fn cidrs_of_the_other_family_are_left_out() {
    let v4 = skipping()
        .render(Family::V4)
        .expect("valid")
        .restore_input();
    let v6 = skipping()
        .render(Family::V6)
        .expect("valid")
        .restore_input();
    assert!(v4.contains("-d 10.96.0.0/12 ") && !v4.contains("fd00::/8"));
    assert!(v6.contains("-d fd00::/8 ") && !v6.contains("10.96.0.0/12"));
    assert!(v6.contains("-d ::1/128 -p tcp -m tcp --dport 15141"));
}

#[test]
fn invalid_configs_are_refused_with_a_reason() {
    let root = Redirect {
        proxy_uid: 0,
        ..Redirect::default()
    };
    assert_eq!(root.render(Family::V4), Err(RedirectError::RootProxy));
    let same = Redirect {
        admin_port: 15140,
        ..Redirect::default()
    };
    assert_eq!(
        same.validate().map_err(|e| e.to_string()),
        Err("the outbound and admin ports are both 15140; each needs its own port".to_owned())
    );
    let zero = Redirect {
        check_port: 0,
        ..Redirect::default()
    };
    assert_eq!(
        zero.validate(),
        Err(RedirectError::ZeroPort {
            what: "redirect check"
        })
    );
}
