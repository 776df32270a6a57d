//! Traces in a real Jaeger (built from its Go module, `scripts/jaeger-build.sh`), from the mesh
//! on the reference CNI bridge: a call from `web` to the Service `api`, whose app calls the
//! Service `backend` (the lab app's call chain, passing the trace context on as an instrumented
//! app does), is one trace per request with a span for each proxy on the way, parents right.
//!
//! Jaeger runs in the node namespace on the bridge's gateway address; every proxy exports to it
//! with `WEFT_TRACE_COLLECTOR`. Needs what the netns tier needs, and Jaeger built (`make
//! jaeger-tools`); otherwise `SKIPPED:`, unless `WEFT_REQUIRE_NETNS_TESTS=1` or
//! `WEFT_REQUIRE_JAEGER_TESTS=1`.

mod support;

use std::{collections::BTreeSet, net::SocketAddr, time::Duration};

use weft_lab::{
    app::CALL_HEADER,
    http,
    jaeger::{self, Jaeger, Trace},
    spiffe_id, wait, Cluster, Pod, PodSpec, ServiceSpec, GATEWAY, HTTP_PORT,
};

const OTLP_PORT: u16 = 4317;

/// A meshed pod whose proxy samples every request and exports to the lab's Jaeger.
fn traced_pod(c: &Cluster, name: &str, sa: &str, app: Option<&str>) -> Pod {
    let collector = SocketAddr::from((GATEWAY, OTLP_PORT)).to_string();
    let mut spec = PodSpec::new("shop", name)
        .service_account(sa)
        .meshed()
        .proxy_env("WEFT_TRACE_COLLECTOR", &collector)
        .proxy_env("WEFT_TRACE_SAMPLING", "1");
    if let Some(app) = app {
        spec = spec.label("app", app);
    }
    c.pod(spec).unwrap_or_else(|e| panic!("pod {name}: {e}"))
}

/// The span of `service` of `kind` in `trace`.
fn span<'a>(trace: &'a Trace, service: &str, kind: &str) -> &'a jaeger::Span {
    trace
        .spans
        .iter()
        .find(|s| s.service == service && s.kind.as_deref() == Some(kind))
        .unwrap_or_else(|| panic!("no {kind} span of {service} in {trace:#?}"))
}

