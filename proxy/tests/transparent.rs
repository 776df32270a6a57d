//! The transparent outbound path for real: an iptables `REDIRECT` in a private network namespace,
//! `SO_ORIGINAL_DST` (IPv4 and IPv6), and the proxy running as UID 2121 so that its own upstream
//! connections escape the redirect.
//!
//! Each test builds a "pod": a fresh network namespace with loopback up and a veth pair to a
//! second fresh namespace, the "peer" (another host), the pod's end carrying 198.18.0.10/24
//! (RFC 2544) and 2001:2::10/64 (RFC 5180), the peer's 198.18.0.20 and 2001:2::20; in the pod,
//! the NAT rules `weft-init` and `weft-cni` install, rendered by `weft-cni-core` from the default
//! redirect config and applied as they apply them (`iptables-restore --noflush`), and the real
//! `weft-proxy` binary started inside it as UID 2121. Servers run in the peer, clients in the
//! pod; both are blocking std sockets created inside their namespace (a socket belongs to the
//! namespace it was created in, whichever thread uses it afterwards). The namespaces come from
//! `weft_lab::netns`, the repository's one network-namespace helper.
//!
//! What the tests prove:
//! - an HTTP/1 request to the peer's 198.18.0.20:8080 is redirected to the proxy, which sends it
//!   on to its original destination with the `Host` header untouched, and counts the request and
//!   the connection;
//! - an opaque TCP conversation with the peer's [2001:2::20]:8080 is redirected (ip6tables) and
//!   forwarded byte for byte, half-close included;
//! - a connection made straight to the outbound port (not redirected) is refused: never forwarded,
//!   never looped back into the proxy, and the proxy stays ready;
//! - the redirect self-check (on in every pod here, as in real ones): `/ready` is 200 only once the
//!   check rule is proved for IPv4 and IPv6; flushing either family's `WEFT_OUTPUT` chain turns
//!   `weft_redirect_verified` to 0 and `/ready` to 503 with the reason, logged once, and restoring
//!   the rules recovers; a check rule aimed at the inbound port is a wrong answer, not a loop.
//!
//! The server is in a namespace of its own because the rule set, like a real pod's, lets loopback
//! traffic pass (`-o lo -j RETURN`), and a connection to one of the pod's own addresses leaves
//! through `lo`: only traffic to another host is redirected.
//!
//! Safety rules:
//! - Everything happens inside the two private namespaces, linked only to each other. They have
//!   no route out, and the only non-loopback addresses used are the four test-range ones above,
//!   which exist only inside them. Nothing is sent from the machine's own namespace.
//! - The link is a veth pair, not a `dummy` interface: some kernels (this project's dev machine
//!   among them) are built without `CONFIG_DUMMY`.
//! - Fixed ports (15140, 15143, 15190, 8080) are fine because each namespace is private; names are
//!   unique per process and test, so tests run in parallel with no shared state.
//! - Guards clean up on success, failure and panic: the proxy child (by its PID) is killed and
//!   reaped, then the namespaces are deleted, which takes their interfaces and rules with them.
//!   On a failure the proxy's log is printed.
//!
//! Needs root and `ip`, `iptables`, `ip6tables` (with their `-save` and `-restore`) and
//! `setpriv`. Without them each test prints a line starting with `SKIPPED:` and passes, unless
//! `WEFT_REQUIRE_NETNS_TESTS=1` (set it in CI), which turns the skip into a failure.

use std::{
    fs::File,
    io::{self, BufRead, BufReader, Read, Write},
    net::{Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpListener, TcpStream},
    path::PathBuf,
    process::{Child, Stdio},
    thread,
    time::{Duration, Instant},
};

use serde_json::Value;
use weft_cni_core::{
    plan::{self, NatTable},
    redirect::{Redirect, OUTPUT_CHAIN},
    Family,
};
use weft_lab::{netns, netns::Netns, prereq};
use weft_testkit::Metrics;

