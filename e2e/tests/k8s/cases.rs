//! The k8s tier's cases, in the order they run.

use std::{
    net::Ipv4Addr,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use serde_json::Value;
use weft_k8s_lab::{
    cluster::{BRIDGE, CNI_CONFLIST},
    crds, weft,
    weft::AppPod,
};
use weft_lab::{capture::Capture, pcap};

use crate::support::{get_in_netns_of, wait, wait_result, Env};

pub(crate) type Case = fn(&mut Env<'_>);

/// The namespace `weft-cni` is told to skip, where pods redirect with `weft-init`.
pub(crate) const INIT_MODE_NAMESPACE: &str = "init-mode";

/// Each case under its own function's name.
macro_rules! cases {
    ($($case:ident),* $(,)?) => {
        &[$((stringify!($case), $case as Case)),*]
    };
}

pub(crate) const ALL: &[(&str, Case)] = cases![
    crds_are_enforced_by_the_api_server,
    pods_get_addresses_dns_and_services,
    control_plane_rbac_is_least_privilege,
    meshed_pods_talk_mtls_through_a_cluster_ip,
    an_httproute_gets_its_status_and_splits_real_pods,
    weftctl_stat_reads_the_proxies_through_the_api_server,
    tokens_of_other_audiences_and_deleted_pods_are_refused,
    a_meshed_job_completes,
    weft_init_redirects_as_an_init_container,
    the_mesh_rides_out_restarts_and_converges,
    the_injector_meshes_a_labelled_namespace,
    injected_proxies_trace_to_the_collector_the_chart_names,
    the_cni_daemonset_chains_weft_cni_and_keeps_it_chained,
    helm_upgrade_rolls_the_control_plane_without_a_failed_request,
    with_the_injector_down_the_failure_policy_decides,
    // Last: Weft is gone after it.
    helm_uninstall_leaves_no_webhook_behind,
];

/// Every valid case is created and every malformed Weft object is refused by the API server
/// itself, with a message naming the field.
fn crds_are_enforced_by_the_api_server(env: &mut Env<'_>) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../k8s-lab/tests/crd-cases");
    let valid = crds::cases(&dir.join("valid")).expect("valid cases");
    let invalid = crds::cases(&dir.join("invalid")).expect("invalid cases");
    assert!(
        valid.len() >= 10 && invalid.len() >= 8,
        "{} valid, {} invalid",
        valid.len(),
        invalid.len()
    );
    env.apply("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: crd-cases\n");
    for case in &valid {
        let out = env
            .kubectl()
            .outcome(&["create", "-n", "crd-cases", "-f", "-"], &case.yaml)
            .expect("kubectl");
        assert!(
            out.success,
            "{} was refused: {}",
            case.file.display(),
            out.stderr
        );
    }
    for case in &invalid {
        let out = env
            .kubectl()
            .outcome(&["create", "-n", "crd-cases", "-f", "-"], &case.yaml)
            .expect("kubectl");
        let expect = case.expect.as_deref().unwrap_or_default();
        assert!(!out.success, "{} was accepted", case.file.display());
        assert!(
            out.stderr.contains(expect),
            "{}: the refusal does not name {expect:?}: {}",
            case.file.display(),
            out.stderr
        );
    }
    println!(
        "{} valid objects accepted, {} malformed refused",
        valid.len(),
        invalid.len()
    );
}

/// Plain Kubernetes works as on any cluster: pods get addresses on the bridge, the real
/// EndpointSlice controller lists the ready ones, a Job's pod resolves a Service's DNS name
/// through CoreDNS, reaches it through kube-proxy's cluster IP, and the Job completes.
fn pods_get_addresses_dns_and_services(env: &mut Env<'_>) {
    let ns = "plain";
    env.namespace(ns);
    for name in ["api-1", "api-2"] {
        env.apply(&AppPod::new(ns, name, "api").label("app", "api").yaml());
    }
    env.apply(&weft::service_yaml(ns, "api", "api"));
    env.ready(ns, "app=api");
    let ips = env.get(
        &["-n", ns, "pods", "-l", "app=api"],
        "{.items[*].status.podIP}",
    );
    for ip in ips.split_whitespace() {
        let ip: Ipv4Addr = ip.parse().expect("pod IP");
        assert_eq!(
            ip.octets()[..3],
            [198, 18, 0],
            "pod IP {ip} on the bridge's subnet"
        );
    }
    let endpoints = wait(
        "the EndpointSlice to list both pods",
        Duration::from_secs(30),
        || {
            let got = env.get(
                &[
                    "-n",
                    ns,
                    "endpointslices",
                    "-l",
                    "kubernetes.io/service-name=api",
                ],
                "{.items[*].endpoints[?(@.conditions.ready==true)].addresses[0]}",
            );
            let mut got: Vec<String> = got.split_whitespace().map(str::to_string).collect();
            got.sort();
            let mut want: Vec<String> = ips.split_whitespace().map(str::to_string).collect();
            want.sort();
            (got == want).then_some(got)
        },
    );
    println!("EndpointSlice endpoints: {endpoints:?}");

    let target = format!("api.{ns}.svc.cluster.local:80");
    let (outcome, logs) = env.job(
        &AppPod::new(ns, "client", "client").command(&[
            "/usr/local/bin/weft-lab-app",
            "get",
            &target,
            "/via-dns",
        ]),
        "app",
    );
    assert_eq!(outcome, "1/", "the Job succeeded; its log:\n{logs}");
    assert!(
        logs.starts_with("200 via 198.19.0."),
        "through the cluster IP: {logs}"
    );
    assert!(logs.contains("pod=api-"), "{logs}");
    assert!(logs.contains("path=/via-dns"), "{logs}");
}

/// The control plane runs as its own ServiceAccount with a ClusterRole of exactly what it
/// uses; anything else is refused by the API server.
fn control_plane_rbac_is_least_privilege(env: &mut Env<'_>) {
    let me = format!(
        "system:serviceaccount:{}:{}",
        weft::WEFT_NAMESPACE,
        weft::CONTROL_PLANE
    );
    let can = |args: &[&str]| {
        let mut all = vec!["auth", "can-i", "--as", &me];
        all.extend_from_slice(args);
        let out = env.kubectl().outcome(&all, "").expect("kubectl auth can-i");
        out.stdout.trim() == "yes"
    };
    for allowed in [
        &["watch", "services"][..],
        &["list", "pods", "-A"],
        &["watch", "endpointslices.discovery.k8s.io"],
        &["create", "tokenreviews.authentication.k8s.io"],
        &["watch", "httproutes.gateway.networking.k8s.io", "-A"],
        &[
            "patch",
            "httproutes.gateway.networking.k8s.io",
            "--subresource=status",
        ],
    ] {
        assert!(can(allowed), "the control plane may {allowed:?}");
    }
    for refused in [
        &["get", "secrets", "-n", "weft"][..],
        &["create", "pods"],
        &["delete", "services"],
        &["update", "endpointslices.discovery.k8s.io"],
        // The routes' status, never their spec.
        &["patch", "httproutes.gateway.networking.k8s.io"],
        &["delete", "httproutes.gateway.networking.k8s.io"],
        &["create", "certificatesigningrequests.certificates.k8s.io"],
    ] {
        assert!(!can(refused), "the control plane may not {refused:?}");
    }
    // And a real request with its identity: refused, with the API server's reason.
    let out = env
        .kubectl()
        .outcome(
            &[
                "--as",
                &me,
                "-n",
                "weft",
                "get",
                "secret",
                "weft-identity-issuer",
            ],
            "",
        )
        .expect("kubectl");
    assert!(!out.success && out.stderr.contains("forbidden"), "{out:?}");
}

/// Two meshed pods (the proxy written into their spec as the injector will, `weft-cni`
/// chained by the real kubelet and containerd) talk through a Service's cluster IP: mTLS on
/// the bridge, both identities in both proxies' metrics; an unmeshed pod gets no rules.
fn meshed_pods_talk_mtls_through_a_cluster_ip(env: &mut Env<'_>) {
    let ns = "demo";
    env.namespace(ns);
    env.apply(
        &AppPod::new(ns, "server", "api")
            .label("app", "api")
            .meshed()
            .yaml(),
    );
    env.apply(
        &AppPod::new(ns, "client", "web")
            .label("app", "web")
            .meshed()
            .yaml(),
    );
    env.apply(
        &AppPod::new(ns, "plain", "plain")
            .label("app", "plain")
            .yaml(),
    );
    env.apply(&weft::service_yaml(ns, "api", "api"));
    env.ready(ns, "weft-lab=app");

    // weft-cni: the meshed pods got the redirect chains, the unmeshed one nothing.
    for pod in ["server", "client"] {
        let rules = env.pod_nat_rules(ns, pod);
        assert!(
            rules.contains("-A WEFT_OUTPUT") && rules.contains("-A WEFT_PREROUTING"),
            "{pod}:\n{rules}"
        );
    }
    let rules = env.pod_nat_rules(ns, "plain");
    assert!(
        !rules.contains("WEFT_"),
        "the unmeshed pod has no Weft rules:\n{rules}"
    );

    let capture = Capture::start(
        env.cluster().node(),
        BRIDGE,
        Ipv4Addr::new(198, 18, 0, 255),
        env.cluster().dir(),
        "bridge",
    )
    .expect("tcpdump on the bridge");
    let target = format!("api.{ns}.svc.cluster.local:80");
    for i in 0..5 {
        let path = format!("/secret-path-{i}");
        let (ok, out, err) = env.exec(
            ns,
            "client",
            "app",
            &["/usr/local/bin/weft-lab-app", "get", &target, &path],
        );
        assert!(ok, "GET {path} from the client: {out}{err}");
        assert!(out.contains("pod=server"), "{out}");
    }
    let segments = capture.stop().expect("the capture");
    let ips = env.get(
        &["-n", ns, "pods", "server", "client"],
        "{.items[*].status.podIP}",
    );
    let meshed: Vec<std::net::IpAddr> = ips
        .split_whitespace()
        .filter_map(|s| s.parse().ok())
        .collect();
    assert_eq!(meshed.len(), 2, "{ips}");
    let between: Vec<pcap::Segment> = segments
        .iter()
        .filter(|s| meshed.contains(&s.src.ip()) && meshed.contains(&s.dst.ip()))
        .cloned()
        .collect();
    let payload: usize = between.iter().map(|s| s.payload.len()).sum();
    assert!(
        payload > 1000,
        "the capture saw the mesh traffic ({payload} bytes between the pods)"
    );
    assert!(
        between
            .iter()
            .any(|s| s.dst.port() == 15143 || s.src.port() == 15143),
        "the client's proxy reached the server's inbound port"
    );
    for st in pcap::streams(&between) {
        assert!(
            !pcap::contains(&st.bytes, b"secret-path"),
            "plaintext from {} to {}",
            st.src,
            st.dst
        );
        assert!(
            !pcap::contains(&st.bytes, b"GET /"),
            "plaintext from {} to {}",
            st.src,
            st.dst
        );
    }

    let web = weft_lab::spiffe_id(ns, "web");
    let api = weft_lab::spiffe_id(ns, "api");
    let outbound = [
        ("client_id", web.as_str()),
        ("direction", "outbound"),
        ("server_id", api.as_str()),
        ("status_code", "200"),
        ("tls", "true"),
    ];
    let sent = wait(
        "the client's proxy to count 5 mTLS requests",
        Duration::from_secs(10),
        || {
            let m = env.proxy_metrics(ns, "client");
            let n = m.sum("weft_requests_total", &outbound);
            (n >= 5.0).then_some(n)
        },
    );
    let got = env.mtls_requests_in(ns, "server", "web", "api");
    assert!(
        got >= 5.0,
        "the server's proxy saw {got} mTLS requests from {web}"
    );
    println!("client proxy: {sent} mTLS requests to {api}; server proxy: {got} from {web}");
}

/// The controller name of Weft's entries in a route's `status.parents`.
const WEFT_CONTROLLER: &str = "weft.dev/gateway-controller";

/// Weft's entry in `status.parents` of HTTPRoute `ns/name` for the Service parent `parent`,
/// and the route's generation, once the entry's conditions are `want` (`type`, `status`,
/// `reason`) and observe that generation.
fn route_status(
    env: &Env<'_>,
    ns: &str,
    name: &str,
    parent: &str,
    want: &[(&str, &str, &str)],
) -> serde_json::Value {
    let what = format!("HTTPRoute {ns}/{name} to report {want:?} for Service {parent}");
    let mut last = String::new();
    let found = crate::support::wait_result(&what, Duration::from_secs(60), || {
        last = env
            .kubectl()
            .run(&["-n", ns, "get", "httproute", name, "-o", "json"])
            .ok()?;
        let route: serde_json::Value = serde_json::from_str(&last).ok()?;
        let generation = route["metadata"]["generation"].clone();
        let entry = route["status"]["parents"]
            .as_array()?
            .iter()
            .find(|p| {
                p["controllerName"] == WEFT_CONTROLLER
                    && p["parentRef"]["name"] == parent
                    && p["parentRef"]["kind"] == "Service"
                    && p["parentRef"]["group"] == ""
            })?
            .clone();
        let conditions = entry["conditions"].as_array()?;
        let holds = want.iter().all(|(t, status, reason)| {
            conditions.iter().any(|c| {
                c["type"] == *t
                    && c["status"] == *status
                    && c["reason"] == *reason
                    && c["observedGeneration"] == generation
                    && c["lastTransitionTime"].is_string()
            })
        });
        holds.then_some(entry)
    });
    found.unwrap_or_else(|e| panic!("{e}; the route as last read:\n{last}"))
}

/// An HTTPRoute applied through the API server, attached to a Service (GAMMA: parentRef group
/// "", kind Service) with two backend Services of different pods: the control plane writes
/// `Accepted=True` and `ResolvedRefs=True` under its controller name into `status.parents`,
/// and a meshed client's requests to the parent Service are split over both backends' pods.
/// A route to a Service that does not exist gets `ResolvedRefs=False/BackendNotFound`, one
/// with a regular expression Weft cannot compile (which the API server takes) gets
/// `Accepted=False/UnsupportedValue` naming the field, and another controller's entry in a
/// route's status is left as it was. Then an `HTTPFault` on the parent Service aborts every
/// request of the client, and deleting it heals them.
fn an_httproute_gets_its_status_and_splits_real_pods(env: &mut Env<'_>) {
    let ns = "canary";
    env.namespace(ns);
    for version in ["api-v1", "api-v2"] {
        env.apply(
            &AppPod::new(ns, version, "api")
                .label("app", version)
                .meshed()
                .deployment_yaml(1),
        );
        env.apply(&weft::service_yaml(ns, version, version));
    }
    // The parent Services select v1 only: without the route, v2 would never answer.
    env.apply(&weft::service_yaml(ns, "api", "api-v1"));
    env.apply(&weft::service_yaml(ns, "legacy", "api-v1"));
    env.apply(
        &AppPod::new(ns, "client", "web")
            .label("app", "web")
            .meshed()
            .yaml(),
    );
    let route = |name: &str, parent: &str, rule: &str| {
        format!(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata:\n  name: {name}\n  \
             namespace: {ns}\nspec:\n  parentRefs:\n  - {{group: \"\", kind: Service, name: {parent}, \
             port: 80}}\n  rules:\n  - {rule}\n"
        )
    };
    env.apply(&route(
        "api-split",
        "api",
        "backendRefs: [{name: api-v1, port: 80, weight: 50}, {name: api-v2, port: 80, weight: 50}]",
    ));
    env.apply(&route(
        "to-nowhere",
        "legacy",
        "backendRefs: [{name: api-v9, port: 80}]",
    ));
    env.apply(&route(
        "bad-regex",
        "legacy",
        "matches: [{path: {type: RegularExpression, value: \"/([\"}}]\n    backendRefs: [{name: api-v1, port: 80}]",
    ));
    env.ready(ns, "weft-lab=app");

    let split = route_status(
        env,
        ns,
        "api-split",
        "api",
        &[
            ("Accepted", "True", "Accepted"),
            ("ResolvedRefs", "True", "ResolvedRefs"),
        ],
    );
    assert_eq!(split["parentRef"]["port"], 80, "{split}");
    let nowhere = route_status(
        env,
        ns,
        "to-nowhere",
        "legacy",
        &[
            ("Accepted", "True", "Accepted"),
            ("ResolvedRefs", "False", "BackendNotFound"),
        ],
    );
    assert!(
        nowhere.to_string().contains("canary/api-v9 not found"),
        "the message names the missing Service: {nowhere}"
    );
    let bad = route_status(
        env,
        ns,
        "bad-regex",
        "legacy",
        &[("Accepted", "False", "UnsupportedValue")],
    );
    assert!(
        bad.to_string().contains("spec.rules[0].matches[0].path"),
        "the message names the field: {bad}"
    );

    // Another controller's entry (a Gateway's) survives Weft's next write, and Weft's entry
    // keeps its lastTransitionTime while its conditions hold.
    let other = serde_json::json!({
        "parentRef": {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "edge"},
        "controllerName": "example.com/gateway-controller",
        "conditions": [{"type": "Accepted", "status": "True", "reason": "Accepted",
                        "message": "another controller's", "lastTransitionTime": "2026-01-01T00:00:00Z"}],
    });
    let parents = serde_json::json!({"status": {"parents": [other, split.clone()]}});
    env.kubectl()
        .run(&[
            "-n",
            ns,
            "patch",
            "httproute",
            "api-split",
            "--subresource=status",
            "--type=merge",
            "-p",
            &parents.to_string(),
        ])
        .expect("another controller writes its entry");
    // A spec change (new generation, the same conditions) makes Weft write again.
    env.kubectl()
        .run(&[
            "-n",
            ns,
            "patch",
            "httproute",
            "api-split",
            "--type=json",
            "-p",
            r#"[{"op":"replace","path":"/spec/rules/0/backendRefs/0/weight","value":49},{"op":"replace","path":"/spec/rules/0/backendRefs/1/weight","value":51}]"#,
        ])
        .expect("change the route's weights");
    let again = route_status(
        env,
        ns,
        "api-split",
        "api",
        &[
            ("Accepted", "True", "Accepted"),
            ("ResolvedRefs", "True", "ResolvedRefs"),
        ],
    );
    assert_ne!(
        again["conditions"][0]["observedGeneration"], split["conditions"][0]["observedGeneration"],
        "written for the new generation"
    );
    for i in 0..2 {
        assert_eq!(
            again["conditions"][i]["lastTransitionTime"],
            split["conditions"][i]["lastTransitionTime"],
            "a condition that held keeps its time"
        );
    }
    let held = env.get(
        &["-n", ns, "httproute", "api-split"],
        "{.status.parents[*].controllerName}",
    );
    assert!(
        held.contains("example.com/gateway-controller") && held.contains(WEFT_CONTROLLER),
        "both controllers' entries: {held}"
    );
    let message = env.get(
        &["-n", ns, "httproute", "api-split"],
        "{.status.parents[0].conditions[0].message}",
    );
    assert_eq!(message, "another controller's", "its entry untouched");

    // The split on real pods: requests to the parent Service's cluster IP from the meshed
    // client reach both versions' pods.
    let ip = env.get(&["-n", ns, "service", "api"], "{.spec.clusterIP}");
    let target = format!("{}:80", ip.trim());
    let pid = env.pod_pid(ns, "client");
    wait(
        "the client's proxy to route to api-v2",
        Duration::from_secs(60),
        || {
            (0..10)
                .filter_map(|i| get_in_netns_of(&pid, &target, &format!("/warm-{i}")).ok())
                .any(|pod| pod.starts_with("api-v2-"))
                .then_some(())
        },
    );
    let n = 300;
    let mut v1 = 0;
    let mut v2 = 0;
    for i in 0..n {
        let pod = get_in_netns_of(&pid, &target, &format!("/split-{i}"))
            .unwrap_or_else(|e| panic!("request {i}: {e}"));
        if pod.starts_with("api-v1-") {
            v1 += 1;
        } else if pod.starts_with("api-v2-") {
            v2 += 1;
        } else {
            panic!("request {i} answered by {pod}, neither version");
        }
    }
    println!("49/51 split over {n} requests: api-v1 {v1}, api-v2 {v2}");
    // Loose: a 49/51 split of 300 falls in [100, 200] with probability 1 - 1e-8 or so; the
    // lab tier checks the binomial interval.
    for (version, count) in [("api-v1", v1), ("api-v2", v2)] {
        assert!(
            (100..=200).contains(&count),
            "{version} answered {count} of {n}"
        );
    }

    // An HTTPFault applied through the API server takes effect on the real pods: every
    // request to `api` is aborted by the client's proxy, and none once it is deleted.
    env.apply(&format!(
        "apiVersion: weft.dev/v1alpha1\nkind: HTTPFault\nmetadata:\n  name: teapot\n  \
         namespace: {ns}\nspec:\n  targetRef: {{group: \"\", kind: Service, name: api}}\n  \
         abort: {{percent: 100, httpStatus: 418}}\n"
    ));
    let aborted = |path: &str| {
        get_in_netns_of(&pid, &target, path)
            .err()
            .filter(|e| e.contains("418 via") && e.contains("canary/teapot"))
    };
    wait(
        "the HTTPFault to abort requests to api",
        Duration::from_secs(60),
        || aborted("/fault").map(|_| ()),
    );
    for i in 0..20 {
        assert!(
            aborted(&format!("/fault-{i}")).is_some(),
            "request {i} was not aborted"
        );
    }
    env.kubectl()
        .run(&["-n", ns, "delete", "httpfault", "teapot"])
        .expect("delete the HTTPFault");
    wait(
        "requests to api to be answered again",
        Duration::from_secs(30),
        || get_in_netns_of(&pid, &target, "/healed").ok().map(|_| ()),
    );
}

/// `weftctl stat --kubeconfig` reads every meshed pod's proxy twice through the API server's
/// pod proxy, and its figures are the proxies' own: 20 requests from a client sent inside the
/// window are the Deployment's (two replicas, a row of 2/2 meshed, all successful, all mTLS)
/// and, in `stat-outbound`, the client's to the Service.
fn weftctl_stat_reads_the_proxies_through_the_api_server(env: &mut Env<'_>) {
    let ns = "stat";
    let (client, target) = env.meshed_client_and_api(ns, 2);
    let api_pods = env.pod_names(ns, "app=api");
    assert_eq!(api_pods.len(), 2, "{api_pods:?}");
    // Traffic before the window, so that the series exist at its first read.
    for i in 0..4 {
        get_in_netns_of(&client, &target, &format!("/warm/{i}")).expect("answered");
    }
    let inbound = |env: &Env<'_>| -> f64 {
        api_pods
            .iter()
            .map(|p| {
                env.proxy_metrics(ns, p)
                    .sum("weft_requests_total", &[("direction", "inbound")])
            })
            .sum()
    };
    let outbound = |env: &Env<'_>| {
        env.proxy_metrics(ns, "client").sum(
            "weft_requests_total",
            &[("direction", "outbound"), ("dst_service", "stat/api:80")],
        )
    };
    std::thread::sleep(Duration::from_millis(500));
    let in_before = inbound(env);
    // 20 requests, from 3 s into the commands' 12 s window to at most 9 s.
    let traffic = {
        let (client, target) = (client.clone(), target.clone());
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_secs(3));
            let start = Instant::now();
            for i in 0..20 {
                get_in_netns_of(&client, &target, &format!("/stat/{i}")).expect("answered");
            }
            start.elapsed()
        })
    };
    let json =
        |out: &str| -> Value { serde_json::from_str(out).unwrap_or_else(|e| panic!("{e}: {out}")) };
    let (ok, out, err) =
        env.weftctl(&["stat", "deploy", "-n", ns, "--window", "12s", "-o", "json"]);
    assert!(ok, "weftctl stat: {out}{err}");
    let took = traffic.join().expect("the traffic");
    assert!(
        took < Duration::from_secs(6),
        "the 20 requests took {took:?}: they may have overrun the window"
    );
    std::thread::sleep(Duration::from_millis(500));
    let stat = json(&out);
    assert_eq!(stat["errors"], serde_json::json!([]), "{stat:#}");
    let row = stat["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .find(|r| r["name"] == "api")
        .unwrap_or_else(|| panic!("no row for deployment api: {stat:#}"))
        .clone();
    let counted = inbound(env) - in_before;
    assert_eq!(counted, 20.0, "the proxies counted the 20 requests");
    assert_eq!(row["kind"], "deployment", "{row}");
    assert_eq!(row["requests"].as_f64(), Some(counted), "{row}");
    assert_eq!(
        (row["meshed"].as_u64(), row["pods"].as_u64()),
        (Some(2), Some(2)),
        "{row}"
    );
    assert_eq!(
        (row["success"].as_f64(), row["tls"].as_f64()),
        (Some(1.0), Some(1.0)),
        "{row}"
    );

    // The client's view: its requests to the Service, as its own proxy counted them (no
    // route: `[default]`, the Service as the backend).
    let before = outbound(env);
    let sent = {
        let (client, target) = (client.clone(), target.clone());
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_secs(3));
            for i in 0..10 {
                get_in_netns_of(&client, &target, &format!("/out/{i}")).expect("answered");
            }
        })
    };
    let (ok, out, err) = env.weftctl(&[
        "stat-outbound",
        "po/client",
        "-n",
        ns,
        "--window",
        "12s",
        "-o",
        "json",
    ]);
    assert!(ok, "weftctl stat-outbound: {out}{err}");
    sent.join().expect("the traffic");
    std::thread::sleep(Duration::from_millis(500));
    let report = json(&out);
    let backend = report["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .find(|r| r["route"] == "" && r["backend"] == "stat/api:80")
        .unwrap_or_else(|| panic!("no row for the client's calls to api: {report:#}"))
        .clone();
    assert_eq!(outbound(env) - before, 10.0);
    assert_eq!(backend["requests"].as_f64(), Some(10.0), "{backend}");
}

