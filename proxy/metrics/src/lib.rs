//! The Weft proxy's metrics.
//!
//! # Layout
//! - [`Metrics`] (`registry`): every metric the proxy exports, registered once in one registry,
//!   with typed label arguments so a caller cannot invent a label value; [`Metrics::encode`]
//!   renders the Prometheus text format. `weft_build_info` and the process collector.
//! - `labels`: the closed label sets ([`Direction`], [`Flow`], [`Family`],
//!   [`RedirectResult`], [`Handshake`]).
//! - `requests`: the request series ([`RequestSeries`], [`Destination`]) and their bounds.
//! - `tcp`: connections opened and closed, bytes, and protocol detection timeouts.
//! - [`io`]: [`MeteredIo`], an accepted socket whose bytes and close are counted.
//! - `tls`: mesh TLS handshakes, the certificate's expiry, inbound refusals by mTLS policy.
//! - `discovery`: discovery updates from the control plane and Services without endpoints.
//! - `redirect`: the redirect self-check's series.
//!
//! Each part's struct holds its metrics and registers them; its recording methods are an
//! `impl Metrics` block in the same file, so all of a metric's code is in one place and callers
//! see one type.
//!
//! Cardinality is bounded by construction: `direction` and `flow` are enums, `status_code` is an
//! HTTP status (at most 900 values, `http` keeps the strings static), the identity and endpoint
//! labels of request series fold into `other` past [`MAX_IDENTITY_SERIES`] and
//! [`MAX_ENDPOINT_SERIES`], and the `port` label of detection timeouts holds at most
//! [`MAX_PORT_LABELS`] distinct ports before folding into `other`.
//!
//! The redirect check's metrics (`weft_redirect_verified`, `weft_redirect_checks_total`) are
//! defined with the rest but exported only once [`Metrics::enable_redirect_check`] is called, so a
//! proxy that does not check (loopback or explicit mode) has no such series rather than a
//! misleading 0.

#![forbid(unsafe_code)]

mod discovery;
mod info;
pub mod io;
mod labels;
mod policy;
mod redirect;
mod registry;
mod requests;
mod tap;
mod tcp;
mod tls;
mod trace;

pub use discovery::MirrorResult;
pub use io::MeteredIo;
pub use labels::{Direction, Family, Flow, Handshake, RedirectResult};
pub use policy::{FaultKind, RetryReason, RetrySkipped};
pub use registry::Metrics;
pub use requests::{
    Destination, RequestSeries, RouteLabel, MAX_ENDPOINT_SERIES, MAX_IDENTITY_SERIES,
    MAX_ROUTES_PER_SERIES, MAX_ROUTE_LABELS,
};
pub use tap::TapCounts;
pub use tcp::MAX_PORT_LABELS;

/// What the unit tests of every part share: the rendered page and one sample from it.
#[cfg(test)]
mod test_support {
    use crate::Metrics;

    pub(crate) fn text(m: &Metrics) -> String {
        String::from_utf8(m.encode().expect("encode")).expect("utf-8")
    }

    pub(crate) fn sample<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
        text.lines()
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.rsplit(' ').next())
    }
}
