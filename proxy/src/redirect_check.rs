//! The redirect self-check: the proxy proves, every few seconds, that the pod's iptables rules
//! send outbound traffic to it, because the worst failure of a mesh is traffic silently going
//! around it.
//!
//! The contract with the rule set of `weft-init` and `weft-cni`: the first rule of the
//! `WEFT_OUTPUT` nat chain redirects this UID's connections to `127.0.0.1` (and `::1`) on the
//! check port (15141, where nothing listens) to the outbound port. So a probe to that address
//! reaches this proxy's outbound listener if and only if the nat `OUTPUT` hook, the chain and its
//! redirect port are in place. The outbound listener recognises the probe by its original
//! destination and answers with this process's [`Token`]; a refusal, silence, or another
//! listener's bytes fail the check. A failure turns `/ready` to 503, sets
//! `weft_redirect_verified` to 0, and is logged once per transition with what to check.
//!
//! It does not prove that the app's catch-all rules are all present (they match other UIDs and
//! destinations): only the hook, the chain and the redirect port that they share.

use std::{
    fmt,
    net::{Ipv4Addr, Ipv6Addr, SocketAddr},
    sync::Arc,
    time::Duration,
};

use arc_swap::ArcSwap;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    time::{Instant, MissedTickBehavior},
};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};
use weft_proxy_metrics::{Family, Metrics, RedirectResult};
use weft_proxy_transport::{connect, ConnectError};

/// How long one probe may take, connect and answer together; also bounds writing the answer.
pub(crate) const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// Random bytes in a token; the answer is their lowercase hex.
const TOKEN_BYTES: usize = 16;

/// The most bytes of an answer read: a token, and enough to tell a longer answer from it.
const MAX_ANSWER: u64 = 2 * TOKEN_BYTES as u64 + 1;

/// What this process's outbound listener answers a probe with: 16 random bytes, in hex, made at
/// start. Not a secret (the app could read it too); it tells this proxy from any other listener.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) struct Token([u8; 2 * TOKEN_BYTES]);

impl Token {
    /// A fresh token from the system's random number generator.
    pub(crate) fn random() -> Result<Self, rustls::crypto::GetRandomFailed> {
        let mut bytes = [0u8; TOKEN_BYTES];
        rustls::crypto::ring::default_provider()
            .secure_random
            .fill(&mut bytes)?;
        Ok(Self::from_bytes(bytes))
    }

    fn from_bytes(bytes: [u8; TOKEN_BYTES]) -> Self {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut hex = [0u8; 2 * TOKEN_BYTES];
        for (i, b) in bytes.iter().enumerate() {
            hex[2 * i] = HEX[usize::from(b >> 4)];
            hex[2 * i + 1] = HEX[usize::from(b & 0xf)];
        }
        Self(hex)
    }

    fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(..)")
    }
}

/// The check addresses and the token: what the listeners recognise and the prober expects.
#[derive(Debug)]
pub(crate) struct CheckAddr {
    port: u16,
    token: Token,
}

impl CheckAddr {
    pub(crate) fn new(port: u16, token: Token) -> Self {
        Self { port, token }
    }

    /// Whether a connection's original destination is a check address: `127.0.0.1` or `::1` on
    /// the check port, the only addresses the check rule redirects. Such a connection is never
    /// forwarded, whether or not the check runs: the proxy's own connection there would be
    /// redirected back to it, a loop.
    pub(crate) fn is_check(&self, dst: SocketAddr) -> bool {
        dst.port() == self.port
            && (dst.ip() == Ipv4Addr::LOCALHOST || dst.ip() == Ipv6Addr::LOCALHOST)
    }

    /// The addresses to probe: IPv4 loopback, and IPv6 loopback when the proxy listens there
    /// (IPv6 traffic is redirected to `::1`, so it must be proved too).
    pub(crate) fn targets(&self, ipv6: bool) -> Vec<SocketAddr> {
        let mut targets = vec![SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))];
        if ipv6 {
            targets.push(SocketAddr::from((Ipv6Addr::LOCALHOST, self.port)));
        }
        targets
    }

    /// The probe that expects this process's token, naming `outbound_port` in its messages.
    pub(crate) fn probe(&self, outbound_port: u16, timeout: Duration) -> TcpProbe {
        TcpProbe {
            token: self.token,
            timeout,
            outbound_port,
        }
    }

    /// Answers a probe that reached the outbound listener: the token, then close.
    pub(crate) async fn answer(&self, mut stream: TcpStream) -> std::io::Result<()> {
        let write = async {
            stream.write_all(self.token.as_bytes()).await?;
            stream.shutdown().await
        };
        tokio::time::timeout(PROBE_TIMEOUT, write)
            .await
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))?
    }
}

