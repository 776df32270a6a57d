//! The demo's forwarder (`weft_lab::forward`): a connection to a loopback port of this machine
//! reaches a server listening inside a namespace (on the namespace's own loopback, which
//! nothing outside it can reach otherwise), both ways, several at once; a taken port falls
//! back to an ephemeral one; dropping the forwarder closes what is open and stops accepting.
//! Root only (a network namespace); `SKIPPED:` otherwise, unless `WEFT_REQUIRE_NETNS_TESTS=1`.

use std::{
    io::{Read, Write},
    net::{Shutdown, SocketAddr, TcpListener, TcpStream},
    thread,
    time::Duration,
};

use weft_lab::{forward::Forwarder, netns::Netns, prereq};

const IO: Duration = Duration::from_secs(5);

fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect_timeout(&addr, IO).expect("connect to the forwarder");
    s.set_read_timeout(Some(IO)).expect("timeout");
    s
}

#[test]
fn loopback_reaches_a_server_inside_a_namespace_until_dropped() {
    let test = "loopback_reaches_a_server_inside_a_namespace_until_dropped";
    if !prereq::run_or_skip(test, prereq::missing_tools(&["ip"])) {
        return;
    }
    let ns = Netns::create(&format!("{}-fwd", weft_lab::netns::unique_prefix())).expect("netns");
    ns.ip(&["link", "set", "lo", "up"]).expect("lo up");
    let server = ns
        .listen("127.0.0.1:0".parse().expect("addr"))
        .expect("listen");
    let target = server.local_addr().expect("addr");
    // An echo server that upper-cases, for three connections.
    let echo = thread::spawn(move || {
        for _ in 0..3 {
            let (mut c, _) = server.accept().expect("accept");
            thread::spawn(move || {
                let mut buf = [0u8; 64];
                loop {
                    match c.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            let up = buf[..n].to_ascii_uppercase();
                            if c.write_all(&up).is_err() {
                                break;
                            }
                        }
                    }
                }
            });
        }
    });
    // A port of this machine's loopback that is taken: the forwarder falls back.
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
    let taken_addr = taken.local_addr().expect("addr");
    let fwd = Forwarder::start(&ns, taken_addr, target).expect("the forwarder starts");
    assert_ne!(fwd.local_addr(), taken_addr, "falls back to another port");
    assert!(fwd.local_addr().ip().is_loopback());
    let mut a = connect(fwd.local_addr());
    let mut b = connect(fwd.local_addr());
    for (conn, word) in [(&mut a, "prometheus"), (&mut b, "jaeger")] {
        conn.write_all(word.as_bytes()).expect("write");
        let mut got = vec![0u8; word.len()];
        conn.read_exact(&mut got).expect("the answer comes back");
        assert_eq!(got, word.to_ascii_uppercase().as_bytes());
    }
    // A half-close reaches the server, whose close comes back.
    b.shutdown(Shutdown::Write).expect("shutdown");
    let mut rest = Vec::new();
    b.read_to_end(&mut rest).expect("EOF comes back");
    assert!(rest.is_empty());
    let mut c = connect(fwd.local_addr());
    c.write_all(b"x").expect("write");
    let mut one = [0u8; 1];
    c.read_exact(&mut one).expect("a third connection");
    let local = fwd.local_addr();
    drop(fwd);
    // Open connections are shut down; the port no longer accepts.
    let mut after = Vec::new();
    assert_eq!(
        a.read_to_end(&mut after).map(|_| ()).ok(),
        Some(()),
        "closed by the drop"
    );
    assert!(
        TcpStream::connect_timeout(&local, IO).is_err(),
        "no longer listening"
    );
    echo.join().expect("the echo server");
}