/// The control plane signs only for tokens the real API server vouches for, for audience
/// `identity.weft.dev`: a proxy holding a token for another audience, or a token bound to a
/// pod that has been deleted, never gets a certificate (and is never Ready).
fn tokens_of_other_audiences_and_deleted_pods_are_refused(env: &mut Env<'_>) {
    let ns = "impostors";
    env.namespace(ns);
    let refused_before = env.control_plane_metrics().value(
        "weft_identity_refusals_total",
        &[("reason", "token_rejected")],
    );

    // A token of the right service account, bound to a pod that is then deleted.
    env.apply(&AppPod::new(ns, "short-lived", "api").yaml());
    env.ready(ns, "weft-lab=app");
    let uid = env.get(&["-n", ns, "pod", "short-lived"], "{.metadata.uid}");
    let bound = env
        .kubectl()
        .run(&[
            "-n",
            ns,
            "create",
            "token",
            "api",
            "--audience",
            "identity.weft.dev",
            "--bound-object-kind",
            "Pod",
            "--bound-object-name",
            "short-lived",
            "--bound-object-uid",
            uid.trim(),
        ])
        .expect("kubectl create token");
    env.kubectl()
        .run(&["-n", ns, "delete", "pod", "short-lived", "--wait=true"])
        .expect("delete the pod");
    // A token of the right service account for another audience.
    let other = env
        .kubectl()
        .run(&[
            "-n",
            ns,
            "create",
            "token",
            "api",
            "--audience",
            "some-other-audience",
        ])
        .expect("kubectl create token");

    for (name, token) in [
        ("deleted-pod-token", bound.trim()),
        ("other-audience", other.trim()),
    ] {
        env.apply(&format!(
            "apiVersion: v1\nkind: Secret\nmetadata:\n  name: {name}\n  namespace: {ns}\nstringData:\n  token: {token}\n"
        ));
        let pod = AppPod::new(ns, name, "api")
            .meshed()
            .token_secret(name)
            .yaml();
        env.apply(&pod);
    }
    let refused = wait(
        "the control plane to refuse both tokens (twice or more)",
        Duration::from_secs(60),
        || {
            let n = env.control_plane_metrics().value(
                "weft_identity_refusals_total",
                &[("reason", "token_rejected")],
            );
            (n >= refused_before + 2.0).then_some(n)
        },
    );
    for name in ["deleted-pod-token", "other-audience"] {
        let log = wait(
            &format!("{name}'s proxy to log the refusal"),
            Duration::from_secs(30),
            || {
                let log = env
                    .kubectl()
                    .run(&["-n", ns, "logs", name, "-c", "weft-proxy"])
                    .ok()?;
                log.contains("the control plane refused").then_some(log)
            },
        );
        assert!(!log.contains("certificate installed"), "{name}: {log}");
        let ready = env.get(
            &["-n", ns, "pod", name],
            "{.status.conditions[?(@.type==\"Ready\")].status}",
        );
        assert_ne!(ready.trim(), "True", "{name} must never be Ready");
    }
    let issued = env
        .control_plane_metrics()
        .value("weft_identity_certificates_issued_total", &[]);
    println!("refused {refused} (was {refused_before}); issued {issued} in all");
}

