//! The control plane's Prometheus metrics, served on the admin port.

use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts, Registry};

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
    reloads: IntCounterVec,
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
        let reloads = IntCounterVec::new(
            Opts::new(
                "weft_identity_file_reloads_total",
                "Changed issuer or tokens files seen, by file and result (applied or refused).",
            ),
            &["file", "result"],
        )?;
        registry.register(Box::new(issued.clone()))?;
        registry.register(Box::new(refusals.clone()))?;
        registry.register(Box::new(issuer_expiry.clone()))?;
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
            reloads,
        })
    }

    pub fn issued(&self) {
        self.issued.inc();
    }

    pub fn refused(&self, reason: Refusal) {
        self.refusals.with_label_values(&[reason.as_str()]).inc();
    }

    pub fn issuer_expires_at(&self, unix_seconds: i64) {
        self.issuer_expiry.set(unix_seconds);
    }

    /// A changed file seen: `file` is `issuer` or `tokens`.
    pub fn reload(&self, file: &'static str, applied: bool) {
        let result = if applied { "applied" } else { "refused" };
        self.reloads.with_label_values(&[file, result]).inc();
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
