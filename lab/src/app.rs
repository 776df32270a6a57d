//! The test app that runs in a pod, and its echo client.
//!
//! - HTTP/1.1 on [`HTTP_PORT`]: every request is answered 200 with a `key=value` body naming
//!   the pod, the peer it saw, the `Host` and the path (`pod=b1\npeer=198.18.0.5:40312\n...`),
//!   keep-alive honoured (proxies pool their connections to the app).
//! - A line echo on [`ECHO_PORT`] (client speaks first, so proxies detect it as opaque TCP):
//!   each line is answered `<pod> <line>`.
//!
//! Both record every connection's peer, so a test can tell a direct connection (the client's
//! own address and port) from one the pod's proxy made.
//!
//! A request with [`CALL_HEADER`] makes the app a link of a call chain, as a real service
//! calling the next one: `x-weft-lab-call: 198.19.0.10:80 api /orders; 198.19.0.20:80 db /`
//! has it call the first hop (`GET /orders` with `Host: api`, from inside its pod) with the rest
//! of the chain in the same header and the request's trace context (`traceparent`,
//! `tracestate`, `b3`, `X-B3-*`) passed on, as an instrumented app would; its answer then ends
//! with the next hop's status and body, each line prefixed `> `. At most [`MAX_HOPS`] hops. Listener sockets are created inside
//! the pod's namespace; accept and connection threads use them from anywhere. Stopping shuts
//! every socket down, which wakes the blocked threads, and joins them.

use std::{
    collections::HashMap,
    io::{BufRead, BufReader, Read, Write},
    net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream},
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex,
    },
    thread::{self, JoinHandle},
    time::Duration,
};

use crate::{
    error::{Error, Result},
    http::IO_TIMEOUT,
    netns::Netns,
};

/// The app's HTTP port.
pub const HTTP_PORT: u16 = 8080;
/// The header that makes the app call the next service of a chain (see the module's docs).
pub const CALL_HEADER: &str = "x-weft-lab-call";
/// The longest chain [`CALL_HEADER`] may name.
pub const MAX_HOPS: usize = 8;
/// The trace context headers the app passes on to the next hop.
const TRACE_HEADERS: &[&str] = &[
    "traceparent",
    "tracestate",
    "b3",
    "x-b3-traceid",
    "x-b3-spanid",
    "x-b3-parentspanid",
    "x-b3-sampled",
    "x-b3-flags",
];
/// The app's line echo port.
pub const ECHO_PORT: u16 = 9000;

/// How long an app connection may sit idle before the app closes it.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// The most connections one listener accepts over its life, and requests or lines one
/// connection may carry: bounds, not expectations.
const MAX_CONNECTIONS: usize = 100_000;
const MAX_REQUESTS_PER_CONNECTION: usize = 10_000;
/// The most connections the app remembers.
const MAX_SEEN: usize = 100_000;

/// One connection the app accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    /// The app port it arrived on.
    pub port: u16,
    /// Who the app saw connect.
    pub peer: SocketAddr,
}

/// The app running in one pod; stopped on drop.
#[derive(Debug)]
pub struct App {
    name: String,
    shared: Arc<Shared>,
    listeners: Vec<TcpListener>,
    threads: Vec<JoinHandle<()>>,
}

#[derive(Debug, Default)]
struct Shared {
    /// The namespace calls to a next hop are made from; `None`: this process's own (the
    /// `weft-lab-app` binary, already inside its pod).
    netns: Option<String>,
    stop: AtomicBool,
    next_id: AtomicU64,
    seen: Mutex<Vec<Seen>>,
    requests: AtomicU64,
    /// Open connections, shut down on stop.
    open: Mutex<HashMap<u64, TcpStream>>,
}

impl App {
    /// Starts the HTTP and echo servers inside `ns`, on all addresses.
    pub fn start(ns: &Netns, name: &str) -> Result<App> {
        App::start_with(name, Some(ns.name()), |addr| ns.listen(addr))
    }

    /// Starts the HTTP and echo servers in this process's own network namespace, on all
    /// addresses: what the `weft-lab-app` binary runs in a container.
    pub fn start_here(name: &str) -> Result<App> {
        App::start_with(name, None, |addr| {
            TcpListener::bind(addr).map_err(Error::io(format!("bind {addr}")))
        })
    }