/// A meshed Job's pod ends when its app ends: the proxy is a native sidecar, which the kubelet
/// stops once the app container has exited, so the Job completes.
fn a_meshed_job_completes(env: &mut Env<'_>) {
    let ns = "jobs";
    env.meshed_api(ns, 1);
    let target = format!("api.{ns}.svc.cluster.local:80");
    let (outcome, logs) = env.job(
        &AppPod::new(ns, "caller", "web").meshed().command(&[
            "/usr/local/bin/weft-lab-app",
            "get",
            &target,
            "/from-a-job",
        ]),
        "app",
    );
    assert_eq!(outcome, "1/", "the Job succeeded; its app's log:\n{logs}");
    assert!(
        logs.contains("pod=api-") && logs.contains("path=/from-a-job"),
        "{logs}"
    );
    let phase = env.get(
        &["-n", ns, "pods", "-l", "job-name=caller"],
        "{.items[0].status.phase}",
    );
    assert_eq!(phase, "Succeeded", "the Job's pod ended, its proxy with it");
}

/// The answering pods over `n` requests from the client pod (its namespace entered through
/// containerd, so this works with the API server down); every request must succeed.
fn answered(pid: &str, target: &str, n: usize, when: &str) -> std::collections::BTreeSet<String> {
    (0..n)
        .map(|i| {
            get_in_netns_of(pid, target, &format!("/{i}"))
                .unwrap_or_else(|e| panic!("{when}: request {i}: {e}"))
        })
        .collect()
}

