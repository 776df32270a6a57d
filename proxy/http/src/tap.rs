//! What a tap event says about a request's answer: its status, the proxy's reason when it
//! answered itself, and who served it, read from the request series it was counted in (the
//! same labels its metrics carry).

use http::Response;
use weft_proxy_metrics::RequestSeries;
use weft_proxy_tap::Outcome;

use crate::answer;

/// The outcome of a request answered with `rsp` (by the proxy itself when `error`), counted in
/// `series` (none when the proxy answered before any stage counted it).
pub(crate) fn outcome<'a, B>(
    rsp: &'a Response<B>,
    error: Option<&'a str>,
    series: Option<&'a RequestSeries>,
) -> Outcome<'a> {
    let (retries, fault) = answer::policy_of(rsp);
    let status = rsp.status();
    let Some(s) = series else {
        return Outcome {
            status,
            error,
            retries,
            fault,
            ..Outcome::default()
        };
    };
    Outcome {
        status,
        error,
        retries,
        fault,
        tls: s.tls(),
        src_identity: s.client_id(),
        dst_identity: s.server_id(),
        route: s.route(),
        backend: s.dst_service(),
        endpoint: s.dst_endpoint(),
    }
}