// Every pod here gets the default redirect config (`Redirect::default()`, on the pod contract's
// ports and UID, `weft_pod::ids`), as the mesh installs
// it; the proxy runs as its UID and listens on its ports.
const PROXY_UID: u32 = weft_pod::ids::PROXY_UID;
const OUTBOUND_PORT: u16 = weft_pod::ids::OUTBOUND_PORT;
const INBOUND_PORT: u16 = weft_pod::ids::INBOUND_PORT;
const ADMIN_PORT: u16 = weft_pod::ids::ADMIN_PORT;
/// The redirect check port: nothing listens on it; the check rule sends the proxy's own
/// connections to loopback on it to the outbound port. The proxy is left on its own default
/// for it, so the test also proves that the proxy's default and the rule set's agree.
const CHECK_PORT: u16 = weft_pod::ids::REDIRECT_CHECK_PORT;
/// How often the proxies here check the redirection.
const CHECK_INTERVAL: &str = "1s";

/// The pod's addresses, on its end of the veth pair.
const POD_V4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 10);
const POD_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, 0x10);
/// The peer's addresses, where the servers listen.
const PEER_V4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 20);
const PEER_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, 0x20);
/// The servers' port.
const APP_PORT: u16 = 8080;
/// What the pod needs from the machine.
const TOOLS: [&str; 8] = [
    "ip",
    "iptables",
    "ip6tables",
    "iptables-save",
    "ip6tables-save",
    "iptables-restore",
    "ip6tables-restore",
    "setpriv",
];

/// Read, write and connect timeout of every test socket.
const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the proxy may take to answer `/ready`, and a metric or log line to appear.
const PATIENCE: Duration = Duration::from_secs(10);
/// The step of every polling loop.
const POLL_STEP: Duration = Duration::from_millis(20);

#[test]
fn ipv4_http1_request_is_redirected_through_the_proxy() {
    let Some(pod) = Pod::start("ipv4_http1_request_is_redirected_through_the_proxy") else {
        return;
    };
    let app = SocketAddr::from((PEER_V4, APP_PORT));
    let server = pod.peer.listen(app).expect("listen in the peer");
    let before = pod.metrics();
    let server = thread::spawn(move || serve_one_http_request(&server));

    let mut client = pod
        .ns
        .connect(app, IO_TIMEOUT)
        .expect("connect to the peer");
    let client_addr = client.local_addr().expect("client address");
    client
        .write_all(
            b"GET /hello HTTP/1.1\r\nHost: orders.shop.svc:8080\r\n\
              User-Agent: weft-transparent-test\r\nConnection: close\r\n\r\n",
        )
        .expect("send the request");
    let rsp = read_response(&mut client).expect("read the response");
    let seen = server.join().expect("server thread");

    assert_eq!(rsp.status, 200, "response: {rsp:?}");
    assert!(
        seen.head.starts_with("GET /hello HTTP/1.1\r\n"),
        "server got {:?}",
        seen.head
    );
    assert!(
        rsp.body.contains("host=orders.shop.svc:8080\n"),
        "the Host header must reach the server untouched: {rsp:?}"
    );
    assert!(
        rsp.body.contains(&format!("peer={}\n", seen.peer)),
        "the body is the server's own answer: {rsp:?}"
    );
    // The proxy, not the client, opened the server's connection: a direct connection would have
    // the client's own address and port.
    assert!(
        is_pod(seen.peer),
        "the server saw {}, not the pod's address",
        seen.peer
    );
    assert_ne!(
        seen.peer, client_addr,
        "the server saw the client's own socket: the request bypassed the proxy"
    );
    let outbound_200 = [
        ("client_id", ""),
        ("direction", "outbound"),
        ("dst_endpoint", ""),
        ("dst_service", ""),
        ("route", ""),
        ("server_id", ""),
        ("status_code", "200"),
        ("tls", "false"),
    ];
    let outbound = [("direction", "outbound")];
    pod.wait_for_metric(
        "weft_requests_total",
        &outbound_200,
        before.value("weft_requests_total", &outbound_200) + 1.0,
    );
    pod.wait_for_metric(
        "weft_tcp_connections_opened_total",
        &outbound,
        before.value("weft_tcp_connections_opened_total", &outbound) + 1.0,
    );
}