/// The API server restarted, etcd stopped for ten seconds, the kubelet restarted, the control
/// plane's pod deleted: the proxies keep serving with what they last knew meanwhile, and once
/// each is back, pod churn (scaling up, scaling down) reaches them again.
fn the_mesh_rides_out_restarts_and_converges(env: &mut Env<'_>) {
    let ns = "faults";
    let (pid, target) = env.meshed_client_and_api(ns, 2);
    let pods = |env: &Env<'_>| -> std::collections::BTreeSet<String> {
        env.pod_names(ns, "app=api").into_iter().collect()
    };
    let converge = |env: &Env<'_>, what: &str| {
        let want = pods(env);
        wait(what, Duration::from_secs(60), || {
            (answered(&pid, &target, 3 * want.len(), what) == want).then_some(())
        });
    };
    converge(env, "both pods to answer");

    // The API server down: the control plane's watches break; the proxies go on.
    let grace = Duration::from_secs(5);
    let before = pods(env);
    env.cluster_mut()
        .stop("kube-apiserver", grace)
        .expect("stop the API server");
    // Every request succeeds (`answered` panics otherwise), answered by the pods it knew.
    let seen = answered(&pid, &target, 10, "with the API server down");
    assert!(seen.is_subset(&before), "{seen:?} of {before:?}");
    env.cluster_mut()
        .start_again("kube-apiserver")
        .expect("start the API server");
    env.cluster_mut()
        .wait_ready()
        .expect("the cluster after the API server's restart");
    env.kubectl()
        .run(&["-n", ns, "scale", "deployment", "api", "--replicas=3"])
        .expect("scale up");
    env.ready(ns, "app=api");
    converge(
        env,
        "the new pod to be reached after the API server's restart",
    );

    // etcd down for ten seconds: the API server answers errors; the proxies go on.
    env.cluster_mut().stop("etcd", grace).expect("stop etcd");
    let down = std::time::Instant::now();
    let mut requests = 0;
    while down.elapsed() < Duration::from_secs(10) && requests < 200 {
        let seen = answered(&pid, &target, 3, "with etcd down");
        assert!(!seen.is_empty());
        requests += 3;
    }
    env.cluster_mut().start_again("etcd").expect("start etcd");
    env.cluster_mut()
        .wait_ready()
        .expect("the cluster after etcd's restart");
    env.kubectl()
        .run(&["-n", ns, "scale", "deployment", "api", "--replicas=1"])
        .expect("scale down");
    wait("the scale-down to finish", Duration::from_secs(60), || {
        (pods(env).len() == 1).then_some(())
    });
    converge(
        env,
        "only the remaining pod to be reached after etcd's outage",
    );

    // The kubelet restarted: the pods keep running, unrestarted, and keep answering.
    env.cluster_mut()
        .restart("kubelet", grace)
        .expect("restart the kubelet");
    let seen = answered(&pid, &target, 5, "with the kubelet restarting");
    assert_eq!(seen.len(), 1, "{seen:?}");
    env.cluster_mut()
        .wait_ready()
        .expect("the node after the kubelet's restart");
    let restarts = env.get(
        &["-n", ns, "pods", "-o", "wide"],
        "{.items[*].status.containerStatuses[*].restartCount}",
    );
    assert!(
        restarts.split_whitespace().all(|n| n == "0"),
        "no container restarted: {restarts}"
    );

    // The control plane's pod deleted: the Deployment makes another; meanwhile the proxies go
    // on, and then churn reaches them through the new one.
    env.kubectl()
        .run(&[
            "-n",
            weft::WEFT_NAMESPACE,
            "delete",
            "pod",
            "-l",
            weft::CONTROL_PLANE_PODS,
            "--wait=true",
        ])
        .expect("delete the control plane's pod");
    let seen = answered(&pid, &target, 5, "with the control plane replaced");
    assert_eq!(seen.len(), 1, "{seen:?}");
    env.ready(weft::WEFT_NAMESPACE, weft::CONTROL_PLANE_PODS);
    env.kubectl()
        .run(&["-n", ns, "scale", "deployment", "api", "--replicas=2"])
        .expect("scale up again");
    env.ready(ns, "app=api");
    converge(
        env,
        "the new pod to be reached through the new control plane",
    );
}

