//! The mesh for real: pods as network namespaces on the reference CNI bridge, redirected by
//! `weft-cni`, proxies getting their identity and endpoints from the control plane.
//!
//! What the tests prove:
//! - a call to a Service's cluster IP crosses both proxies over mTLS with both SPIFFE IDs in
//!   both proxies' metrics, and is spread over the Service's pods;
//! - on the bridge, everything between meshed pods is TLS records, and no plaintext HTTP,
//!   while an unmeshed client's plaintext is plainly visible (so the check can fail);
//! - an unmeshed client is refused by a strict pod and served by a permissive one;
//! - skipped inbound and outbound ports bypass the proxies (the app sees the client's own
//!   socket, the proxies count nothing);
//! - the proxy's own connections are not redirected back to it;
//! - deleting a pod's rules is caught by the proxy's redirect self-check within seconds, and
//!   restoring them (with `weft-init`) is too;
//! - `weft-init` (the init-container way) and `weft-cni` install the same rules.
//!
//! Needs root, `ip`, `iptables`, `tcpdump`, `setpriv` and the CNI reference plugins; without
//! them each test prints `SKIPPED:` and passes, unless `WEFT_REQUIRE_NETNS_TESTS=1`.

mod support;

use std::{collections::BTreeMap, net::SocketAddr, time::Duration};

use weft_lab::{
    pcap, redirect, spiffe_id, wait, Cluster, Pod, PodSpec, Service, ServiceSpec, ECHO_PORT,
    GATEWAY, HTTP_PORT,
};

use support::{metrics, opened, wait_for};

/// `shop/api`: HTTP on 80 and the echo on 9000, served by pods labelled `app=api`.
fn api_service(c: &Cluster) -> Service {
    c.service(
        ServiceSpec::new("shop", "api")
            .selector("app", "api")
            .port("http", 80, HTTP_PORT)
            .port("echo", ECHO_PORT, ECHO_PORT),
    )
    .expect("the api Service")
}

/// A meshed pod of the api Service (service account `api`).
fn api_pod(c: &Cluster, name: &str) -> Pod {
    c.pod(
        PodSpec::new("shop", name)
            .service_account("api")
            .label("app", "api")
            .meshed(),
    )
    .unwrap_or_else(|e| panic!("pod {name}: {e}"))
}

/// The meshed client pod `a` (service account `web`), with `spec` changes.
fn web_pod(c: &Cluster, name: &str, spec: impl FnOnce(PodSpec) -> PodSpec) -> Pod {
    c.pod(spec(
        PodSpec::new("shop", name).service_account("web").meshed(),
    ))
    .unwrap_or_else(|e| panic!("pod {name}: {e}"))
}

/// An unmeshed pod: no rules, no proxy.
fn plain_pod(c: &Cluster, name: &str) -> Pod {
    c.pod(PodSpec::new("shop", name))
        .unwrap_or_else(|e| panic!("pod {name}: {e}"))
}

fn is_pod_ip(addr: &SocketAddr) -> bool {
    match addr.ip() {
        std::net::IpAddr::V4(ip) => ip.octets()[..3] == [198, 18, 0] && ip != GATEWAY,
        std::net::IpAddr::V6(_) => false,
    }
}