    fn start_with(
        name: &str,
        netns: Option<&str>,
        listen: impl Fn(SocketAddr) -> Result<TcpListener>,
    ) -> Result<App> {
        let shared = Arc::new(Shared {
            netns: netns.map(str::to_string),
            ..Shared::default()
        });
        let mut app = App {
            name: name.into(),
            shared,
            listeners: Vec::new(),
            threads: Vec::new(),
        };
        for (port, kind) in [(HTTP_PORT, Kind::Http), (ECHO_PORT, Kind::Echo)] {
            let listener = listen(SocketAddr::from((Ipv4Addr::UNSPECIFIED, port)))?;
            let handle = listener
                .try_clone()
                .map_err(Error::io("clone the app listener"))?;
            let (shared, name) = (app.shared.clone(), app.name.clone());
            app.listeners.push(handle);
            app.threads.push(
                thread::Builder::new()
                    .name(format!("app-{name}-{port}"))
                    .spawn(move || accept_loop(&listener, port, kind, &name, &shared))
                    .map_err(Error::io("start an app thread"))?,
            );
        }
        Ok(app)
    }

    /// Every connection accepted so far, in order.
    pub fn seen(&self) -> Vec<Seen> {
        lock(&self.shared.seen).clone()
    }

    /// HTTP requests answered so far.
    pub fn requests(&self) -> u64 {
        self.shared.requests.load(Ordering::SeqCst)
    }

