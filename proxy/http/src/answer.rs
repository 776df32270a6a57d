//! What the routing policy leaves on an answer for the edge's span and tap: how many times the
//! request was retried (a response extension, set only on a retried request) and the fault it
//! met (the `weft-fault` response header the policy adds, which the caller sees too).

use http::Response;

/// The response header that says the proxy injected a fault: `abort <namespace>/<name>` or
/// `delay <namespace>/<name>`.
pub const FAULT_HEADER: &str = "weft-fault";

/// Retries after the first try, on a response that took any.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retried(pub u32);

/// The retries and the fault of `rsp`, read only for a traced or tapped request.
pub(crate) fn policy_of<B>(rsp: &Response<B>) -> (u32, Option<&str>) {
    let retries = rsp.extensions().get::<Retried>().map_or(0, |r| r.0);
    let fault = rsp
        .headers()
        .get(FAULT_HEADER)
        .and_then(|v| v.to_str().ok());
    (retries, fault)
}
