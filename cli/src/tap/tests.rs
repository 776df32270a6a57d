use clap::Parser;
use serde_json::json;

use weft_lab::folder::names;

use super::*;

#[derive(Debug, Parser)]
struct Cli {
    #[command(flatten)]
    source: Source,
}

fn source(args: &[&str]) -> Source {
    Cli::try_parse_from(std::iter::once("tap").chain(args.iter().copied()))
        .expect("valid arguments")
        .source
}

fn pod(namespace: &str, name: &str, meshed: bool) -> PodEntry {
    let workload = match name.rsplitn(3, '-').collect::<Vec<_>>()[..] {
        [_, _, deployment] => format!("deployment/{deployment}"),
        _ => format!("pod/{name}"),
    };
    PodEntry {
        workload: Some(workload),
        namespace: namespace.into(),
        name: name.into(),
        netns: format!("netns-{name}"),
        ip: "198.18.0.9".into(),
        identity: meshed.then(|| format!("spiffe://cluster.local/ns/{namespace}/sa/{name}")),
        ports: vec![8080],
    }
}

fn lab() -> LabEntry {
    let api = |i: u32| {
        names::generate(
            &format!("{}-", names::replica_set("shop", "api")),
            &["x"],
            i,
        )
    };
    let api_v2 = names::generate(
        &format!("{}-", names::replica_set("shop", "api-v2")),
        &["x"],
        0,
    );
    LabEntry {
        name: "demo".into(),
        pid: 1,
        folder: "/tmp/f".into(),
        node: "n".into(),
        dir: "/tmp/d".into(),
        pods: vec![
            pod("shop", &api(0), true),
            pod("shop", &api(1), true),
            pod("shop", &api_v2, true),
            pod("shop", "client", true),
            pod("ops", "collector", false),
        ],
    }
}

fn names_of(pods: &[&PodEntry]) -> Vec<String> {
    pods.iter().map(|p| p.name.clone()).collect()
}

#[test]
fn a_deployment_is_its_replicas_and_no_other_deployments() {
    let lab = lab();
    let api = select(&lab, "deploy/api", "shop").expect("api");
    assert_eq!(api.len(), 2, "{:?}", names_of(&api));
    assert!(api
        .iter()
        .all(|p| p.name.starts_with("api-") && !p.name.starts_with("api-v2")));
    let v2 = select(&lab, "deployment/api-v2", "shop").expect("api-v2");
    assert_eq!(v2.len(), 1);
    assert_eq!(
        names_of(&select(&lab, "client", "shop").expect("pod")),
        ["client"]
    );
    assert_eq!(
        names_of(&select(&lab, "po/client", "shop").expect("pod")),
        ["client"]
    );
    assert_eq!(
        select(&lab, "ns/shop", "default").expect("namespace").len(),
        4
    );
}

#[test]
fn what_cannot_be_tapped_is_refused_saying_why() {
    let lab = lab();
    for (target, ns, want) in [
        (
            "deploy/api",
            "default",
            "no pod for deploy/api in namespace default",
        ),
        ("pod/nope", "shop", "its pods: shop/"),
        ("collector", "ops", "not meshed"),
        ("svc/api", "shop", "unknown kind \"svc\""),
    ] {
        let err = select(&lab, target, ns).expect_err(target).to_string();
        assert!(err.contains(want), "{target}: {err}");
    }
}

#[test]
fn the_query_carries_the_filters() {
    let q = query(
        &source(&[
            "--direction",
            "outbound",
            "--path",
            "/a b",
            "--method",
            "GET",
        ]),
        5,
        "redacted",
    );
    assert_eq!(
        q,
        "direction=outbound&method=GET&path=%2Fa+b&limit=5&headers=redacted"
    );
    assert_eq!(
        query(&source(&[]), 1_000_000, "none"),
        "limit=100000&headers=none"
    );
    let spec = weft_proxy_tap::Spec::parse(Some(&q)).expect("the proxy reads what we send");
    assert_eq!(spec.limit, 5);
    assert_eq!(spec.filter.path_prefix.as_deref(), Some("/a b"));
}

