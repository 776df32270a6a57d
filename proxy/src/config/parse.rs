//! Value parsers: each takes a trimmed value and returns what it means, or the reason it is
//! refused (the caller names the variable and the value).

use std::{collections::HashMap, net::SocketAddr, time::Duration};

use weft_certs::SpiffeId;
use weft_pod::ids;

use super::{MeshPeer, Target};

/// The shortest redirect check interval: a check costs two loopback connections.
pub const MIN_REDIRECT_CHECK_INTERVAL: Duration = Duration::from_millis(100);

/// `ip:port=spiffe-id[@proxy-ip:proxy-port],...`
pub(super) fn parse_mesh_destinations(v: &str) -> Result<HashMap<SocketAddr, MeshPeer>, String> {
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
            None => (rest, SocketAddr::new(dst.ip(), ids::INBOUND_PORT)),
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

pub(super) fn parse_port(v: &str) -> Result<u16, String> {
    v.parse::<u16>()
        .map_err(|_| "expected a port number from 0 to 65535".into())
}

pub(super) fn parse_on_off(v: &str) -> Result<bool, String> {
    match v.trim() {
        "on" => Ok(true),
        "off" => Ok(false),
        _ => Err("expected on or off".into()),
    }
}

pub(super) fn parse_target(v: &str) -> Result<Target, String> {
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
pub(super) fn parse_redirect_check(v: &str) -> Result<Option<Duration>, String> {
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
pub(super) fn parse_duration(v: &str) -> Result<Duration, String> {
    match parse_any_duration(v)? {
        Duration::ZERO => Err("must be greater than zero".into()),
        d => Ok(d),
    }
}

/// A duration with a unit; zero allowed.
pub(super) fn parse_any_duration(v: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(v)
        .map_err(|e| format!("expected a duration with a unit, like 500ms, 10s or 1m ({e})"))?;
    if d > Duration::from_secs(24 * 3600) {
        return Err("must be at most 24h".into());
    }
    Ok(d)
}
