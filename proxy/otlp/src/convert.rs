//! Weft's spans as OTLP messages, with OpenTelemetry's HTTP semantic-convention attributes and
//! Weft's own (`weft.*`).

use std::time::{SystemTime, UNIX_EPOCH};

use http::Version;
use opentelemetry_proto::tonic::{
    collector::trace::v1::ExportTraceServiceRequest,
    common::v1::{any_value::Value, AnyValue, InstrumentationScope, KeyValue},
    resource::v1::Resource as OtlpResource,
    trace::v1::{span::SpanKind, status::StatusCode, ResourceSpans, ScopeSpans, Span, Status},
};
use weft_proxy_trace::{Kind, Span as WeftSpan};

/// Who made the spans: the proxy's pod, as OpenTelemetry's resource conventions name it.
#[derive(Clone, Debug, Default)]
pub struct Resource {
    /// `service.name`: the workload (its service account, as the mesh names workloads).
    pub service_name: String,
    /// Any other resource attributes (`k8s.namespace.name`, `k8s.pod.name`, `weft.identity`).
    pub attributes: Vec<(&'static str, String)>,
}

/// The W3C trace flag "sampled": every exported span was.
const FLAG_SAMPLED: u32 = 0x1;

/// One export request of `spans` from `resource`.
pub fn request(resource: &Resource, spans: &[WeftSpan]) -> ExportTraceServiceRequest {
    let mut attributes = vec![kv("service.name", s(&resource.service_name))];
    attributes.extend(resource.attributes.iter().map(|(k, v)| kv(k, s(v))));
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(OtlpResource {
                attributes,
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: "weft-proxy".into(),
                    version: env!("CARGO_PKG_VERSION").into(),
                    ..Default::default()
                }),
                spans: spans.iter().map(span).collect(),
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
    }
}

/// One span: `{method}` named, CLIENT or SERVER, its status an error for no response, a 5xx,
/// or a client span's 4xx.
pub fn span(w: &WeftSpan) -> Span {
    let mut attributes = Vec::with_capacity(14);
    attributes.push(kv("http.request.method", s(w.method.as_str())));
    attributes.push(kv("url.path", s(&w.path)));
    attributes.push(kv("url.scheme", s("http")));
    if let Some(authority) = &w.authority {
        let (host, port) = split_authority(authority);
        attributes.push(kv("server.address", s(host)));
        if let Some(port) = port {
            attributes.push(kv("server.port", Value::IntValue(i64::from(port))));
        }
    }
    attributes.push(kv("network.protocol.version", s(protocol(w.version))));
    if let Some(status) = w.status {
        attributes.push(kv(
            "http.response.status_code",
            Value::IntValue(i64::from(status.as_u16())),
        ));
    }
    if let Some(peer) = w.peer {
        attributes.push(kv("network.peer.address", s(&peer.ip().to_string())));
        attributes.push(kv(
            "network.peer.port",
            Value::IntValue(i64::from(peer.port())),
        ));
    }
    if let Some(id) = &w.peer_identity {
        attributes.push(kv("weft.peer.identity", s(id)));
    }
    if let Some(route) = &w.route {
        attributes.push(kv("weft.route", s(route)));
    }
    if let Some(backend) = &w.backend {
        attributes.push(kv("weft.backend", s(backend)));
    }
    if w.retries > 0 {
        attributes.push(kv("weft.retries", Value::IntValue(i64::from(w.retries))));
    }
    if let Some(fault) = &w.fault {
        attributes.push(kv("weft.fault", s(fault)));
    }
    let error_type = match (w.error, w.status) {
        (Some(e), _) => Some(e.to_string()),
        (None, Some(st)) if w.is_error() => Some(st.as_u16().to_string()),
        _ => None,
    };
    if let Some(e) = &error_type {
        attributes.push(kv("error.type", s(e)));
    }
    Span {
        trace_id: w.trace_id.0.to_vec(),
        span_id: w.span_id.0.to_vec(),
        parent_span_id: w.parent.map(|p| p.0.to_vec()).unwrap_or_default(),
        flags: FLAG_SAMPLED,
        name: w.name().to_string(),
        kind: match w.kind {
            Kind::Client => SpanKind::Client as i32,
            Kind::Server => SpanKind::Server as i32,
        },
        start_time_unix_nano: unix_nanos(w.start),
        end_time_unix_nano: unix_nanos(w.end),
        attributes,
        status: Some(Status {
            message: error_type.unwrap_or_default(),
            code: if w.is_error() {
                StatusCode::Error as i32
            } else {
                StatusCode::Unset as i32
            },
        }),
        ..Default::default()
    }
}

fn kv(key: &str, value: Value) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

fn s(v: &str) -> Value {
    Value::StringValue(v.to_string())
}

fn protocol(v: Version) -> &'static str {
    match v {
        Version::HTTP_09 => "0.9",
        Version::HTTP_10 => "1.0",
        Version::HTTP_2 => "2",
        Version::HTTP_3 => "3",
        _ => "1.1",
    }
}

/// `host:port` or `[v6]:port` into its host and port (none when absent or not a port).
fn split_authority(a: &str) -> (&str, Option<u16>) {
    let (host, port) = match a.rsplit_once(':') {
        Some((h, p)) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => {
            (h, p.parse().ok())
        }
        _ => (a, None),
    };
    (host.trim_start_matches('[').trim_end_matches(']'), port)
}

