//! The proxy's configuration: every `WEFT_*` variable, parsed and validated before any port is
//! bound.
//!
//! Values come from a [`Source`]: the environment, command-line flags of the same meaning
//! (`--outbound-port 15140` is `WEFT_OUTBOUND_PORT=15140`; a flag wins over the environment), or
//! a `HashMap` in tests. [`VARS`] is the one list of variables; `weft-proxy --help` prints it and a
//! test checks that `docs/proxy-config.md` documents each one.

use std::{
    collections::HashMap, ffi::OsString, fmt, net::SocketAddr, path::PathBuf, time::Duration,
};

use weft_certs::SpiffeId;

use weft_proxy_http::{server::MIN_HEADER_BYTES, ClientSettings, ServerSettings};

/// Where configuration values come from.
pub trait Source {
    /// The raw value of `key`, if set.
    fn get(&self, key: &str) -> Option<String>;
}

impl Source for HashMap<String, String> {
    fn get(&self, key: &str) -> Option<String> {
        HashMap::get(self, key).cloned()
    }
}

/// The process environment.
#[derive(Clone, Copy, Debug, Default)]
pub struct Env;

impl Source for Env {
    fn get(&self, key: &str) -> Option<String> {
        std::env::var(key).ok()
    }
}

/// Looks in `first`, then in `second`.
#[derive(Debug)]
pub struct Layered<A, B>(pub A, pub B);

impl<A: Source, B: Source> Source for Layered<A, B> {
    fn get(&self, key: &str) -> Option<String> {
        self.0.get(key).or_else(|| self.1.get(key))
    }
}

/// One configuration variable.
#[derive(Clone, Copy, Debug)]
pub struct Var {
    /// The environment variable's name.
    pub key: &'static str,
    /// Its default, as it would be written; empty when unset means something.
    pub default: &'static str,
    /// What it means.
    pub doc: &'static str,
}

/// Names of the variables.
pub mod keys {
    pub const OUTBOUND_PORT: &str = "WEFT_OUTBOUND_PORT";
    pub const INBOUND_PORT: &str = "WEFT_INBOUND_PORT";
    pub const ADMIN_PORT: &str = "WEFT_ADMIN_PORT";
    pub const OUTBOUND_TARGET: &str = "WEFT_OUTBOUND_TARGET";
    pub const INBOUND_TARGET: &str = "WEFT_INBOUND_TARGET";
    pub const OPAQUE_PORTS: &str = "WEFT_OPAQUE_PORTS";
    pub const DETECT_TIMEOUT: &str = "WEFT_DETECT_TIMEOUT";
    pub const CONNECT_TIMEOUT: &str = "WEFT_CONNECT_TIMEOUT";
    pub const HEADER_READ_TIMEOUT: &str = "WEFT_HEADER_READ_TIMEOUT";
    pub const MAX_HEADER_BYTES: &str = "WEFT_MAX_HEADER_BYTES";
    pub const UPSTREAM_IDLE_TIMEOUT: &str = "WEFT_UPSTREAM_IDLE_TIMEOUT";
    pub const UPSTREAM_MAX_IDLE: &str = "WEFT_UPSTREAM_MAX_IDLE";
    pub const SHUTDOWN_GRACE: &str = "WEFT_SHUTDOWN_GRACE";
    pub const THREADS: &str = "WEFT_THREADS";
    pub const LOG: &str = "WEFT_LOG";
    pub const LOG_FORMAT: &str = "WEFT_LOG_FORMAT";
    pub const CONTROL_PLANE: &str = "WEFT_CONTROL_PLANE";
    pub const CONTROL_PLANE_IDENTITY: &str = "WEFT_CONTROL_PLANE_IDENTITY";
    pub const TRUST_DOMAIN: &str = "WEFT_TRUST_DOMAIN";
    pub const TRUST_ANCHORS: &str = "WEFT_TRUST_ANCHORS";
    pub const IDENTITY_TOKEN_FILE: &str = "WEFT_IDENTITY_TOKEN_FILE";
    pub const NAMESPACE: &str = "WEFT_NAMESPACE";
    pub const SERVICE_ACCOUNT: &str = "WEFT_SERVICE_ACCOUNT";
    pub const INBOUND_MTLS: &str = "WEFT_INBOUND_MTLS";
    pub const MESH_DESTINATIONS: &str = "WEFT_MESH_DESTINATIONS";
    pub const DISCOVERY_TIMEOUT: &str = "WEFT_DISCOVERY_TIMEOUT";
    pub const DISCOVERY_IDLE_TIMEOUT: &str = "WEFT_DISCOVERY_IDLE_TIMEOUT";
    pub const EJECTION_FAILURES: &str = "WEFT_EJECTION_FAILURES";
    pub const EJECTION_MIN: &str = "WEFT_EJECTION_MIN";
    pub const EJECTION_MAX: &str = "WEFT_EJECTION_MAX";
    pub const REDIRECT_CHECK: &str = "WEFT_REDIRECT_CHECK";
    pub const REDIRECT_CHECK_PORT: &str = "WEFT_REDIRECT_CHECK_PORT";
}

