//! `weft-proxy await-ready`: waits until the proxy of this pod answers `/ready` with 200, for a
//! classic sidecar's `postStart` hook. The kubelet starts a pod's containers in order and does
//! not start the next one until the previous one's `postStart` returns, so the app starts only
//! once its proxy holds a certificate and its redirect is checked, as native sidecars get from
//! their startup probe. Plain blocking I/O on loopback, bounded in time; no runtime.

use std::{
    io::{Read as _, Write as _},
    net::{Ipv4Addr, SocketAddr, TcpStream},
    thread,
    time::{Duration, Instant},
};

/// How long one attempt may take.
const ATTEMPT: Duration = Duration::from_secs(1);
/// The pause between attempts.
const PAUSE: Duration = Duration::from_millis(200);
/// The most of a response read: the status line is all that is looked at.
const MAX_RESPONSE: usize = 512;

/// Polls `GET /ready` on loopback `port` until it answers 200 or `timeout` passes; the error
/// says what the last attempt got.
pub fn await_ready(port: u16, timeout: Duration) -> Result<Duration, String> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let start = Instant::now();
    loop {
        let last = match ready_once(addr) {
            Ok(()) => return Ok(start.elapsed()),
            Err(e) => e,
        };
        if start.elapsed() + PAUSE >= timeout {
            return Err(format!(
                "the proxy was not ready on {addr} within {timeout:?}; last: {last}"
            ));
        }
        thread::sleep(PAUSE);
    }
}

fn ready_once(addr: SocketAddr) -> Result<(), String> {
    let mut stream = TcpStream::connect_timeout(&addr, ATTEMPT).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(ATTEMPT))
        .map_err(|e| e.to_string())?;
    stream
        .set_write_timeout(Some(ATTEMPT))
        .map_err(|e| e.to_string())?;
    stream
        .write_all(b"GET /ready HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .map_err(|e| e.to_string())?;
    let mut buf = [0u8; MAX_RESPONSE];
    let mut n = 0;
    // Up to the end of the status line.
    while n < buf.len() && !buf[..n].contains(&b'\n') {
        match stream.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) => return Err(e.to_string()),
        }
    }
    let head = String::from_utf8_lossy(&buf[..n]);
    let status = head.lines().next().unwrap_or_default();
    let code = status.split_whitespace().nth(1);
    if status.starts_with("HTTP/1.") && code == Some("200") {
        Ok(())
    } else {
        Err(format!("answered {status:?}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    /// A server on a free loopback port answering every request with `status`, in a thread.
    fn answering(status: &'static str, times: usize) -> u16 {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
        let port = listener.local_addr().expect("addr").port();
        thread::spawn(move || {
            for conn in listener.incoming().take(times) {
                let Ok(mut conn) = conn else { continue };
                let mut buf = [0u8; 1024];
                let _ = conn.read(&mut buf);
                let _ = write!(conn, "HTTP/1.1 {status}\r\nContent-Length: 0\r\n\r\n");
            }
        });
        port
    }

    #[test]
    fn a_ready_proxy_ends_the_wait() {
        let port = answering("200 OK", 1);
        assert!(await_ready(port, Duration::from_secs(5)).is_ok());
    }

    #[test]
    fn a_proxy_that_stays_unready_times_out_saying_what_it_answered() {
        let port = answering("503 Service Unavailable", 100);
        let err = await_ready(port, Duration::from_millis(700)).expect_err("never ready");
        assert!(err.contains("503"), "{err}");
    }

    #[test]
    fn nothing_listening_times_out() {
        // A port that was free a moment ago: connections are refused.
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let started = Instant::now();
        assert!(await_ready(port, Duration::from_millis(500)).is_err());
        assert!(started.elapsed() < Duration::from_secs(3));
    }
}
