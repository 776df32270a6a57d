//! The proxy's configuration: every `WEFT_*` variable, parsed and validated before any port is
//! bound.
//!
//! Values come from a [`Source`]: the environment, command-line flags of the same meaning
//! (`--outbound-port 15140` is `WEFT_OUTBOUND_PORT=15140`; a flag wins over the environment), or
//! a `HashMap` in tests. [`VARS`] is the one list of variables; `weft-proxy --help` prints it and a
//! test checks that `docs/proxy-config.md` documents each one.
//!
//! What the proxy shares with the rest of the mesh (its default ports, the port-list syntax of
//! `WEFT_OPAQUE_PORTS` and its default) is the pod contract, `weft_pod`.
//!
//! # Layout
//! - this file: [`Config`] and its parts, read and checked together by [`Config::from_source`].
//! - `source`: [`Source`] and its implementations ([`Env`], [`Layered`], `HashMap`), and the
//!   reader that falls back to defaults and names the variable in every error.
//! - `vars`: [`VARS`], the table of every variable with its default and doc, and [`keys`].
//! - `parse`: the value parsers (ports, targets, durations, the mesh map).
//! - `args`: the command line ([`parse_args`]) and `--help` ([`help`]).

mod args;
mod parse;
mod source;
mod vars;

use std::{collections::HashMap, net::SocketAddr, path::PathBuf, time::Duration};

use weft_certs::SpiffeId;
use weft_proxy_http::{server::MIN_HEADER_BYTES, ClientSettings, ServerSettings};

pub use args::{help, parse_args, Command, AWAIT_READY_TIMEOUT};
pub use parse::MIN_REDIRECT_CHECK_INTERVAL;
pub use source::{Env, Layered, Source};
pub use vars::{keys, DefaultValue, Var, DEFAULT_REDIRECT_CHECK_PORT, VARS};
pub use weft_pod::PortSet;

use parse::{
    parse_any_duration, parse_duration, parse_mesh_destinations, parse_on_off, parse_port,
    parse_redirect_check, parse_target,
};
use source::Reader;

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
    /// Whether the apps' HTTP/1 crosses the mesh hop as HTTP/2 on the shared connection
    /// instead of as HTTP/1 on pooled connections.
    pub mesh_http1_upgrade: bool,
    /// Discovery, with a control plane.
    pub discovery: DiscoveryConfig,
    /// Load balancing over a Service's endpoints.
    pub balance: weft_proxy_balance::Settings,
    /// The port whose loopback connections the redirect check rule sends to the outbound port;
    /// reserved whether or not the check runs.
    pub redirect_check_port: u16,
    /// How often the redirection is checked; `None` when off.
    pub redirect_check: Option<Duration>,
    /// Tracing, when a collector is set.
    pub trace: Option<TraceConfig>,
    /// The pod's workload (kind, name), when the injector said.
    pub workload: Option<(String, String)>,
    /// Whether `/tap` serves.
    pub tap: bool,
    /// SPIFFE IDs that may tap over mTLS, besides loopback clients.
    pub tap_identities: Vec<String>,
}

/// Where spans go and how requests are sampled.
#[derive(Clone, Debug)]
pub struct TraceConfig {
    /// The collector's OTLP/gRPC address, `host:port`.
    pub collector: String,
    /// The share of requests that start a trace here and are sampled.
    pub sampling: f64,
    /// The spans' `service.name`.
    pub service_name: String,
}

/// How destinations are looked up.
#[derive(Clone, Debug)]
pub struct DiscoveryConfig {
    /// How long a first connection waits for an answer.
    pub timeout: Duration,
    /// How long an unused destination stays watched.
    pub idle_timeout: Duration,
}

/// Where the trust anchors are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TrustAnchors {
    /// A PEM file (`WEFT_TRUST_ANCHORS`).
    File(PathBuf),
    /// The PEM itself (`WEFT_TRUST_ANCHORS_PEM`).
    Pem(String),
}