#[test]
fn ipv6_opaque_tcp_is_redirected_through_the_proxy() {
    let Some(pod) = Pod::start("ipv6_opaque_tcp_is_redirected_through_the_proxy") else {
        return;
    };
    let app = SocketAddr::from((PEER_V6, APP_PORT));
    let server = pod.peer.listen(app).expect("listen in the peer");
    let before = pod.metrics();
    let server = thread::spawn(move || serve_one_line_echo(&server));

    let client = pod
        .ns
        .connect(app, IO_TIMEOUT)
        .expect("connect to the peer");
    let client_addr = client.local_addr().expect("client address");
    let mut lines = BufReader::new(client.try_clone().expect("clone the client socket"));
    let mut writer = client;
    let mut echoed = Vec::new();
    // Not HTTP: a word, a space, and a line that does not end in an HTTP version.
    for line in ["HELLO weft over ipv6\n", "BYE\n"] {
        writer.write_all(line.as_bytes()).expect("send a line");
        let mut got = String::new();
        lines.read_line(&mut got).expect("read the echo");
        echoed.push(got);
    }
    // Half-close: the server sees EOF, answers it by closing, and the client sees EOF too.
    writer
        .shutdown(Shutdown::Write)
        .expect("shut down the write half");
    let mut rest = String::new();
    lines.read_to_string(&mut rest).expect("read to EOF");
    let seen = server.join().expect("server thread");

    assert_eq!(echoed, ["echo HELLO weft over ipv6\n", "echo BYE\n"]);
    assert_eq!(rest, "", "nothing after the echoes");
    assert_eq!(seen.lines, ["HELLO weft over ipv6", "BYE"]);
    assert!(
        is_pod(seen.peer),
        "the server saw {}, not the pod's address",
        seen.peer
    );
    assert_ne!(
        seen.peer, client_addr,
        "the server saw the client's own socket: the connection bypassed the proxy"
    );
    let outbound = [("direction", "outbound")];
    pod.wait_for_metric(
        "weft_tcp_connections_opened_total",
        &outbound,
        before.value("weft_tcp_connections_opened_total", &outbound) + 1.0,
    );
    // The proxy's own account: this client, this original destination, forwarded as opaque TCP.
    let client = client_addr.to_string();
    let dst = app.to_string();
    pod.proxy
        .wait_for_event("an opaque forward of the IPv6 connection", |e| {
            e["message"] == "tcp forward done"
                && e["span"]["client"] == client.as_str()
                && e["span"]["dst"] == dst.as_str()
                && e["span"]["protocol"] == "opaque"
        });
}

#[test]
fn direct_connection_to_the_outbound_port_is_refused_without_looping() {
    let Some(mut pod) =
        Pod::start("direct_connection_to_the_outbound_port_is_refused_without_looping")
    else {
        return;
    };
    // A server in the peer: it must never hear of these connections.
    let server = pod
        .peer
        .listen(SocketAddr::from((PEER_V4, APP_PORT)))
        .expect("listen in the peer");
    server
        .set_nonblocking(true)
        .expect("non-blocking server listener");
    let before = pod.metrics();
    let outbound = [("direction", "outbound")];

    let direct = [
        SocketAddr::from((Ipv4Addr::LOCALHOST, OUTBOUND_PORT)),
        SocketAddr::from((Ipv6Addr::LOCALHOST, OUTBOUND_PORT)),
    ];
    let mut clients = Vec::new();
    for addr in direct {
        let mut client = pod
            .ns
            .connect(addr, IO_TIMEOUT)
            .expect("connect to the outbound port");
        clients.push(client.local_addr().expect("client address").to_string());
        // The proxy may close before or after the request arrives: a failed write is fine.
        let _ = client.write_all(b"GET / HTTP/1.1\r\nHost: loop\r\n\r\n");
        assert_closed_without_data(&mut client, addr);
    }

    // Every refused connection is counted closed. A loop would open a new connection (to itself)
    // before the first one closed, so once both have closed exactly two may have opened.
    let opened = before.value("weft_tcp_connections_opened_total", &outbound);
    let closed = before.value("weft_tcp_connections_closed_total", &outbound);
    pod.wait_for_metric("weft_tcp_connections_closed_total", &outbound, closed + 2.0);
    let after = pod.metrics();
    assert_eq!(
        after.value("weft_tcp_connections_opened_total", &outbound),
        opened + 2.0,
        "the proxy opened more connections than the two it was sent: a loop?\n{}",
        after.text
    );
    for client in &clients {
        pod.proxy
            .wait_for_event("the proxy's refusal of a direct connection", |e| {
                e["message"] == "connection refused"
                    && e["span"]["client"] == client.as_str()
                    && e["error"].as_str().is_some_and(|s| s.contains("redirect"))
            });
    }
    match server.accept() {
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
        other => panic!("the app server was reached by a refused connection: {other:?}"),
    }
    pod.proxy.assert_running();
    let ready = pod.admin_get("/ready").expect("GET /ready");
    assert_eq!(
        (ready.status, ready.body.as_str()),
        (200, "ready\n"),
        "{ready:?}"
    );
}

