//! Why the proxy answered a request itself, and the one place such an error becomes a status.

use std::sync::Arc;

use bytes::Bytes;
use http::{
    header::{self, HeaderValue},
    Response, StatusCode,
};
use http_body_util::Full;
use weft_proxy_transport::{ConnectError, OrigDstAddr};

use crate::{
    body::ResponseBody,
    client::{ClientError, HttpError},
    mesh::MarkError,
    ERROR_HEADER,
};

/// Why the proxy answered a request itself instead of relaying the upstream's response.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The upstream connection could not be made.
    #[error(transparent)]
    Connect(ConnectError),
    /// The upstream connection failed after it was made (reset, closed, protocol error).
    #[error("upstream {addr} failed: {source}")]
    Upstream {
        addr: OrigDstAddr,
        #[source]
        source: HttpError,
    },
    /// The request cannot be sent on as it is.
    #[error("invalid request: {0}")]
    InvalidRequest(#[source] http::Error),
    /// The mesh hop failed: mTLS to the peer proxy, or the peer refused a tunnel.
    #[error(transparent)]
    Mesh(ClientError),
    /// The destination is a Service with no ready endpoints.
    #[error("service {service} has no ready endpoints")]
    NoEndpoints { service: Arc<str> },
    /// A request from a peer proxy without usable mesh headers.
    #[error(transparent)]
    BadMark(#[from] MarkError),
    /// A request from a peer proxy for one of this proxy's own ports.
    #[error("port {port} is the proxy's own; refusing a loop")]
    Loop { port: u16 },
    /// The Service's routes answer the request themselves: no rule matches (404), or the
    /// rule's backend cannot be used (500, with the control plane's reason).
    #[error("{reason}")]
    Route { status: StatusCode, reason: String },
    /// A route's timeout ran out: `timeouts.request` (the whole exchange, every try and wait
    /// included) or `timeouts.backendRequest` (the last try's).
    #[error("the route's {scope} timeout of {after:?} ran out")]
    Timeout {
        scope: TimeoutScope,
        after: std::time::Duration,
    },
}

/// Which of a route's timeouts ran out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeoutScope {
    /// `timeouts.request`.
    Request,
    /// `timeouts.backendRequest`.
    BackendRequest,
}

impl std::fmt::Display for TimeoutScope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TimeoutScope::Request => "request",
            TimeoutScope::BackendRequest => "backendRequest",
        })
    }
}

impl ProxyError {
    /// The status the caller sees. Every status the proxy makes up comes from here.
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::Connect(e) if e.is_timeout() => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::Connect(_) | ProxyError::Upstream { .. } | ProxyError::Mesh(_) => {
                StatusCode::BAD_GATEWAY
            }
            ProxyError::InvalidRequest(_) | ProxyError::BadMark(_) | ProxyError::Loop { .. } => {
                StatusCode::BAD_REQUEST
            }
            ProxyError::NoEndpoints { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::Route { status, .. } => *status,
            ProxyError::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    /// A short name for the kind of failure (a span's `error.type`).
    pub fn kind(&self) -> &'static str {
        match self {
            ProxyError::Connect(e) if e.is_timeout() => "connect_timeout",
            ProxyError::Connect(_) => "connect",
            ProxyError::Upstream { .. } => "upstream",
            ProxyError::InvalidRequest(_) => "invalid_request",
            ProxyError::Mesh(_) => "mesh",
            ProxyError::NoEndpoints { .. } => "no_endpoints",
            ProxyError::BadMark(_) => "bad_mark",
            ProxyError::Loop { .. } => "loop",
            ProxyError::Route { .. } => "route",
            ProxyError::Timeout { .. } => "timeout",
        }
    }

    /// Sorts an upstream client's failure (on a request to `addr`).
    pub fn from_client(addr: OrigDstAddr, e: ClientError) -> Self {
        match e {
            ClientError::Connect(e) => ProxyError::Connect(e),
            ClientError::Http(source) => ProxyError::Upstream { addr, source },
            e @ (ClientError::Tls { .. } | ClientError::TunnelRefused { .. }) => {
                ProxyError::Mesh(e)
            }
        }
    }

    /// Whether the proxy's own logs should show it at `info` (something failed upstream) rather
    /// than `debug` (the caller's request, or a state the metrics already show).
    pub fn is_upstream_failure(&self) -> bool {
        matches!(
            self,
            ProxyError::Connect(_) | ProxyError::Upstream { .. } | ProxyError::Mesh(_)
        )
    }

    /// The answer the caller gets: [`Self::status`], the message as the body and in the
    /// [`ERROR_HEADER`] header. Not counted: the stage that failed counted it.
    pub fn into_response(self) -> Response<ResponseBody> {
        let msg = self.to_string();
        let status = self.status();
        let mut rsp = Response::new(ResponseBody::unrecorded(Full::new(Bytes::from(format!(
            "{msg}\n"
        )))));
        *rsp.status_mut() = status;
        let headers = rsp.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        if let Ok(v) = HeaderValue::from_str(&msg) {
            headers.insert(ERROR_HEADER, v);
        }
        rsp
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn each_error_has_its_status() {
        let addr = ([127, 0, 0, 1], 1).into();
        let timeout = ConnectError::TimedOut {
            addr,
            timeout: Duration::from_secs(1),
        };
        assert_eq!(
            ProxyError::Connect(timeout).status(),
            StatusCode::GATEWAY_TIMEOUT
        );
        assert_eq!(
            ProxyError::Connect(ConnectError::Refused { addr }).status(),
            StatusCode::BAD_GATEWAY
        );
        assert_eq!(
            ProxyError::NoEndpoints {
                service: "a/b:80".into()
            }
            .status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(
            ProxyError::BadMark(MarkError::Port).status(),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            ProxyError::Loop { port: 15143 }.status(),
            StatusCode::BAD_REQUEST
        );
    }

    #[test]
    fn the_answer_says_why() {
        let rsp = ProxyError::Loop { port: 15143 }.into_response();
        assert_eq!(rsp.status(), StatusCode::BAD_REQUEST);
        assert_eq!(
            rsp.headers()[ERROR_HEADER],
            "port 15143 is the proxy's own; refusing a loop"
        );
    }
}
