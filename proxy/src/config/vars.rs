//! The one list of variables the proxy reads, with their defaults and meanings: `--help` prints
//! it, the flags are derived from it, and a test checks that `docs/proxy-config.md` documents
//! each one.

use std::fmt;

use weft_pod::ids;

/// One configuration variable.
#[derive(Clone, Copy, Debug)]
pub struct Var {
    /// The environment variable's name.
    pub key: &'static str,
    /// Its default.
    pub default: DefaultValue,
    /// What it means.
    pub doc: &'static str,
}

/// A variable's default.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DefaultValue {
    /// None: unset means something of its own (the variable's doc says what).
    Unset,
    /// As it would be written.
    Text(&'static str),
    /// A port of the pod contract (`weft_pod::ids`), which the redirect rules rely on.
    Port(u16),
}

/// Names of the variables.
pub mod keys {
    pub const OUTBOUND_PORT: &str = "WEFT_OUTBOUND_PORT";
    pub const INBOUND_PORT: &str = "WEFT_INBOUND_PORT";
    pub const ADMIN_PORT: &str = "WEFT_ADMIN_PORT";
    pub const OUTBOUND_TARGET: &str = "WEFT_OUTBOUND_TARGET";
    pub const INBOUND_TARGET: &str = "WEFT_INBOUND_TARGET";
    pub const OPAQUE_PORTS: &str = weft_pod::settings::ENV_OPAQUE_PORTS;
    pub const DETECT_TIMEOUT: &str = "WEFT_DETECT_TIMEOUT";
    pub const CONNECT_TIMEOUT: &str = "WEFT_CONNECT_TIMEOUT";
    pub const HEADER_READ_TIMEOUT: &str = "WEFT_HEADER_READ_TIMEOUT";
    pub const MAX_HEADER_BYTES: &str = "WEFT_MAX_HEADER_BYTES";
    pub const UPSTREAM_IDLE_TIMEOUT: &str = "WEFT_UPSTREAM_IDLE_TIMEOUT";
    pub const UPSTREAM_MAX_IDLE: &str = "WEFT_UPSTREAM_MAX_IDLE";
    pub const SHUTDOWN_GRACE: &str = "WEFT_SHUTDOWN_GRACE";
    pub const THREADS: &str = "WEFT_THREADS";
    pub const LOG: &str = weft_pod::settings::ENV_LOG;
    pub const LOG_FORMAT: &str = "WEFT_LOG_FORMAT";
    pub const CONTROL_PLANE: &str = "WEFT_CONTROL_PLANE";
    pub const CONTROL_PLANE_IDENTITY: &str = "WEFT_CONTROL_PLANE_IDENTITY";
    pub const TRUST_DOMAIN: &str = "WEFT_TRUST_DOMAIN";
    pub const TRUST_ANCHORS: &str = "WEFT_TRUST_ANCHORS";
    pub const TRUST_ANCHORS_PEM: &str = "WEFT_TRUST_ANCHORS_PEM";
    pub const IDENTITY_TOKEN_FILE: &str = "WEFT_IDENTITY_TOKEN_FILE";
    pub const NAMESPACE: &str = "WEFT_NAMESPACE";
    pub const SERVICE_ACCOUNT: &str = "WEFT_SERVICE_ACCOUNT";
    pub const INBOUND_MTLS: &str = weft_pod::settings::ENV_INBOUND_MTLS;
    pub const MESH_DESTINATIONS: &str = "WEFT_MESH_DESTINATIONS";
    pub const MESH_HTTP1_UPGRADE: &str = "WEFT_MESH_HTTP1_UPGRADE";
    pub const DISCOVERY_TIMEOUT: &str = "WEFT_DISCOVERY_TIMEOUT";
    pub const DISCOVERY_IDLE_TIMEOUT: &str = "WEFT_DISCOVERY_IDLE_TIMEOUT";
    pub const BALANCER_DECAY: &str = "WEFT_BALANCER_DECAY";
    pub const EJECTION_FAILURES: &str = "WEFT_EJECTION_FAILURES";
    pub const EJECTION_MIN: &str = "WEFT_EJECTION_MIN";
    pub const EJECTION_MAX: &str = "WEFT_EJECTION_MAX";
    pub const REDIRECT_CHECK: &str = "WEFT_REDIRECT_CHECK";
    pub const REDIRECT_CHECK_PORT: &str = "WEFT_REDIRECT_CHECK_PORT";
    pub const TRACE_COLLECTOR: &str = "WEFT_TRACE_COLLECTOR";
    pub const TRACE_SAMPLING: &str = "WEFT_TRACE_SAMPLING";
    pub const TRACE_SERVICE_NAME: &str = "WEFT_TRACE_SERVICE_NAME";
    pub const WORKLOAD: &str = "WEFT_WORKLOAD";
    pub const TAP: &str = "WEFT_TAP";
    pub const TAP_IDENTITIES: &str = "WEFT_TAP_IDENTITIES";
}