#[test]
fn redirect_check_notices_flushed_rules_and_recovers() {
    let Some(mut pod) = Pod::start("redirect_check_notices_flushed_rules_and_recovers") else {
        return;
    };
    // Ready means proved, for both families.
    let page = pod.metrics();
    assert_eq!(
        page.value("weft_redirect_verified", &[]),
        1.0,
        "{}",
        page.text
    );
    for family in ["ipv4", "ipv6"] {
        let verified = [("family", family), ("result", "verified")];
        assert!(
            page.value("weft_redirect_checks_total", &verified) >= 1.0,
            "{family}\n{}",
            page.text
        );
    }

    for (rule_family, family, iptables, check) in [
        (
            Family::V4,
            "ipv4",
            "iptables",
            format!("127.0.0.1:{CHECK_PORT}"),
        ),
        (
            Family::V6,
            "ipv6",
            "ip6tables",
            format!("[::1]:{CHECK_PORT}"),
        ),
    ] {
        // Something flushes the chain: the app's traffic of this family now goes around the proxy.
        let refused = [("family", family), ("result", "refused")];
        let before = pod.metrics().value("weft_redirect_checks_total", &refused);
        pod.flush(iptables);
        let failed = format!("redirect self-check failed: connecting to {check} was refused, so outbound traffic is not being redirected to this proxy; are the pod's iptables rules in place (weft-init or weft-cni), or did something flush the nat table?");
        pod.wait_until(
            &format!("{family}: weft_redirect_verified 0 and /ready 503"),
            |pod| {
                let ready = pod.admin_get("/ready").ok()?;
                let reason = format!(
                "not ready: traffic redirection not verified: connecting to {check} was refused"
            );
                (pod.metrics().value("weft_redirect_verified", &[]) == 0.0
                    && ready.status == 503
                    && ready.body.starts_with(&reason))
                .then_some(())
            },
        );
        let warning = |e: &Value| {
            e["level"] == "WARN" && e["message"] == failed.as_str() && e["addr"] == check.as_str()
        };
        pod.proxy
            .wait_for_event("the warning naming the cause", warning);
        // It keeps failing, and says so once.
        pod.wait_until(&format!("{family}: three refused checks"), |pod| {
            (pod.metrics().value("weft_redirect_checks_total", &refused) >= before + 3.0)
                .then_some(())
        });
        let warnings = pod.proxy.events().iter().filter(|e| warning(e)).count();
        assert_eq!(warnings, 1, "one warning per transition, not per check");
        if family == "ipv6" {
            let ready = pod.admin_get("/ready").expect("GET /ready");
            assert!(
                !ready.body.contains("127.0.0.1"),
                "IPv4 is still redirected: {ready:?}"
            );
        }

        // Put back as weft-cni and weft-init would: planned from what is installed.
        pod.apply(rule_family, None);
        pod.wait_until(
            &format!("{family}: weft_redirect_verified 1 and /ready 200"),
            |pod| {
                let ready = pod.admin_get("/ready").ok()?;
                (pod.metrics().value("weft_redirect_verified", &[]) == 1.0 && ready.status == 200)
                    .then_some(())
            },
        );
        pod.proxy.wait_for_event("the recovery", |e| {
            e["level"] == "INFO"
                && e["addr"] == check.as_str()
                && e["message"]
                    .as_str()
                    .is_some_and(|m| m.starts_with("redirect self-check passed again"))
        });
    }

    // A check rule aimed at the inbound port: the inbound listener closes the probe instead of
    // forwarding it to 127.0.0.1:15141, which the same rule would send straight back (a loop).
    pod.flush("iptables");
    pod.apply(Family::V4, Some(INBOUND_PORT));
    let wrong = [("family", "ipv4"), ("result", "wrong_answer")];
    pod.wait_until("a wrong answer and /ready 503", |pod| {
        let ready = pod.admin_get("/ready").ok()?;
        (pod.metrics().value("weft_redirect_checks_total", &wrong) >= 2.0
            && ready.status == 503
            && ready
                .body
                .contains("closed the connection without answering"))
        .then_some(())
    });
    let page = pod.metrics();
    assert_eq!(
        page.value(
            "weft_tcp_connections_opened_total",
            &[("direction", "inbound")]
        ),
        0.0,
        "the probes are not app traffic, and nothing looped:\n{}",
        page.text
    );
    pod.proxy.assert_running();
}