#[test]
fn a_service_call_crosses_both_proxies_with_mtls_and_is_balanced() {
    let Some(c) = support::cluster("a_service_call_crosses_both_proxies_with_mtls_and_is_balanced")
    else {
        return;
    };
    let api = api_service(&c);
    let b1 = api_pod(&c, "b1");
    let b2 = api_pod(&c, "b2");
    let a = web_pod(&c, "a", |p| p);
    let (web_id, api_id) = (spiffe_id("shop", "web"), spiffe_id("shop", "api"));
    assert_eq!(a.spiffe_id(), web_id);

    // Four concurrent clients, as a balancer that weighs requests in flight expects.
    const CLIENTS: usize = 4;
    const EACH: usize = 10;
    let replies: Vec<(usize, weft_lab::HttpReply)> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..CLIENTS)
            .map(|w| {
                let (a, api) = (&a, &api);
                s.spawn(move || {
                    (0..EACH)
                        .map(|k| {
                            let i = w * EACH + k;
                            let r = a
                                .get_host(api.addr(80), &api.host(), &format!("/call/{i}"))
                                .unwrap_or_else(|e| panic!("request {i}: {e}"));
                            (i, r)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().expect("client thread"))
            .collect()
    });
    let mut answered: BTreeMap<String, usize> = BTreeMap::new();
    for (i, r) in &replies {
        assert_eq!(r.status, 200, "request {i}: {r:?}");
        // The Host header reaches the app untouched, and so does the path.
        assert_eq!(r.field("host"), Some(api.host().as_str()), "{r:?}");
        assert_eq!(
            r.field("path"),
            Some(format!("/call/{i}").as_str()),
            "{r:?}"
        );
        let pod = r.field("pod").unwrap_or_default().to_string();
        // The app was called by its own pod's proxy, from the pod's address: not by A.
        let server = if pod == "b1" { &b1 } else { &b2 };
        let peer: SocketAddr = r.field("peer").and_then(|p| p.parse().ok()).expect("peer");
        assert_eq!(peer.ip(), server.ip(), "{pod}'s app saw {peer}: {r:?}");
        *answered.entry(pod).or_default() += 1;
    }
    println!("spread over the Service's pods: {answered:?}");
    // Spread, not split evenly: peak-EWMA may favour the pod whose mesh connection was up
    // first, so the bar is that both take part.
    assert_eq!(
        answered.keys().map(String::as_str).collect::<Vec<_>>(),
        ["b1", "b2"],
        "only b1 and b2 answer, and both do: {answered:?}"
    );

    // A's proxy: each pod's share, over mTLS, with both identities and the Service's name.
    for b in [&b1, &b2] {
        let endpoint = b.addr(HTTP_PORT).to_string();
        let service = api.metrics_name(80);
        let labels = [
            ("client_id", web_id.as_str()),
            ("direction", "outbound"),
            ("dst_endpoint", endpoint.as_str()),
            ("dst_service", service.as_str()),
            ("route", ""),
            ("server_id", api_id.as_str()),
            ("status_code", "200"),
            ("tls", "true"),
        ];
        let share = answered[b.name()] as f64;
        wait_for(&a, &format!("mTLS requests to {}", b.name()), share, |m| {
            m.value("weft_requests_total", &labels)
        });
        // B's proxy: the same requests, inbound, from A's identity to its own.
        let inbound = [
            ("client_id", web_id.as_str()),
            ("direction", "inbound"),
            ("server_id", api_id.as_str()),
            ("status_code", "200"),
            ("tls", "true"),
        ];
        let m = wait_for(b, "inbound mTLS requests", share, |m| {
            m.sum("weft_requests_total", &inbound)
        });
        assert_eq!(
            m.sum("weft_requests_total", &[("tls", "false")]),
            0.0,
            "no plaintext request reached {}:\n{}",
            b.name(),
            m.text
        );
        assert_eq!(
            b.app().expect("app").requests(),
            answered[b.name()] as u64,
            "{}'s app served exactly its share",
            b.name()
        );
    }
    let m = metrics(&a);
    assert!(
        m.value(
            "weft_tls_handshakes_total",
            &[("direction", "outbound"), ("result", "ok")]
        ) >= 2.0,
        "A shook hands with both pods' proxies:\n{}",
        m.text
    );

    // Opaque TCP through the Service: each connection to one pod, across the mesh.
    for i in 0..4 {
        let line = format!("HELLO {i} through the mesh");
        let r = a.echo(api.addr(ECHO_PORT), &[&line]).expect("echo");
        let who = r.lines[0].split(' ').next().unwrap_or_default().to_string();
        assert!(
            r.lines[0] == format!("b1 {line}") || r.lines[0] == format!("b2 {line}"),
            "{r:?}"
        );
        let server = if who == "b1" { &b1 } else { &b2 };
        let seen = server.app().expect("app").seen();
        let last = seen
            .iter()
            .rev()
            .find(|s| s.port == ECHO_PORT)
            .expect("seen");
        assert_eq!(
            last.peer.ip(),
            server.ip(),
            "the echo came from {who}'s proxy"
        );
    }
}

#[test]
fn traffic_between_meshed_pods_is_tls_on_the_bridge() {
    let Some(c) = support::cluster("traffic_between_meshed_pods_is_tls_on_the_bridge") else {
        return;
    };
    let api = api_service(&c);
    let b1 = api_pod(&c, "b1");
    let _b2 = api_pod(&c, "b2");
    let a = web_pod(&c, "a", |p| p);
    let u = plain_pod(&c, "u");

    // Started before any pod-to-pod traffic, so every mesh connection's handshake is seen.
    let capture = c.capture("bridge").expect("tcpdump on the bridge");
    for i in 0..20 {
        let r = a
            .get(api.addr(80), &format!("/secret-path-{i}"))
            .expect("request");
        assert_eq!(r.status, 200, "{r:?}");
    }
    for i in 0..4 {
        a.echo(api.addr(ECHO_PORT), &[&format!("weft-e2e-secret-line {i}")])
            .expect("echo");
    }
    // The control: an unmeshed client's plaintext to a permissive pod must show up.
    let plain = u
        .get(b1.addr(HTTP_PORT), "/in-the-clear")
        .expect("plaintext request");
    assert_eq!(plain.status, 200, "{plain:?}");
    let segments = capture.stop().expect("the capture");

    let meshed_ips = [a.ip(), b1.ip(), _b2.ip()];
    let is_meshed = |addr: &SocketAddr| meshed_ips.iter().any(|ip| addr.ip() == *ip);
    let between_meshed: Vec<&pcap::Segment> = segments
        .iter()
        .filter(|s| {
            is_pod_ip(&s.src) && is_pod_ip(&s.dst) && is_meshed(&s.src) && is_meshed(&s.dst)
        })
        .collect();
    let payload: usize = between_meshed.iter().map(|s| s.payload.len()).sum();
    assert!(
        payload > 2000,
        "the capture saw the mesh traffic ({} segments, {payload} payload bytes of {} segments in all)",
        between_meshed.len(),
        segments.len()
    );
    // Every stream between meshed pods, reassembled, and every segment on its own.
    let owned: Vec<pcap::Segment> = between_meshed.iter().map(|s| (*s).clone()).collect();
    let streams = pcap::streams(&owned);
    for needle in PLAINTEXT {
        for st in &streams {
            assert!(
                !pcap::contains(&st.bytes, needle),
                "plaintext {:?} between meshed pods, {} -> {}",
                String::from_utf8_lossy(needle),
                st.src,
                st.dst
            );
        }
        for s in &between_meshed {
            assert!(!pcap::contains(&s.payload, needle), "plaintext in {s:?}");
        }
    }
    // Every stream seen from its SYN is TLS records from its first byte to its last.
    let mut types = BTreeMap::<u8, usize>::new();
    let mut hellos = 0;
    for st in streams
        .iter()
        .filter(|s| s.from_start && !s.bytes.is_empty())
    {
        let (records, stop) = pcap::tls_records(&st.bytes);
        if let Some(at) = stop {
            panic!(
                "{} -> {} is not TLS records throughout: at byte {at}: {:02x?}",
                st.src,
                st.dst,
                &st.bytes[at..(at + 16).min(st.bytes.len())]
            );
        }
        if st.dst.port() == redirect::INBOUND_PORT && records[0].content_type == 0x16 {
            hellos += 1;
        }
        for r in records {
            *types.entry(r.content_type).or_default() += 1;
        }
    }
    assert!(
        hellos >= 2,
        "A opened mesh connections to both pods with a TLS handshake ({hellos})"
    );
    assert!(types.get(&0x16) >= Some(&2), "handshake records: {types:?}");
    assert!(
        types.get(&0x17) >= Some(&20),
        "application data records: {types:?}"
    );

    // The control: the unmeshed client's request is on the wire in the clear, so the checks
    // above would have seen plaintext had there been any.
    let all = pcap::streams(&segments);
    let clear = all
        .iter()
        .find(|s| s.src.ip() == u.ip() && s.dst == b1.addr(HTTP_PORT))
        .expect("u's connection to b1 on the bridge");
    for needle in [&b"GET /in-the-clear"[..], b"HTTP/1.1"] {
        assert!(pcap::contains(&clear.bytes, needle), "{clear:?}");
    }
    let (_, stop) = pcap::tls_records(&clear.bytes);
    assert_eq!(stop, Some(0), "plaintext is not mistaken for TLS");
}

/// What must never cross the bridge between meshed pods: HTTP, the paths, the echo lines, the
/// app's answers.
const PLAINTEXT: [&[u8]; 5] = [
    b"GET /",
    b"HTTP/1.1",
    b"secret-path",
    b"weft-e2e-secret-line",
    b"pod=b",
];

#[test]
fn a_strict_pod_refuses_an_unmeshed_client_and_a_permissive_pod_serves_it() {
    let Some(c) =
        support::cluster("a_strict_pod_refuses_an_unmeshed_client_and_a_permissive_pod_serves_it")
    else {
        return;
    };
    let strict = c
        .pod(
            PodSpec::new("shop", "strict")
                .service_account("vault")
                .meshed()
                .proxy_env("WEFT_INBOUND_MTLS", "strict"),
        )
        .expect("strict pod");
    let permissive = c
        .pod(
            PodSpec::new("shop", "permissive")
                .service_account("shelf")
                .meshed(),
        )
        .expect("permissive pod");
    let u = plain_pod(&c, "u");
    let a = web_pod(&c, "a", |p| p);

    // Unmeshed to strict: redirected to the proxy, which closes it without a byte.
    let refused = u.get(strict.addr(HTTP_PORT), "/");
    assert!(
        refused.is_err(),
        "the strict pod answered plaintext: {refused:?}"
    );
    wait_for(&strict, "refused plaintext connections", 1.0, |m| {
        m.value(
            "weft_inbound_connections_refused_total",
            &[("reason", "plaintext_in_strict_mode")],
        )
    });
    let echo = u.echo(strict.addr(ECHO_PORT), &["HELLO strict"]);
    assert!(echo.is_err(), "the strict pod echoed plaintext: {echo:?}");
    assert_eq!(
        strict.app().expect("app").seen(),
        [],
        "nothing reached the strict pod's app"
    );

    // Unmeshed to permissive: served, through its proxy, in plaintext.
    let r = u
        .get(permissive.addr(HTTP_PORT), "/")
        .expect("permissive answers");
    assert_eq!(
        (r.status, r.field("pod")),
        (200, Some("permissive")),
        "{r:?}"
    );
    let peer: SocketAddr = r.field("peer").and_then(|p| p.parse().ok()).expect("peer");
    assert_eq!(
        peer.ip(),
        permissive.ip(),
        "delivered by the permissive pod's proxy"
    );
    wait_for(&permissive, "inbound plaintext requests", 1.0, |m| {
        m.sum(
            "weft_requests_total",
            &[
                ("direction", "inbound"),
                ("tls", "false"),
                ("status_code", "200"),
            ],
        )
    });

    // A meshed client still reaches the strict pod, over mTLS.
    let r = a.get(strict.addr(HTTP_PORT), "/").expect("mesh to strict");
    assert_eq!((r.status, r.field("pod")), (200, Some("strict")), "{r:?}");
    let web_id = spiffe_id("shop", "web");
    let vault_id = spiffe_id("shop", "vault");
    wait_for(&strict, "inbound mTLS requests", 1.0, |m| {
        m.sum(
            "weft_requests_total",
            &[
                ("direction", "inbound"),
                ("tls", "true"),
                ("client_id", web_id.as_str()),
                ("server_id", vault_id.as_str()),
            ],
        )
    });
}

#[test]
fn skipped_ports_bypass_the_proxies() {
    let Some(c) = support::cluster("skipped_ports_bypass_the_proxies") else {
        return;
    };
    let b = c
        .pod(
            PodSpec::new("shop", "b")
                .service_account("api")
                .meshed()
                .annotation(redirect::SKIP_INBOUND_PORTS, &ECHO_PORT.to_string()),
        )
        .expect("pod b");
    let a = web_pod(&c, "a", |p| {
        p.annotation(
            redirect::SKIP_OUTBOUND_PORTS,
            &format!("{ECHO_PORT},9100-9200"),
        )
    });
    let u = plain_pod(&c, "u");
    let last_peer = |pod: &Pod, port: u16| {
        pod.app()
            .expect("app")
            .seen()
            .iter()
            .rev()
            .find(|s| s.port == port)
            .map(|s| s.peer)
    };

    // Inbound skip: the unmeshed client reaches b's app itself; b's proxy sees nothing.
    let before = metrics(&b);
    let r = u
        .echo(b.addr(ECHO_PORT), &["HELLO skip inbound"])
        .expect("echo");
    assert_eq!(r.lines, ["b HELLO skip inbound"]);
    assert_eq!(
        last_peer(&b, ECHO_PORT),
        Some(r.local),
        "b's app saw u's own socket"
    );
    // The port not skipped goes through b's proxy, for contrast.
    let r = u.get(b.addr(HTTP_PORT), "/").expect("get");
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        last_peer(&b, HTTP_PORT).map(|p| p.ip()),
        Some(b.ip().into())
    );
    wait_for(
        &b,
        "inbound connections: only the HTTP one",
        opened(&before, "inbound") + 1.0,
        |m| opened(m, "inbound"),
    );

    // Outbound skip: a's app reaches u's app itself; a's proxy sees nothing.
    let before = metrics(&a);
    let b_before = metrics(&b);
    let r = a
        .echo(u.addr(ECHO_PORT), &["HELLO skip outbound"])
        .expect("echo");
    assert_eq!(r.lines, ["u HELLO skip outbound"]);
    assert_eq!(
        last_peer(&u, ECHO_PORT),
        Some(r.local),
        "u's app saw a's own socket"
    );
    // Both skips at once: a to b's skipped port, no proxy on either side.
    let r = a.echo(b.addr(ECHO_PORT), &["HELLO both"]).expect("echo");
    assert_eq!(r.lines, ["b HELLO both"]);
    assert_eq!(
        last_peer(&b, ECHO_PORT),
        Some(r.local),
        "b's app saw a's own socket"
    );
    // The port not skipped goes through a's proxy: u's app sees a's address, another port.
    let r = a.get(u.addr(HTTP_PORT), "/").expect("get");
    assert_eq!(r.status, 200, "{r:?}");
    let peer = last_peer(&u, HTTP_PORT).expect("u's app was called");
    assert_eq!(peer.ip(), a.ip());
    assert_ne!(peer, r.local, "the request went through a's proxy");
    wait_for(
        &a,
        "outbound connections: only the HTTP one",
        opened(&before, "outbound") + 1.0,
        |m| opened(m, "outbound"),
    );
    let m = metrics(&b);
    assert_eq!(
        opened(&m, "inbound"),
        opened(&b_before, "inbound"),
        "a's call to b's skipped port passed b's proxy by:\n{}",
        m.text
    );
}

#[test]
fn the_proxys_own_connections_are_not_redirected_back_to_it() {
    let Some(c) = support::cluster("the_proxys_own_connections_are_not_redirected_back_to_it")
    else {
        return;
    };
    let api = api_service(&c);
    let b1 = api_pod(&c, "b1");
    let a = web_pod(&c, "a", |p| p);
    let (a0, b0) = (metrics(&a), metrics(&b1));

    const HTTP: usize = 10;
    const TCP: usize = 3;
    for _ in 0..HTTP {
        assert_eq!(a.get(api.addr(80), "/").expect("request").status, 200);
    }
    for i in 0..TCP {
        a.echo(api.addr(ECHO_PORT), &[&format!("HELLO {i}")])
            .expect("echo");
    }
    let app_connections = (HTTP + TCP) as f64;
    // A's outbound listener accepted exactly the app's connections: a proxy connection looped
    // back through the rules would be one more.
    let a1 = wait_for(
        &a,
        "outbound connections",
        opened(&a0, "outbound") + app_connections,
        |m| opened(m, "outbound"),
    );
    assert_eq!(
        opened(&a1, "inbound"),
        opened(&a0, "inbound"),
        "nothing came into A:\n{}",
        a1.text
    );
    // B's inbound listener got A's two mesh connections, which carried everything: the
    // pooled HTTP/1 one (the requests, one after another, reuse it) and the shared HTTP/2 one
    // (the TCP tunnels).
    let b1m = metrics(&b1);
    assert_eq!(
        opened(&b1m, "inbound") - opened(&b0, "inbound"),
        2.0,
        "two mesh connections from A's proxy:\n{}",
        b1m.text
    );
    assert_eq!(
        opened(&b1m, "outbound"),
        opened(&b0, "outbound"),
        "B's proxy's delivery to its app did not loop into its outbound listener:\n{}",
        b1m.text
    );
    // Neither proxy ever refused a connection for having reached it without a redirect.
    for pod in [&a, &b1] {
        let looped: Vec<_> = pod
            .proxy_events()
            .into_iter()
            .filter(|e| e["message"] == "connection refused")
            .collect();
        assert!(looped.is_empty(), "{}: {looped:?}", pod.name());
    }
}

#[test]
fn deleting_a_pods_rules_is_caught_by_the_redirect_self_check() {
    let Some(c) = support::cluster("deleting_a_pods_rules_is_caught_by_the_redirect_self_check")
    else {
        return;
    };
    let a = web_pod(&c, "a", |p| p);
    let verified = |m: &weft_lab::Metrics| m.value("weft_redirect_verified", &[]);
    support::wait_value(&a, "weft_redirect_verified", 1.0, verified);
    assert_eq!(a.admin("/ready").expect("/ready").status, 200);

    let installed = a
        .exec("iptables", &["-w", "10", "-t", "nat", "-S"])
        .expect("the rules");
    assert!(
        installed.contains("WEFT_OUTPUT"),
        "weft-cni's rules:\n{installed}"
    );
    a.exec("iptables", &["-w", "10", "-t", "nat", "-F"])
        .expect("flush the nat table");
    support::wait_value(&a, "weft_redirect_verified after the flush", 0.0, verified);
    let ready = wait::until("/ready to turn 503", Duration::from_secs(5), || {
        a.admin("/ready").ok().filter(|r| r.status == 503)
    })
    .expect("/ready answers 503 once the rules are gone");
    assert_eq!(ready.status, 503, "{ready:?}");

    // The rules back, by weft-init in the pod (as the init container puts them there):
    // verified and ready again.
    let init = c.binaries().init().expect("weft-init");
    redirect::run_weft_init(a.netns(), init, &a.spec().annotations)
        .expect("weft-init restores the rules");
    let restored = a
        .exec("iptables", &["-w", "10", "-t", "nat", "-S"])
        .expect("the rules");
    assert_eq!(
        restored, installed,
        "weft-init and weft-cni install one rule set"
    );
    support::wait_value(
        &a,
        "weft_redirect_verified after the restore",
        1.0,
        verified,
    );
    wait::until("/ready to turn 200 again", Duration::from_secs(5), || {
        a.admin("/ready").ok().filter(|r| r.status == 200)
    })
    .expect("/ready answers 200 again");
}

#[test]
fn weft_init_and_weft_cni_install_the_same_rules() {
    let test = "weft_init_and_weft_cni_install_the_same_rules";
    let (Some(by_cni), Some(by_init)) = (
        support::cluster(test),
        support::cluster_with(test, weft_lab::Redirect::WeftInit),
    ) else {
        return;
    };
    let spec = || {
        PodSpec::new("shop", "a")
            .service_account("web")
            .meshed()
            .annotation(redirect::SKIP_INBOUND_PORTS, "9000,9100-9200")
            .annotation(redirect::SKIP_OUTBOUND_PORTS, "5432")
            .annotation(redirect::SKIP_OUTBOUND_CIDRS, "198.18.1.0/24,2001:2::/64")
    };
    let a_cni = by_cni.pod(spec()).expect("pod redirected by weft-cni");
    let a_init = by_init.pod(spec()).expect("pod redirected by weft-init");
    for program in ["iptables", "ip6tables"] {
        let rules = |pod: &Pod| {
            pod.exec(program, &["-w", "10", "-t", "nat", "-S"])
                .expect("the rules")
        };
        let (cni, init) = (rules(&a_cni), rules(&a_init));
        assert!(cni.contains("WEFT_PREROUTING"), "{program}:\n{cni}");
        assert_eq!(cni, init, "{program}: one rule set either way");
    }
    // And the proxy of the weft-init pod proves its redirection, as the other one does.
    for pod in [&a_cni, &a_init] {
        support::wait_value(pod, "weft_redirect_verified", 1.0, |m| {
            m.value("weft_redirect_verified", &[])
        });
    }
}
