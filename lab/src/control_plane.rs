//! `weft-control-plane` in local mode, inside the node's namespace: gRPC on the bridge's
//! gateway address (pods reach it over the bridge; the proxies' UID is never redirected),
//! admin on the node's loopback.

use std::{
    net::{Ipv4Addr, SocketAddr},
    path::Path,
    time::Duration,
};

use weft_metrics_text::Metrics;

use crate::{
    bins::Binaries,
    error::{Error, Result},
    http,
    netns::Netns,
    pki::Pki,
    process::Daemon,
    wait,
};

/// The control plane's gRPC port.
pub const GRPC_PORT: u16 = 8443;
/// Its admin port (on the node's loopback).
pub const ADMIN_PORT: u16 = 9990;
/// How long it may take to answer `/ready`.
const READY_PATIENCE: Duration = Duration::from_secs(15);

/// The running control plane; killed on drop.
#[derive(Debug)]
pub struct ControlPlane {
    daemon: Daemon,
    grpc: SocketAddr,
}

impl ControlPlane {
    /// Starts it in `node`, reading `config_dir` (polled every 50 ms) and the files of `pki`
    /// (every 100 ms), listening on `gateway:8443`; returns once `/ready` answers 200.
    pub(crate) fn start(
        node: &Netns,
        bins: &Binaries,
        pki: &Pki,
        config_dir: &Path,
        gateway: Ipv4Addr,
        log: &Path,
    ) -> Result<ControlPlane> {
        let grpc = SocketAddr::from((gateway, GRPC_PORT));
        // Killed with the process that started it, even when that one is killed outright.
        let mut cmd = node.command("setpriv");
        cmd.arg("--pdeathsig=KILL")
            .arg(&bins.control_plane)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .arg("--issuer")
            .arg(pki.issuer_dir())
            .arg("--tokens")
            .arg(pki.tokens())
            .arg("--source")
            .arg(format!("local:{}", config_dir.display()))
            .args([
                "--config-poll-interval",
                "50ms",
                "--reload-interval",
                "100ms",
            ])
            .args(["--grpc-addr", &grpc.to_string()])
            .args(["--admin-addr", &admin().to_string()])
            .args(["--log-format", "json", "--log", "info"]);
        let daemon = Daemon::spawn("weft-control-plane", &mut cmd, log)?;
        let mut cp = ControlPlane { daemon, grpc };
        wait::until("the control plane's /ready", READY_PATIENCE, || {
            if let Err(e) = cp.daemon.check_running() {
                return Some(Err(e));
            }
            match http::get(node, admin(), "localhost", "/ready") {
                Ok(r) if r.status == 200 => Some(Ok(())),
                _ => None,
            }
        })
        .map_err(|e| with_log(e, &cp.daemon))??;
        Ok(cp)
    }

    /// `198.18.0.1:8443`, what proxies dial (`WEFT_CONTROL_PLANE`).
    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc
    }

    /// Its `/metrics`, read from inside `node`.
    pub fn metrics(&self, node: &Netns) -> Result<Metrics> {
        let r = http::get(node, admin(), "localhost", "/metrics")?;
        Metrics::parse(&r.body).map_err(|e| Error::Protocol {
            what: format!("the control plane's /metrics: {e}"),
            answer: r.body,
        })
    }

    /// Config states the local source has applied so far.
    pub fn applied(&self, node: &Netns) -> Result<f64> {
        Ok(self.metrics(node)?.value(
            "weft_config_snapshots_total",
            &[("result", "applied"), ("source", "local")],
        ))
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        self.daemon.log()
    }
}

/// Its admin address (`/metrics`, `/ready`), on the node namespace's loopback.
pub fn admin_addr() -> SocketAddr {
    admin()
}

fn admin() -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, ADMIN_PORT))
}

/// A timeout with the daemon's log attached.
fn with_log(e: Error, daemon: &Daemon) -> Error {
    match e {
        Error::Timeout { what, after } => Error::Timeout {
            what: format!("{what}; its log:\n{}", daemon.log()),
            after,
        },
        other => other,
    }
}
