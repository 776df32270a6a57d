//! The one registry: [`Metrics`] holds every part, registers each once, and renders the page.
//! `weft_build_info` and the process collector (CPU, memory, file descriptors) live here too.

use prometheus::{core::Collector, Encoder, IntGaugeVec, Opts, Registry, TextEncoder};

use crate::{
    discovery::Discovery, policy::Policy, redirect::RedirectCheck, requests::Requests, tcp::Tcp,
    tls::Tls,
};

/// Every metric the proxy exports.
#[derive(Debug)]
pub struct Metrics {
    pub(crate) registry: Registry,
    pub(crate) requests: Requests,
    pub(crate) tcp: Tcp,
    pub(crate) tls: Tls,
    pub(crate) discovery: Discovery,
    pub(crate) redirect: RedirectCheck,
    pub(crate) policy: Policy,
}

impl Metrics {
    /// Registers every metric, with `weft_build_info` set to `version`.
    ///
    /// Fails only if a metric definition is invalid, which the tests rule out.
    pub fn new(version: &str) -> prometheus::Result<Self> {
        let registry = Registry::new();
        let requests = Requests::register(&registry)?;
        let tcp = Tcp::register(&registry)?;
        let build_info = register(
            &registry,
            IntGaugeVec::new(
                Opts::new("weft_build_info", "The proxy's build; always 1."),
                &["version"],
            ),
        )?;
        build_info.with_label_values(&[version]).set(1);
        let tls = Tls::register(&registry)?;
        let discovery = Discovery::register(&registry)?;
        let policy = Policy::register(&registry)?;
        // Registered by `enable_redirect_check`, not here.
        let redirect = RedirectCheck::new()?;
        #[cfg(target_os = "linux")]
        registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;
        Ok(Self {
            registry,
            requests,
            tcp,
            tls,
            discovery,
            redirect,
            policy,
        })
    }

    /// Renders every metric in the Prometheus text exposition format (version 0.0.4).
    pub fn encode(&self) -> prometheus::Result<Vec<u8>> {
        let mut out = Vec::with_capacity(16 * 1024);
        TextEncoder::new().encode(&self.registry.gather(), &mut out)?;
        Ok(out)
    }

    /// The content type of [`Metrics::encode`]'s output.
    pub fn content_type() -> &'static str {
        prometheus::TEXT_FORMAT
    }
}

/// Registers `c` (once made) with `registry` and hands it back.
pub(crate) fn register<C: Collector + Clone + 'static>(
    registry: &Registry,
    c: prometheus::Result<C>,
) -> prometheus::Result<C> {
    let c = c?;
    registry.register(Box::new(c.clone()))?;
    Ok(c)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::{
        test_support::{sample, text},
        Direction, Metrics,
    };

    #[test]
    fn requests_and_connections_render_with_their_labels() {
        let m = Metrics::new("1.2.3").expect("metrics");
        m.request(
            Direction::Outbound,
            http::StatusCode::OK,
            Duration::from_millis(3),
        );
        m.request(
            Direction::Outbound,
            http::StatusCode::OK,
            Duration::from_millis(3),
        );
        m.request(
            Direction::Inbound,
            http::StatusCode::BAD_GATEWAY,
            Duration::from_millis(1),
        );
        let (socket, _peer) = tokio::io::duplex(64);
        let conn = m.accepted(Direction::Inbound, socket);
        assert_eq!(
            sample(
                &text(&m),
                r#"weft_tcp_connections_closed_total{direction="inbound"}"#
            ),
            Some("0")
        );
        drop(conn);
        let text = text(&m);
        assert_eq!(
            sample(
                &text,
                r#"weft_requests_total{client_id="",direction="outbound",dst_endpoint="",dst_service="",route="",server_id="",status_code="200",tls="false"}"#
            ),
            Some("2"),
            "{text}"
        );
        assert_eq!(
            sample(
                &text,
                r#"weft_requests_total{client_id="",direction="inbound",dst_endpoint="",dst_service="",route="",server_id="",status_code="502",tls="false"}"#
            ),
            Some("1")
        );
        assert_eq!(
            sample(
                &text,
                r#"weft_request_duration_seconds_bucket{client_id="",direction="outbound",dst_endpoint="",dst_service="",route="",server_id="",status_code="200",tls="false",le="0.005"}"#
            ),
            Some("2")
        );
        assert_eq!(
            sample(
                &text,
                r#"weft_tcp_connections_opened_total{direction="inbound"}"#
            ),
            Some("1")
        );
        assert_eq!(
            sample(
                &text,
                r#"weft_tcp_connections_closed_total{direction="inbound"}"#
            ),
            Some("1")
        );
        assert_eq!(
            sample(&text, r#"weft_build_info{version="1.2.3"}"#),
            Some("1")
        );
        assert!(text.contains("# TYPE weft_request_duration_seconds histogram"));
    }
}
