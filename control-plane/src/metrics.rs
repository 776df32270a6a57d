//! The control plane's Prometheus metrics, served on the admin port.

use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry};

/// Why a certificate request was refused: the `reason` label, a closed set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    MalformedIdentity,
    ForeignTrustDomain,
    MalformedToken,
    TokenRejected,
    TokenReviewUnavailable,
    IdentityMismatch,
    MalformedCsr,
    IssuerUnusable,
}

impl Refusal {
    pub const ALL: [Refusal; 8] = [
        Refusal::MalformedIdentity,
        Refusal::ForeignTrustDomain,
        Refusal::MalformedToken,
        Refusal::TokenRejected,
        Refusal::TokenReviewUnavailable,
        Refusal::IdentityMismatch,
        Refusal::MalformedCsr,
        Refusal::IssuerUnusable,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::MalformedIdentity => "malformed_identity",
            Refusal::ForeignTrustDomain => "foreign_trust_domain",
            Refusal::MalformedToken => "malformed_token",
            Refusal::TokenRejected => "token_rejected",
            Refusal::TokenReviewUnavailable => "token_review_unavailable",
            Refusal::IdentityMismatch => "identity_mismatch",
            Refusal::MalformedCsr => "malformed_csr",
            Refusal::IssuerUnusable => "issuer_unusable",
        }
    }
}

/// Every metric the control plane exports.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    issued: IntCounter,
    refusals: IntCounterVec,
    issuer_expiry: IntGauge,
    anchors_expiry: IntGauge,
    reloads: IntCounterVec,
    config_refused: IntCounterVec,
    config_applied: IntCounterVec,
    route_status_writes: IntCounterVec,
    pub discovery: DiscoveryMetrics,
    pub routes: DiscoveryMetrics,
}

/// One watch service's metrics (the destination service's are `weft_discovery_*`, the route
/// service's `weft_routes_*`).
#[derive(Debug, Clone)]
pub struct DiscoveryMetrics {
    /// Open `Watch` streams.
    pub subscribers: IntGauge,
    /// Updates written to streams, by kind (`snapshot`, `delta`, `not_a_service`; each
    /// series made by the hub from its `Answers::KINDS`).
    pub updates: IntCounterVec,
    /// From a snapshot's publication by its source to an update's hand-off to the stream.
    pub push_latency: Histogram,
    /// Targets the index tracks for subscribers.
    pub destinations: IntGauge,
}

impl DiscoveryMetrics {
    /// The series `weft_<prefix>_*` of a service whose updates are about `what` and whose
    /// tracked targets gauge is `weft_<prefix>_<targets>`.
    fn new(
        prefix: &str,
        what: &str,
        targets: &str,
        targets_help: &str,
    ) -> prometheus::Result<Self> {
        Ok(Self {
            subscribers: IntGauge::new(
                format!("weft_{prefix}_subscribers"),
                format!("Open {what} Watch streams."),
            )?,
            updates: IntCounterVec::new(
                Opts::new(
                    format!("weft_{prefix}_updates_pushed_total"),
                    format!("{} updates written to proxies' streams, by kind.", capitalized(what)),
                ),
                &["kind"],
            )?,
            push_latency: Histogram::with_opts(
                HistogramOpts::new(
                    format!("weft_{prefix}_push_latency_seconds"),
                    format!(
                        "From a config change taking effect to its {what} update leaving for a proxy."
                    ),
                )
                .buckets(vec![
                    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                    0.5, 1.0, 2.5, 5.0,
                ]),
            )?,
            destinations: IntGauge::new(format!("weft_{prefix}_{targets}"), targets_help)?,
        })
    }

    fn register(&self, registry: &Registry) -> prometheus::Result<()> {
        registry.register(Box::new(self.subscribers.clone()))?;
        registry.register(Box::new(self.updates.clone()))?;
        registry.register(Box::new(self.push_latency.clone()))?;
        registry.register(Box::new(self.destinations.clone()))
    }
}

fn capitalized(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|first| first.to_uppercase().chain(c).collect())
        .unwrap_or_default()
}

