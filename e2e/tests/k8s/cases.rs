//! The k8s tier's cases, in the order they run.

use std::{net::Ipv4Addr, path::Path, time::Duration};

use weft_k8s_lab::{
    cluster::{BRIDGE, NODE_IP},
    crds, weft,
    weft::AppPod,
};
use weft_lab::{capture::Capture, pcap};

use crate::support::{wait, Env};

pub(crate) type Case = fn(&mut Env<'_>);

pub(crate) const ALL: &[(&str, Case)] = &[
    (
        "crds_are_enforced_by_the_api_server",
        crds_are_enforced_by_the_api_server,
    ),
    (
        "pods_get_addresses_dns_and_services",
        pods_get_addresses_dns_and_services,
    ),
    (
        "control_plane_rbac_is_least_privilege",
        control_plane_rbac_is_least_privilege,
    ),
    (
        "meshed_pods_talk_mtls_through_a_cluster_ip",
        meshed_pods_talk_mtls_through_a_cluster_ip,
    ),
    (
        "tokens_of_other_audiences_and_deleted_pods_are_refused",
        tokens_of_other_audiences_and_deleted_pods_are_refused,
    ),
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

    env.apply(&format!(
        r#"apiVersion: batch/v1
kind: Job
metadata:
  name: client
  namespace: {ns}
spec:
  backoffLimit: 0
  template:
    spec:
      restartPolicy: Never
      containers:
      - name: get
        image: {image}
        imagePullPolicy: Never
        command: ["/usr/local/bin/weft-lab-app", "get", "api.{ns}.svc.cluster.local:80", "/via-dns"]
"#,
        image = weft::WEFT_IMAGE
    ));
    let outcome = wait("the Job to finish", Duration::from_secs(60), || {
        let status = env.get(
            &["-n", ns, "job", "client"],
            "{.status.succeeded}/{.status.failed}",
        );
        (status != "/").then_some(status)
    });
    let logs = env
        .kubectl()
        .run(&["-n", ns, "logs", "job/client"])
        .unwrap_or_else(|e| e.to_string());
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
    ] {
        assert!(can(allowed), "the control plane may {allowed:?}");
    }
    for refused in [
        &["get", "secrets", "-n", "weft"][..],
        &["create", "pods"],
        &["delete", "services"],
        &["update", "endpointslices.discovery.k8s.io"],
        &["create", "certificatesigningrequests.certificates.k8s.io"],
    ] {
        assert!(!can(refused), "the control plane may not {refused:?}");
    }
    // And a real request with its identity: refused, with the API server's reason.
    let out = env
        .kubectl()
        .outcome(
            &["--as", &me, "-n", "weft", "get", "secret", "weft-issuer"],
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
    let inbound = [
        ("client_id", web.as_str()),
        ("direction", "inbound"),
        ("server_id", api.as_str()),
        ("tls", "true"),
    ];
    let got = env
        .proxy_metrics(ns, "server")
        .sum("weft_requests_total", &inbound);
    assert!(
        got >= 5.0,
        "the server's proxy saw {got} mTLS requests from {web}"
    );
    println!("client proxy: {sent} mTLS requests to {api}; server proxy: {got} from {web}");
    let _ = NODE_IP;
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
        let pod = AppPod::new(ns, name, "api").meshed().yaml().replace(
            "    projected:\n      sources:\n      - serviceAccountToken:\n          audience: identity.weft.dev\n          expirationSeconds: 3600\n          path: token\n",
            &format!("    secret:\n      secretName: {name}\n"),
        );
        assert!(
            pod.contains(&format!("secretName: {name}")),
            "the token volume was replaced:\n{pod}"
        );
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