/// The redirect check port: nothing listens on it, and the first rule of the `WEFT_OUTPUT` nat
/// chain redirects the proxy's own connections to `127.0.0.1` / `::1` on it to the outbound
/// port. The contract with `weft-init` and `weft-cni`.
pub const DEFAULT_REDIRECT_CHECK_PORT: u16 = 15141;

/// The shortest redirect check interval: a check costs two loopback connections.
pub const MIN_REDIRECT_CHECK_INTERVAL: Duration = Duration::from_millis(100);

/// Every variable the proxy reads, with its default and meaning.
pub const VARS: &[Var] = &[
    Var { key: keys::OUTBOUND_PORT, default: "15140", doc: "Port of the outbound listener (the app's redirected outgoing TCP); bound on 127.0.0.1 and ::1." },
    Var { key: keys::INBOUND_PORT, default: "15143", doc: "Port of the inbound listener (redirected incoming TCP); bound on all addresses, IPv4 and IPv6." },
    Var { key: keys::ADMIN_PORT, default: "15190", doc: "Port of the admin server: /live, /ready, /metrics, /config, /log-level, POST /shutdown; bound on all addresses, changes accepted from loopback only." },
    Var { key: keys::OUTBOUND_TARGET, default: "", doc: "Explicit mode: send every outbound connection to this ip:port instead of its SO_ORIGINAL_DST. Unset: transparent (iptables REDIRECT)." },
    Var { key: keys::INBOUND_TARGET, default: "", doc: "Explicit mode: send every inbound connection to this ip:port instead of its SO_ORIGINAL_DST. Unset: transparent." },
    Var { key: keys::OPAQUE_PORTS, default: "25,587,3306,5432,6379,11211", doc: "Destination ports and ranges (a,b,c-d) forwarded as TCP with no protocol detection: server-speaks-first protocols. Empty: none." },
    Var { key: keys::DETECT_TIMEOUT, default: "10s", doc: "How long to wait for a client's first bytes before forwarding the connection as opaque TCP (counted in weft_protocol_detect_timeouts_total)." },
    Var { key: keys::CONNECT_TIMEOUT, default: "1s", doc: "The longest a TCP connect to an upstream may take; past it an HTTP request is answered 504." },
    Var { key: keys::HEADER_READ_TIMEOUT, default: "30s", doc: "An HTTP/1 client must send a request's whole head within this time, or its connection is closed (slow-client protection). The clock also runs while a keep-alive connection waits for its next request, so it is the idle timeout of client connections too." },
    Var { key: keys::MAX_HEADER_BYTES, default: "65536", doc: "The largest request head accepted (at least 8192); HTTP/1 answers 431 past it." },
    Var { key: keys::UPSTREAM_IDLE_TIMEOUT, default: "90s", doc: "How long an idle pooled upstream connection is kept." },
    Var { key: keys::UPSTREAM_MAX_IDLE, default: "64", doc: "The most idle HTTP/1 connections pooled per upstream endpoint." },
    Var { key: keys::SHUTDOWN_GRACE, default: "30s", doc: "On SIGTERM, SIGINT or POST /shutdown: how long in-flight requests and connections may take to finish before the proxy exits." },
    Var { key: keys::THREADS, default: "1", doc: "Data-path worker threads (the admin server has its own thread)." },
    Var { key: keys::LOG, default: "info", doc: "Log filter in tracing's EnvFilter syntax (e.g. info,weft_proxy=debug); changeable at run time with PUT /log-level." },
    Var { key: keys::LOG_FORMAT, default: "plain", doc: "Log format: plain or json." },
    Var { key: keys::CONTROL_PLANE, default: "", doc: "The control plane's gRPC address, host:port. Set: the proxy gets its certificate there and speaks mTLS to peer proxies. Unset: a plain pass-through proxy." },
    Var { key: keys::CONTROL_PLANE_IDENTITY, default: "", doc: "The SPIFFE ID the control plane must present. Unset: spiffe://<WEFT_TRUST_DOMAIN>/ns/weft/sa/weft-control-plane." },
    Var { key: keys::TRUST_DOMAIN, default: "cluster.local", doc: "The trust domain of this proxy's identity; inbound mTLS clients must belong to it." },
    Var { key: keys::TRUST_ANCHORS, default: "", doc: "PEM file of trust anchors (one or more), for peers and the control plane. Required with a control plane." },
    Var { key: keys::IDENTITY_TOKEN_FILE, default: "", doc: "File holding the token that proves this workload's identity (a projected service-account token on Kubernetes), re-read at every renewal. Required with a control plane." },
    Var { key: keys::NAMESPACE, default: "", doc: "The workload's namespace: the proxy asks for spiffe://<trust domain>/ns/<namespace>/sa/<service account>. Required with a control plane (the downward API on Kubernetes)." },
    Var { key: keys::SERVICE_ACCOUNT, default: "", doc: "The workload's service account. Required with a control plane." },
    Var { key: keys::INBOUND_MTLS, default: "permissive", doc: "permissive: inbound plaintext from unmeshed clients is served; strict: only mesh mTLS is accepted, anything else is closed and counted in weft_inbound_connections_refused_total. Strict needs a control plane." },
    Var { key: keys::MESH_DESTINATIONS, default: "", doc: "Static mesh map, ahead of discovery: comma list of ip:port=spiffe-id or ip:port=spiffe-id@proxy-ip:proxy-port. A connection to ip:port goes over mTLS to the peer proxy (default ip:15143), which must present spiffe-id. Needs a control plane." },
    Var { key: keys::DISCOVERY_TIMEOUT, default: "2s", doc: "With a control plane: how long the first connection to a destination waits for the control plane to say what it is; past it, that connection is forwarded as it is (later ones use the answer when it comes)." },
    Var { key: keys::DISCOVERY_IDLE_TIMEOUT, default: "5m", doc: "A destination no connection has used for this long stops being watched (its balancer state is dropped)." },
    Var { key: keys::EJECTION_FAILURES, default: "5", doc: "Consecutive failures (connect errors, resets, 5xx) that eject a Service endpoint from load balancing." },
    Var { key: keys::EJECTION_MIN, default: "1s", doc: "How long an endpoint is first ejected; each ejection in a row doubles it (with jitter) up to WEFT_EJECTION_MAX. After it, one probe request decides whether it returns." },
    Var { key: keys::EJECTION_MAX, default: "30s", doc: "The longest ejection." },
    Var { key: keys::REDIRECT_CHECK, default: "off", doc: "How often the proxy proves that the pod's iptables rules redirect outbound traffic to it, by connecting to 127.0.0.1 and ::1 on WEFT_REDIRECT_CHECK_PORT and expecting its own outbound listener to answer (first check at start; /ready answers 503 while it fails; weft_redirect_verified). A duration (pods get 5s), or off for loopback and explicit mode, where nothing is redirected. Needs transparent outbound (WEFT_OUTBOUND_TARGET unset)." },
    Var { key: keys::REDIRECT_CHECK_PORT, default: "15141", doc: "The redirect check port: nothing listens on it; the first nat rule redirects the proxy's own connections to 127.0.0.1 and ::1 on it to the outbound port. The proxy never forwards a connection addressed there. Must match the rule set of weft-init and weft-cni." },
];