/// The pod's network namespace with the proxy running in it, and the peer it talks to. Fields
/// drop in order: the proxy is killed before its namespace is deleted (which takes the veth
/// pair with it), then the peer goes.
struct Pod {
    proxy: Proxy,
    ns: Netns,
    peer: Netns,
}

impl Pod {
    /// Builds the pod and waits for the proxy to be ready; `None` when the test must be skipped.
    fn start(test: &str) -> Option<Pod> {
        if !prereq::run_or_skip(test, prereq::missing_tools(&TOOLS)) {
            return None;
        }
        let prefix = netns::unique_prefix();
        let ns = Netns::create(&format!("{prefix}-pod")).expect("create the pod's namespace");
        let peer = Netns::create(&format!("{prefix}-peer")).expect("create the peer's namespace");
        link(&ns, &peer);
        for family in [Family::V4, Family::V6] {
            install(&ns, family, None);
        }
        let proxy = Proxy::start(&ns);
        let mut pod = Pod { proxy, ns, peer };
        pod.wait_ready();
        Some(pod)
    }

    /// [`install`]s `family`'s rule set in the pod.
    fn apply(&self, family: Family, check_to: Option<u16>) {
        install(&self.ns, family, check_to);
    }

    /// Empties the output chain of one family, as a stray `iptables -t nat -F` would.
    fn flush(&self, iptables: &str) {
        self.ns
            .run(iptables, &["-w", "10", "-t", "nat", "-F", OUTPUT_CHAIN])
            .unwrap_or_else(|e| panic!("{e}"));
    }

    fn wait_ready(&mut self) {
        let start = Instant::now();
        let mut last = None;
        for _ in 0..tries(PATIENCE) {
            self.proxy.assert_running();
            match self.admin_get("/ready") {
                Ok(rsp) if rsp.status == 200 => return,
                other => last = Some(other),
            }
            if start.elapsed() > PATIENCE {
                break;
            }
            thread::sleep(POLL_STEP);
        }
        panic!("the proxy was not ready after {PATIENCE:?}; last /ready: {last:?}");
    }

    /// Waits until `cond` holds (returns `Some`), polling within [`PATIENCE`].
    fn wait_until(&mut self, what: &str, cond: impl Fn(&Pod) -> Option<()>) {
        let start = Instant::now();
        for _ in 0..tries(PATIENCE) {
            self.proxy.assert_running();
            if cond(self).is_some() {
                return;
            }
            if start.elapsed() > PATIENCE {
                break;
            }
            thread::sleep(POLL_STEP);
        }
        let ready = self.admin_get("/ready");
        panic!(
            "not after {PATIENCE:?}: {what}\n/ready: {ready:?}\n{}",
            self.metrics().text
        );
    }

