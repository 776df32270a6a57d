//! What a tap event says about a request's answer: its status, the proxy's reason when it
//! answered itself, and who served it, read from the request series it was counted in (the
//! same labels its metrics carry).

use http::StatusCode;
use weft_proxy_metrics::RequestSeries;
use weft_proxy_tap::Outcome;

/// The outcome of a request answered with `status` (by the proxy itself when `error`),
/// counted in `series` (none when the proxy answered before any stage counted it).
pub(crate) fn outcome<'a>(
    status: StatusCode,
    error: Option<&'a str>,
    series: Option<&'a RequestSeries>,
) -> Outcome<'a> {
    let Some(s) = series else {
        return Outcome {
            status,
            error,
            ..Outcome::default()
        };
    };
    Outcome {
        status,
        error,
        tls: s.tls(),
        src_identity: s.client_id(),
        dst_identity: s.server_id(),
        route: s.route(),
        backend: s.dst_service(),
        endpoint: s.dst_endpoint(),
    }
}