/// The init-container mode: in a namespace `weft-cni` skips, `weft-init` (root, `NET_ADMIN`
/// and `NET_RAW` only) installs the rules before the proxy starts, and meshed traffic flows
/// with mTLS through it.
fn weft_init_redirects_as_an_init_container(env: &mut Env<'_>) {
    let ns = INIT_MODE_NAMESPACE;
    env.namespace(ns);
    env.apply(
        &AppPod::new(ns, "server", "api")
            .label("app", "api")
            .meshed()
            .init_container()
            .yaml(),
    );
    env.apply(
        &AppPod::new(ns, "client", "web")
            .meshed()
            .init_container()
            .yaml(),
    );
    env.apply(&AppPod::new(ns, "bare", "web").meshed().yaml());
    env.apply(&weft::service_yaml(ns, "api", "api"));
    env.ready(ns, "weft-lab=app");
    for pod in ["server", "client"] {
        let rules = env.pod_nat_rules(ns, pod);
        assert!(
            rules.contains("-A WEFT_OUTPUT") && rules.contains("weft:"),
            "{pod}:\n{rules}"
        );
        let exit = env.get(
            &["-n", ns, "pod", pod],
            "{.status.initContainerStatuses[?(@.name==\"weft-init\")].state.terminated.exitCode}",
        );
        assert_eq!(exit.trim(), "0", "{pod}'s weft-init exited 0");
    }
    // weft-cni skipped this namespace: a meshed pod without weft-init has no rules.
    let rules = env.pod_nat_rules(ns, "bare");
    assert!(!rules.contains("WEFT_"), "weft-cni skips {ns}:\n{rules}");

    let target = format!("api.{ns}.svc.cluster.local:80");
    let (ok, out, err) = env.exec(
        ns,
        "client",
        "app",
        &["/usr/local/bin/weft-lab-app", "get", &target, "/init-mode"],
    );
    assert!(ok && out.contains("pod=server"), "{out}{err}");
    let web = weft_lab::spiffe_id(ns, "web");
    let api = weft_lab::spiffe_id(ns, "api");
    let labels = [
        ("client_id", web.as_str()),
        ("direction", "outbound"),
        ("server_id", api.as_str()),
        ("tls", "true"),
    ];
    wait(
        "the client's proxy to count the mTLS request",
        Duration::from_secs(10),
        || {
            (env.proxy_metrics(ns, "client")
                .sum("weft_requests_total", &labels)
                >= 1.0)
                .then_some(())
        },
    );
}

/// Tracing through the chart: with `proxy.tracing.collector` set, the injector gives every proxy
/// `WEFT_TRACE_COLLECTOR`, and a labelled namespace's plain Deployment and Pod, calling each
/// other through a Service, leave one trace per request (the client's CLIENT span, the server's
/// SERVER span under it) in a real Jaeger running as a Deployment in the cluster. The chart is
/// put back as it was after.
fn injected_proxies_trace_to_the_collector_the_chart_names(env: &mut Env<'_>) {
    weft::import_jaeger_image(env.cluster()).expect("Jaeger's image");
    let ns = "tracing";
    env.apply(&format!(
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {ns}\n"
    ));
    // Inside its pod, on the pod's own addresses.
    let config = weft_lab::jaeger::config(
        "0.0.0.0:4317".parse().expect("addr"),
        "0.0.0.0:16686".parse().expect("addr"),
    );
    let indented: String = config.lines().map(|l| format!("    {l}\n")).collect();
    env.apply(&format!(
        r#"apiVersion: v1
kind: ConfigMap
metadata: {{name: jaeger, namespace: {ns}}}
data:
  config.yaml: |
{indented}---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: jaeger, namespace: {ns}}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: jaeger}}}}
  template:
    metadata:
      labels: {{app: jaeger}}
      annotations: {{weft.dev/inject: disabled}}
    spec:
      containers:
      - name: jaeger
        image: {image}
        imagePullPolicy: Never
        args: [--config, /etc/jaeger/config.yaml]
        ports: [{{containerPort: 4317}}, {{containerPort: 16686}}]
        readinessProbe: {{httpGet: {{path: /api/services, port: 16686}}, periodSeconds: 1}}
        volumeMounts: [{{name: config, mountPath: /etc/jaeger}}]
      volumes: [{{name: config, configMap: {{name: jaeger}}}}]
---
apiVersion: v1
kind: Service
metadata: {{name: jaeger, namespace: {ns}}}
spec:
  selector: {{app: jaeger}}
  ports:
  - {{name: otlp-grpc, port: 4317, appProtocol: grpc}}
  - {{name: query, port: 16686}}
