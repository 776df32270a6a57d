//! Mesh TLS and identity: handshakes by result, when the proxy's certificate expires, and
//! inbound connections refused by the mTLS policy before they reach the app.

use prometheus::{IntCounterVec, IntGauge, Opts, Registry};

use crate::{
    labels::{Direction, Handshake},
    registry::register,
    Metrics,
};

/// The TLS and identity metrics.
#[derive(Debug)]
pub(crate) struct Tls {
    handshakes: IntCounterVec,
    cert_expiry: IntGauge,
    inbound_refused: IntCounterVec,
}

impl Tls {
    pub(crate) fn register(registry: &Registry) -> prometheus::Result<Self> {
        let handshakes = register(
            registry,
            IntCounterVec::new(
                Opts::new(
                    "weft_tls_handshakes_total",
                    "Mesh TLS handshakes, by direction and result.",
                ),
                &["direction", "result"],
            ),
        )?;
        let cert_expiry = register(
            registry,
            IntGauge::new(
                "weft_identity_cert_expiry_timestamp_seconds",
                "When the proxy's current certificate expires, seconds since the Unix epoch; 0 \
                 before the first one.",
            ),
        )?;
        let inbound_refused = register(
            registry,
            IntCounterVec::new(
                Opts::new(
                    "weft_inbound_connections_refused_total",
                    "Inbound connections refused before reaching the app, by reason.",
                ),
                &["reason"],
            ),
        )?;
        for d in [Direction::Inbound, Direction::Outbound] {
            for h in Handshake::ALL {
                handshakes.with_label_values(&[d.as_str(), h.as_str()]);
            }
        }
        Ok(Self {
            handshakes,
            cert_expiry,
            inbound_refused,
        })
    }
}

impl Metrics {
    /// Counts a mesh TLS handshake.
    pub fn tls_handshake(&self, direction: Direction, result: Handshake) {
        self.tls
            .handshakes
            .with_label_values(&[direction.as_str(), result.as_str()])
            .inc();
    }

    /// Sets when the proxy's certificate expires.
    pub fn cert_expires_at(&self, unix_seconds: i64) {
        self.tls.cert_expiry.set(unix_seconds);
    }

    /// Counts an inbound connection refused for `reason` (a static label value).
    pub fn inbound_refused(&self, reason: &'static str) {
        self.tls.inbound_refused.with_label_values(&[reason]).inc();
    }
}
