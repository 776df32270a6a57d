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
    /// Mirrored requests (HTTPRoute `RequestMirror`), by result.
    mirrors: IntCounterVec,
}

/// What became of one request an HTTPRoute's `RequestMirror` asked to copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MirrorResult {
    /// The copy was answered (any status).
    Sent,
    /// The copy failed (no endpoints, connect error, reset, a body that could not be replayed).
    Failed,
    /// Not sent: too many copies already in flight.
    Dropped,
    /// Not sent: the request's body was too large to keep for a copy.
    Skipped,
}

impl MirrorResult {
    const ALL: [MirrorResult; 4] = [
        MirrorResult::Sent,
        MirrorResult::Failed,
        MirrorResult::Dropped,
        MirrorResult::Skipped,
    ];

    fn label(self) -> &'static str {
        match self {
            MirrorResult::Sent => "sent",
            MirrorResult::Failed => "failed",
            MirrorResult::Dropped => "dropped",
            MirrorResult::Skipped => "skipped",
        }
    }
}

impl Discovery {
    pub(crate) fn register(registry: &Registry) -> prometheus::Result<Self> {
        let config_updates = register(
            registry,
            IntCounterVec::new(
                Opts::new(
                    "weft_config_updates_total",
                    "Discovery and route updates received from the control plane, by kind \
                     (snapshot, delta, not_a_service, routes) and result (applied, refused); kind=unknown, \
                     result=ignored for a kind this proxy does not know (a newer control plane).",
                ),
                &["kind", "result"],
            ),
        )?;
        for kind in ["snapshot", "delta", "not_a_service", "routes"] {
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
        let mirrors = register(
            registry,
            IntCounterVec::new(
                Opts::new(
                    "weft_mirror_requests_total",
                    "Copies of requests an HTTPRoute RequestMirror filter asked for, by result: \
                     sent (answered, the answer dropped), failed, dropped (too many in flight), \
                     skipped (a body too large to keep).",
                ),
                &["result"],
            ),
        )?;
        for r in MirrorResult::ALL {
            mirrors.with_label_values(&[r.label()]);
        }
        Ok(Self {
            config_updates,
            no_endpoints,
            mirrors,
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

    /// One mirrored request's fate.
    pub fn mirror(&self, result: MirrorResult) {
        self.discovery
            .mirrors
            .with_label_values(&[result.label()])
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