"#,
        image = weft::JAEGER_IMAGE
    ));
    env.ready(ns, "app=jaeger");
    env.helm_install(&[
        "proxy.tracing.collector=jaeger.tracing.svc.cluster.local:4317",
        "proxy.tracing.sampling=1",
    ])
    .unwrap_or_else(|e| panic!("helm upgrade with tracing: {e}"));

    let app_ns = "traced";
    env.injected_namespace(app_ns);
    let through_webhook = |yaml: &str| env.apply_through_webhook(yaml);
    through_webhook(
        &AppPod::new(app_ns, "api", "api")
            .label("app", "api")
            .deployment_yaml(1),
    );
    through_webhook(
        &AppPod::new(app_ns, "client", "web")
            .label("app", "web")
            .yaml(),
    );
    env.apply(&weft::service_yaml(app_ns, "api", "api"));
    env.ready(app_ns, "weft-lab=app");
    let proxy_env = env.get(
        &["-n", app_ns, "pod", "client"],
        "{.spec.initContainers[?(@.name==\"weft-proxy\")].env[?(@.name==\"WEFT_TRACE_COLLECTOR\")].value}",
    );
    assert_eq!(proxy_env, "jaeger.tracing.svc.cluster.local:4317");

    let target = format!("api.{app_ns}.svc.cluster.local:80");
    for i in 0..3 {
        let path = format!("/traced/{i}");
        let (ok, out, err) = env.exec(
            app_ns,
            "client",
            "app",
            &["/usr/local/bin/weft-lab-app", "get", &target, &path],
        );
        assert!(ok, "GET {path}: {out}{err}");
    }

    // Jaeger's query API through its Service, from the node.
    let ip: std::net::IpAddr = env
        .get(&["-n", ns, "service", "jaeger"], "{.spec.clusterIP}")
        .trim()
        .parse()
        .expect("the Service's cluster IP");
    let query = std::net::SocketAddr::new(ip, 16686);
    let traces = wait(
        "3 traces of web -> api in Jaeger",
        Duration::from_secs(40),
        || {
            let r = weft_lab::http::get(
                env.cluster().node(),
                query,
                "jaeger",
                "/api/traces?service=web&limit=50",
            )
            .ok()?;
            let traces = weft_lab::jaeger::parse_traces(&r.body).ok()?;
            let ours: Vec<_> = traces
                .into_iter()
                .filter(|t| {
                    t.spans.iter().any(|s| {
                        s.tag("url.path")
                            .and_then(|v| v.as_str())
                            .is_some_and(|p| p.starts_with("/traced/"))
                    })
                })
                .collect();
            (ours.len() >= 3 && ours.iter().all(|t| t.spans.len() >= 2)).then_some(ours)
        },
    );
    for t in &traces {
        let client = t
            .spans
            .iter()
            .find(|s| s.service == "web" && s.kind.as_deref() == Some("client"))
            .unwrap_or_else(|| panic!("web's client span: {t:#?}"));
        let server = t
            .spans
            .iter()
            .find(|s| s.service == "api" && s.kind.as_deref() == Some("server"))
            .unwrap_or_else(|| panic!("api's server span: {t:#?}"));
        assert_eq!(server.parent.as_ref(), Some(&client.span_id), "{t:#?}");
    }
    println!("tracing: {} traces of web -> api in Jaeger", traces.len());

    // As it was: no tracing.
    env.helm_install(&[])
        .unwrap_or_else(|e| panic!("helm upgrade back: {e}"));
}

/// The node's CNI configuration file and its plugin types, in order.
fn node_cni_plugins(env: &Env<'_>) -> (PathBuf, Value, Vec<String>) {
    let path = env.cluster().cni_conf_dir().join(CNI_CONFLIST);
    let text = std::fs::read_to_string(&path).expect("the node's conflist");
    let config: Value = serde_json::from_str(&text).expect("the node's conflist is JSON");
    let types = config["plugins"]
        .as_array()
        .expect("plugins")
        .iter()
        .map(|p| p["type"].as_str().unwrap_or_default().to_string())
        .collect();
    (path, config, types)
}

