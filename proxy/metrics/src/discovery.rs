//! Discovery and config updates: what the control plane sent and whether it was applied, and
//! requests or connections that found a Service without endpoints.

use prometheus::{IntCounterVec, Opts, Registry};

use crate::{registry::register, Metrics};

/// The discovery metrics.
#[derive(Debug)]
pub(crate) struct Discovery {
    config_updates: IntCounterVec,
    /// Connections that found a Service with no endpoints, by protocol.
    no_endpoints: IntCounterVec,
}

impl Discovery {
    pub(crate) fn register(registry: &Registry) -> prometheus::Result<Self> {
        let config_updates = register(
            registry,
            IntCounterVec::new(
                Opts::new(
                    "weft_config_updates_total",
                    "Discovery updates received from the control plane, by kind (snapshot, \
                     delta, not_a_service) and result (applied, refused); kind=unknown, \
                     result=ignored for a kind this proxy does not know (a newer control plane).",
                ),
                &["kind", "result"],
            ),
        )?;
        for kind in ["snapshot", "delta", "not_a_service"] {
            for result in ["applied", "refused"] {
                config_updates.with_label_values(&[kind, result]);
            }
        }
        config_updates.with_label_values(&["unknown", "ignored"]);
        let no_endpoints = register(
            registry,
            IntCounterVec::new(
                Opts::new(
                    "weft_no_endpoints_total",
                    "Requests (http) and connections (tcp) to a Service that had no ready \
                     endpoints, answered 503 or closed.",
                ),
                &["protocol"],
            ),
        )?;
        Ok(Self {
            config_updates,
            no_endpoints,
        })
    }
}

impl Metrics {
    /// One discovery update received: `kind` is `snapshot`, `delta` or `not_a_service`.
    pub fn config_update(&self, kind: &'static str, applied: bool) {
        let result = if applied { "applied" } else { "refused" };
        self.discovery
            .config_updates
            .with_label_values(&[kind, result])
            .inc();
    }

    /// One discovery update of a kind this proxy does not know, ignored.
    pub fn config_update_ignored(&self) {
        self.discovery
            .config_updates
            .with_label_values(&["unknown", "ignored"])
            .inc();
    }

    /// A request (`http`) or connection (`tcp`) found its Service without endpoints.
    pub fn no_endpoints(&self, protocol: &'static str) {
        self.discovery
            .no_endpoints
            .with_label_values(&[protocol])
            .inc();
    }
}