#[test]
fn no_target_taps_the_proxy_of_this_pod() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let addr = |args: &[&str]| {
        let proxies = rt.block_on(proxies(&source(args))).expect("one proxy");
        match &proxies[..] {
            [Proxy {
                via: Via::Direct(addr),
                ..
            }] => *addr,
            _ => panic!("not one direct proxy"),
        }
    };
    assert_eq!(
        addr(&[]),
        SocketAddr::from((Ipv4Addr::LOCALHOST, ADMIN_PORT))
    );
    assert_eq!(addr(&["--proxy", "127.0.0.1:25190"]).port(), 25190);
}

#[test]
fn a_line_says_who_called_whom_and_how_it_went() {
    let e = json!({
        "direction": "outbound", "method": "GET", "authority": "api.shop:80", "path": "/x",
        "status": 503, "latency_ms": 1.5, "tls": true, "error": "unavailable",
        "dst_identity": "spiffe://cluster.local/ns/shop/sa/api", "route": "httproute/shop/api/rule/0"
    });
    assert_eq!(
        line("shop/web", &e),
        "shop/web out GET api.shop:80/x 503 1.5ms tls=true dst=spiffe://cluster.local/ns/shop/sa/api route=httproute/shop/api/rule/0 error=unavailable"
    );
}

#[test]
fn top_counts_paths_busiest_first_with_success_and_latency() {
    let mut t = Top::default();
    let ev = |path: &str, status: u16, ms: f64| {
        json!({"direction": "inbound", "method": "GET", "authority": "api", "path": path,
               "status": status, "latency_ms": ms})
    };
    for (path, status, ms) in [
        ("/a", 200, 2.0),
        ("/b", 200, 1.0),
        ("/b", 500, 9.0),
        ("/b", 200, 3.0),
    ] {
        t.add(&ev(path, status, ms));
    }
    let rows = t.rows(10);
    assert_eq!(rows.len(), 2);
    let b = &rows[0];
    assert_eq!((b.path.as_str(), b.count, b.success), ("/b", 3, 2));
    assert_eq!((b.best_ms, b.worst_ms, b.last_ms), (1.0, 9.0, 3.0));
    assert_eq!(t.rows(1).len(), 1, "at most the rows asked for");
    let table = t.render(10);
    assert!(
        table
            .lines()
            .nth(1)
            .is_some_and(|l| l.contains("/b") && l.contains("66.7%")),
        "{table}"
    );
}

#[test]
fn a_deployments_selector_becomes_a_label_query() {
    let s: k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector =
        serde_json::from_value(json!({
            "matchLabels": {"app": "api"},
            "matchExpressions": [
                {"key": "tier", "operator": "In", "values": ["a", "b"]},
                {"key": "canary", "operator": "DoesNotExist"},
                {"key": "env", "operator": "Exists"},
                {"key": "x", "operator": "NotIn", "values": ["y"]}
            ]
        }))
        .expect("selector");
    assert_eq!(
        label_selector(&s).as_deref(),
        Some("app=api,tier in (a,b),!canary,env,x notin (y)")
    );
    let empty = serde_json::from_value(json!({})).expect("selector");
    assert_eq!(
        label_selector(&empty),
        None,
        "an empty selector would take every pod"
    );
    let odd =
        serde_json::from_value(json!({"matchExpressions": [{"key": "k", "operator": "Near"}]}))
            .expect("selector");
    assert_eq!(label_selector(&odd), None);
}

#[test]
fn a_pod_is_meshed_when_it_has_the_proxy_container() {
    let pod = |init: &[&str], main: &[&str]| -> Pod {
        let c = |n: &&str| json!({"name": n});
        serde_json::from_value(json!({
            "spec": {
                "initContainers": init.iter().map(c).collect::<Vec<_>>(),
                "containers": main.iter().map(c).collect::<Vec<_>>(),
            }
        }))
        .expect("pod")
    };
    assert!(is_meshed(&pod(&["weft-proxy"], &["app"])));
    assert!(is_meshed(&pod(&[], &["app", "weft-proxy"])));
    assert!(!is_meshed(&pod(&["weft-init"], &["app"])));
}