/// The chart's CNI DaemonSet on the node: `weft-cni` copied into the node's CNI binary folder
/// (a file of its own that answers the CNI VERSION command), chained last into the
/// configuration containerd reads with a kubeconfig of its own (mode 0600, the DaemonSet's
/// token, allowed to get pods and nothing more), and chained again within seconds when
/// something rewrites the file without it, as a pod network's own installer does. Every meshed
/// case of the tier runs on this: their pods carry no `weft-init`.
fn the_cni_daemonset_chains_weft_cni_and_keeps_it_chained(env: &mut Env<'_>) {
    use std::os::unix::fs::PermissionsExt;
    let (path, config, types) = node_cni_plugins(env);
    assert_eq!(types, ["bridge", "weft-cni"], "{config:#}");
    let entry = &config["plugins"][1];
    let conf_dir = env.cluster().cni_conf_dir();
    let kubeconfig = conf_dir.join("weft-cni.kubeconfig");
    assert_eq!(entry["kubeconfig"], kubeconfig.display().to_string());
    assert_eq!(
        entry["excludeNamespaces"],
        serde_json::json!(["kube-system", weft::WEFT_NAMESPACE, INIT_MODE_NAMESPACE])
    );
    let mode = std::fs::metadata(&kubeconfig)
        .expect("the plugin's kubeconfig")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "the kubeconfig holds a token");

    // The binary is a copy (not the lab's link to the build), and a working CNI plugin.
    let plugin = env.cluster().cni_bin_dir().join("weft-cni");
    let meta = std::fs::symlink_metadata(&plugin).expect("weft-cni on the node");
    assert!(
        meta.is_file() && meta.permissions().mode() & 0o111 != 0,
        "{meta:?}"
    );
    let version = std::process::Command::new(&plugin)
        .env("CNI_COMMAND", "VERSION")
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run weft-cni");
    let stdout = String::from_utf8_lossy(&version.stdout);
    assert!(
        version.status.success() && stdout.contains("supportedVersions"),
        "{stdout}"
    );

    // The kubeconfig works from the node, with exactly the plugin's rights.
    let as_plugin = env.kubectl().with_kubeconfig(&kubeconfig);
    let can = |args: &[&str]| {
        let mut full = vec!["auth", "can-i"];
        full.extend_from_slice(args);
        as_plugin
            .outcome(&full, "")
            .expect("kubectl")
            .stdout
            .trim()
            .to_string()
    };
    assert_eq!(can(&["get", "pods", "-A"]), "yes");
    assert_eq!(can(&["list", "pods", "-A"]), "no");
    assert_eq!(can(&["get", "secrets", "-A"]), "no");

    // The pod network's installer writes its configuration again, without Weft's entry.
    let bridge_only = serde_json::json!({
        "cniVersion": config["cniVersion"],
        "name": config["name"],
        "plugins": [config["plugins"][0]],
    });
    std::fs::write(
        &path,
        serde_json::to_string_pretty(&bridge_only).unwrap_or_default(),
    )
    .expect("rewrite the node's conflist");
    let started = Instant::now();
    wait(
        "the DaemonSet to chain weft-cni again",
        Duration::from_secs(20),
        || (node_cni_plugins(env).2 == ["bridge", "weft-cni"]).then_some(()),
    );
    println!(
        "weft-cni chained again {:.1?} after the file was rewritten without it",
        started.elapsed()
    );
    // And pods keep coming up meshed (the plugin's rules, no weft-init).
    let ns = "cni-chained";
    env.namespace(ns);
    let (client, target) = env.meshed_client_and_api(ns, 1);
    let rules = env.pod_nat_rules(ns, "client");
    assert!(
        rules.contains("WEFT_OUTPUT"),
        "weft-cni's rules in the client:\n{rules}"
    );
    let inits = env.get(
        &["-n", ns, "pod", "client"],
        "{.spec.initContainers[*].name}",
    );
    assert!(!inits.contains("weft-init"), "the client: {inits}");
    let answer = wait_result(
        "a request through both proxies",
        Duration::from_secs(20),
        || get_in_netns_of(&client, &target, "/after-rechain").ok(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(answer.starts_with("api-"), "answered by {answer:?}");
    let server = env.get(
        &["-n", ns, "pods", "-l", "app=api"],
        "{.items[0].metadata.name}",
    );
    wait(
        "the server's proxy to count the client's mTLS request",
        Duration::from_secs(10),
        || (env.mtls_requests_in(ns, server.trim(), "web", "api") >= 1.0).then_some(()),
    );
}

/// The injector, called by the real API server: a Deployment and a Pod created as a user writes
/// them, in a namespace labelled `weft.dev/inject=enabled`, come up with the proxy as a native
/// sidecar (and the CNI plugin's rules, as `--cni` says) and talk mTLS as their service
/// accounts; a pod that says `weft.dev/inject: disabled` stays plain; a Job's pod completes;
/// `weftctl check` and `helm test` find all well. The chart installed the injector and its
/// webhooks with the cluster.
fn the_injector_meshes_a_labelled_namespace(env: &mut Env<'_>) {
    let ns = "injected";
    env.injected_namespace(ns);
    let through_webhook = |yaml: &str| env.apply_through_webhook(yaml);
    // The server as a plain Deployment (its pods named by the ReplicaSet, as the API server
    // hands them to the webhook without a name), the client as a plain Pod to exec into.
    through_webhook(
        &AppPod::new(ns, "api", "api")
            .label("app", "api")
            .deployment_yaml(2),
    );
    through_webhook(&AppPod::new(ns, "client", "web").label("app", "web").yaml());
    through_webhook(&format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: opted-out
  namespace: {ns}
  labels: {{weft-lab: app}}
  annotations: {{weft.dev/inject: disabled}}
spec:
  terminationGracePeriodSeconds: 2
  containers:
  - name: app
    image: {image}
    imagePullPolicy: Never
    command: ["/usr/local/bin/weft-lab-app", "serve", "opted-out"]
"#,
        image = weft::APP_IMAGE
    ));
    env.apply(&weft::service_yaml(ns, "api", "api"));
    env.ready(ns, "weft-lab=app");

    let servers = env.pod_names(ns, "app=api");
    assert_eq!(servers.len(), 2, "{servers:?}");
    for pod in servers.iter().map(String::as_str).chain(["client"]) {
        let inits = env.get(&["-n", ns, "pod", pod], "{.spec.initContainers[*].name}");
        assert_eq!(
            inits, "weft-proxy",
            "{pod}: the proxy, and no weft-init (--cni)"
        );
        let injected = env.get(
            &["-n", ns, "pod", pod],
            "{.metadata.annotations.weft\\.dev/injected}",
        );
        assert!(!injected.is_empty(), "{pod} carries weft.dev/injected");
    }
    let plain = env.get(&["-n", ns, "pod", "opted-out"], "{.spec.initContainers}");
    assert!(plain.is_empty(), "the opted-out pod has no proxy: {plain}");
    // Each proxy says which workload it serves: the Deployment behind the ReplicaSet's pods,
    // the bare Pod itself.
    for (pod, kind, name) in [
        (servers[0].as_str(), "deployment", "api"),
        ("client", "pod", "client"),
    ] {
        let m = env.proxy_metrics(ns, pod);
        assert_eq!(
            m.get(
                "weft_proxy_info",
                &[("workload_kind", kind), ("workload", name)]
            ),
            Some(1.0),
            "{pod}'s proxy names its workload"
        );
    }

    // `weftctl tap` on the Deployment: a port-forward to each replica's proxy, on its
    // loopback. Open on both before the calls are made.
    let tap = env.weftctl_spawn(&[
        "tap",
        "deploy/api",
        "-n",
        ns,
        "--path",
        "/tapped/",
        "--max",
        "3",
        "--duration",
        "90s",
        "-o",
        "json",
    ]);
    wait(
        "weftctl tap to open a tap on both replicas",
        Duration::from_secs(30),
        || {
            servers
                .iter()
                .all(|pod| env.proxy_metrics(ns, pod).get("weft_tap_streams", &[]) == Some(1.0))
                .then_some(())
        },
    );
    let target = format!("api.{ns}.svc.cluster.local:80");
    for i in 0..3 {
        let (ok, out, err) = env.exec(
            ns,
            "client",
            "app",
            &[
                "/usr/local/bin/weft-lab-app",
                "get",
                &target,
                &format!("/tapped/{i}"),
            ],
        );
        assert!(
            ok && out.contains("pod=api-"),
            "GET /tapped/{i}: {out}{err}"
        );
    }
    let out = tap.wait_with_output().expect("weftctl tap");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "weftctl tap: {stdout}{stderr}");
    let mut paths: Vec<String> = Vec::new();
    for line in stdout.lines() {
        let e: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(
            e["pod"]
                .as_str()
                .is_some_and(|p| p.starts_with(&format!("{ns}/api-"))),
            "{e}"
        );
        assert_eq!(e["direction"], "inbound", "{e}");
        assert_eq!(e["tls"], true, "{e}");
        assert_eq!(e["src_identity"], weft_lab::spiffe_id(ns, "web"), "{e}");
        assert_eq!(e["dst_identity"], weft_lab::spiffe_id(ns, "api"), "{e}");
        paths.push(e["path"].as_str().unwrap_or_default().to_string());
    }
    paths.sort();
    assert_eq!(
        paths,
        ["/tapped/0", "/tapped/1", "/tapped/2"],
        "{stdout}{stderr}"
    );
    let got = wait(
        "the servers' proxies to count the client's mTLS requests",
        Duration::from_secs(10),
        || {
            let n: f64 = servers
                .iter()
                .map(|pod| env.mtls_requests_in(ns, pod, "web", "api"))
                .sum();
            (n >= 3.0).then_some(n)
        },
    );
    println!("injected pods: the servers' proxies saw {got} mTLS requests from the client");

    // A Job's pod completes: the native sidecar stops with the app.
    let (outcome, logs) = env.job(
        &AppPod::new(ns, "caller", "web").command(&[
            "/usr/local/bin/weft-lab-app",
            "get",
            &target,
            "/from-a-job",
        ]),
        "app",
    );
    assert_eq!(outcome, "1/", "the Job succeeded; its app's log:\n{logs}");
    let inits = env.get(
        &["-n", ns, "pods", "-l", "job-name=caller"],
        "{.items[0].spec.initContainers[*].name}",
    );
    assert_eq!(inits, "weft-proxy", "the Job's pod was injected");

    // `weftctl check` finds everything healthy, and that the caller may install Weft.
    let (ok, out, err) = env.weftctl(&["check"]);
    assert!(ok, "weftctl check failed:\n{out}{err}");
    println!("weftctl check:\n{out}");
    for line in [
        "ok   weft-control-plane is ready",
        "ok   weft-injector is ready",
        "ok   the webhook's caBundle verifies the injector's certificate",
        "ok   the issuer is signed by a trust anchor",
        "ok   every pod of a meshed namespace has the proxy",
    ] {
        assert!(out.contains(line), "weftctl check says {line:?}:\n{out}");
    }
    let (ok, out, err) = env.weftctl(&["check", "--pre"]);
    assert!(
        ok && out.contains("ok   may create everything the chart installs"),
        "{out}{err}"
    );
    // And `helm test`: the same check from a pod, with the read-only RBAC the chart gives it.
    let test = env
        .helm()
        .outcome(&[
            "test",
            weft::RELEASE,
            "--namespace",
            weft::WEFT_NAMESPACE,
            "--timeout=120s",
            "--logs",
        ])
        .expect("helm runs");
    assert!(
        test.success,
        "helm test failed: {}{}",
        test.stdout, test.stderr
    );
    assert!(
        test.stdout.contains("ok   weft-injector is ready"),
        "helm test's log shows weftctl check: {}",
        test.stdout
    );
    // Passed, its objects are gone (Helm never removes hooks on uninstall).
    for kind in ["pod", "serviceaccount", "role", "rolebinding"] {
        let out = env
            .kubectl()
            .outcome(&["-n", weft::WEFT_NAMESPACE, "get", kind, "weft-check"], "")
            .expect("kubectl");
        assert!(!out.success, "the test's {kind} is left: {}", out.stdout);
    }
}

/// The control plane's pods, by name.
fn control_plane_pods(env: &Env<'_>) -> std::collections::BTreeSet<String> {
    env.pod_names(weft::WEFT_NAMESPACE, weft::CONTROL_PLANE_PODS)
        .into_iter()
        .collect()
}