/// How a listener finds where each connection goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// `SO_ORIGINAL_DST`, after an iptables REDIRECT.
    Transparent,
    /// A fixed address, for hosts without iptables.
    Explicit(SocketAddr),
}

/// Log output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Plain,
    /// One JSON object per line.
    Json,
}

/// The validated configuration.
#[derive(Clone, Debug)]
pub struct Config {
    pub outbound_port: u16,
    pub inbound_port: u16,
    pub admin_port: u16,
    pub outbound_target: Target,
    pub inbound_target: Target,
    pub opaque_ports: PortSet,
    pub detect_timeout: Duration,
    pub server: ServerSettings,
    pub client: ClientSettings,
    pub shutdown_grace: Duration,
    pub threads: usize,
    pub log: String,
    pub log_format: LogFormat,
    /// Set when a control plane is: the proxy's identity and mTLS.
    pub identity: Option<IdentityConfig>,
    pub inbound_mtls: MtlsMode,
    /// Destinations reached over the mesh hop, and the peer proxy and identity for each.
    pub mesh_destinations: HashMap<SocketAddr, MeshPeer>,
    /// Discovery, with a control plane.
    pub discovery: DiscoveryConfig,
    /// Load balancing over a Service's endpoints.
    pub balance: weft_proxy_balance::Settings,
    /// The port whose loopback connections the redirect check rule sends to the outbound port;
    /// reserved whether or not the check runs.
    pub redirect_check_port: u16,
    /// How often the redirection is checked; `None` when off.
    pub redirect_check: Option<Duration>,
}