fn unix_nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use http::{Method, StatusCode as Http};
    use weft_proxy_trace::{SpanId, TraceId};

    use super::*;

    fn weft_span(kind: Kind, status: Option<Http>) -> WeftSpan {
        let start = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        WeftSpan {
            trace_id: TraceId([7; 16]),
            span_id: SpanId([2; 8]),
            parent: Some(SpanId([1; 8])),
            kind,
            start,
            end: start + Duration::from_millis(3),
            method: Method::POST,
            path: "/orders/42".into(),
            authority: Some("api.shop.svc.cluster.local:8080".into()),
            version: Version::HTTP_2,
            status,
            error: None,
            peer: Some("198.18.0.7:15143".parse().expect("addr")),
            peer_identity: Some("spiffe://cluster.local/ns/shop/sa/api".into()),
            route: Some("shop/canary".into()),
            backend: Some("api-v2".into()),
            retries: 1,
            fault: None,
        }
    }

    fn attr<'a>(span: &'a Span, key: &str) -> Option<&'a Value> {
        span.attributes
            .iter()
            .find(|a| a.key == key)
            .and_then(|a| a.value.as_ref()?.value.as_ref())
    }

    #[test]
    fn a_client_span_carries_the_conventions_and_weft_attributes() {
        let p = span(&weft_span(Kind::Client, Some(Http::OK)));
        assert_eq!(p.trace_id, vec![7; 16]);
        assert_eq!(p.span_id, vec![2; 8]);
        assert_eq!(p.parent_span_id, vec![1; 8]);
        assert_eq!(p.kind, SpanKind::Client as i32);
        assert_eq!(p.name, "POST");
        assert_eq!(p.end_time_unix_nano - p.start_time_unix_nano, 3_000_000);
        assert_eq!(
            p.status.as_ref().map(|s| s.code),
            Some(StatusCode::Unset as i32)
        );
        let str_of = |k| match attr(&p, k) {
            Some(Value::StringValue(v)) => v.clone(),
            other => panic!("{k}: {other:?}"),
        };
        assert_eq!(str_of("http.request.method"), "POST");
        assert_eq!(str_of("url.path"), "/orders/42");
        assert_eq!(str_of("server.address"), "api.shop.svc.cluster.local");
        assert_eq!(attr(&p, "server.port"), Some(&Value::IntValue(8080)));
        assert_eq!(str_of("network.protocol.version"), "2");
        assert_eq!(
            attr(&p, "http.response.status_code"),
            Some(&Value::IntValue(200))
        );
        assert_eq!(str_of("network.peer.address"), "198.18.0.7");
        assert_eq!(
            str_of("weft.peer.identity"),
            "spiffe://cluster.local/ns/shop/sa/api"
        );
        assert_eq!(str_of("weft.route"), "shop/canary");
        assert_eq!(str_of("weft.backend"), "api-v2");
        assert_eq!(attr(&p, "weft.retries"), Some(&Value::IntValue(1)));
        assert!(attr(&p, "error.type").is_none());
    }

    #[test]
    fn errors_follow_the_conventions() {
        let client_404 = span(&weft_span(Kind::Client, Some(Http::NOT_FOUND)));
        assert_eq!(
            client_404.status.map(|s| s.code),
            Some(StatusCode::Error as i32)
        );
        let server_404 = span(&weft_span(Kind::Server, Some(Http::NOT_FOUND)));
        assert_eq!(
            server_404.status.map(|s| s.code),
            Some(StatusCode::Unset as i32)
        );
        let server_503 = span(&weft_span(Kind::Server, Some(Http::SERVICE_UNAVAILABLE)));
        assert_eq!(
            attr(&server_503, "error.type"),
            Some(&Value::StringValue("503".into()))
        );
        let mut none = weft_span(Kind::Client, None);
        none.error = Some("connect_timeout");
        let p = span(&none);
        assert_eq!(
            attr(&p, "error.type"),
            Some(&Value::StringValue("connect_timeout".into()))
        );
        assert_eq!(p.status.map(|s| s.code), Some(StatusCode::Error as i32));
        let mut root = weft_span(Kind::Server, Some(Http::OK));
        root.parent = None;
        assert!(span(&root).parent_span_id.is_empty());
    }

    #[test]
    fn authorities_split() {
        assert_eq!(split_authority("a:80"), ("a", Some(80)));
        assert_eq!(split_authority("[::1]:8080"), ("::1", Some(8080)));
        assert_eq!(split_authority("a"), ("a", None));
        assert_eq!(split_authority("a:"), ("a:", None));
        assert_eq!(split_authority("a:99999"), ("a", None));
    }

    #[test]
    fn the_request_names_its_resource() {
        let r = Resource {
            service_name: "api".into(),
            attributes: vec![("k8s.namespace.name", "shop".into())],
        };
        let req = request(&r, &[weft_span(Kind::Server, Some(Http::OK))]);
        let rs = &req.resource_spans[0];
        let attrs = &rs.resource.as_ref().expect("resource").attributes;
        assert_eq!(attrs[0].key, "service.name");
        assert_eq!(attrs[1].key, "k8s.namespace.name");
        assert_eq!(rs.scope_spans[0].spans.len(), 1);
        assert_eq!(
            rs.scope_spans[0].scope.as_ref().map(|s| s.name.as_str()),
            Some("weft-proxy")
        );
    }
}