    /// Stops accepting, closes every connection, joins the threads.
    pub fn stop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        for listener in self.listeners.drain(..) {
            // Shutting a listening socket down wakes a blocked accept (Linux: EINVAL).
            let _ = socket2::SockRef::from(&listener).shutdown(Shutdown::Both);
        }
        for conn in lock(&self.shared.open).values() {
            let _ = conn.shutdown(Shutdown::Both);
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for App {
    fn drop(&mut self) {
        self.stop();
    }
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    Http,
    Echo,
}

fn accept_loop(listener: &TcpListener, port: u16, kind: Kind, name: &str, shared: &Arc<Shared>) {
    let mut conns: Vec<JoinHandle<()>> = Vec::new();
    for _ in 0..MAX_CONNECTIONS {
        let accepted = listener.accept();
        if shared.stop.load(Ordering::SeqCst) {
            break;
        }
        let Ok((conn, peer)) = accepted else {
            // A transient accept error (a reset before accept): keep serving. The pause is not a
            // wait for anything, only a bound on how fast a persistent error can spin this loop.
            thread::sleep(Duration::from_millis(10));
            continue;
        };
        {
            let mut seen = lock(&shared.seen);
            if seen.len() < MAX_SEEN {
                seen.push(Seen { port, peer });
            }
        }
        let id = shared.next_id.fetch_add(1, Ordering::SeqCst);
        let Ok(registered) = conn.try_clone() else {
            continue;
        };
        lock(&shared.open).insert(id, registered);
        let (shared, name) = (shared.clone(), name.to_string());
        conns.retain(|t| !t.is_finished());
        let spawned = thread::Builder::new().spawn(move || {
            let _ = conn.set_read_timeout(Some(IDLE_TIMEOUT));
            let _ = conn.set_write_timeout(Some(IO_TIMEOUT));
            let _ = match kind {
                Kind::Http => serve_http(conn, peer, &name, &shared),
                Kind::Echo => serve_echo(conn, &name),
            };
            lock(&shared.open).remove(&id);
        });
        if let Ok(t) = spawned {
            conns.push(t);
        }
    }
    for t in conns {
        let _ = t.join();
    }
}

/// Serves HTTP/1.1 requests (no request bodies beyond Content-Length) until the client closes,
/// asks to close, or stops.
fn serve_http(
    conn: TcpStream,
    peer: SocketAddr,
    name: &str,
    shared: &Shared,
) -> std::io::Result<()> {
    let mut writer = conn.try_clone()?;
    let mut reader = BufReader::new(conn);
    for _ in 0..MAX_REQUESTS_PER_CONNECTION {
        let mut request_line = String::new();
        if reader.by_ref().take(8192).read_line(&mut request_line)? == 0 {
            return Ok(());
        }
        let mut host = String::new();
        let mut length = 0usize;
        let mut close = false;
        let mut call = None;
        let mut trace = Vec::new();
        for _ in 0..200 {
            let mut line = String::new();
            if reader.by_ref().take(8192).read_line(&mut line)? == 0 {
                return Ok(());
            }
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            let Some((k, v)) = line.split_once(':') else {
                continue;
            };
            let v = v.trim();
            match k.trim().to_ascii_lowercase().as_str() {
                "host" => host = v.into(),
                "content-length" => length = v.parse().unwrap_or(0).min(1 << 20),
                "connection" => close = v.eq_ignore_ascii_case("close"),
                CALL_HEADER => call = Some(v.to_string()),
                k if TRACE_HEADERS.contains(&k) && trace.len() < TRACE_HEADERS.len() => {
                    trace.push((k.to_string(), v.to_string()));
                }
                _ => {}
            }
        }
        std::io::copy(
            &mut reader.by_ref().take(length as u64),
            &mut std::io::sink(),
        )?;
        let path = request_line.split_whitespace().nth(1).unwrap_or("");
        let mut body = format!("pod={name}\npeer={peer}\nhost={host}\npath={path}\n");
        if let Some(chain) = call {
            body.push_str(&call_next(shared, &chain, &trace));
        }
        // One write per response: no partial responses on the wire.
        let response = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nX-Weft-Lab-Pod: {name}\r\n{}\r\n{body}",
            body.len(),
            if close { "Connection: close\r\n" } else { "" },
        );
        writer.write_all(response.as_bytes())?;
        shared.requests.fetch_add(1, Ordering::SeqCst);
        if close {
            return Ok(());
        }
    }
    Ok(())
}

/// Calls the first hop of `chain` with the rest of it and the `trace` headers; what it answered
/// (or why it could not be called), for the caller's body.
fn call_next(shared: &Shared, chain: &str, trace: &[(String, String)]) -> String {
    let result = (|| -> Result<String> {
        let hops: Vec<&str> = chain.split(';').map(str::trim).collect();
        if hops.len() > MAX_HOPS {
            return Err(Error::Invalid {
                what: CALL_HEADER,
                value: chain.into(),
                reason: "names more hops than MAX_HOPS",
            });
        }
        let mut parts = hops[0].split_whitespace();
        let (Some(addr), Some(host), Some(path), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(Error::Invalid {
                what: CALL_HEADER,
                value: hops[0].into(),
                reason: "a hop is `ip:port host path`",
            });
        };
        let dst: SocketAddr = addr.parse().map_err(|_| Error::Invalid {
            what: CALL_HEADER,
            value: addr.into(),
            reason: "not an ip:port",
        })?;
        let rest = hops[1..].join("; ");
        let mut headers: Vec<(&str, &str)> = trace
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        if !rest.is_empty() {
            headers.push((CALL_HEADER, &rest));
        }
        let mut conn = match &shared.netns {
            Some(ns) => Netns::attach(ns)?.connect(dst, IO_TIMEOUT)?,
            None => {
                let c = TcpStream::connect_timeout(&dst, IO_TIMEOUT)
                    .map_err(Error::io(format!("connect to {dst}")))?;
                let _ = c.set_read_timeout(Some(IO_TIMEOUT));
                c
            }
        };
        let reply = crate::http::request_with(&mut conn, dst, host, path, &headers)?;
        let mut out = format!("> status={}\n", reply.status);
        for line in reply.body.lines() {
            out.push_str("> ");
            out.push_str(line);
            out.push('\n');
        }
        Ok(out)
    })();
    result.unwrap_or_else(|e| format!("> error={e}\n"))
}

/// Answers each line with `<pod> <line>` until EOF.
fn serve_echo(conn: TcpStream, name: &str) -> std::io::Result<()> {
    let mut writer = conn.try_clone()?;
    let mut reader = BufReader::new(conn);
    for _ in 0..MAX_REQUESTS_PER_CONNECTION {
        let mut line = String::new();
        if reader.by_ref().take(64 * 1024).read_line(&mut line)? == 0 {
            break;
        }
        writer.write_all(format!("{name} {}\n", line.trim_end()).as_bytes())?;
    }
    writer.shutdown(Shutdown::Write)
}

/// What the echo client got.
#[derive(Debug, Clone)]
pub struct EchoReply {
    /// One answer per line sent.
    pub lines: Vec<String>,
    /// The client socket's own address.
    pub local: SocketAddr,
}

/// Sends `lines` to an echo server at `dst` from inside `ns`, reads one answer per line, then
/// half-closes and reads to EOF.
pub fn echo(ns: &Netns, dst: SocketAddr, lines: &[&str]) -> Result<EchoReply> {
    let what = || format!("echo to {dst} from {}", ns.name());
    let conn = ns.connect(dst, IO_TIMEOUT)?;
    let local = conn.local_addr().map_err(Error::io(what()))?;
    let mut writer = conn.try_clone().map_err(Error::io(what()))?;
    let mut reader = BufReader::new(conn);
    let mut got = Vec::with_capacity(lines.len());
    for line in lines {
        writer
            .write_all(format!("{line}\n").as_bytes())
            .map_err(Error::io(what()))?;
        let mut answer = String::new();
        reader
            .by_ref()
            .take(64 * 1024)
            .read_line(&mut answer)
            .map_err(Error::io(what()))?;
        if answer.is_empty() {
            return Err(Error::Protocol {
                what: what(),
                answer: format!("EOF after {} of {} lines", got.len(), lines.len()),
            });
        }
        got.push(answer.trim_end().to_string());
    }
    writer
        .shutdown(Shutdown::Write)
        .map_err(Error::io(what()))?;
    let mut rest = String::new();
    reader
        .take(64 * 1024)
        .read_to_string(&mut rest)
        .map_err(Error::io(what()))?;
    if !rest.is_empty() {
        return Err(Error::Protocol {
            what: what(),
            answer: rest,
        });
    }
    Ok(EchoReply { lines: got, local })
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