/// How destinations are looked up.
#[derive(Clone, Debug)]
pub struct DiscoveryConfig {
    /// How long a first connection waits for an answer.
    pub timeout: Duration,
    /// How long an unused destination stays watched.
    pub idle_timeout: Duration,
}

/// Where the proxy's certificate comes from, and whom it trusts.
#[derive(Clone, Debug)]
pub struct IdentityConfig {
    pub control_plane: String,
    pub control_plane_id: SpiffeId,
    pub trust_anchors: PathBuf,
    pub token_file: PathBuf,
    pub id: SpiffeId,
}

/// What inbound accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MtlsMode {
    /// Mesh mTLS and plaintext from unmeshed clients.
    Permissive,
    /// Mesh mTLS only.
    Strict,
}

/// A meshed destination's peer proxy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MeshPeer {
    /// Where the peer proxy's inbound listener is.
    pub proxy: SocketAddr,
    /// The identity it must present.
    pub id: SpiffeId,
}

/// A configuration value that cannot be used: names the variable, the value and the reason.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A variable's value is invalid.
    #[error("{key}={value:?}: {reason}")]
    Invalid {
        key: &'static str,
        value: String,
        reason: String,
    },
    /// A command-line argument is not one of the known flags.
    #[error("unknown argument {0:?}; run with --help for the list of settings")]
    UnknownFlag(String),
    /// A flag was given without its value.
    #[error("flag --{0} needs a value")]
    MissingValue(String),
}

