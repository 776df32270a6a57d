//! `tcpdump` on the node's bridge, inside the node's namespace, writing a pcap file to the
//! cluster's temp dir; started and stopped by PID.
//!
//! Stopping waits until the file holds everything sent before: an end marker (a UDP datagram
//! to the discard port, sent out of the captured interface) is sent when the capture is
//! stopped, and tcpdump writes packets in the order it sees them, each as it arrives, so once
//! the marker is in the file, so is every packet before it.

use std::{
    net::{Ipv4Addr, SocketAddr, UdpSocket},
    path::{Path, PathBuf},
    time::Duration,
};

use crate::{
    error::{Error, Result},
    netns::Netns,
    pcap::{self, Segment},
    process::Daemon,
    wait,
};

/// How long tcpdump may take to start listening, and the end marker to reach the file.
const PATIENCE: Duration = Duration::from_secs(10);
/// The end marker's port: discard (RFC 863), which nothing in the lab listens on.
const MARKER_PORT: u16 = 9;
/// The marker is sent again every this many polling steps, in case one is lost.
const MARKER_EVERY: u32 = 25;

/// A running capture.
#[derive(Debug)]
pub struct Capture {
    daemon: Daemon,
    file: PathBuf,
    /// A socket made inside the captured namespace, to send the end marker from.
    marker_from: UdpSocket,
    marker_to: SocketAddr,
}

impl Capture {
    /// Starts `tcpdump -i <iface>` (TCP and the end marker, whole packets, each written as it
    /// arrives) in `ns`, writing to `dir/<name>.pcap`; returns once it listens. `broadcast` is
    /// the broadcast address of `iface`'s subnet, where the end marker goes: it leaves through
    /// `iface` and needs no neighbour resolution.
    pub fn start(
        ns: &Netns,
        iface: &str,
        broadcast: Ipv4Addr,
        dir: &Path,
        name: &str,
    ) -> Result<Capture> {
        let marker_to = SocketAddr::from((broadcast, MARKER_PORT));
        let what = || format!("make the capture's marker socket in {}", ns.name());
        let marker_from = ns
            .enter(|| {
                let socket = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))?;
                socket.set_broadcast(true)?;
                Ok(socket)
            })?
            .map_err(Error::io(what()))?;
        let file = dir.join(format!("{name}.pcap"));
        let log = dir.join(format!("{name}.tcpdump.log"));
        let mut cmd = ns.command("tcpdump");
        // --immediate-mode: each packet handed over as it arrives (otherwise the kernel
        // batches them, and packets still batched when SIGTERM comes are never written).
        // -Z root: stay root, so the file in the root-owned temp dir stays writable.
        cmd.args([
            "-i",
            iface,
            "-n",
            "-s",
            "0",
            "-U",
            "--immediate-mode",
            "-Z",
            "root",
            "-w",
        ])
        .arg(&file)
        .arg(format!("tcp or (udp and dst port {MARKER_PORT})"));
        let mut daemon = Daemon::spawn(
            format!("tcpdump on {iface} in {}", ns.name()),
            &mut cmd,
            &log,
        )?;
        wait::until(format!("tcpdump to listen on {iface}"), PATIENCE, || {
            if let Err(e) = daemon.check_running() {
                return Some(Err(e));
            }
            daemon.log().contains("listening on").then_some(Ok(()))
        })??;
        Ok(Capture {
            daemon,
            file,
            marker_from,
            marker_to,
        })
    }

    /// Sends the end marker and waits until it is in the file (so everything sent before this
    /// call is too), stops tcpdump (SIGTERM) and reads the TCP segments it captured.
    pub fn stop(mut self) -> Result<Vec<Segment>> {
        let marker = format!("weft-lab capture end {}", self.file.display()).into_bytes();
        let mut polls = 0;
        let mut sent = Ok(0);
        let ended = wait::until(
            format!("the end marker in the capture {}", self.file.display()),
            PATIENCE,
            || {
                if let Err(e) = self.daemon.check_running() {
                    return Some(Err(e));
                }
                if polls % MARKER_EVERY == 0 {
                    sent = self.marker_from.send_to(&marker, self.marker_to);
                }
                polls += 1;
                // A record still being written reads as truncated: not there yet.
                let bytes = std::fs::read(&self.file).ok()?;
                let datagrams = pcap::udp_datagrams(&bytes).ok()?;
                datagrams
                    .iter()
                    .any(|d| d.payload == marker)
                    .then_some(Ok(()))
            },
        );
        self.daemon.terminate(Duration::from_secs(5));
        match ended {
            Ok(running) => running?,
            // Never seen: say why if the marker could not even be sent.
            Err(timeout) => {
                return Err(match sent {
                    Err(e) => Error::io(format!(
                        "send the capture's end marker to {}",
                        self.marker_to
                    ))(e),
                    Ok(_) => timeout,
                })
            }
        }
        let bytes = std::fs::read(&self.file).map_err(Error::io(format!(
            "read the capture {}",
            self.file.display()
        )))?;
        pcap::tcp_segments(&bytes).map_err(|e| Error::Protocol {
            what: format!("parse the capture {}", self.file.display()),
            answer: e.to_string(),
        })
    }

    /// The pcap file.
    pub fn file(&self) -> &Path {
        &self.file
    }
}
