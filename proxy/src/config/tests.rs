use std::ffi::OsString;

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

/// `pairs` are refused for `key`, with a reason that says `why`.
fn assert_refused(pairs: &[(&str, &str)], key: &str, why: &str) {
    match Config::from_source(&source(pairs)) {
        Err(ConfigError::Invalid {
            key: got, reason, ..
        }) => {
            assert_eq!(got, key, "{pairs:?}: {reason}");
            assert!(reason.contains(why), "{pairs:?}: {reason}");
        }
        other => panic!("{pairs:?}: expected an invalid value, got {other:?}"),
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
    assert_eq!(c.balance.decay, Duration::from_secs(10));
    assert!(!c.mesh_http1_upgrade, "HTTP/1 crosses the mesh as HTTP/1");
}

#[test]
fn the_mesh_http1_upgrade_is_on_or_off() {
    let c = Config::from_source(&source(&[("WEFT_MESH_HTTP1_UPGRADE", "on")])).expect("valid");
    assert!(c.mesh_http1_upgrade);
    assert_eq!(
        invalid_key(&[("WEFT_MESH_HTTP1_UPGRADE", "true")]),
        keys::MESH_HTTP1_UPGRADE
    );
}

#[test]
fn the_balancer_decay_takes_a_duration_and_zero() {
    let c = Config::from_source(&source(&[("WEFT_BALANCER_DECAY", "250ms")])).expect("valid");
    assert_eq!(c.balance.decay, Duration::from_millis(250));
    let c = Config::from_source(&source(&[("WEFT_BALANCER_DECAY", "0s")])).expect("valid");
    assert_eq!(c.balance.decay, Duration::ZERO);
    assert_eq!(
        invalid_key(&[("WEFT_BALANCER_DECAY", "10")]),
        keys::BALANCER_DECAY
    );
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
        ("WEFT_OPAQUE_PORTS", " 4222, 9000 - 9002 "),
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
fn opaque_ports_take_the_annotations_syntax() {
    // The same parser as weft.dev/opaque-ports and the skip-port annotations (weft_pod): an empty
    // item is refused with the variable and the item named, not skipped.
    for (value, why) in [
        ("25,,587", "item 2 of the list is empty"),
        ("25,587,", "item 3 of the list is empty"),
        (",25", "item 1 of the list is empty"),
        ("+25", "\"+25\" is not a port"),
        ("0", "\"0\" is not a port"),
    ] {
        let err = Config::from_source(&source(&[(keys::OPAQUE_PORTS, value)])).expect_err(value);
        let line = err.to_string();
        assert!(
            line.starts_with(&format!("WEFT_OPAQUE_PORTS={value:?}: ")) && line.contains(why),
            "{value}: {line}"
        );
    }
    let c = Config::from_source(&source(&[(keys::OPAQUE_PORTS, "8000-8100, 25")])).expect("valid");
    assert!(c.opaque_ports.contains(8000) && c.opaque_ports.contains(8100));
    assert!(c.opaque_ports.contains(25) && !c.opaque_ports.contains(8101));
    assert_eq!(c.opaque_ports.iter().count(), 102);
}

#[test]
fn port_defaults_are_the_pod_contract() {
    let c = Config::defaults().expect("defaults");
    assert_eq!(
        (c.outbound_port, c.inbound_port, c.admin_port),
        (
            weft_pod::ids::OUTBOUND_PORT,
            weft_pod::ids::INBOUND_PORT,
            weft_pod::ids::ADMIN_PORT
        )
    );
    assert_eq!(c.redirect_check_port, weft_pod::ids::REDIRECT_CHECK_PORT);
    let contract: PortSet = weft_pod::ids::DEFAULT_OPAQUE_PORTS.parse().expect("valid");
    assert_eq!(c.opaque_ports, contract);
    assert!(help().contains("WEFT_OUTBOUND_PORT (--outbound-port), default 15140\n"));
    assert!(help().contains("WEFT_OUTBOUND_TARGET (--outbound-target), default unset\n"));
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
fn await_ready_takes_only_a_timeout() {
    let parse = |args: &[&str]| parse_args(args.iter().map(OsString::from));
    assert_eq!(
        parse(&["await-ready"]),
        Ok(Command::AwaitReady {
            timeout: AWAIT_READY_TIMEOUT
        })
    );
    for args in [
        &["await-ready", "--timeout", "5s"][..],
        &["await-ready", "--timeout=5s"],
    ] {
        assert_eq!(
            parse(args),
            Ok(Command::AwaitReady {
                timeout: std::time::Duration::from_secs(5)
            })
        );
    }
    assert!(matches!(
        parse(&["await-ready", "--timeout", "soon"]),
        Err(ConfigError::Invalid { .. })
    ));
    assert_eq!(
        parse(&["await-ready", "--admin-port", "1"]),
        Err(ConfigError::UnknownFlag("--admin-port".into()))
    );
    assert_eq!(
        parse(&["await-ready", "--timeout"]),
        Err(ConfigError::MissingValue("timeout".into()))
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
            Config::from_source(&source(&[(v.key, &v.default.to_string())])).is_ok(),
            "default of {}",
            v.key
        );
    }
}

#[test]
fn identity_settings_are_all_required_with_a_control_plane() {
    let base = [
        (keys::CONTROL_PLANE, "cp.weft:8443"),
        (keys::TRUST_ANCHORS, "/etc/weft/anchors.pem"),
        (keys::IDENTITY_TOKEN_FILE, "/var/run/secrets/token"),
        (keys::NAMESPACE, "shop"),
        (keys::SERVICE_ACCOUNT, "web"),
    ];
    let c = Config::from_source(&source(&base)).expect("valid");
    let id = c.identity.expect("identity");
    assert_eq!(id.id.to_string(), "spiffe://cluster.local/ns/shop/sa/web");
    assert_eq!(
        id.control_plane_id.to_string(),
        "spiffe://cluster.local/ns/weft/sa/weft-control-plane"
    );
    for missing in [
        keys::TRUST_ANCHORS,
        keys::IDENTITY_TOKEN_FILE,
        keys::NAMESPACE,
        keys::SERVICE_ACCOUNT,
    ] {
        let partial: Vec<_> = base
            .iter()
            .copied()
            .filter(|(k, _)| *k != missing)
            .collect();
        let err = Config::from_source(&source(&partial)).expect_err(missing);
        assert!(
            matches!(&err, ConfigError::Invalid { key, reason, .. } if *key == missing && reason.contains("required")),
            "{missing}: {err}"
        );
    }
    let mut bad = base.to_vec();
    bad.push((keys::NAMESPACE, "Shop!"));
    assert!(Config::from_source(&source(&bad)).is_err());
    // The anchors as PEM instead of a file (the injector's way), but never both.
    let mut pem: Vec<_> = base
        .iter()
        .copied()
        .filter(|(k, _)| *k != keys::TRUST_ANCHORS)
        .collect();
    pem.push((keys::TRUST_ANCHORS_PEM, "-----BEGIN CERTIFICATE-----"));
    let c = Config::from_source(&source(&pem)).expect("valid");
    assert_eq!(
        c.identity.expect("identity").trust_anchors,
        TrustAnchors::Pem("-----BEGIN CERTIFICATE-----".into())
    );
    let mut both = base.to_vec();
    both.push((keys::TRUST_ANCHORS_PEM, "-----BEGIN CERTIFICATE-----"));
    let err = Config::from_source(&source(&both)).expect_err("both");
    assert!(err.to_string().contains("not both"), "{err}");
    let mut bad = base.to_vec();
    bad[0] = (keys::CONTROL_PLANE, "no-port");
    assert!(Config::from_source(&source(&bad)).is_err());
}

#[test]
fn mtls_settings_need_a_control_plane() {
    for (key, value) in [
        (keys::INBOUND_MTLS, "strict"),
        (
            keys::MESH_DESTINATIONS,
            "198.18.0.1:80=spiffe://cluster.local/ns/a/sa/b",
        ),
    ] {
        let err = Config::from_source(&source(&[(key, value)])).expect_err(key);
        assert!(err.to_string().contains("WEFT_CONTROL_PLANE"), "{err}");
    }
    let err = Config::from_source(&source(&[(keys::INBOUND_MTLS, "sometimes")])).expect_err("mode");
    assert!(err.to_string().contains("permissive or strict"), "{err}");
}

#[test]
fn mesh_destinations_parse_with_default_and_explicit_peers() {
    let map = parse_mesh_destinations(
        "198.18.0.1:80=spiffe://cluster.local/ns/a/sa/b, [fd00::1]:443=spiffe://cluster.local/ns/c/sa/d@127.0.0.1:25143",
    )
    .expect("valid");
    let v4 = &map[&"198.18.0.1:80".parse().expect("addr")];
    assert_eq!(v4.proxy, "198.18.0.1:15143".parse().expect("addr"));
    assert_eq!(v4.id.to_string(), "spiffe://cluster.local/ns/a/sa/b");
    let v6 = &map[&"[fd00::1]:443".parse().expect("addr")];
    assert_eq!(v6.proxy, "127.0.0.1:25143".parse().expect("addr"));
    for (bad, why) in [
        ("198.18.0.1:80", "expected ip:port=spiffe-id"),
        ("host:80=spiffe://cluster.local/ns/a/sa/b", "is not ip:port"),
        ("198.18.0.1:80=spiffe://x/y", "198.18.0.1:80"),
        ("198.18.0.1:80=spiffe://cluster.local/ns/a/sa/b@nowhere", "is not ip:port"),
        (
            "198.18.0.1:80=spiffe://cluster.local/ns/a/sa/b,198.18.0.1:80=spiffe://cluster.local/ns/a/sa/c",
            "listed twice",
        ),
    ] {
        let err = parse_mesh_destinations(bad).expect_err(bad);
        assert!(err.contains(why), "{bad}: {err}");
    }
    assert!(parse_mesh_destinations("").expect("empty").is_empty());
}

#[test]
fn redirect_check_is_off_by_default_and_takes_an_interval() {
    let c = Config::defaults().expect("defaults");
    assert_eq!(c.redirect_check, None);
    assert_eq!(c.redirect_check_port, DEFAULT_REDIRECT_CHECK_PORT);
    assert_eq!(DEFAULT_REDIRECT_CHECK_PORT, 15141);
    for (value, want) in [
        ("off", None),
        ("OFF", None),
        (" 5s ", Some(Duration::from_secs(5))),
        ("100ms", Some(Duration::from_millis(100))),
        ("1m", Some(Duration::from_secs(60))),
    ] {
        let c = Config::from_source(&source(&[(keys::REDIRECT_CHECK, value)])).expect(value);
        assert_eq!(c.redirect_check, want, "{value}");
    }
    let c = Config::from_source(&source(&[(keys::REDIRECT_CHECK_PORT, "25141")])).expect("port");
    assert_eq!(c.redirect_check_port, 25141);
}

#[test]
fn bad_redirect_check_values_are_refused_with_the_reason() {
    for (pairs, key, why) in [
        (
            &[(keys::REDIRECT_CHECK, "5")][..],
            keys::REDIRECT_CHECK,
            "expected off or an interval",
        ),
        (
            &[(keys::REDIRECT_CHECK, "on")],
            keys::REDIRECT_CHECK,
            "expected off or an interval",
        ),
        (
            &[(keys::REDIRECT_CHECK, "0s")],
            keys::REDIRECT_CHECK,
            "greater than zero",
        ),
        (
            &[(keys::REDIRECT_CHECK, "10ms")],
            keys::REDIRECT_CHECK,
            "at least 100ms",
        ),
        (
            &[(keys::REDIRECT_CHECK, "2 days")],
            keys::REDIRECT_CHECK,
            "at most 24h",
        ),
        (
            &[(keys::REDIRECT_CHECK_PORT, "0")],
            keys::REDIRECT_CHECK_PORT,
            "from 1 to 65535",
        ),
        (
            &[(keys::REDIRECT_CHECK_PORT, "15140")],
            keys::REDIRECT_CHECK_PORT,
            "WEFT_OUTBOUND_PORT",
        ),
        (
            &[
                (keys::ADMIN_PORT, "25141"),
                (keys::REDIRECT_CHECK_PORT, "25141"),
            ],
            keys::REDIRECT_CHECK_PORT,
            "WEFT_ADMIN_PORT",
        ),
        (
            &[
                (keys::REDIRECT_CHECK, "5s"),
                (keys::OUTBOUND_TARGET, "127.0.0.1:8080"),
            ],
            keys::REDIRECT_CHECK,
            "explicit mode",
        ),
    ] {
        assert_refused(pairs, key, why);
    }
    // Explicit mode with the check off is the loopback default.
    Config::from_source(&source(&[(keys::OUTBOUND_TARGET, "127.0.0.1:8080")])).expect("valid");
}

#[test]
fn tracing_is_off_without_a_collector_and_checked_with_one() {
    assert!(Config::from_source(&source(&[]))
        .expect("defaults")
        .trace
        .is_none());
    let c = Config::from_source(&source(&[
        (keys::TRACE_COLLECTOR, "jaeger.tracing:4317"),
        (keys::SERVICE_ACCOUNT, "web"),
    ]))
    .expect("valid");
    let t = c.trace.expect("tracing on");
    assert_eq!(t.collector, "jaeger.tracing:4317");
    assert_eq!(t.sampling, 0.01);
    assert_eq!(t.service_name, "web", "the service account by default");
    let c = Config::from_source(&source(&[
        (keys::TRACE_COLLECTOR, "127.0.0.1:4317"),
        (keys::TRACE_SAMPLING, "1"),
        (keys::TRACE_SERVICE_NAME, "checkout"),
        (keys::SERVICE_ACCOUNT, "web"),
    ]))
    .expect("valid");
    let t = c.trace.expect("tracing on");
    assert_eq!((t.sampling, t.service_name.as_str()), (1.0, "checkout"));
    for (pairs, key, why) in [
        (
            &[(keys::TRACE_COLLECTOR, "jaeger")][..],
            keys::TRACE_COLLECTOR,
            "expected host:port",
        ),
        (
            &[(keys::TRACE_COLLECTOR, "jaeger:0")],
            keys::TRACE_COLLECTOR,
            "expected host:port",
        ),
        (
            &[
                (keys::TRACE_COLLECTOR, "j:4317"),
                (keys::TRACE_SAMPLING, "1.5"),
            ],
            keys::TRACE_SAMPLING,
            "from 0 to 1",
        ),
        (
            &[
                (keys::TRACE_COLLECTOR, "j:4317"),
                (keys::TRACE_SAMPLING, "NaN"),
            ],
            keys::TRACE_SAMPLING,
            "from 0 to 1",
        ),
    ] {
        assert_refused(pairs, key, why);
    }
}

#[test]
fn the_workload_is_kind_slash_name() {
    assert_eq!(
        Config::from_source(&source(&[]))
            .expect("defaults")
            .workload,
        None
    );
    let c = Config::from_source(&source(&[(keys::WORKLOAD, "deployment/api-v2")])).expect("valid");
    assert_eq!(c.workload, Some(("deployment".into(), "api-v2".into())));
    for bad in [
        "api",
        "/api",
        "deployment/",
        "Deployment/api",
        "deployment/API",
        "deployment/a b",
    ] {
        assert_refused(&[(keys::WORKLOAD, bad)], keys::WORKLOAD, "kind/name");
    }
}