impl Metrics {
    pub fn new() -> prometheus::Result<Self> {
        let registry = Registry::new();
        let issued = IntCounter::new(
            "weft_identity_certificates_issued_total",
            "Workload certificates signed.",
        )?;
        let refusals = IntCounterVec::new(
            Opts::new(
                "weft_identity_refusals_total",
                "Certificate requests refused, by reason.",
            ),
            &["reason"],
        )?;
        let issuer_expiry = IntGauge::new(
            "weft_identity_issuer_expiry_timestamp_seconds",
            "When the issuer in force expires, seconds since the Unix epoch.",
        )?;
        let anchors_expiry = IntGauge::new(
            "weft_identity_trust_anchor_expiry_timestamp_seconds",
            "When the first of the trust anchors in force (anchors.pem) expires, seconds since the \
             Unix epoch: every workload certificate stops verifying then.",
        )?;
        let reloads = IntCounterVec::new(
            Opts::new(
                "weft_identity_file_reloads_total",
                "Changed issuer or tokens files seen, by file and result (applied or refused).",
            ),
            &["file", "result"],
        )?;
        let config_refused = IntCounterVec::new(
            Opts::new(
                "weft_config_refused_documents_total",
                "Config documents (YAML documents or API objects) refused, by source.",
            ),
            &["source"],
        )?;
        let config_applied = IntCounterVec::new(
            Opts::new(
                "weft_config_snapshots_total",
                "Config states a source read, by source and result (applied or refused).",
            ),
            &["source", "result"],
        )?;
        let route_status_writes = IntCounterVec::new(
            Opts::new(
                "weft_route_status_writes_total",
                "HTTPRoute status patches (Kubernetes mode), by result: written, conflict (the \
                 route changed meanwhile; read and merged again) or failed (retried with backoff).",
            ),
            &["result"],
        )?;
        let discovery = DiscoveryMetrics::new(
            "discovery",
            "destination",
            "destinations",
            "Destinations the index tracks for subscribed proxies.",
        )?;
        let routes = DiscoveryMetrics::new(
            "routes",
            "route",
            "targets",
            "Service ports (per client namespace) the route index tracks for subscribed proxies.",
        )?;
        registry.register(Box::new(config_refused.clone()))?;
        registry.register(Box::new(config_applied.clone()))?;
        registry.register(Box::new(route_status_writes.clone()))?;
        discovery.register(&registry)?;
        routes.register(&registry)?;
        registry.register(Box::new(issued.clone()))?;
        registry.register(Box::new(refusals.clone()))?;
        registry.register(Box::new(issuer_expiry.clone()))?;
        registry.register(Box::new(anchors_expiry.clone()))?;
        registry.register(Box::new(reloads.clone()))?;
        registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;
        // Every series exists from the start, so rates and alerts see zeros, not gaps.
        for r in Refusal::ALL {
            refusals.with_label_values(&[r.as_str()]);
        }
        for file in ["issuer", "tokens"] {
            for result in ["applied", "refused"] {
                reloads.with_label_values(&[file, result]);
            }
        }
        Ok(Self {
            registry,
            issued,
            refusals,
            issuer_expiry,
            anchors_expiry,
            reloads,
            config_refused,
            config_applied,
            route_status_writes,
            discovery,
            routes,
        })
    }

    pub fn issued(&self) {
        self.issued.inc();
    }

    pub fn refused(&self, reason: Refusal) {
        self.refusals.with_label_values(&[reason.as_str()]).inc();
    }

    /// The issuer in force, and its anchors: when each expires.
    pub fn issuer_in_force(&self, issuer: &crate::issuer::Issuer) {
        self.issuer_expiry
            .set(issuer.ca.not_after().unix_timestamp());
        self.anchors_expiry
            .set(issuer.anchors_not_after.unix_timestamp());
    }

    /// A changed file seen: `file` is `issuer` or `tokens`.
    pub fn reload(&self, file: &'static str, applied: bool) {
        let result = if applied { "applied" } else { "refused" };
        self.reloads.with_label_values(&[file, result]).inc();
    }

    /// A source refused `documents` documents (or API objects) of a change.
    pub fn config_refused(&self, source: &'static str, documents: usize) {
        self.config_refused
            .with_label_values(&[source])
            .inc_by(documents as u64);
    }

    /// A source read a new state: applied, or refused (the last good one stays).
    pub fn config_read(&self, source: &'static str, applied: bool) {
        let result = if applied { "applied" } else { "refused" };
        self.config_applied
            .with_label_values(&[source, result])
            .inc();
    }

    /// Makes a source's series exist from the start.
    pub fn config_source(&self, source: &'static str) {
        self.config_refused.with_label_values(&[source]);
        for result in ["applied", "refused"] {
            self.config_applied.with_label_values(&[source, result]);
        }
    }

    /// Makes the status writer's series exist from the start.
    pub fn route_status_series(&self) {
        for result in ["written", "conflict", "failed"] {
            self.route_status_writes.with_label_values(&[result]);
        }
    }

    /// One HTTPRoute status patch: `written`, `conflict` or `failed`.
    pub fn route_status_write(&self, result: &'static str) {
        self.route_status_writes.with_label_values(&[result]).inc();
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if let Err(e) =
            prometheus::TextEncoder::new().encode_utf8(&self.registry.gather(), &mut out)
        {
            tracing::warn!(error = %e, "metrics encoding failed");
        }
        out
    }
}
