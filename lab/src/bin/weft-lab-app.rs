//! `weft-lab-app`: the lab's test app and client as a program, for pods that are real
//! containers (the k8s tier), where the lab cannot run them as threads in its own process.
//!
//! - `weft-lab-app serve NAME`: the app of [`weft_lab::App`] (HTTP on 8080, line echo on 9000)
//!   in this network namespace, answering as pod NAME, until SIGTERM.
//! - `weft-lab-app get HOST:PORT [PATH]`: one `GET` (the host resolved as the system does, so a
//!   Service's DNS name works in a pod), printing the status line and body; exit 0 on a 2xx,
//!   1 otherwise.

use std::{
    net::{TcpStream, ToSocketAddrs},
    process::ExitCode,
};

use nix::sys::signal::{SigSet, Signal};

const USAGE: &str = "usage: weft-lab-app serve NAME | weft-lab-app get HOST:PORT [PATH]";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match args.as_slice() {
        ["serve", name] => serve(name),
        ["get", target] => get(target, "/"),
        ["get", target, path] => get(target, path),
        _ => {
            eprintln!("{USAGE}");
            ExitCode::from(64)
        }
    }
}

fn serve(name: &str) -> ExitCode {
    // Blocked before any thread starts, so every thread inherits the mask and the main thread
    // is the one that takes the signal.
    let mut signals = SigSet::empty();
    signals.add(Signal::SIGINT);
    signals.add(Signal::SIGTERM);
    if let Err(e) = signals.thread_block() {
        eprintln!("weft-lab-app: block signals: {e}");
        return ExitCode::from(1);
    }
    let app = match weft_lab::App::start_here(name) {
        Ok(app) => app,
        Err(e) => {
            eprintln!("weft-lab-app: {e}");
            return ExitCode::from(1);
        }
    };
    println!(
        "weft-lab-app: {name} serving HTTP on :{} and echo on :{}",
        weft_lab::HTTP_PORT,
        weft_lab::ECHO_PORT
    );
    let signal = signals.wait();
    println!("weft-lab-app: {signal:?}: stopping");
    drop(app);
    ExitCode::SUCCESS
}

fn get(target: &str, path: &str) -> ExitCode {
    let host = target.rsplit_once(':').map_or(target, |(host, _)| host);
    let addr = match target.to_socket_addrs().map(|mut a| a.next()) {
        Ok(Some(addr)) => addr,
        Ok(None) => {
            eprintln!("weft-lab-app: {target} resolves to no address");
            return ExitCode::from(1);
        }
        Err(e) => {
            eprintln!("weft-lab-app: resolve {target}: {e}");
            return ExitCode::from(1);
        }
    };
    let reply = TcpStream::connect_timeout(&addr, weft_lab::http::IO_TIMEOUT)
        .map_err(|e| format!("connect to {addr}: {e}"))
        .and_then(|mut conn| {
            let _ = conn.set_read_timeout(Some(weft_lab::http::IO_TIMEOUT));
            weft_lab::http::request(&mut conn, addr, host, path).map_err(|e| e.to_string())
        });
    match reply {
        Ok(reply) => {
            println!("{} via {addr}\n{}", reply.status, reply.body);
            if (200..300).contains(&reply.status) {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(e) => {
            eprintln!("weft-lab-app: GET http://{target}{path}: {e}");
            ExitCode::from(1)
        }
    }
}