    /// `GET path` on the admin server, from inside the namespace.
    fn admin_get(&self, path: &str) -> io::Result<Response> {
        let mut conn = self
            .ns
            .connect(
                SocketAddr::from((Ipv4Addr::LOCALHOST, ADMIN_PORT)),
                IO_TIMEOUT,
            )
            .map_err(io::Error::other)?;
        write!(
            conn,
            "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
        )?;
        read_response(&mut conn)
    }

    fn metrics(&self) -> Metrics {
        let rsp = self.admin_get("/metrics").expect("GET /metrics");
        assert_eq!(rsp.status, 200, "{rsp:?}");
        Metrics::parse(&rsp.body).unwrap_or_else(|e| panic!("{e}\n{}", rsp.body))
    }

    /// Waits until the sample `name{labels}` reaches `want`, and fails if it goes past it.
    fn wait_for_metric(&self, name: &str, labels: &[(&str, &str)], want: f64) {
        let mut got = Metrics::parse("").expect("an empty page");
        let start = Instant::now();
        for _ in 0..tries(PATIENCE) {
            got = self.metrics();
            let value = got.value(name, labels);
            assert!(
                value <= want,
                "{name}{labels:?} is {value}, past the expected {want}\n{}",
                got.text
            );
            if value == want || start.elapsed() > PATIENCE {
                break;
            }
            thread::sleep(POLL_STEP);
        }
        assert_eq!(
            got.value(name, labels),
            want,
            "{name}{labels:?}\n{}",
            got.text
        );
    }
}

/// Makes the pod's `nat` table hold `family`'s rule set, planned from what is installed
/// (`iptables-save`) and applied in one `iptables-restore --noflush`, as `weft-cni` and
/// `weft-init` do. With `check_to`, the check rule (and only it) redirects there instead of
/// to the outbound port: the one rule a test changes, to aim it at the wrong listener.
fn install(ns: &Netns, family: Family, check_to: Option<u16>) {
    let mut want = Redirect::default()
        .render(family)
        .expect("render the default rule set");
    if let Some(port) = check_to {
        let (_, rules) = want
            .chains
            .iter_mut()
            .find(|(chain, _)| *chain == OUTPUT_CHAIN)
            .expect("the rule set has an output chain");
        let check = &mut rules[0];
        let to_outbound = format!("--to-ports {OUTBOUND_PORT}");
        assert!(
            check.contains(&format!("--dport {CHECK_PORT}")) && check.ends_with(&to_outbound),
            "the first {OUTPUT_CHAIN} rule is not the check rule: {check}"
        );
        *check = format!(
            "{}--to-ports {port}",
            check.strip_suffix(&to_outbound[..]).unwrap_or(check)
        );
    }
    let save = ns
        .run(family.save_command(), &["-t", "nat"])
        .unwrap_or_else(|e| panic!("{e}"));
    let current = NatTable::parse(&save).unwrap_or_else(|e| panic!("{e}:\n{save}"));
    let input = plan::apply(&want, &current);
    let out = ns
        .output(
            family.restore_command(),
            &["--noflush", "-w", "10"],
            input.as_bytes(),
        )
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        out.status.success(),
        "{} failed ({}): {}\ninput:\n{input}",
        family.restore_command(),
        out.status,
        out.stderr
    );
}

/// A veth pair from the pod (its `eth0`, [`POD_V4`] and [`POD_V6`]) to the peer ([`PEER_V4`],
/// [`PEER_V6`]): one link, no route beyond it. Each end knows the other's MAC address from the
/// start (permanent neighbour entries), so nothing waits for ARP or neighbour discovery: right
/// after a link comes up, the first neighbour solicitation is sometimes lost and only retried a
/// second later, past the proxy's 1 s connect timeout.
fn link(pod: &Netns, peer: &Netns) {
    const POD_MAC: &str = "02:00:00:00:00:10";
    const PEER_MAC: &str = "02:00:00:00:00:20";
    let ip = |ns: &Netns, args: &[&str]| {
        ns.ip(args).unwrap_or_else(|e| panic!("{e}"));
    };
    ip(
        pod,
        &[
            "link",
            "add",
            "eth0",
            "address",
            POD_MAC,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "address",
            PEER_MAC,
            "netns",
            peer.name(),
        ],
    );
    let ends = [
        (pod, (POD_V4, POD_V6), (PEER_V4, PEER_V6, PEER_MAC)),
        (peer, (PEER_V4, PEER_V6), (POD_V4, POD_V6, POD_MAC)),
    ];
    for (ns, (v4, v6), (other_v4, other_v6, other_mac)) in ends {
        ip(ns, &["addr", "add", &format!("{v4}/24"), "dev", "eth0"]);
        ip(
            ns,
            &[
                "-6",
                "addr",
                "add",
                &format!("{v6}/64"),
                "dev",
                "eth0",
                "nodad",
            ],
        );
        for other in [other_v4.to_string(), other_v6.to_string()] {
            ip(
                ns,
                &[
                    "neigh",
                    "add",
                    &other,
                    "lladdr",
                    other_mac,
                    "dev",
                    "eth0",
                    "nud",
                    "permanent",
                ],
            );
        }
        ip(ns, &["link", "set", "eth0", "up"]);
    }
}