impl Config {
    /// Reads and validates every variable from `source`.
    pub fn from_source(source: &dyn Source) -> Result<Self, ConfigError> {
        let r = Reader { source };
        let threads = r.parse(keys::THREADS, |v| match v.parse::<usize>() {
            Ok(n @ 1..=256) => Ok(n),
            _ => Err("expected a whole number of threads from 1 to 256".into()),
        })?;
        let max_header_bytes = r.parse(keys::MAX_HEADER_BYTES, |v| match v.parse::<usize>() {
            Ok(n) if (MIN_HEADER_BYTES..=16 * 1024 * 1024).contains(&n) => Ok(n),
            _ => Err(format!(
                "expected a byte count from {MIN_HEADER_BYTES} to 16777216"
            )),
        })?;
        let log = r.value(keys::LOG);
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&log) {
            return Err(r.invalid(keys::LOG, &log, format!("not a log filter: {e}")));
        }
        Self {
            outbound_port: r.parse(keys::OUTBOUND_PORT, parse_port)?,
            inbound_port: r.parse(keys::INBOUND_PORT, parse_port)?,
            admin_port: r.parse(keys::ADMIN_PORT, parse_port)?,
            outbound_target: r.parse(keys::OUTBOUND_TARGET, parse_target)?,
            inbound_target: r.parse(keys::INBOUND_TARGET, parse_target)?,
            opaque_ports: r.parse(keys::OPAQUE_PORTS, |v| v.parse::<PortSet>())?,
            detect_timeout: r.parse(keys::DETECT_TIMEOUT, parse_duration)?,
            server: ServerSettings {
                header_read_timeout: r.parse(keys::HEADER_READ_TIMEOUT, parse_duration)?,
                max_header_bytes,
            },
            client: ClientSettings {
                connect_timeout: r.parse(keys::CONNECT_TIMEOUT, parse_duration)?,
                idle_timeout: r.parse(keys::UPSTREAM_IDLE_TIMEOUT, parse_duration)?,
                max_idle_per_endpoint: r.parse(keys::UPSTREAM_MAX_IDLE, |v| {
                    v.parse::<usize>()
                        .map_err(|_| "expected a whole number".to_string())
                })?,
            },
            shutdown_grace: r.parse(keys::SHUTDOWN_GRACE, parse_any_duration)?,
            threads,
            log,
            log_format: r.parse(keys::LOG_FORMAT, |v| match v {
                "plain" => Ok(LogFormat::Plain),
                "json" => Ok(LogFormat::Json),
                _ => Err("expected plain or json".into()),
            })?,
            identity: identity(&r)?,
            inbound_mtls: r.parse(keys::INBOUND_MTLS, |v| match v {
                "permissive" => Ok(MtlsMode::Permissive),
                "strict" => Ok(MtlsMode::Strict),
                _ => Err("expected permissive or strict".into()),
            })?,
            mesh_destinations: r.parse(keys::MESH_DESTINATIONS, parse_mesh_destinations)?,
            discovery: DiscoveryConfig {
                timeout: r.parse(keys::DISCOVERY_TIMEOUT, parse_duration)?,
                idle_timeout: r.parse(keys::DISCOVERY_IDLE_TIMEOUT, parse_duration)?,
            },
            balance: weft_proxy_balance::Settings {
                failure_threshold: r.parse(keys::EJECTION_FAILURES, |v| {
                    v.parse::<u32>()
                        .ok()
                        .filter(|n| *n > 0)
                        .ok_or_else(|| "expected a whole number above 0".to_string())
                })?,
                min_ejection: r.parse(keys::EJECTION_MIN, parse_duration)?,
                max_ejection: r.parse(keys::EJECTION_MAX, parse_duration)?,
                ..weft_proxy_balance::Settings::default()
            },
            redirect_check_port: r.parse(keys::REDIRECT_CHECK_PORT, |v| {
                v.parse::<u16>()
                    .ok()
                    .filter(|p| *p != 0)
                    .ok_or_else(|| "expected a port number from 1 to 65535".to_string())
            })?,
            redirect_check: r.parse(keys::REDIRECT_CHECK, parse_redirect_check)?,
        }
        .checked(&r)
    }

    /// Checks settings that only make sense together.
    fn checked(self, r: &Reader<'_>) -> Result<Self, ConfigError> {
        let check_port = self.redirect_check_port;
        for (key, port) in [
            (keys::OUTBOUND_PORT, self.outbound_port),
            (keys::INBOUND_PORT, self.inbound_port),
            (keys::ADMIN_PORT, self.admin_port),
        ] {
            if port == check_port {
                return Err(r.invalid(
                    keys::REDIRECT_CHECK_PORT,
                    &r.value(keys::REDIRECT_CHECK_PORT),
                    format!("the same port as {key}; nothing may listen on the check port"),
                ));
            }
        }
        if self.redirect_check.is_some() && self.outbound_target != Target::Transparent {
            return Err(r.invalid(
                keys::REDIRECT_CHECK,
                &r.value(keys::REDIRECT_CHECK),
                format!(
                    "checks the iptables redirection, which explicit mode ({} set) does not use; \
                     set it to off",
                    keys::OUTBOUND_TARGET
                ),
            ));
        }
        if self.balance.max_ejection < self.balance.min_ejection {
            return Err(r.invalid(
                keys::EJECTION_MAX,
                &r.value(keys::EJECTION_MAX),
                format!("shorter than {}", keys::EJECTION_MIN),
            ));
        }
        if self.identity.is_none() {
            let needs = |key: &'static str, why: &str| {
                r.invalid(
                    key,
                    &r.value(key),
                    format!("{why} needs {} (a certificate)", keys::CONTROL_PLANE),
                )
            };
            if self.inbound_mtls == MtlsMode::Strict {
                return Err(needs(keys::INBOUND_MTLS, "strict mode"));
            }
            if !self.mesh_destinations.is_empty() {
                return Err(needs(keys::MESH_DESTINATIONS, "mTLS to peers"));
            }
        }
        Ok(self)
    }

    /// The default configuration: every variable unset.
    pub fn defaults() -> Result<Self, ConfigError> {
        Self::from_source(&HashMap::new())
    }
}