/// `helm upgrade` rolls the control plane (a new pod annotation) while a meshed client calls a
/// meshed server every 100 ms: not one request fails, and the control plane's pods are new.
fn helm_upgrade_rolls_the_control_plane_without_a_failed_request(env: &mut Env<'_>) {
    let ns = "upgrade";
    let (pid, target) = env.meshed_client_and_api(ns, 1);
    let before = control_plane_pods(env);

    let stop = std::sync::atomic::AtomicBool::new(false);
    let env = &*env;
    let (upgrade, results) = std::thread::scope(|s| {
        let load = s.spawn(|| {
            let mut results = Vec::new();
            // Bounded: helm's own timeout is 150 s.
            let deadline = std::time::Instant::now() + Duration::from_secs(240);
            while !stop.load(std::sync::atomic::Ordering::Relaxed)
                && std::time::Instant::now() < deadline
            {
                results.push(get_in_netns_of(&pid, &target, "/during-upgrade"));
                std::thread::sleep(Duration::from_millis(100));
            }
            results
        });
        let upgrade = env.helm_install(&["controlPlane.podAnnotations.weft-lab/rollout=second"]);
        // The proxies reconnect to the new control plane after it is Ready: keep calling.
        std::thread::sleep(Duration::from_secs(3));
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        (upgrade, load.join().expect("the load thread"))
    });
    upgrade.unwrap_or_else(|e| panic!("helm upgrade: {e}"));
    let failed: Vec<&String> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    assert!(
        results.len() >= 20 && failed.is_empty(),
        "{} of {} requests failed during the upgrade: {failed:?}",
        failed.len(),
        results.len()
    );
    let after = control_plane_pods(env);
    assert!(
        !after.is_empty() && after.is_disjoint(&before),
        "the control plane was rolled: before {before:?}, after {after:?}"
    );
    println!(
        "helm upgrade: {} requests, none failed, control plane {before:?} -> {after:?}",
        results.len()
    );
}

/// Scales the injector to `replicas` and waits until that many of its pods are Ready (none
/// left at all for 0).
fn scale_injector(env: &Env<'_>, replicas: u32) {
    env.kubectl()
        .run(&[
            "-n",
            weft::WEFT_NAMESPACE,
            "scale",
            "deployment",
            weft::INJECTOR,
            &format!("--replicas={replicas}"),
        ])
        .expect("scale the injector");
    if replicas > 0 {
        env.ready(weft::WEFT_NAMESPACE, weft::INJECTOR_PODS);
        return;
    }
    wait(
        "the injector's pods to be gone",
        Duration::from_secs(60),
        || {
            env.get(
                &[
                    "-n",
                    weft::WEFT_NAMESPACE,
                    "pods",
                    "-l",
                    weft::INJECTOR_PODS,
                ],
                "{.items[*].metadata.name}",
            )
            .trim()
            .is_empty()
            .then_some(())
        },
    );
}

/// The injector down: with `failurePolicy: Ignore` a labelled namespace's pod is created
/// without the proxy; with `Fail` (the default) the API server refuses it, naming the webhook.
fn with_the_injector_down_the_failure_policy_decides(env: &mut Env<'_>) {
    let ns = "injector-down";
    env.apply(&format!(
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {ns}\n  labels:\n    weft.dev/inject: enabled\n"
    ));
    env.helm_install(&["injector.failurePolicy=Ignore", "injector.timeoutSeconds=5"])
        .unwrap_or_else(|e| panic!("helm upgrade: {e}"));
    scale_injector(env, 0);
    let out = env
        .kubectl()
        .outcome(
            &["apply", "-f", "-"],
            &AppPod::new(ns, "ignored", "web").yaml(),
        )
        .expect("kubectl");
    assert!(
        out.success,
        "with failurePolicy Ignore the pod is created: {}\n{}",
        out.stderr,
        webhook_path_diagnostics(env)
    );
    env.ready(ns, "weft-lab=app");
    let inits = env.get(&["-n", ns, "pod", "ignored"], "{.spec.initContainers}");
    assert!(inits.is_empty(), "created unmeshed: {inits}");
    // `weftctl check` says the injector is down, what Ignore did, and which pod it left out.
    let (ok, out, err) = env.weftctl(&["check"]);
    assert!(!ok, "weftctl check passed with the injector down:\n{out}");
    assert!(err.contains("checks failed"), "{err}");
    for said in [
        "FAIL weft-injector is ready: 0 of 0 replicas ready: failurePolicy is Ignore",
        &format!("{ns}/ignored"),
    ] {
        assert!(out.contains(said), "weftctl check says {said:?}:\n{out}");
    }

    env.helm_install(&[])
        .unwrap_or_else(|e| panic!("helm upgrade: {e}"));
    scale_injector(env, 0);
    let refused = AppPod::new(ns, "refused", "web").yaml();
    let out = env
        .kubectl()
        .outcome(&["apply", "-f", "-"], &refused)
        .expect("kubectl");
    assert!(
        !out.success,
        "a pod was created with the injector down and Fail"
    );
    assert!(
        out.stderr.contains("inject.weft.dev"),
        "the refusal names the webhook: {}",
        out.stderr
    );
    scale_injector(env, 1);
}

/// How the API server reaches the injector from the node: kube-proxy's rules for its Service
/// and the API server's connections that are not to etcd, itself or the kubelet.
fn webhook_path_diagnostics(env: &Env<'_>) -> String {
    let netns = env.kubectl().netns();
    let sh = |script: String| {
        std::process::Command::new("sh")
            .arg("-c")
            .arg(&script)
            .output()
            .map(|o| {
                format!(
                    "$ {script}\n{}{}",
                    String::from_utf8_lossy(&o.stdout),
                    String::from_utf8_lossy(&o.stderr)
                )
            })
            .unwrap_or_else(|e| format!("$ {script}: {e}\n"))
    };
    sh(format!("ip netns exec {netns} iptables-save -t nat | grep -i weft-injector"))
        + &sh(format!("ip netns exec {netns} iptables-save -t filter | grep -i weft-injector"))
        + &sh(format!(
            "ip netns exec {netns} ss -tnpo | grep kube-apiserver | grep -v -e :2379 -e :6443 -e :10250"
        ))
}

/// `helm uninstall` removes the webhooks, the RBAC and every object of the release (a pod of a
/// labelled namespace is then created plainly); the CRDs stay, as Helm leaves `crds/`.
fn helm_uninstall_leaves_no_webhook_behind(env: &mut Env<'_>) {
    env.helm()
        .run(&[
            "uninstall",
            weft::RELEASE,
            "--namespace",
            weft::WEFT_NAMESPACE,
            // Until the Deployments' pods are gone too, not only the Deployments.
            "--cascade=foreground",
            "--wait",
            "--timeout=120s",
        ])
        .unwrap_or_else(|e| panic!("helm uninstall: {e}"));
    for (kind, name) in [
        ("mutatingwebhookconfiguration", weft::INJECTOR),
        ("clusterrole", weft::INJECTOR),
        ("clusterrolebinding", weft::INJECTOR),
        ("clusterrole", weft::CONTROL_PLANE),
        ("clusterrolebinding", weft::CONTROL_PLANE),
        ("clusterrole", "weft-cni"),
        ("clusterrolebinding", "weft-cni"),
    ] {
        let out = env
            .kubectl()
            .outcome(&["get", kind, name], "")
            .expect("kubectl");
        assert!(
            !out.success && out.stderr.contains("NotFound"),
            "{kind}/{name} is left: {}{}",
            out.stdout,
            out.stderr
        );
    }
    let left = env.get(
        &[
            "-n",
            weft::WEFT_NAMESPACE,
            "deployments,daemonsets,services,serviceaccounts,secrets,configmaps,pods",
            "-l",
            "app.kubernetes.io/name=weft",
        ],
        "{.items[*].metadata.name}",
    );
    assert!(
        left.trim().is_empty(),
        "left in {}: {left}",
        weft::WEFT_NAMESPACE
    );
    env.kubectl()
        .run(&["get", "crd", "httpfaults.weft.dev"])
        .expect("the CRDs stay");
    // The CNI DaemonSet's pod took weft-cni off the node as it stopped: the node's
    // configuration is the pod network's alone again, and the plugin and its kubeconfig are gone.
    let (_, config, types) = node_cni_plugins(env);
    assert_eq!(types, ["bridge"], "{config:#}");
    for gone in [
        env.cluster().cni_conf_dir().join("weft-cni.kubeconfig"),
        env.cluster().cni_bin_dir().join("weft-cni"),
    ] {
        assert!(!gone.exists(), "{} is left on the node", gone.display());
    }

    let ns = "after-uninstall";
    env.apply(&format!(
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {ns}\n  labels:\n    weft.dev/inject: enabled\n"
    ));
    env.apply(&AppPod::new(ns, "plain", "web").yaml());
    let inits = env.get(&["-n", ns, "pod", "plain"], "{.spec.initContainers}");
    assert!(inits.is_empty(), "no webhook left to inject: {inits}");
}