/// Why a probe failed, worded for the operator: what it means and what to check.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ProbeError {
    #[error(
        "connecting to {addr} was refused, so outbound traffic is not being redirected to this \
         proxy; are the pod's iptables rules in place (weft-init or weft-cni), or did something \
         flush the nat table?"
    )]
    Refused { addr: SocketAddr },
    #[error(
        "connecting to {addr} timed out after {timeout:?}, so outbound traffic may not reach this \
         proxy; is a firewall rule dropping loopback traffic, or is the proxy's accept queue full?"
    )]
    ConnectTimeout { addr: SocketAddr, timeout: Duration },
    #[error(
        "{addr} accepted the connection but sent no answer within {timeout:?}: it reached some \
         other listener, not this proxy's outbound port {outbound_port} (is something listening \
         on the check port, or does the check rule redirect to another port?), or the proxy is \
         overloaded"
    )]
    NoAnswer {
        addr: SocketAddr,
        timeout: Duration,
        outbound_port: u16,
    },
    #[error(
        "{addr} closed the connection without answering: it reached some other listener, not \
         this proxy's outbound port {outbound_port}; does the check rule redirect to another \
         port?"
    )]
    Closed {
        addr: SocketAddr,
        outbound_port: u16,
    },
    #[error(
        "{addr} answered with {len} bytes that are not this proxy's token: the connection reached \
         some other listener, not this proxy's outbound port {outbound_port} (is something \
         listening on the check port, does the check rule redirect to another port, or does \
         another proxy share the pod's network namespace?)"
    )]
    WrongAnswer {
        addr: SocketAddr,
        len: usize,
        outbound_port: u16,
    },
    #[error("connecting to {addr} failed: {source}")]
    Connect {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("reading the answer from {addr} failed: {source}")]
    Read {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

impl ProbeError {
    /// The metric's `result` label.
    pub(crate) fn result(&self) -> RedirectResult {
        match self {
            ProbeError::Refused { .. } => RedirectResult::Refused,
            ProbeError::ConnectTimeout { .. } | ProbeError::NoAnswer { .. } => {
                RedirectResult::Timeout
            }
            ProbeError::Closed { .. } | ProbeError::WrongAnswer { .. } => {
                RedirectResult::WrongAnswer
            }
            ProbeError::Connect { .. } | ProbeError::Read { .. } => RedirectResult::Error,
        }
    }
}

/// One probe of one check address. A trait so that the checker's timing and transitions are
/// tested with scripted outcomes on a paused clock, without sockets.
pub(crate) trait Probe {
    async fn probe(&self, addr: SocketAddr) -> Result<(), ProbeError>;
}

/// The real probe: connect, read the answer to its end, compare it with the token.
#[derive(Debug)]
pub(crate) struct TcpProbe {
    token: Token,
    timeout: Duration,
    /// Named in the messages: where the check rule must redirect to.
    outbound_port: u16,
}

impl Probe for TcpProbe {
    async fn probe(&self, addr: SocketAddr) -> Result<(), ProbeError> {
        let deadline = Instant::now() + self.timeout;
        let mut stream = connect(addr, self.timeout).await.map_err(|e| match e {
            ConnectError::Refused { addr } => ProbeError::Refused { addr },
            ConnectError::TimedOut { addr, timeout } => {
                ProbeError::ConnectTimeout { addr, timeout }
            }
            ConnectError::Io { addr, source } => ProbeError::Connect { addr, source },
        })?;
        let mut answer = Vec::with_capacity(2 * TOKEN_BYTES);
        let mut limited = (&mut stream).take(MAX_ANSWER);
        match tokio::time::timeout_at(deadline, limited.read_to_end(&mut answer)).await {
            Err(_) => Err(ProbeError::NoAnswer {
                addr,
                timeout: self.timeout,
                outbound_port: self.outbound_port,
            }),
            Ok(Err(source)) => Err(ProbeError::Read { addr, source }),
            Ok(Ok(0)) => Err(ProbeError::Closed {
                addr,
                outbound_port: self.outbound_port,
            }),
            Ok(Ok(len)) if answer != self.token.as_bytes() => Err(ProbeError::WrongAnswer {
                addr,
                len,
                outbound_port: self.outbound_port,
            }),
            Ok(Ok(_)) => Ok(()),
        }
    }
}

/// The check's state as the admin server reports it (`/ready`, `/config`).
#[derive(Debug)]
pub struct RedirectStatus {
    interval: Duration,
    report: ArcSwap<Report>,
}

/// The outcome of the last check.
#[derive(Clone, Debug)]
struct Report {
    addresses: Vec<(SocketAddr, State)>,
    /// When the last check finished; `None` before the first.
    checked_at: Option<std::time::Instant>,
}

/// One check address's state.
#[derive(Clone, Debug, PartialEq, Eq)]
enum State {
    /// Not checked yet.
    Pending,
    Verified,
    /// The last probe failed: its result and message.
    Failed {
        result: RedirectResult,
        error: String,
    },
}

impl RedirectStatus {
    /// Every address pending.
    pub(crate) fn new(interval: Duration, targets: &[SocketAddr]) -> Self {
        let addresses = targets.iter().map(|a| (*a, State::Pending)).collect();
        Self {
            interval,
            report: ArcSwap::from_pointee(Report {
                addresses,
                checked_at: None,
            }),
        }
    }

    /// Why the proxy must not be ready, if it must not: a check address not (yet) verified.
    pub fn not_ready(&self) -> Option<String> {
        let report = self.report.load();
        let failures: Vec<&str> = report
            .addresses
            .iter()
            .filter_map(|(_, s)| match s {
                State::Failed { error, .. } => Some(error.as_str()),
                _ => None,
            })
            .collect();
        if !failures.is_empty() {
            return Some(format!(
                "traffic redirection not verified: {}",
                failures.join("; ")
            ));
        }
        report
            .addresses
            .iter()
            .any(|(_, s)| *s == State::Pending)
            .then(|| {
                "traffic redirection not verified yet: the first check has not finished".into()
            })
    }

    /// The `redirect_check` part of `/config`.
    pub fn view(&self) -> serde_json::Value {
        let report = self.report.load();
        let addresses: Vec<serde_json::Value> = report
            .addresses
            .iter()
            .map(|(addr, state)| {
                let (result, error) = match state {
                    State::Pending => ("pending", None),
                    State::Verified => (RedirectResult::Verified.as_str(), None),
                    State::Failed { result, error } => (result.as_str(), Some(error.as_str())),
                };
                serde_json::json!({ "address": addr.to_string(), "result": result, "error": error })
            })
            .collect();
        serde_json::json!({
            "enabled": true,
            "interval_seconds": self.interval.as_secs_f64(),
            "verified": report.addresses.iter().all(|(_, s)| *s == State::Verified),
            "seconds_since_check": report.checked_at.map(|t| t.elapsed().as_secs_f64()),
            "addresses": addresses,
        })
    }
}

/// What to log when one address's state changes: once per transition, never per check.
#[derive(Debug, PartialEq, Eq)]
enum Transition {
    /// Verified for the first time since start.
    Passed,
    /// Verified after failing.
    Recovered,
    /// Failed after passing, at the first check, or for a different reason than before.
    Failed,
}

fn transition(before: &State, after: &State) -> Option<Transition> {
    match (before, after) {
        (State::Pending, State::Verified) => Some(Transition::Passed),
        (State::Failed { .. }, State::Verified) => Some(Transition::Recovered),
        (State::Failed { result: was, .. }, State::Failed { result: is, .. }) if was == is => None,
        (_, State::Failed { .. }) => Some(Transition::Failed),
        (State::Verified, State::Verified) | (_, State::Pending) => None,
    }
}

/// Probes every check address each interval, one probe in flight at a time, and publishes the
/// outcome to the status, the metrics and the log.
#[derive(Debug)]
pub(crate) struct Checker<P> {
    pub(crate) probe: P,
    pub(crate) interval: Duration,
    pub(crate) status: Arc<RedirectStatus>,
    pub(crate) metrics: Arc<Metrics>,
}

impl<P: Probe> Checker<P> {
    /// Checks at once, then every interval (a slow check delays the next rather than overlapping
    /// it), until `shutdown` fires.
    pub(crate) async fn run(self, shutdown: CancellationToken) {
        let mut ticks = tokio::time::interval(self.interval);
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                () = shutdown.cancelled() => return,
                _ = ticks.tick() => {}
            }
            tokio::select! {
                biased;
                () = shutdown.cancelled() => return,
                () = self.check() => {}
            }
        }
    }

    /// Probes each address in turn and publishes the outcome.
    async fn check(&self) {
        let before = self.status.report.load_full();
        let mut addresses = Vec::with_capacity(before.addresses.len());
        for (addr, was) in &before.addresses {
            let family = if addr.is_ipv4() {
                Family::Ipv4
            } else {
                Family::Ipv6
            };
            let outcome = self.probe.probe(*addr).await;
            let result = outcome
                .as_ref()
                .map_or_else(ProbeError::result, |()| RedirectResult::Verified);
            self.metrics.redirect_probe(family, result);
            let state = match outcome {
                Ok(()) => State::Verified,
                Err(e) => State::Failed {
                    result,
                    error: e.to_string(),
                },
            };
            log(*addr, was, &state);
            addresses.push((*addr, state));
        }
        let verified = addresses.iter().all(|(_, s)| *s == State::Verified);
        self.metrics.redirect_verified(verified);
        self.status.report.store(Arc::new(Report {
            addresses,
            checked_at: Some(std::time::Instant::now()),
        }));
    }
}

fn log(addr: SocketAddr, before: &State, after: &State) {
    match (transition(before, after), after) {
        (Some(Transition::Passed), _) => info!(
            %addr,
            "redirect self-check passed: this proxy's own connection to {addr} was redirected \
             to its outbound listener"
        ),
        (Some(Transition::Recovered), _) => info!(
            %addr,
            "redirect self-check passed again: outbound traffic to {addr} is redirected to this \
             proxy"
        ),
        (Some(Transition::Failed), State::Failed { result, error }) => warn!(
            %addr,
            result = result.as_str(),
            "redirect self-check failed: {error}"
        ),
        (_, State::Failed { error, .. }) => {
            debug!(%addr, "redirect self-check still failing: {error}")
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests;
