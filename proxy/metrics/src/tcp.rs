//! Connections: `weft_tcp_connections_opened_total` and `_closed_total`, the bytes carried
//! (counted by [`MeteredIo`]), and `weft_protocol_detect_timeouts_total`, whose `port` label
//! holds at most [`MAX_PORT_LABELS`] distinct ports before folding into `other`.

use std::{collections::HashSet, sync::Mutex};

use prometheus::{IntCounter, IntCounterVec, Opts, Registry};

use crate::{
    io::MeteredIo,
    labels::{Direction, Flow},
    registry::register,
    Metrics,
};

/// Distinct ports the detection-timeout counter labels before it folds the rest into `other`.
pub const MAX_PORT_LABELS: usize = 64;

/// The connection metrics.
#[derive(Debug)]
pub(crate) struct Tcp {
    opened: IntCounterVec,
    closed: IntCounterVec,
    bytes: IntCounterVec,
    detect_timeouts: IntCounterVec,
    detect_timeout_ports: Mutex<HashSet<u16>>,
}

/// Counts a connection's close when dropped.
#[derive(Debug)]
pub(crate) struct ConnectionGuard {
    closed: IntCounter,
}

impl Tcp {
    pub(crate) fn register(registry: &Registry) -> prometheus::Result<Self> {
        let opened = register(
            registry,
            IntCounterVec::new(
                Opts::new(
                    "weft_tcp_connections_opened_total",
                    "TCP connections accepted.",
                ),
                &["direction"],
            ),
        )?;
        let closed = register(
            registry,
            IntCounterVec::new(
                Opts::new(
                    "weft_tcp_connections_closed_total",
                    "TCP connections closed.",
                ),
                &["direction"],
            ),
        )?;
        let bytes = register(
            registry,
            IntCounterVec::new(
                Opts::new(
                    "weft_tcp_bytes_total",
                    "Bytes carried on accepted connections.",
                ),
                &["direction", "flow"],
            ),
        )?;
        let detect_timeouts = register(
            registry,
            IntCounterVec::new(
                Opts::new(
                    "weft_protocol_detect_timeouts_total",
                    "Connections whose client sent nothing recognisable before the detection \
                     timeout and were forwarded as opaque TCP; a server-speaks-first port to list \
                     in WEFT_OPAQUE_PORTS.",
                ),
                &["direction", "port"],
            ),
        )?;
        Ok(Self {
            opened,
            closed,
            bytes,
            detect_timeouts,
            detect_timeout_ports: Mutex::new(HashSet::new()),
        })
    }
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.closed.inc();
    }
}

impl Metrics {
    /// Counts an accepted connection and wraps its socket so that its bytes and its close are
    /// counted too.
    pub fn accepted<T>(&self, direction: Direction, io: T) -> MeteredIo<T> {
        let d = direction.as_str();
        self.tcp.opened.with_label_values(&[d]).inc();
        MeteredIo::new(
            io,
            self.tcp
                .bytes
                .with_label_values(&[d, Flow::ToServer.as_str()]),
            self.tcp
                .bytes
                .with_label_values(&[d, Flow::ToClient.as_str()]),
            ConnectionGuard {
                closed: self.tcp.closed.with_label_values(&[d]),
            },
        )
    }

    /// Counts a detection timeout on destination `port`.
    pub fn detect_timeout(&self, direction: Direction, port: u16) {
        let port_str = port.to_string();
        let label = {
            let mut seen = self
                .tcp
                .detect_timeout_ports
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            if seen.contains(&port) || seen.len() < MAX_PORT_LABELS {
                seen.insert(port);
                port_str.as_str()
            } else {
                "other"
            }
        };
        self.tcp
            .detect_timeouts
            .with_label_values(&[direction.as_str(), label])
            .inc();
    }
}

#[cfg(test)]
mod tests {
    use crate::{
        test_support::{sample, text},
        Direction, Metrics, MAX_PORT_LABELS,
    };

    #[test]
    fn detect_timeout_ports_are_bounded() {
        let m = Metrics::new("t").expect("metrics");
        for port in 0..(MAX_PORT_LABELS as u16 + 10) {
            m.detect_timeout(Direction::Outbound, 1000 + port);
        }
        m.detect_timeout(Direction::Outbound, 1000);
        let text = text(&m);
        let series = text
            .lines()
            .filter(|l| l.starts_with("weft_protocol_detect_timeouts_total{"))
            .count();
        assert_eq!(series, MAX_PORT_LABELS + 1, "{text}");
        assert_eq!(
            sample(
                &text,
                r#"weft_protocol_detect_timeouts_total{direction="outbound",port="1000"}"#
            ),
            Some("2")
        );
        assert_eq!(
            sample(
                &text,
                r#"weft_protocol_detect_timeouts_total{direction="outbound",port="other"}"#
            ),
            Some("10")
        );
    }
}
