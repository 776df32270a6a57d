//! The injector's Prometheus metrics, served on its admin port.

use std::time::Duration;

use prometheus::{Histogram, HistogramOpts, IntCounterVec, Opts, Registry};

/// What became of a review: the `result` label, a closed set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Result {
    Injected,
    Skipped,
    NotAPod,
    /// Denied: the pod asks for something that cannot be honoured.
    Refused,
    /// Not a review (400).
    Malformed,
    /// Could not be answered now (500): the namespace could not be looked up.
    Error,
}

impl Result {
    const ALL: [Result; 6] = [
        Result::Injected,
        Result::Skipped,
        Result::NotAPod,
        Result::Refused,
        Result::Malformed,
        Result::Error,
    ];

    fn as_str(self) -> &'static str {
        match self {
            Result::Injected => "injected",
            Result::Skipped => "skipped",
            Result::NotAPod => "not_a_pod",
            Result::Refused => "refused",
            Result::Malformed => "malformed",
            Result::Error => "error",
        }
    }
}

/// The injector's metrics.
#[derive(Debug)]
pub(crate) struct Metrics {
    registry: Registry,
    reviews: IntCounterVec,
    duration: Histogram,
    reloads: IntCounterVec,
}

impl Metrics {
    pub(crate) fn new() -> prometheus::Result<Self> {
        let registry = Registry::new();
        let reviews = IntCounterVec::new(
            Opts::new(
                "weft_injector_reviews_total",
                "Admission reviews answered, by result.",
            ),
            &["result"],
        )?;
        let duration = Histogram::with_opts(
            HistogramOpts::new(
                "weft_injector_review_duration_seconds",
                "Time to answer a review, body read included.",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0,
            ]),
        )?;
        let reloads = IntCounterVec::new(
            Opts::new(
                "weft_injector_certificate_reloads_total",
                "Serving certificate files read again after they changed, by result.",
            ),
            &["result"],
        )?;
        registry.register(Box::new(reviews.clone()))?;
        registry.register(Box::new(duration.clone()))?;
        registry.register(Box::new(reloads.clone()))?;
        // Every series exists from the start, at zero.
        for r in Result::ALL {
            reviews.with_label_values(&[r.as_str()]);
        }
        for r in ["ok", "failed"] {
            reloads.with_label_values(&[r]);
        }
        Ok(Self {
            registry,
            reviews,
            duration,
            reloads,
        })
    }

    pub(crate) fn review(&self, result: Result, took: Duration) {
        self.reviews.with_label_values(&[result.as_str()]).inc();
        self.duration.observe(took.as_secs_f64());
    }

    pub(crate) fn reload(&self, ok: bool) {
        let label = if ok { "ok" } else { "failed" };
        self.reloads.with_label_values(&[label]).inc();
    }

    /// The text exposition format.
    pub(crate) fn encode(&self) -> String {
        use prometheus::Encoder as _;
        let mut out = Vec::new();
        let _ = prometheus::TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}
