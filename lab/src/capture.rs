//! `tcpdump` on the node's bridge, inside the node's namespace, writing a pcap file to the
//! cluster's temp dir; started and stopped by PID.

use std::{
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

/// How long tcpdump may take to start listening.
const START_PATIENCE: Duration = Duration::from_secs(10);

/// A running capture.
#[derive(Debug)]
pub struct Capture {
    daemon: Daemon,
    file: PathBuf,
}

impl Capture {
    /// Starts `tcpdump -i <iface>` (TCP only, whole packets, each written as it arrives) in
    /// `ns`, writing to `dir/<name>.pcap`; returns once it listens.
    pub fn start(ns: &Netns, iface: &str, dir: &Path, name: &str) -> Result<Capture> {
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
        .arg("tcp");
        let mut daemon = Daemon::spawn(
            format!("tcpdump on {iface} in {}", ns.name()),
            &mut cmd,
            &log,
        )?;
        wait::until(
            format!("tcpdump to listen on {iface}"),
            START_PATIENCE,
            || {
                if let Err(e) = daemon.check_running() {
                    return Some(Err(e));
                }
                daemon.log().contains("listening on").then_some(Ok(()))
            },
        )??;
        Ok(Capture { daemon, file })
    }

    /// Lets the file settle (no growth over a few polling steps, at most a second), stops
    /// tcpdump (SIGTERM, so it flushes) and reads the TCP segments it captured.
    pub fn stop(mut self) -> Result<Vec<Segment>> {
        let size = || std::fs::metadata(&self.file).map_or(0, |m| m.len());
        let (mut last, mut still) = (size(), 0);
        // Settling is best effort: past the bound, stop anyway.
        let _ = wait::until("the capture to settle", Duration::from_secs(1), || {
            let now = size();
            still = if now == last { still + 1 } else { 0 };
            last = now;
            (still >= 5).then_some(())
        });
        self.daemon.terminate(Duration::from_secs(5));
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