#[test]
fn a_call_chain_is_one_trace_with_a_span_per_proxy() {
    let test = "a_call_chain_is_one_trace_with_a_span_per_proxy";
    let Some(c) = support::cluster(test) else {
        return;
    };
    if !jaeger::should_run(test) {
        return;
    }
    let api = c
        .service(
            ServiceSpec::new("shop", "api")
                .selector("app", "api")
                .port("http", 80, HTTP_PORT),
        )
        .expect("api");
    let backend = c
        .service(
            ServiceSpec::new("shop", "backend")
                .selector("app", "backend")
                .port("http", 80, HTTP_PORT),
        )
        .expect("backend");
    let api_pod = traced_pod(&c, "api-1", "api", Some("api"));
    let backend_pod = traced_pod(&c, "db-1", "backend", Some("backend"));
    let web = traced_pod(&c, "web-1", "web", None);
    // The gateway address is the bridge's from the first pod on: Jaeger starts after them.
    let work = tempfile::tempdir().expect("tempdir");
    let jaeger = Jaeger::start(
        work.path(),
        SocketAddr::from((GATEWAY, OTLP_PORT)),
        "127.0.0.1:16686".parse().expect("addr"),
        Some(c.node()),
    )
    .expect("Jaeger starts in the node namespace");

    // Three requests as web's app would make them: none with a context, so web's proxy starts
    // each trace; one more from a B3 caller, who must find its own trace id in Jaeger.
    let chain = format!("{} {} /db", backend.addr(80), backend.host());
    let call = |extra: &[(&str, &str)]| {
        let mut headers = vec![(CALL_HEADER, chain.as_str())];
        headers.extend_from_slice(extra);
        let r = http::get_with(web.netns(), api.addr(80), &api.host(), "/orders", &headers)
            .expect("web calls api");
        assert_eq!(r.status, 200, "{r:?}");
        assert!(
            r.body.contains("> status=200") && r.body.contains("> pod=db-1"),
            "api's app reached the backend: {}",
            r.body
        );
    };
    for _ in 0..3 {
        call(&[]);
    }
    let b3_trace = "80f198ee56343ba864fe8b2a57d3eff7";
    call(&[("b3", &format!("{b3_trace}-e457b5a2e4d86bd1-1"))]);

    let traces = wait::until(
        "4 traces of 4 spans each in Jaeger",
        Duration::from_secs(30),
        || {
            let traces = jaeger.traces("web").ok()?;
            (traces.len() == 4 && traces.iter().all(|t| t.spans.len() == 4)).then_some(traces)
        },
    )
    .unwrap_or_else(|e| {
        // Each trace's id and its spans' services and kinds.
        let seen: Vec<(String, Vec<String>)> = jaeger
            .traces("web")
            .unwrap_or_default()
            .into_iter()
            .map(|t| {
                let spans = t
                    .spans
                    .into_iter()
                    .map(|s| format!("{} {}", s.service, s.kind.unwrap_or_default()))
                    .collect();
                (t.trace_id, spans)
            })
            .collect();
        let logs: String = [&web, &api_pod, &backend_pod]
            .iter()
            .map(|p| {
                let m = p.metrics().map(|m| {
                    ["weft_trace_spans_total", "weft_requests_total"]
                        .iter()
                        .flat_map(|n| {
                            m.matching(n, &[])
                                .map(|s| format!("{s:?}"))
                                .collect::<Vec<_>>()
                        })
                        .collect::<Vec<_>>()
                        .join("\n")
                });
                format!("{m:?}")
            })
            .collect::<Vec<_>>()
            .join("\n");
        let services = http::get(c.node(), jaeger.query_addr(), "127.0.0.1", "/api/services")
            .map(|r| r.body)
            .unwrap_or_default();
        panic!("{e}\nJaeger has: {seen:#?} (services {services})\nthe proxies' logs:\n{logs}")
    });

    for t in &traces {
        let web_client = span(t, "web", "client");
        let api_server = span(t, "api", "server");
        let api_client = span(t, "api", "client");
        let backend_server = span(t, "backend", "server");
        // web -> web's proxy -> api's proxy -> api's app -> api's proxy -> backend's proxy.
        assert_eq!(api_server.parent.as_ref(), Some(&web_client.span_id));
        assert_eq!(
            api_client.parent.as_ref(),
            Some(&api_server.span_id),
            "through the app"
        );
        assert_eq!(backend_server.parent.as_ref(), Some(&api_client.span_id));
        for s in [web_client, api_server, api_client, backend_server] {
            assert_eq!(s.operation, "GET");
            assert_eq!(
                s.tag("http.response.status_code"),
                Some(&200.into()),
                "{s:?}"
            );
        }
        let text =
            |s: &jaeger::Span, key: &str| s.tag(key).and_then(|v| v.as_str()).map(str::to_string);
        assert_eq!(text(api_server, "url.path").as_deref(), Some("/orders"));
        assert_eq!(text(backend_server, "url.path").as_deref(), Some("/db"));
        // Over mTLS: each server span names the identity that called it.
        let identity = |s: &jaeger::Span| text(s, "weft.peer.identity");
        assert_eq!(identity(api_server), Some(spiffe_id("shop", "web")));
        assert_eq!(identity(backend_server), Some(spiffe_id("shop", "api")));
        // And each client span names the identity and Service that served it.
        assert_eq!(identity(web_client), Some(spiffe_id("shop", "api")));
        assert_eq!(identity(api_client), Some(spiffe_id("shop", "backend")));
        assert_eq!(
            text(web_client, "weft.backend").as_deref(),
            Some("shop/api:80")
        );
        assert_eq!(
            text(api_client, "weft.backend").as_deref(),
            Some("shop/backend:80")
        );
    }
    let b3: Vec<&Trace> = traces.iter().filter(|t| t.trace_id == b3_trace).collect();
    assert_eq!(b3.len(), 1, "the B3 caller's trace");
    assert_eq!(
        span(b3[0], "web", "client").parent.as_deref(),
        Some("e457b5a2e4d86bd1"),
        "the B3 caller's span is the first proxy's parent"
    );
    let started_here: BTreeSet<&str> = traces
        .iter()
        .filter(|t| t.trace_id != b3_trace)
        .map(|t| t.trace_id.as_str())
        .collect();
    assert_eq!(started_here.len(), 3, "a trace of its own for each request");
}