/// What the command line asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Command {
    /// Run with these flag values (keys are `WEFT_*` names).
    Run(HashMap<String, String>),
    /// Print the settings and exit.
    Help,
    /// Print the version and exit.
    Version,
}

/// Parses `--kebab-name VALUE` or `--kebab-name=VALUE` into `WEFT_KEBAB_NAME`, accepting only
/// names in [`VARS`].
pub fn parse_args(args: impl IntoIterator<Item = OsString>) -> Result<Command, ConfigError> {
    let mut flags = HashMap::new();
    let mut args = args.into_iter().map(|a| a.to_string_lossy().into_owned());
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "-h" | "--help" => return Ok(Command::Help),
            "-V" | "--version" => return Ok(Command::Version),
            _ => {}
        }
        let Some(flag) = arg.strip_prefix("--") else {
            return Err(ConfigError::UnknownFlag(arg));
        };
        let (name, inline) = match flag.split_once('=') {
            Some((n, v)) => (n, Some(v.to_string())),
            None => (flag, None),
        };
        let key = format!("WEFT_{}", name.replace('-', "_").to_ascii_uppercase());
        if !VARS.iter().any(|v| v.key == key) {
            return Err(ConfigError::UnknownFlag(arg));
        }
        let value = match inline {
            Some(v) => v,
            None => args
                .next()
                .ok_or_else(|| ConfigError::MissingValue(name.to_string()))?,
        };
        flags.insert(key, value);
    }
    Ok(Command::Run(flags))
}

/// The `--help` text: every variable with its flag, default and meaning.
pub fn help() -> String {
    let mut out = String::from(
        "weft-proxy: the Weft sidecar proxy\n\n\
         Every setting is an environment variable, or a flag of the same name\n\
         (WEFT_OUTBOUND_PORT is --outbound-port). A flag wins over the environment.\n\n",
    );
    for v in VARS {
        let flag = v.key["WEFT_".len()..]
            .to_ascii_lowercase()
            .replace('_', "-");
        let default = if v.default.is_empty() {
            "unset"
        } else {
            v.default
        };
        out.push_str(&format!(
            "  {} (--{flag}), default {default}\n      {}\n",
            v.key, v.doc
        ));
    }
    out
}