/// Where the proxy's certificate comes from, and whom it trusts.
#[derive(Clone, Debug)]
pub struct IdentityConfig {
    pub control_plane: String,
    pub control_plane_id: SpiffeId,
    pub trust_anchors: TrustAnchors,
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
            opaque_ports: r.parse(keys::OPAQUE_PORTS, |v| {
                v.parse::<PortSet>().map_err(|e| e.to_string())
            })?,
            detect_timeout: r.parse(keys::DETECT_TIMEOUT, parse_duration)?,
            server: ServerSettings {
                header_read_timeout: r.parse(keys::HEADER_READ_TIMEOUT, parse_duration)?,
                max_header_bytes,
                trace: None,
                tap: None,
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
            mesh_http1_upgrade: r.parse(keys::MESH_HTTP1_UPGRADE, parse_on_off)?,
            discovery: DiscoveryConfig {
                timeout: r.parse(keys::DISCOVERY_TIMEOUT, parse_duration)?,
                idle_timeout: r.parse(keys::DISCOVERY_IDLE_TIMEOUT, parse_duration)?,
            },
            balance: weft_proxy_balance::Settings {
                decay: r.parse(keys::BALANCER_DECAY, parse_any_duration)?,
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
            trace: trace(&r)?,
            workload: r.parse(keys::WORKLOAD, parse_workload)?,
            tap: r.parse(keys::TAP, parse_on_off)?,
            tap_identities: r.parse(keys::TAP_IDENTITIES, |v| {
                v.split(',')
                    .map(str::trim)
                    .filter(|id| !id.is_empty())
                    .map(|id| {
                        id.parse::<SpiffeId>()
                            .map(|id| id.to_string())
                            .map_err(|e| format!("{id:?} is not a SPIFFE ID: {e}"))
                    })
                    .collect()
            })?,
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
            if !self.tap_identities.is_empty() {
                return Err(needs(keys::TAP_IDENTITIES, "tapping over mTLS"));
            }
        }
        Ok(self)
    }

    /// The default configuration: every variable unset.
    pub fn defaults() -> Result<Self, ConfigError> {
        Self::from_source(&HashMap::new())
    }
}

/// The identity settings, all required once a control plane is named.
/// `kind/name`, or unset (empty).
fn parse_workload(v: &str) -> Result<Option<(String, String)>, String> {
    let v = v.trim();
    if v.is_empty() {
        return Ok(None);
    }
    let Some((kind, name)) = v.split_once('/') else {
        return Err("expected kind/name, such as deployment/api".into());
    };
    let kind_ok = !kind.is_empty()
        && kind.len() <= 63
        && kind
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    let name_ok = !name.is_empty()
        && name.len() <= 253
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
    if !kind_ok || !name_ok {
        return Err(
            "expected kind/name: a lowercase kind, then a Kubernetes object name (lowercase \
             letters, digits, '-' and '.')"
                .into(),
        );
    }
    Ok(Some((kind.to_string(), name.to_string())))
}

/// Tracing, when `WEFT_TRACE_COLLECTOR` is set.
fn trace(r: &Reader<'_>) -> Result<Option<TraceConfig>, ConfigError> {
    let collector = r.value(keys::TRACE_COLLECTOR).trim().to_string();
    if collector.is_empty() {
        return Ok(None);
    }
    let port = collector
        .rsplit_once(':')
        .and_then(|(h, p)| (!h.is_empty()).then_some(p))
        .and_then(|p| p.parse::<u16>().ok());
    if port.is_none_or(|p| p == 0) {
        return Err(r.invalid(
            keys::TRACE_COLLECTOR,
            &collector,
            "expected host:port (the collector's OTLP/gRPC port, 4317 by convention)".into(),
        ));
    }
    let sampling = r.parse(keys::TRACE_SAMPLING, |v| match v.trim().parse::<f64>() {
        Ok(p) if (0.0..=1.0).contains(&p) => Ok(p),
        _ => Err("expected a share from 0 to 1, such as 0.01".into()),
    })?;
    let service_name = [keys::TRACE_SERVICE_NAME, keys::SERVICE_ACCOUNT]
        .iter()
        .map(|k| r.value(k).trim().to_string())
        .find(|v| !v.is_empty())
        .unwrap_or_else(|| "weft-proxy".into());
    Ok(Some(TraceConfig {
        collector,
        sampling,
        service_name,
    }))
}

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
        trust_anchors: trust_anchors(r)?,
        token_file: PathBuf::from(required(keys::IDENTITY_TOKEN_FILE)?),
        id,
    }))
}

/// `WEFT_TRUST_ANCHORS` or `WEFT_TRUST_ANCHORS_PEM`: exactly one.
fn trust_anchors(r: &Reader<'_>) -> Result<TrustAnchors, ConfigError> {
    let file = r.value(keys::TRUST_ANCHORS).trim().to_string();
    let pem = r.value(keys::TRUST_ANCHORS_PEM).trim().to_string();
    match (file.is_empty(), pem.is_empty()) {
        (false, true) => Ok(TrustAnchors::File(PathBuf::from(file))),
        (true, false) => Ok(TrustAnchors::Pem(pem)),
        (true, true) => Err(r.invalid(
            keys::TRUST_ANCHORS,
            "",
            format!(
                "required when {} is set (or {})",
                keys::CONTROL_PLANE,
                keys::TRUST_ANCHORS_PEM
            ),
        )),
        (false, false) => Err(r.invalid(
            keys::TRUST_ANCHORS_PEM,
            "(PEM)",
            format!("set {} or this, not both", keys::TRUST_ANCHORS),
        )),
    }
}

#[cfg(test)]
mod tests;
