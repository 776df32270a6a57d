//! The redirect self-check: `weft_redirect_verified` and `weft_redirect_checks_total`. They are
//! defined with the rest but exported only once [`Metrics::enable_redirect_check`] is called, so
//! a proxy that does not check (loopback or explicit mode) has no such series rather than a
//! misleading 0.

use std::sync::OnceLock;

use prometheus::{IntCounterVec, IntGauge, Opts};

use crate::{
    labels::{Family, RedirectResult},
    Metrics,
};

/// The redirect check's metrics, registered on demand.
#[derive(Debug)]
pub(crate) struct RedirectCheck {
    /// Whether the last redirect check proved the redirection; exported once enabled.
    verified: IntGauge,
    /// Redirect check probes by family and result; exported once enabled.
    checks: IntCounterVec,
    enabled: OnceLock<()>,
}

impl RedirectCheck {
    /// Defines the metrics without registering them.
    pub(crate) fn new() -> prometheus::Result<Self> {
        let verified = IntGauge::new(
            "weft_redirect_verified",
            "1 when the last redirect check proved that the pod's iptables rules send the \
             proxy's check connections (127.0.0.1 and ::1 on the check port) to its own outbound \
             listener, 0 otherwise (and before the first check). Absent when the check is off.",
        )?;
        let checks = IntCounterVec::new(
            Opts::new(
                "weft_redirect_checks_total",
                "Redirect check probes, by address family and result (verified, refused, \
                 timeout, wrong_answer, error). Absent when the check is off.",
            ),
            &["family", "result"],
        )?;
        Ok(Self {
            verified,
            checks,
            enabled: OnceLock::new(),
        })
    }
}

impl Metrics {
    /// Starts exporting the redirect check's metrics, with a zero for every family and result;
    /// a second call does nothing.
    pub fn enable_redirect_check(&self) -> prometheus::Result<()> {
        let r = &self.redirect;
        if r.enabled.get().is_some() {
            return Ok(());
        }
        self.registry.register(Box::new(r.verified.clone()))?;
        self.registry.register(Box::new(r.checks.clone()))?;
        for family in Family::ALL {
            for result in RedirectResult::ALL {
                r.checks
                    .with_label_values(&[family.as_str(), result.as_str()]);
            }
        }
        let _ = r.enabled.set(());
        Ok(())
    }

    /// Counts one redirect check probe.
    pub fn redirect_probe(&self, family: Family, result: RedirectResult) {
        self.redirect
            .checks
            .with_label_values(&[family.as_str(), result.as_str()])
            .inc();
    }

    /// Sets whether the last redirect check proved the redirection.
    pub fn redirect_verified(&self, verified: bool) {
        self.redirect.verified.set(i64::from(verified));
    }
}

#[cfg(test)]
mod tests {
    use crate::{
        test_support::{sample, text},
        Family, Metrics, RedirectResult,
    };

    #[test]
    fn redirect_check_series_exist_only_once_enabled() {
        let m = Metrics::new("t").expect("metrics");
        m.redirect_verified(true);
        m.redirect_probe(Family::Ipv4, RedirectResult::Verified);
        let before = text(&m);
        assert!(!before.contains("weft_redirect"), "{before}");

        m.enable_redirect_check().expect("enable");
        m.enable_redirect_check()
            .expect("a second call does nothing");
        m.redirect_probe(Family::Ipv6, RedirectResult::WrongAnswer);
        let page = text(&m);
        assert_eq!(
            sample(&page, "weft_redirect_verified "),
            Some("1"),
            "{page}"
        );
        assert_eq!(
            sample(
                &page,
                r#"weft_redirect_checks_total{family="ipv4",result="verified"}"#
            ),
            Some("1")
        );
        assert_eq!(
            sample(
                &page,
                r#"weft_redirect_checks_total{family="ipv6",result="wrong_answer"}"#
            ),
            Some("1")
        );
        assert_eq!(
            page.lines()
                .filter(|l| l.starts_with("weft_redirect_checks_total{"))
                .count(),
            Family::ALL.len() * RedirectResult::ALL.len(),
            "every family and result from the start: {page}"
        );
        m.redirect_verified(false);
        assert_eq!(sample(&text(&m), "weft_redirect_verified "), Some("0"));
    }
}