/// The identity settings, all required once a control plane is named.
fn identity(r: &Reader<'_>) -> Result<Option<IdentityConfig>, ConfigError> {
    let control_plane = r.value(keys::CONTROL_PLANE).trim().to_string();
    if control_plane.is_empty() {
        return Ok(None);
    }
    if control_plane
        .rsplit_once(':')
        .and_then(|(h, p)| (!h.is_empty()).then_some(p))
        .and_then(|p| p.parse::<u16>().ok())
        .is_none()
    {
        return Err(r.invalid(
            keys::CONTROL_PLANE,
            &control_plane,
            "expected host:port".into(),
        ));
    }
    let required = |key: &'static str| {
        let v = r.value(key).trim().to_string();
        if v.is_empty() {
            Err(r.invalid(
                key,
                "",
                format!("required when {} is set", keys::CONTROL_PLANE),
            ))
        } else {
            Ok(v)
        }
    };
    let trust_domain = r.value(keys::TRUST_DOMAIN).trim().to_string();
    let id = SpiffeId::new(
        &trust_domain,
        &required(keys::NAMESPACE)?,
        &required(keys::SERVICE_ACCOUNT)?,
    )
    .map_err(|e| {
        r.invalid(
            keys::NAMESPACE,
            &r.value(keys::NAMESPACE),
            format!("with {}: {e}", keys::SERVICE_ACCOUNT),
        )
    })?;
    let cp_id = r.value(keys::CONTROL_PLANE_IDENTITY).trim().to_string();
    let control_plane_id = if cp_id.is_empty() {
        SpiffeId::new(&trust_domain, "weft", "weft-control-plane")
            .map_err(|e| r.invalid(keys::TRUST_DOMAIN, &trust_domain, e.to_string()))?
    } else {
        cp_id
            .parse::<SpiffeId>()
            .map_err(|e| r.invalid(keys::CONTROL_PLANE_IDENTITY, &cp_id, e.to_string()))?
    };
    Ok(Some(IdentityConfig {
        control_plane,
        control_plane_id,
        trust_anchors: PathBuf::from(required(keys::TRUST_ANCHORS)?),
        token_file: PathBuf::from(required(keys::IDENTITY_TOKEN_FILE)?),
        id,
    }))
}

/// `ip:port=spiffe-id[@proxy-ip:proxy-port],...`
fn parse_mesh_destinations(v: &str) -> Result<HashMap<SocketAddr, MeshPeer>, String> {
    let mut map = HashMap::new();
    for item in v.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let (dst, rest) = item
            .split_once('=')
            .ok_or_else(|| format!("{item:?}: expected ip:port=spiffe-id[@proxy-ip:port]"))?;
        let dst: SocketAddr = dst
            .trim()
            .parse()
            .map_err(|_| format!("{item:?}: {dst:?} is not ip:port"))?;
        let (id, proxy) = match rest.split_once('@') {
            Some((id, proxy)) => (
                id,
                proxy
                    .trim()
                    .parse::<SocketAddr>()
                    .map_err(|_| format!("{item:?}: {proxy:?} is not ip:port"))?,
            ),
            None => (rest, SocketAddr::new(dst.ip(), 15143)),
        };
        let id = id
            .trim()
            .parse::<SpiffeId>()
            .map_err(|e| format!("{item:?}: {e}"))?;
        if map.insert(dst, MeshPeer { proxy, id }).is_some() {
            return Err(format!("{dst} is listed twice"));
        }
    }
    Ok(map)
}

struct Reader<'a> {
    source: &'a dyn Source,
}