/// The `weft-proxy` process, killed on drop; its stdout and stderr go to a log file.
struct Proxy {
    child: Child,
    log: PathBuf,
}

impl Proxy {
    /// Starts the proxy inside `ns` as [`PROXY_UID`], transparent in both directions, checking
    /// the redirection every [`CHECK_INTERVAL`].
    fn start(ns: &Netns) -> Proxy {
        let log = std::env::temp_dir().join(format!("{}.proxy.log", ns.name()));
        let out = File::create(&log)
            .unwrap_or_else(|e| panic!("create the proxy log {}: {e}", log.display()));
        let err = out.try_clone().expect("clone the proxy log handle");
        let mut cmd = ns.command("setpriv");
        cmd.arg(format!("--reuid={PROXY_UID}"))
            .arg(format!("--regid={PROXY_UID}"))
            .arg("--clear-groups")
            .arg(env!("CARGO_BIN_EXE_weft-proxy"));
        // Only the settings below: nothing inherited from the developer's shell.
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("WEFT_") {
                cmd.env_remove(key);
            }
        }
        cmd.env("WEFT_OUTBOUND_PORT", OUTBOUND_PORT.to_string())
            .env("WEFT_INBOUND_PORT", INBOUND_PORT.to_string())
            .env("WEFT_ADMIN_PORT", ADMIN_PORT.to_string())
            .env("WEFT_REDIRECT_CHECK", CHECK_INTERVAL)
            .env("WEFT_LOG_FORMAT", "json")
            .env("WEFT_LOG", "info,weft_proxy=debug")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        // `ip netns exec` and `setpriv` exec in place: the child's PID is the proxy's.
        let child = cmd.spawn().expect("start weft-proxy");
        Proxy { child, log }
    }

    /// Fails, with the log, if the proxy has exited.
    fn assert_running(&mut self) {
        if let Some(status) = self.child.try_wait().expect("poll the proxy process") {
            panic!("weft-proxy exited: {status}");
        }
    }

    /// The JSON log lines written so far.
    fn events(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Waits for a log line matching `pred`.
    fn wait_for_event(&self, what: &str, pred: impl Fn(&Value) -> bool) {
        let start = Instant::now();
        for _ in 0..tries(PATIENCE) {
            if self.events().iter().any(&pred) {
                return;
            }
            if start.elapsed() > PATIENCE {
                break;
            }
            thread::sleep(POLL_STEP);
        }
        panic!("no log line for {what} after {PATIENCE:?}");
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        // SIGKILL to the one process this test started, then reap it.
        if let Err(e) = self.child.kill() {
            eprintln!("cleanup: kill weft-proxy ({}): {e}", self.child.id());
        }
        if let Err(e) = self.child.wait() {
            eprintln!("cleanup: wait for weft-proxy ({}): {e}", self.child.id());
        }
        if thread::panicking() {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            eprintln!("--- weft-proxy log ---\n{log}--- end of weft-proxy log ---");
        }
        let _ = std::fs::remove_file(&self.log);
    }
}

/// What the HTTP server got.
#[derive(Debug)]
struct HttpSeen {
    peer: SocketAddr,
    head: String,
}

