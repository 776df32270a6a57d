//! The transparent outbound path for real: an iptables `REDIRECT` in a private network namespace,
//! `SO_ORIGINAL_DST` (IPv4 and IPv6), and the proxy running as UID 2121 so that its own upstream
//! connections escape the redirect.
//!
//! Each test builds a "pod": a fresh network namespace with loopback up, one interface carrying
//! the test-range addresses 198.18.0.10/32 (RFC 2544) and 2001:2::10/128 (RFC 5180), the NAT rules
//! a mesh init container installs, and the real `weft-proxy` binary started inside it as UID 2121.
//! Servers and clients are blocking std sockets created inside the namespace (a socket belongs to
//! the namespace it was created in, whichever thread uses it afterwards).
//!
//! What the tests prove:
//! - an HTTP/1 request to 198.18.0.10:8080 is redirected to the proxy, which sends it on to its
//!   original destination with the `Host` header untouched, and counts the request and the
//!   connection;
//! - an opaque TCP conversation with [2001:2::10]:8080 is redirected (ip6tables) and forwarded
//!   byte for byte, half-close included;
//! - a connection made straight to the outbound port (not redirected) is refused: never forwarded,
//!   never looped back into the proxy, and the proxy stays ready;
//! - the redirect self-check (on in every pod here, as in real ones): `/ready` is 200 only once the
//!   check rule is proved for IPv4 and IPv6; flushing either family's `WEFT_OUTPUT` chain turns
//!   `weft_redirect_verified` to 0 and `/ready` to 503 with the reason, logged once, and restoring
//!   the rules recovers; a check rule aimed at the inbound port is a wrong answer, not a loop.
//!
//! Safety rules:
//! - Everything happens inside the private namespace. It has no route out, and the only
//!   non-loopback addresses used are the two test-range ones above, which exist only inside it.
//!   Nothing is sent from the machine's own namespace.
//! - The interface is a veth pair with both ends inside the namespace, not a `dummy` interface:
//!   some kernels (this project's dev machine among them) are built without `CONFIG_DUMMY`.
//! - Fixed ports (15140, 15143, 15190, 8080) are fine because each namespace is private; names are
//!   unique per process and test, so tests run in parallel with no shared state.
//! - Guards clean up on success, failure and panic: the proxy child (by its PID) is killed and
//!   reaped, then the namespace is deleted, which takes its interfaces and rules with it. On a
//!   failure the proxy's log is printed.
//!
//! Needs root and `ip`, `iptables`, `ip6tables` and `setpriv`. Without them each test prints a
//! line starting with `SKIPPED:` and passes, unless `WEFT_REQUIRE_NETNS_TESTS=1` (set it in CI),
//! which turns the skip into a failure.

use std::{
    fs::File,
    io::{self, BufRead, BufReader, Read, Write},
    net::{Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpListener, TcpStream},
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    thread,
    time::{Duration, Instant},
};

use nix::sched::{setns, CloneFlags};
use serde_json::Value;
use weft_testkit::Metrics;

/// The proxy's UID; the NAT rules return its traffic unredirected (but for the check rule).
const PROXY_UID: u32 = 2121;
const OUTBOUND_PORT: u16 = 15140;
const INBOUND_PORT: u16 = 15143;
const ADMIN_PORT: u16 = 15190;
/// The redirect check port: nothing listens on it; the check rule sends the proxy's own
/// connections to loopback on it to the outbound port.
const CHECK_PORT: u16 = 15141;
/// The nat chain of the mesh's rules, jumped to from `OUTPUT`, as `weft-init` names it.
const CHAIN: &str = "WEFT_OUTPUT";
/// How often the proxies here check the redirection.
const CHECK_INTERVAL: &str = "1s";