impl Reader<'_> {
    fn value(&self, key: &'static str) -> String {
        self.source
            .get(key)
            .unwrap_or_else(|| default_of(key).to_string())
    }

    fn parse<T>(
        &self,
        key: &'static str,
        f: impl FnOnce(&str) -> Result<T, String>,
    ) -> Result<T, ConfigError> {
        let value = self.value(key);
        f(value.trim()).map_err(|reason| self.invalid(key, &value, reason))
    }

    fn invalid(&self, key: &'static str, value: &str, reason: String) -> ConfigError {
        ConfigError::Invalid {
            key,
            value: value.to_string(),
            reason,
        }
    }
}

fn default_of(key: &str) -> &'static str {
    VARS.iter().find(|v| v.key == key).map_or("", |v| v.default)
}

fn parse_port(v: &str) -> Result<u16, String> {
    v.parse::<u16>()
        .map_err(|_| "expected a port number from 0 to 65535".into())
}

fn parse_target(v: &str) -> Result<Target, String> {
    if v.is_empty() {
        return Ok(Target::Transparent);
    }
    match v.parse::<SocketAddr>() {
        Ok(a) if a.port() != 0 => Ok(Target::Explicit(a)),
        _ => Err(
            "expected ip:port (e.g. 127.0.0.1:8080 or [::1]:8080), or unset for transparent mode"
                .into(),
        ),
    }
}

/// `off`, or an interval of at least [`MIN_REDIRECT_CHECK_INTERVAL`].
fn parse_redirect_check(v: &str) -> Result<Option<Duration>, String> {
    if v.eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    let d = parse_duration(v).map_err(|e| format!("expected off or an interval: {e}"))?;
    if d < MIN_REDIRECT_CHECK_INTERVAL {
        return Err(format!(
            "expected off or an interval of at least {MIN_REDIRECT_CHECK_INTERVAL:?}"
        ));
    }
    Ok(Some(d))
}

/// A duration with a unit (`500ms`, `10s`, `1m`), greater than zero.
fn parse_duration(v: &str) -> Result<Duration, String> {
    match parse_any_duration(v)? {
        Duration::ZERO => Err("must be greater than zero".into()),
        d => Ok(d),
    }
}

/// A duration with a unit; zero allowed.
fn parse_any_duration(v: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(v)
        .map_err(|e| format!("expected a duration with a unit, like 500ms, 10s or 1m ({e})"))?;
    if d > Duration::from_secs(24 * 3600) {
        return Err("must be at most 24h".into());
    }
    Ok(d)
}

/// A set of TCP ports, from a list of ports and inclusive ranges: `25,587,3306-3310`.
#[derive(Clone, PartialEq, Eq)]
pub struct PortSet {
    /// One bit per port: a lookup per accepted connection is one load.
    bits: Box<[u64; 1024]>,
}

impl PortSet {
    /// The empty set.
    pub fn empty() -> Self {
        Self {
            bits: Box::new([0; 1024]),
        }
    }

    /// Whether `port` is in the set.
    pub fn contains(&self, port: u16) -> bool {
        self.bits[usize::from(port / 64)] & (1 << (port % 64)) != 0
    }

    fn insert(&mut self, port: u16) {
        self.bits[usize::from(port / 64)] |= 1 << (port % 64);
    }

    fn iter(&self) -> impl Iterator<Item = u16> + '_ {
        (0..=u16::MAX).filter(|p| self.contains(*p))
    }
}

impl std::str::FromStr for PortSet {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let mut set = PortSet::empty();
        for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            let port = |p: &str| {
                p.trim()
                    .parse::<u16>()
                    .ok()
                    .filter(|p| *p != 0)
                    .ok_or_else(|| format!("{p:?} is not a port from 1 to 65535"))
            };
            let (lo, hi) = match item.split_once('-') {
                Some((lo, hi)) => (port(lo)?, port(hi)?),
                None => (port(item)?, port(item)?),
            };
            if lo > hi {
                return Err(format!("range {item:?} runs backwards"));
            }
            for p in lo..=hi {
                set.insert(p);
            }
        }
        Ok(set)
    }
}

impl fmt::Debug for PortSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

#[cfg(test)]
mod tests;
