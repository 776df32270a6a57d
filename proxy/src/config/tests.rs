use super::*;

fn source(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn invalid_key(pairs: &[(&str, &str)]) -> &'static str {
    match Config::from_source(&source(pairs)) {
        Err(ConfigError::Invalid { key, .. }) => key,
        other => panic!("expected an invalid value, got {other:?}"),
    }
}

#[test]
fn defaults_match_the_design() {
    let c = Config::defaults().expect("defaults are valid");
    assert_eq!(
        (c.outbound_port, c.inbound_port, c.admin_port),
        (15140, 15143, 15190)
    );
    assert_eq!(c.outbound_target, Target::Transparent);
    for p in [25, 587, 3306, 5432, 6379, 11211] {
        assert!(c.opaque_ports.contains(p), "{p}");
    }
    assert!(!c.opaque_ports.contains(80));
    assert_eq!(c.shutdown_grace, Duration::from_secs(30));
    assert_eq!(c.log_format, LogFormat::Plain);
}

#[test]
fn every_bad_value_names_its_variable() {
    assert_eq!(
        invalid_key(&[("WEFT_OUTBOUND_PORT", "70000")]),
        keys::OUTBOUND_PORT
    );
    assert_eq!(
        invalid_key(&[("WEFT_INBOUND_TARGET", "localhost:80")]),
        keys::INBOUND_TARGET
    );
    assert_eq!(
        invalid_key(&[("WEFT_OUTBOUND_TARGET", "127.0.0.1:0")]),
        keys::OUTBOUND_TARGET
    );
    assert_eq!(
        invalid_key(&[("WEFT_OPAQUE_PORTS", "25,x")]),
        keys::OPAQUE_PORTS
    );
    assert_eq!(
        invalid_key(&[("WEFT_OPAQUE_PORTS", "90-80")]),
        keys::OPAQUE_PORTS
    );
    assert_eq!(
        invalid_key(&[("WEFT_DETECT_TIMEOUT", "10")]),
        keys::DETECT_TIMEOUT
    );
    assert_eq!(
        invalid_key(&[("WEFT_DETECT_TIMEOUT", "0s")]),
        keys::DETECT_TIMEOUT
    );
    assert_eq!(
        invalid_key(&[("WEFT_SHUTDOWN_GRACE", "2 days")]),
        keys::SHUTDOWN_GRACE
    );
    assert_eq!(
        invalid_key(&[("WEFT_MAX_HEADER_BYTES", "100")]),
        keys::MAX_HEADER_BYTES
    );
    assert_eq!(invalid_key(&[("WEFT_THREADS", "0")]), keys::THREADS);
    assert_eq!(invalid_key(&[("WEFT_LOG", "info,[[")]), keys::LOG);
    assert_eq!(invalid_key(&[("WEFT_LOG_FORMAT", "xml")]), keys::LOG_FORMAT);
}

#[test]
fn the_error_is_one_clear_line() {
    let err = Config::from_source(&source(&[("WEFT_ADMIN_PORT", "http")])).expect_err("invalid");
    let line = err.to_string();
    assert_eq!(
        line,
        r#"WEFT_ADMIN_PORT="http": expected a port number from 0 to 65535"#
    );
}

#[test]
fn explicit_targets_and_port_ranges() {
    let c = Config::from_source(&source(&[
        ("WEFT_OUTBOUND_TARGET", "[::1]:8080"),
        ("WEFT_OPAQUE_PORTS", " 4222, 9000-9002 ,"),
        ("WEFT_SHUTDOWN_GRACE", "0s"),
    ]))
    .expect("valid");
    assert_eq!(
        c.outbound_target,
        Target::Explicit("[::1]:8080".parse().expect("addr"))
    );
    let ports: Vec<u16> = c.opaque_ports.iter().collect();
    assert_eq!(ports, [4222, 9000, 9001, 9002]);
    assert_eq!(c.shutdown_grace, Duration::ZERO);
    let none = Config::from_source(&source(&[("WEFT_OPAQUE_PORTS", "")])).expect("valid");
    assert_eq!(none.opaque_ports.iter().count(), 0);
}

#[test]
fn flags_map_to_variables_and_win_over_the_environment() {
    let args = ["--outbound-port", "1000", "--log-format=json"].map(OsString::from);
    let Command::Run(flags) = parse_args(args).expect("valid flags") else {
        panic!("expected run");
    };
    let env = source(&[
        ("WEFT_OUTBOUND_PORT", "2000"),
        ("WEFT_INBOUND_PORT", "3000"),
    ]);
    let c = Config::from_source(&Layered(flags, env)).expect("valid");
    assert_eq!((c.outbound_port, c.inbound_port), (1000, 3000));
    assert_eq!(c.log_format, LogFormat::Json);

    assert_eq!(
        parse_args(["--no-such-thing", "1"].map(OsString::from)),
        Err(ConfigError::UnknownFlag("--no-such-thing".into()))
    );
    assert_eq!(
        parse_args(["--admin-port"].map(OsString::from)),
        Err(ConfigError::MissingValue("admin-port".into()))
    );
    assert_eq!(
        parse_args(["--help"].map(OsString::from)),
        Ok(Command::Help)
    );
}

#[test]
fn help_and_docs_list_every_variable() {
    let help = help();
    let docs = include_str!("../../../docs/proxy-config.md");
    for v in VARS {
        assert!(help.contains(v.key), "--help misses {}", v.key);
        assert!(
            docs.contains(&format!("`{}`", v.key)),
            "docs/proxy-config.md misses {}",
            v.key
        );
        assert!(
            Config::from_source(&source(&[(v.key, v.default)])).is_ok(),
            "default of {}",
            v.key
        );
    }
}
