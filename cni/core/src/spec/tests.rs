use super::*;

const CONF: &str = r#"{
  "cniVersion": "1.0.0",
  "name": "pods",
  "type": "weft-cni",
  "logFile": "/tmp/weft-cni.log",
  "iptablesBackend": "nft",
  "redirect": {"skipInboundPorts": "22", "skipOutboundCidrs": "10.96.0.0/12"},
  "runtimeConfig": {"portMappings": []},
  "args": {"cni": {"annotations": [{"key": "weft.dev/injected", "value": "0.1.0"}]}},
  "prevResult": {"cniVersion": "1.0.0", "interfaces": [{"name": "eth0"}], "ips": [{"address": "198.18.0.5/24"}]}
}"#;

#[test]
fn reads_a_chained_config_and_passes_the_previous_result_through() {
    let conf = NetConf::parse(CONF.as_bytes()).expect("valid");
    assert_eq!(conf.iptables_backend, Backend::Nft);
    assert_eq!(
        conf.unknown_keys().count(),
        0,
        "runtimeConfig is the spec's"
    );
    let r = conf.redirect().expect("valid");
    assert_eq!(r.skip_inbound_ports.to_string(), "22");
    assert_eq!(r.skip_outbound_cidrs.to_string(), "10.96.0.0/12");
    assert_eq!(
        conf.local_annotations()
            .get("weft.dev/injected")
            .map(String::as_str),
        Some("0.1.0")
    );
    let result: Value = serde_json::from_str(&conf.result().expect("result")).expect("json");
    assert_eq!(result["ips"][0]["address"], "198.18.0.5/24");
    assert_eq!(result["cniVersion"], "1.0.0");
}

#[test]
fn an_older_version_gets_its_own_version_back() {
    let text = CONF.replace(
        "\"cniVersion\": \"1.0.0\",\n  \"name\"",
        "\"cniVersion\": \"0.4.0\",\n  \"name\"",
    );
    let conf = NetConf::parse(text.as_bytes()).expect("valid");
    let result: Value = serde_json::from_str(&conf.result().expect("result")).expect("json");
    assert_eq!(result["cniVersion"], "0.4.0");
}

#[test]
fn bad_configs_get_the_spec_error_codes() {
    let cases: [(&str, u32, &str); 7] = [
        (
            "not json",
            code::DECODE_FAILURE,
            "cannot read the network config",
        ),
        (
            r#"{"cniVersion": "1.0.0", "type": "weft-cni"}"#,
            code::INVALID_CONFIG,
            "missing field `name`",
        ),
        (
            r#"{"cniVersion": "9.9.9", "name": "n", "type": "weft-cni"}"#,
            code::INCOMPATIBLE_VERSION,
            "9.9.9",
        ),
        (
            r#"{"cniVersion": "1.0.0", "name": "n", "type": "weft-cni", "prevResult": 7}"#,
            code::INVALID_CONFIG,
            "prevResult",
        ),
        (
            r#"{"cniVersion": "1.0.0", "name": "n", "type": "weft-cni", "redirect": {"proxyUid": 0}}"#,
            code::INVALID_CONFIG,
            "root",
        ),
        (
            r#"{"cniVersion": "1.0.0", "name": "n", "type": "weft-cni", "redirect": {"inboundPort": 70000}}"#,
            code::INVALID_CONFIG,
            "70000",
        ),
        (
            r#"{"cniVersion": "1.0.0", "name": "n", "type": "weft-cni", "redirect": {"skipInboundPort": "1"}}"#,
            code::INVALID_CONFIG,
            "skipInboundPort",
        ),
    ];
    for (input, want, text) in cases {
        let err = NetConf::parse(input.as_bytes()).expect_err(input);
        assert_eq!(err.code, want, "{input}: {err}");
        assert!(err.is_usage(), "{input}: a bad config is the caller's");
        assert!(err.to_string().contains(text), "{input}: {err}");
        let json: Value = serde_json::from_str(&err.to_json()).expect("the error is JSON");
        assert_eq!(json["code"], want);
        assert!(json["msg"].is_string());
    }
    let huge = vec![b' '; MAX_CONFIG_BYTES + 1];
    assert_eq!(
        NetConf::parse(&huge).expect_err("too big").code,
        code::INVALID_CONFIG
    );
}

#[test]
fn only_the_callers_errors_are_usage_errors() {
    let usage = [
        code::INCOMPATIBLE_VERSION,
        code::UNSUPPORTED_FIELD,
        code::INVALID_ENVIRONMENT,
        code::DECODE_FAILURE,
        code::INVALID_CONFIG,
    ];
    let runtime = [
        code::UNKNOWN_CONTAINER,
        code::IO_FAILURE,
        code::TRY_AGAIN_LATER,
        code::RULES_NOT_IN_PLACE,
        code::IPTABLES_FAILED,
        code::KUBERNETES_FAILED,
    ];
    for (codes, want) in [(&usage[..], true), (&runtime[..], false)] {
        for &c in codes {
            assert_eq!(
                CniError::new("1.0.0", c, "m", "").is_usage(),
                want,
                "code {c}"
            );
        }
    }
}

#[test]
fn without_a_previous_result_there_is_nothing_to_pass_on() {
    let conf = NetConf::parse(br#"{"cniVersion": "1.0.0", "name": "n", "type": "weft-cni"}"#)
        .expect("valid");
    let err = conf.result().expect_err("no prevResult");
    assert!(err.details.contains("chained plugin"), "{err}");
}

#[test]
fn typos_are_reported_as_unknown_keys() {
    let conf = NetConf::parse(
        br#"{"cniVersion": "1.0.0", "name": "n", "type": "weft-cni", "kubeConfig": "/x"}"#,
    )
    .expect("valid");
    assert_eq!(conf.unknown_keys().collect::<Vec<_>>(), ["kubeConfig"]);
    assert!(conf.kubeconfig.is_none());
}

#[test]
fn commands_args_and_versions() {
    assert_eq!(Command::parse(Some("CHECK")), Ok(Command::Check));
    assert_eq!(
        Command::parse(Some("GC")).expect_err("unknown").code,
        code::INVALID_ENVIRONMENT
    );
    assert_eq!(
        Command::parse(None).expect_err("unset").code,
        code::INVALID_ENVIRONMENT
    );
    let args =
        parse_cni_args("IgnoreUnknown=1;K8S_POD_NAMESPACE=shop;K8S_POD_NAME=web-0").expect("valid");
    assert_eq!(args.get("K8S_POD_NAME").map(String::as_str), Some("web-0"));
    assert!(parse_cni_args("").expect("empty").is_empty());
    assert_eq!(
        parse_cni_args("A=1;B").expect_err("no =").code,
        code::INVALID_ENVIRONMENT
    );
    let v: Value = serde_json::from_str(&version_reply(Some("0.4.0"))).expect("json");
    assert_eq!(v["cniVersion"], "0.4.0");
    assert_eq!(v["supportedVersions"].as_array().map(Vec::len), Some(4));
    let v: Value = serde_json::from_str(&version_reply(Some("2.0.0"))).expect("json");
    assert_eq!(v["cniVersion"], "1.0.0");
}