/// Accepts one connection, reads one request head and answers with the `Host` it got and the
/// peer it saw.
fn serve_one_http_request(listener: &TcpListener) -> HttpSeen {
    let (mut conn, peer) = accept_within(listener, IO_TIMEOUT);
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert!(head.len() < 64 * 1024, "request head too long");
        match conn.read(&mut byte).expect("read the request head") {
            0 => panic!("EOF inside the request head: {head:?}"),
            _ => head.push(byte[0]),
        }
    }
    let head = String::from_utf8(head).expect("UTF-8 request head");
    let host = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("host").then(|| value.trim())
        })
        .unwrap_or("(none)");
    let body = format!("host={host}\npeer={peer}\n");
    write!(
        conn,
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .expect("write the response");
    HttpSeen { peer, head }
}

/// What the line echo server got.
#[derive(Debug)]
struct EchoSeen {
    peer: SocketAddr,
    lines: Vec<String>,
}

/// Accepts one connection and answers each line with `echo <line>` until EOF, then closes.
fn serve_one_line_echo(listener: &TcpListener) -> EchoSeen {
    let (conn, peer) = accept_within(listener, IO_TIMEOUT);
    let mut writer = conn.try_clone().expect("clone the server socket");
    let mut lines = Vec::new();
    for line in BufReader::new(conn).lines().take(100) {
        let line = line.expect("read a line");
        writeln!(writer, "echo {line}").expect("echo the line");
        lines.push(line);
    }
    EchoSeen { peer, lines }
}

/// Accepts one connection within `timeout`, as a blocking socket with [`IO_TIMEOUT`]s.
fn accept_within(listener: &TcpListener, timeout: Duration) -> (TcpStream, SocketAddr) {
    listener
        .set_nonblocking(true)
        .expect("non-blocking listener");
    let start = Instant::now();
    for _ in 0..tries(timeout) {
        match listener.accept() {
            Ok((conn, peer)) => {
                conn.set_nonblocking(false).expect("blocking connection");
                conn.set_read_timeout(Some(IO_TIMEOUT))
                    .expect("read timeout");
                conn.set_write_timeout(Some(IO_TIMEOUT))
                    .expect("write timeout");
                return (conn, peer);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => panic!("accept: {e}"),
        }
        if start.elapsed() > timeout {
            break;
        }
        thread::sleep(POLL_STEP);
    }
    panic!("no connection reached the server within {timeout:?}");
}

/// Reads until the peer closes; the connection must close without sending a byte.
fn assert_closed_without_data(conn: &mut TcpStream, addr: SocketAddr) {
    let mut buf = [0u8; 1024];
    match conn.read(&mut buf) {
        Ok(0) => {}
        Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {}
        Ok(n) => panic!(
            "a direct connection to {addr} got an answer: {:?}",
            String::from_utf8_lossy(&buf[..n])
        ),
        Err(e) => panic!("a direct connection to {addr} was not closed: {e}"),
    }
}

/// An HTTP/1 response read to the end of the connection.
#[derive(Debug)]
struct Response {
    status: u16,
    body: String,
}

/// Reads a whole `Connection: close` response.
fn read_response(conn: &mut TcpStream) -> io::Result<Response> {
    let mut raw = Vec::new();
    conn.take(1024 * 1024).read_to_end(&mut raw)?;
    let raw = String::from_utf8_lossy(&raw);
    let bad = || {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("not a response: {raw:?}"),
        )
    };
    let (head, body) = raw.split_once("\r\n\r\n").ok_or_else(bad)?;
    let status = head
        .strip_prefix("HTTP/1.1 ")
        .and_then(|s| s.get(..3))
        .and_then(|s| s.parse().ok())
        .ok_or_else(bad)?;
    Ok(Response {
        status,
        body: body.to_string(),
    })
}

/// Whether the server saw a connection from the pod.
fn is_pod(peer: SocketAddr) -> bool {
    let ip = peer.ip().to_canonical();
    ip == POD_V4 || ip == POD_V6
}

/// The most polling steps that fit in `patience`, plus one.
fn tries(patience: Duration) -> u128 {
    patience.as_millis() / POLL_STEP.as_millis() + 1
}