/// The redirect check port: nothing listens on it, and the first rule of the `WEFT_OUTPUT` nat
/// chain redirects the proxy's own connections to `127.0.0.1` / `::1` on it to the outbound
/// port. The contract with `weft-init` and `weft-cni`.
pub const DEFAULT_REDIRECT_CHECK_PORT: u16 = ids::REDIRECT_CHECK_PORT;

/// Every variable the proxy reads, with its default and meaning.
pub const VARS: &[Var] = &[
    Var { key: keys::OUTBOUND_PORT, default: DefaultValue::Port(ids::OUTBOUND_PORT), doc: "Port of the outbound listener (the app's redirected outgoing TCP); bound on 127.0.0.1 and ::1." },
    Var { key: keys::INBOUND_PORT, default: DefaultValue::Port(ids::INBOUND_PORT), doc: "Port of the inbound listener (redirected incoming TCP); bound on all addresses, IPv4 and IPv6." },
    Var { key: keys::ADMIN_PORT, default: DefaultValue::Port(ids::ADMIN_PORT), doc: "Port of the admin server: /live, /ready, /metrics, /config, /log-level, POST /shutdown, /tap; bound on all addresses, changes and taps accepted from loopback only." },
    Var { key: keys::OUTBOUND_TARGET, default: DefaultValue::Unset, doc: "Explicit mode: send every outbound connection to this ip:port instead of its SO_ORIGINAL_DST. Unset: transparent (iptables REDIRECT)." },
    Var { key: keys::INBOUND_TARGET, default: DefaultValue::Unset, doc: "Explicit mode: send every inbound connection to this ip:port instead of its SO_ORIGINAL_DST. Unset: transparent." },
    Var { key: keys::OPAQUE_PORTS, default: DefaultValue::Text(ids::DEFAULT_OPAQUE_PORTS), doc: "Destination ports and ranges (25,587,8000-8100) forwarded as TCP with no protocol detection: server-speaks-first protocols. The syntax of the weft.dev/opaque-ports and skip-port annotations: spaces around items are ignored, an empty item (25,,587) is refused. Empty: none." },
    Var { key: keys::DETECT_TIMEOUT, default: DefaultValue::Text("10s"), doc: "How long to wait for a client's first bytes before forwarding the connection as opaque TCP (counted in weft_protocol_detect_timeouts_total)." },
    Var { key: keys::CONNECT_TIMEOUT, default: DefaultValue::Text("1s"), doc: "The longest a TCP connect to an upstream may take; past it an HTTP request is answered 504." },
    Var { key: keys::HEADER_READ_TIMEOUT, default: DefaultValue::Text("30s"), doc: "An HTTP/1 client must send a request's whole head within this time, or its connection is closed (slow-client protection). The clock also runs while a keep-alive connection waits for its next request, so it is the idle timeout of client connections too." },
    Var { key: keys::MAX_HEADER_BYTES, default: DefaultValue::Text("65536"), doc: "The largest request head accepted (at least 8192); HTTP/1 answers 431 past it." },
    Var { key: keys::UPSTREAM_IDLE_TIMEOUT, default: DefaultValue::Text("90s"), doc: "How long an idle pooled upstream connection is kept." },
    Var { key: keys::UPSTREAM_MAX_IDLE, default: DefaultValue::Text("64"), doc: "The most idle HTTP/1 connections pooled per upstream endpoint; for a peer proxy (the mesh hop) also the most HTTP/1 connections open to it, past which more concurrent HTTP/1 requests ride the shared HTTP/2 connection." },
    Var { key: keys::SHUTDOWN_GRACE, default: DefaultValue::Text("30s"), doc: "On SIGTERM, SIGINT or POST /shutdown: how long in-flight requests and connections may take to finish before the proxy exits." },
    Var { key: keys::THREADS, default: DefaultValue::Text("1"), doc: "Data-path worker threads (the admin server has its own thread)." },
    Var { key: keys::LOG, default: DefaultValue::Text("info"), doc: "Log filter in tracing's EnvFilter syntax (e.g. info,weft_proxy=debug); changeable at run time with PUT /log-level." },
    Var { key: keys::LOG_FORMAT, default: DefaultValue::Text("plain"), doc: "Log format: plain or json." },
    Var { key: keys::CONTROL_PLANE, default: DefaultValue::Unset, doc: "The control plane's gRPC address, host:port. Set: the proxy gets its certificate there and speaks mTLS to peer proxies. Unset: a plain pass-through proxy." },
    Var { key: keys::CONTROL_PLANE_IDENTITY, default: DefaultValue::Unset, doc: "The SPIFFE ID the control plane must present. Unset: spiffe://<WEFT_TRUST_DOMAIN>/ns/weft/sa/weft-control-plane." },
    Var { key: keys::TRUST_DOMAIN, default: DefaultValue::Text("cluster.local"), doc: "The trust domain of this proxy's identity; inbound mTLS clients must belong to it." },
    Var { key: keys::TRUST_ANCHORS, default: DefaultValue::Unset, doc: "PEM file of trust anchors (one or more), for peers and the control plane. With a control plane, this or WEFT_TRUST_ANCHORS_PEM is required." },
    Var { key: keys::TRUST_ANCHORS_PEM, default: DefaultValue::Unset, doc: "The trust anchors themselves (PEM), instead of a file: how the injector gives them to pods, since a ConfigMap cannot be mounted across namespaces. Set one of the two." },
    Var { key: keys::IDENTITY_TOKEN_FILE, default: DefaultValue::Unset, doc: "File holding the token that proves this workload's identity (a projected service-account token on Kubernetes), re-read at every renewal. Required with a control plane." },
    Var { key: keys::NAMESPACE, default: DefaultValue::Unset, doc: "The workload's namespace: the proxy asks for spiffe://<trust domain>/ns/<namespace>/sa/<service account>. Required with a control plane (the downward API on Kubernetes)." },
    Var { key: keys::SERVICE_ACCOUNT, default: DefaultValue::Unset, doc: "The workload's service account. Required with a control plane." },
    Var { key: keys::INBOUND_MTLS, default: DefaultValue::Text("permissive"), doc: "permissive: inbound plaintext from unmeshed clients is served; strict: only mesh mTLS is accepted, anything else is closed and counted in weft_inbound_connections_refused_total. Strict needs a control plane." },
    Var { key: keys::MESH_DESTINATIONS, default: DefaultValue::Unset, doc: "Static mesh map, ahead of discovery: comma list of ip:port=spiffe-id or ip:port=spiffe-id@proxy-ip:proxy-port. A connection to ip:port goes over mTLS to the peer proxy (default ip:15143), which must present spiffe-id. Needs a control plane." },
    Var { key: keys::MESH_HTTP1_UPGRADE, default: DefaultValue::Text("off"), doc: "How an app's HTTP/1 crosses the mTLS hop to a peer proxy. off: as HTTP/1 on a pool of mTLS connections to the peer, one request at a time each (ALPN weft.dev/h1; idle ones closed after 20s), which costs both proxies less CPU and latency per request. on: upgraded to HTTP/2 and multiplexed on the one shared connection to the peer (fewer connections and handshakes). HTTP/2, gRPC, opaque TCP and upgrades always use the shared connection." },
    Var { key: keys::DISCOVERY_TIMEOUT, default: DefaultValue::Text("2s"), doc: "With a control plane: how long the first connection to a destination waits for the control plane to say what it is; past it, that connection is forwarded as it is (later ones use the answer when it comes)." },
    Var { key: keys::DISCOVERY_IDLE_TIMEOUT, default: DefaultValue::Text("5m"), doc: "A destination no connection has used for this long stops being watched (its balancer state is dropped)." },
    Var { key: keys::BALANCER_DECAY, default: DefaultValue::Text("10s"), doc: "How long the load balancer remembers an endpoint's latency (the peak-EWMA time constant): a slow response raises the estimate at once, and it decays by 1/e over this time, so a shorter value forgives a moment's stall sooner. 0s keeps only the latest response." },
    Var { key: keys::EJECTION_FAILURES, default: DefaultValue::Text("5"), doc: "Consecutive failures (connect errors, resets, 5xx) that eject a Service endpoint from load balancing." },
    Var { key: keys::EJECTION_MIN, default: DefaultValue::Text("1s"), doc: "How long an endpoint is first ejected; each ejection in a row doubles it (with jitter) up to WEFT_EJECTION_MAX. After it, one probe request decides whether it returns." },
    Var { key: keys::EJECTION_MAX, default: DefaultValue::Text("30s"), doc: "The longest ejection." },
    Var { key: keys::REDIRECT_CHECK, default: DefaultValue::Text("off"), doc: "How often the proxy proves that the pod's iptables rules redirect outbound traffic to it, by connecting to 127.0.0.1 and ::1 on WEFT_REDIRECT_CHECK_PORT and expecting its own outbound listener to answer (first check at start; /ready answers 503 while it fails; weft_redirect_verified). A duration (pods get 5s), or off for loopback and explicit mode, where nothing is redirected. Needs transparent outbound (WEFT_OUTBOUND_TARGET unset)." },
    Var { key: keys::REDIRECT_CHECK_PORT, default: DefaultValue::Port(ids::REDIRECT_CHECK_PORT), doc: "The redirect check port: nothing listens on it; the first nat rule redirects the proxy's own connections to 127.0.0.1 and ::1 on it to the outbound port. The proxy never forwards a connection addressed there. Must match the rule set of weft-init and weft-cni." },
    Var { key: keys::WORKLOAD, default: DefaultValue::Unset, doc: "The workload this proxy's pod belongs to, kind/name (deployment/api, statefulset/db, pod/client): exported as weft_proxy_info{workload_kind,workload} so that rules and dashboards group a workload's pods (joined on the scrape's namespace and pod labels). The injector sets it from the pod's controller." },
    Var { key: keys::TRACE_COLLECTOR, default: DefaultValue::Unset, doc: "An OpenTelemetry collector's OTLP/gRPC address, host:port (plaintext). Set: each HTTP request's trace context (W3C traceparent, B3) is read and passed on, and sampled requests leave a span (CLIENT on the outbound side, SERVER on the inbound), exported in batches from a thread of its own; spans the collector cannot take are dropped and counted (weft_trace_spans_total). Unset: no tracing, trace headers pass through untouched." },
    Var { key: keys::TRACE_SAMPLING, default: DefaultValue::Text("0.01"), doc: "With a collector: the share of requests sampled when they start a trace here (no caller's decision), from 0 to 1. A caller's decision (traceparent's sampled flag, B3's) is always followed." },
    Var { key: keys::TAP, default: DefaultValue::Text("on"), doc: "on: GET /tap on the admin port streams the requests this proxy serves (weftctl tap, weftctl top) to a loopback client, at most 8 at once, each with a bounded queue (a slow reader loses events, counted in weft_tap_events_total{result=\"dropped\"}, and never delays a request); while nobody taps a request costs one atomic load. off: /tap answers 404." },
    Var { key: keys::TAP_IDENTITIES, default: DefaultValue::Unset, doc: "Comma list of SPIFFE IDs that may tap besides loopback clients: with a control plane, the admin port also takes mTLS (a connection that opens with a TLS handshake is terminated with the proxy's certificate and must present one of the mesh's), and /tap answers a caller whose SPIFFE ID is listed. Unset: loopback only." },
    Var { key: keys::TRACE_SERVICE_NAME, default: DefaultValue::Unset, doc: "The service.name of this proxy's spans. Unset: WEFT_SERVICE_ACCOUNT, else weft-proxy." },
];

impl DefaultValue {
    pub fn is_unset(&self) -> bool {
        *self == DefaultValue::Unset
    }
}

/// As it would be written; unset is empty.
impl fmt::Display for DefaultValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DefaultValue::Unset => Ok(()),
            DefaultValue::Text(text) => f.write_str(text),
            DefaultValue::Port(port) => write!(f, "{port}"),
        }
    }
}

/// The default of `key`, as it would be written; empty for a variable that is unset by default
/// (or unknown).
pub(super) fn default_of(key: &str) -> String {
    VARS.iter()
        .find(|v| v.key == key)
        .map_or_else(String::new, |v| v.default.to_string())
}