/// The app-facing addresses, inside the namespace only.
const APP_V4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 10);
const APP_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, 0x10);
/// The port whose traffic to the app addresses is redirected.
const APP_PORT: u16 = 8080;

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
    let app = SocketAddr::from((APP_V4, APP_PORT));
    let server = pod.ns.listen(app);
    let before = pod.metrics();
    let server = thread::spawn(move || serve_one_http_request(&server));

    let mut client = pod.ns.connect(app).expect("connect to the app address");
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
        is_local(seen.peer),
        "the server saw {}, not a namespace-local address",
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
    let app = SocketAddr::from((APP_V6, APP_PORT));
    let server = pod.ns.listen(app);
    let before = pod.metrics();
    let server = thread::spawn(move || serve_one_line_echo(&server));

    let client = pod.ns.connect(app).expect("connect to the app address");
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
        is_local(seen.peer),
        "the server saw {}, not a namespace-local address",
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
    // A server on the redirected address: it must never hear of these connections.
    let server = pod.ns.listen(SocketAddr::from((APP_V4, APP_PORT)));
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
        let mut client = pod.ns.connect(addr).expect("connect to the outbound port");
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

    for (family, iptables, check) in [
        ("ipv4", "iptables", format!("127.0.0.1:{CHECK_PORT}")),
        ("ipv6", "ip6tables", format!("[::1]:{CHECK_PORT}")),
    ] {
        // Something flushes the chain: the app's traffic of this family now goes around the proxy.
        let refused = [("family", family), ("result", "refused")];
        let before = pod.metrics().value("weft_redirect_checks_total", &refused);
        pod.ns.flush(iptables);
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

        pod.ns.add_rules(iptables, OUTBOUND_PORT);
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
    pod.ns.flush("iptables");
    pod.ns.add_rules("iptables", INBOUND_PORT);
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

/// A network namespace with the proxy running in it. Fields drop in order: the proxy is killed
/// before its namespace is deleted.
struct Pod {
    proxy: Proxy,
    ns: Netns,
}

impl Pod {
    /// Builds the pod and waits for the proxy to be ready; `None` when the test must be skipped.
    fn start(test: &str) -> Option<Pod> {
        if let Some(reason) = missing_prerequisite() {
            let required = std::env::var("WEFT_REQUIRE_NETNS_TESTS").is_ok_and(|v| v == "1");
            assert!(
                !required,
                "{test}: {reason}, and WEFT_REQUIRE_NETNS_TESTS=1"
            );
            // Straight to the process's stderr: the test harness captures `eprintln!` of a
            // passing test, and a skip must be seen.
            let _ = writeln!(io::stderr(), "SKIPPED: {test}: {reason}");
            return None;
        }
        let ns = Netns::create();
        ns.redirect_outbound();
        let proxy = Proxy::start(&ns);
        let mut pod = Pod { proxy, ns };
        pod.wait_ready();
        Some(pod)
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
            .connect(SocketAddr::from((Ipv4Addr::LOCALHOST, ADMIN_PORT)))?;
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

/// A named network namespace, deleted on drop.
struct Netns {
    name: String,
}

impl Netns {
    /// Creates the namespace with its loopback and app interface up.
    fn create() -> Netns {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "weft-t-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        run("ip", &["netns", "add", &name]);
        // From here on, a panic deletes the namespace.
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns.ip(&[
            "link", "add", "weft0", "type", "veth", "peer", "name", "weft1",
        ]);
        ns.ip(&["link", "set", "weft0", "up"]);
        ns.ip(&["link", "set", "weft1", "up"]);
        ns.ip(&["addr", "add", &format!("{APP_V4}/32"), "dev", "weft0"]);
        ns.ip(&[
            "-6",
            "addr",
            "add",
            &format!("{APP_V6}/128"),
            "dev",
            "weft0",
            "nodad",
        ]);
        ns
    }

    /// The outbound rules, in their own chain as `weft-init` installs them: first the check
    /// rule, then the proxy's own traffic passes, then the app's traffic to the app port on the
    /// app addresses goes to the outbound listener.
    fn redirect_outbound(&self) {
        for iptables in ["iptables", "ip6tables"] {
            self.nat(iptables, &["-N", CHAIN]);
            self.nat(iptables, &["-A", "OUTPUT", "-p", "tcp", "-j", CHAIN]);
            self.add_rules(iptables, OUTBOUND_PORT);
        }
    }

    /// Appends the chain's rules for one family, the check rule redirecting to `check_to`.
    fn add_rules(&self, iptables: &str, check_to: u16) {
        let (loopback, app) = match iptables {
            "iptables" => ("127.0.0.1/32", APP_V4.to_string()),
            _ => ("::1/128", APP_V6.to_string()),
        };
        let uid = PROXY_UID.to_string();
        let (check_port, check_to) = (CHECK_PORT.to_string(), check_to.to_string());
        let (to_ports, app_port) = (OUTBOUND_PORT.to_string(), APP_PORT.to_string());
        let rule = |args: &[&str]| {
            let mut all = vec!["-A", CHAIN, "-p", "tcp"];
            all.extend_from_slice(args);
            self.nat(iptables, &all);
        };
        // The contract with the proxy's redirect check: exactly this rule, first.
        rule(&[
            "-d",
            loopback,
            "-m",
            "tcp",
            "--dport",
            &check_port,
            "-m",
            "owner",
            "--uid-owner",
            &uid,
            "-j",
            "REDIRECT",
            "--to-ports",
            &check_to,
        ]);
        rule(&["-m", "owner", "--uid-owner", &uid, "-j", "RETURN"]);
        rule(&[
            "-d",
            &app,
            "--dport",
            &app_port,
            "-j",
            "REDIRECT",
            "--to-ports",
            &to_ports,
        ]);
    }

    /// Empties the chain of one family, as a stray `iptables -t nat -F` would.
    fn flush(&self, iptables: &str) {
        self.nat(iptables, &["-F", CHAIN]);
    }

    /// `ip netns exec NS IPTABLES -w 10 -t nat args`.
    fn nat(&self, iptables: &str, args: &[&str]) {
        let mut all = vec![iptables, "-w", "10", "-t", "nat"];
        all.extend_from_slice(args);
        self.exec(&all);
    }

    /// `ip -n NS args`.
    fn ip(&self, args: &[&str]) {
        let mut all = vec!["-n", &self.name];
        all.extend_from_slice(args);
        run("ip", &all);
    }

    /// `ip netns exec NS args`.
    fn exec(&self, args: &[&str]) {
        let mut all = vec!["netns", "exec", &self.name];
        all.extend_from_slice(args);
        run("ip", &all);
    }

    /// Runs `f` on a thread that has entered the namespace; sockets it creates stay in it.
    fn enter<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let path = PathBuf::from("/run/netns").join(&self.name);
        let netns = File::open(&path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
        thread::scope(|s| {
            s.spawn(move || {
                setns(&netns, CloneFlags::CLONE_NEWNET).expect("setns into the test namespace");
                f()
            })
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }

    /// A listener inside the namespace.
    fn listen(&self, addr: SocketAddr) -> TcpListener {
        self.enter(|| TcpListener::bind(addr))
            .unwrap_or_else(|e| panic!("bind {addr} in {}: {e}", self.name))
    }

    /// A connection made from inside the namespace, with [`IO_TIMEOUT`] on every operation.
    fn connect(&self, addr: SocketAddr) -> io::Result<TcpStream> {
        let stream = self.enter(|| TcpStream::connect_timeout(&addr, IO_TIMEOUT))?;
        stream.set_read_timeout(Some(IO_TIMEOUT))?;
        stream.set_write_timeout(Some(IO_TIMEOUT))?;
        Ok(stream)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Deleting the namespace takes its interfaces and NAT rules with it.
        match Command::new("ip")
            .args(["netns", "del", &self.name])
            .output()
        {
            Ok(out) if out.status.success() => {}
            other => eprintln!("cleanup: ip netns del {} failed: {other:?}", self.name),
        }
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
        let log = std::env::temp_dir().join(format!("{}.proxy.log", ns.name));
        let out = File::create(&log)
            .unwrap_or_else(|e| panic!("create the proxy log {}: {e}", log.display()));
        let err = out.try_clone().expect("clone the proxy log handle");
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &ns.name, "setpriv"])
            .arg(format!("--reuid={PROXY_UID}"))
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

/// Whether the server saw a connection from an address of the namespace itself.
fn is_local(peer: SocketAddr) -> bool {
    let ip = peer.ip().to_canonical();
    ip.is_loopback() || ip == APP_V4 || ip == APP_V6
}

/// The most polling steps that fit in `patience`, plus one.
fn tries(patience: Duration) -> u128 {
    patience.as_millis() / POLL_STEP.as_millis() + 1
}

/// Why these tests cannot run here, if they cannot.
fn missing_prerequisite() -> Option<String> {
    if !nix::unistd::Uid::effective().is_root() {
        return Some("needs root for network namespaces and iptables".into());
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    let missing: Vec<&str> = ["ip", "iptables", "ip6tables", "setpriv"]
        .into_iter()
        .filter(|tool| !std::env::split_paths(&path).any(|dir| dir.join(tool).is_file()))
        .collect();
    (!missing.is_empty()).then(|| format!("{} not found on PATH", missing.join(", ")))
}

/// Runs a setup command; fails with its output if it fails.
fn run(program: &str, args: &[&str]) {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run {program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {} failed ({}): {}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
}
