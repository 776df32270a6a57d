//! A TCP forwarder from this machine's loopback into a lab namespace: how `weftctl demo` lets
//! a browser reach Prometheus and Jaeger, which listen inside the node namespace. It listens on
//! a loopback address of the machine's own namespace and, for each connection accepted, opens
//! one from inside the namespace ([`Netns::connect`]) to the target and copies bytes both ways.
//! Nothing leaves the machine: the listener is loopback only (anything else is refused) and the
//! far side is an address of the namespace.
//!
//! At most [`MAX_CONNECTIONS`] at once (more are closed on accept); dropping the forwarder stops
//! accepting and shuts every open connection down.

use std::{
    collections::HashMap,
    io,
    net::{Shutdown, SocketAddr, TcpListener, TcpStream},
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex,
    },
    thread,
    time::Duration,
};

use crate::{
    error::{Error, Result},
    netns::Netns,
};

/// Connections forwarded at once, at most.
pub const MAX_CONNECTIONS: usize = 64;
/// How long the connect inside the namespace may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How often the accept loop looks at its stop flag.
const ACCEPT_POLL: Duration = Duration::from_millis(100);

/// A running forwarder; stopped on drop.
#[derive(Debug)]
pub struct Forwarder {
    local: SocketAddr,
    target: SocketAddr,
    stop: Arc<AtomicBool>,
    accept: Option<thread::JoinHandle<()>>,
    open: Open,
}

/// The open connections' sockets (both ends), to shut down on stop.
type Open = Arc<Mutex<HashMap<u64, (TcpStream, TcpStream)>>>;

impl Forwarder {
    /// Listens on `listen` (a loopback address; if its port is taken, an ephemeral port of the
    /// same address) and forwards each connection to `target`, connecting from inside `netns`.
    pub fn start(netns: &Netns, listen: SocketAddr, target: SocketAddr) -> Result<Forwarder> {
        check_listen(listen)?;
        let listener = TcpListener::bind(listen)
            .or_else(|_| TcpListener::bind(SocketAddr::new(listen.ip(), 0)))
            .map_err(Error::io(format!(
                "listen on {listen} (or another port of it)"
            )))?;
        let local = listener
            .local_addr()
            .map_err(Error::io("the forwarder's address"))?;
        listener
            .set_nonblocking(true)
            .map_err(Error::io("make the forwarder's listener non-blocking"))?;
        let ns = Netns::attach(netns.name())?;
        let stop = Arc::new(AtomicBool::new(false));
        let open: Open = Arc::default();
        let accept = {
            let (stop, open) = (stop.clone(), open.clone());
            thread::Builder::new()
                .name(format!("forward {local}"))
                .spawn(move || accept_loop(&listener, &ns, target, &stop, &open))
                .map_err(Error::io("start the forwarder"))?
        };
        Ok(Forwarder {
            local,
            target,
            stop,
            accept: Some(accept),
            open,
        })
    }

    /// Where it listens (the port asked for, or the ephemeral one it fell back to).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Where it forwards to, inside the namespace.
    pub fn target(&self) -> SocketAddr {
        self.target
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(accept) = self.accept.take() {
            let _ = accept.join();
        }
        let open = self.open.lock().map(|mut o| std::mem::take(&mut *o));
        for (client, upstream) in open.unwrap_or_default().into_values() {
            let _ = client.shutdown(Shutdown::Both);
            let _ = upstream.shutdown(Shutdown::Both);
        }
    }
}

/// Only a loopback address: the forwarder serves this machine, never its network.
fn check_listen(listen: SocketAddr) -> Result<()> {
    if listen.ip().is_loopback() {
        return Ok(());
    }
    Err(Error::Invalid {
        what: "forwarder address",
        value: listen.to_string(),
        reason: "must be a loopback address: the forwarder serves this machine only",
    })
}

/// Accepts until `stop`, each connection forwarded on threads of its own.
fn accept_loop(
    listener: &TcpListener,
    ns: &Netns,
    target: SocketAddr,
    stop: &AtomicBool,
    open: &Open,
) {
    let ids = AtomicU64::new(0);
    while !stop.load(Ordering::Relaxed) {
        let client = match listener.accept() {
            Ok((client, _)) => client,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                thread::sleep(ACCEPT_POLL);
                continue;
            }
            Err(_) => {
                thread::sleep(ACCEPT_POLL);
                continue;
            }
        };
        let full = open.lock().map_or(true, |o| o.len() >= MAX_CONNECTIONS);
        if full || client.set_nonblocking(false).is_err() {
            continue; // dropped: closed
        }
        let Ok(upstream) = ns.connect(target, CONNECT_TIMEOUT) else {
            continue;
        };
        // Idle connections (a browser's keep-alive) may wait as long as they like.
        if upstream.set_read_timeout(None).is_err() || upstream.set_write_timeout(None).is_err() {
            continue;
        }
        let id = ids.fetch_add(1, Ordering::Relaxed);
        let clones = (client.try_clone(), upstream.try_clone());
        let (Ok(c2), Ok(u2)) = clones else {
            continue;
        };
        if let Ok(mut o) = open.lock() {
            o.insert(id, (c2, u2));
        }
        let open = open.clone();
        let _ = thread::Builder::new()
            .name(format!("forward #{id}"))
            .spawn(move || {
                pipe(client, upstream);
                if let Ok(mut o) = open.lock() {
                    o.remove(&id);
                }
            });
    }
}

/// Copies both ways until both sides have finished (or one fails).
fn pipe(client: TcpStream, upstream: TcpStream) {
    let (Ok(mut c_read), Ok(mut u_read)) = (client.try_clone(), upstream.try_clone()) else {
        return;
    };
    let (mut c_write, mut u_write) = (client, upstream);
    let up = thread::spawn(move || {
        let _ = io::copy(&mut c_read, &mut u_write);
        let _ = u_write.shutdown(Shutdown::Write);
    });
    let _ = io::copy(&mut u_read, &mut c_write);
    let _ = c_write.shutdown(Shutdown::Write);
    let _ = up.join();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_is_served() {
        for ok in ["127.0.0.1:9090", "[::1]:9090", "127.0.0.2:0"] {
            assert!(check_listen(ok.parse().expect("addr")).is_ok(), "{ok}");
        }
        for bad in ["198.18.0.1:9090", "0.0.0.0:9090", "[::]:9090"] {
            let e = check_listen(bad.parse().expect("addr")).expect_err(bad);
            assert!(e.to_string().contains("loopback"), "{e}");
        }
    }
}
