//! A meshed pod's proxy settings, from its annotations and its namespace's, as the injector
//! applies them (and `weftctl lab`, which runs pods as the injector would make them):
//!
//! | annotation | on | becomes |
//! |---|---|---|
//! | `weft.dev/opaque-ports` | pod | `WEFT_OPAQUE_PORTS` (a port list; replaces the default list) |
//! | `weft.dev/proxy-log-level` | pod | `WEFT_LOG` (a log filter: `warn`, `info,weft_proxy=debug`) |
//! | `weft.dev/mtls` | namespace | `WEFT_INBOUND_MTLS` (`permissive` or `strict`) |
//! | `weft.dev/proxy-cpu-limit` | pod | the proxy container's CPU limit (a quantity: `500m`) |
//! | `weft.dev/proxy-memory-limit` | pod | its memory limit (a quantity: `128Mi`) |
//! | `weft.dev/skip-*` | pod | checked here; the redirection (`weft-init`, `weft-cni`) reads them |
//!
//! Every value is checked: a pod whose annotation cannot be used is refused with the annotation's
//! name and the reason, never meshed with a setting quietly dropped.

use std::{collections::BTreeMap, fmt};

use crate::{annotations as a, CidrList, PortList};

/// The proxy's variable for [`a::OPAQUE_PORTS`] (the proxy's config names it too).
pub const ENV_OPAQUE_PORTS: &str = "WEFT_OPAQUE_PORTS";
/// The proxy's variable for [`a::PROXY_LOG_LEVEL`].
pub const ENV_LOG: &str = "WEFT_LOG";
/// The proxy's variable for [`a::MTLS`].
pub const ENV_INBOUND_MTLS: &str = "WEFT_INBOUND_MTLS";

/// The longest log filter accepted: a log filter is a line of config, not a document.
const MAX_LOG_FILTER: usize = 256;

/// What a pod's annotations ask of its proxy.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProxySettings {
    /// `WEFT_*` variables for the proxy, in a fixed order.
    pub env: Vec<(&'static str, String)>,
    /// The proxy container's CPU limit, in millicores.
    pub cpu_limit_millis: Option<u64>,
    /// The proxy container's memory limit, in bytes.
    pub memory_limit_bytes: Option<u64>,
}

/// An annotation whose value cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettingError {
    /// The annotation's name.
    pub annotation: &'static str,
    /// Whether it sits on the pod or on its namespace.
    pub on: On,
    /// Why it was refused.
    pub reason: String,
}

/// Where an annotation sits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum On {
    Pod,
    Namespace,
}

impl fmt::Display for SettingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let on = match self.on {
            On::Pod => "pod",
            On::Namespace => "namespace",
        };
        write!(f, "{on} annotation {}: {}", self.annotation, self.reason)
    }
}

impl std::error::Error for SettingError {}

/// The settings of a meshed pod with annotations `pod`, in a namespace with annotations
/// `namespace`; the first annotation that cannot be used refuses them all.
pub fn proxy_settings(
    pod: &BTreeMap<String, String>,
    namespace: &BTreeMap<String, String>,
) -> Result<ProxySettings, SettingError> {
    let get = |key: &str| pod.get(key).map(|v| v.trim());
    let refuse = |annotation, on, reason: String| SettingError {
        annotation,
        on,
        reason,
    };
    for key in [a::SKIP_INBOUND_PORTS, a::SKIP_OUTBOUND_PORTS] {
        if let Some(v) = get(key) {
            PortList::parse(v).map_err(|e| refuse(key, On::Pod, e.to_string()))?;
        }
    }
    if let Some(v) = get(a::SKIP_OUTBOUND_CIDRS) {
        CidrList::parse(v).map_err(|e| refuse(a::SKIP_OUTBOUND_CIDRS, On::Pod, e.to_string()))?;
    }
    let mut settings = ProxySettings::default();
    if let Some(v) = get(a::OPAQUE_PORTS) {
        let list =
            PortList::parse(v).map_err(|e| refuse(a::OPAQUE_PORTS, On::Pod, e.to_string()))?;
        settings.env.push((ENV_OPAQUE_PORTS, list.to_string()));
    }
    if let Some(v) = get(a::PROXY_LOG_LEVEL) {
        let filter = log_filter(v).map_err(|e| refuse(a::PROXY_LOG_LEVEL, On::Pod, e))?;
        settings.env.push((ENV_LOG, filter));
    }
    if let Some(v) = namespace.get(a::MTLS).map(|v| v.trim()) {
        if v != "permissive" && v != "strict" {
            return Err(refuse(
                a::MTLS,
                On::Namespace,
                format!("{:?}: expected permissive or strict", cut(v)),
            ));
        }
        settings.env.push((ENV_INBOUND_MTLS, v.to_string()));
    }
    if let Some(v) = get(a::PROXY_CPU_LIMIT) {
        let millis = Quantity::parse(v)
            .and_then(|q| q.ceil_scaled(3))
            .filter(|m| *m > 0)
            .ok_or_else(|| {
                refuse(
                    a::PROXY_CPU_LIMIT,
                    On::Pod,
                    format!(
                        "{:?} is not a positive CPU quantity (e.g. 500m, 1, 1.5)",
                        cut(v)
                    ),
                )
            })?;
        settings.cpu_limit_millis = Some(millis);
    }
    if let Some(v) = get(a::PROXY_MEMORY_LIMIT) {
        let bytes = Quantity::parse(v)
            .and_then(|q| q.ceil_scaled(0))
            .filter(|b| *b > 0)
            .ok_or_else(|| {
                refuse(
                    a::PROXY_MEMORY_LIMIT,
                    On::Pod,
                    format!(
                        "{:?} is not a positive memory quantity (e.g. 128Mi, 1G)",
                        cut(v)
                    ),
                )
            })?;
        settings.memory_limit_bytes = Some(bytes);
    }
    Ok(settings)
}

/// A log filter as the proxy's `WEFT_LOG` reads it: comma-separated directives, each a level or
/// `target=level`, targets being Rust module paths; returned with the blanks around directives
/// removed.
fn log_filter(v: &str) -> Result<String, String> {
    const LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "off"];
    if v.len() > MAX_LOG_FILTER {
        return Err(format!("longer than {MAX_LOG_FILTER} characters"));
    }
    if v.is_empty() {
        return Err("empty: expected a level (trace, debug, info, warn, error, off) or target=level directives".into());
    }
    let mut filter = String::with_capacity(v.len());
    for directive in v.split(',') {
        let directive = directive.trim();
        let (target, level) = match directive.split_once('=') {
            Some((t, l)) => (Some(t), l),
            None => (None, directive),
        };
        if !LEVELS.contains(&level.to_ascii_lowercase().as_str()) {
            return Err(format!(
                "{:?}: {:?} is not a level (trace, debug, info, warn, error, off)",
                cut(directive),
                cut(level)
            ));
        }
        if let Some(t) = target {
            let ok = !t.is_empty()
                && t.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':' || c == '-');
            if !ok {
                return Err(format!(
                    "{:?}: {:?} is not a module path",
                    cut(directive),
                    cut(t)
                ));
            }
        }
        if !filter.is_empty() {
            filter.push(',');
        }
        filter.push_str(directive);
    }
    Ok(filter)
}

fn cut(v: &str) -> String {
    crate::quoted(v)
}

/// A Kubernetes resource quantity (`500m`, `1.5`, `128Mi`, `1e3`), as an exact decimal:
/// `digits × 10^exp10 × 2^exp2`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quantity {
    digits: u128,
    exp10: i32,
    exp2: u32,
}

impl Quantity {
    /// Parses the quantity syntax of Kubernetes (`resource.Quantity`) for non-negative values:
    /// a decimal number (at most 18 significant digits here) and an optional suffix: binary
    /// (`Ki` .. `Ei`), decimal (`m`, `k`, `M` .. `E`) or an exponent (`e3`, `E-2`).
    pub fn parse(text: &str) -> Option<Quantity> {
        let text = text.strip_prefix('+').unwrap_or(text);
        let number_end = text
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(text.len());
        let (number, suffix) = text.split_at(number_end);
        let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
        if whole.is_empty() && fraction.is_empty() || fraction.contains('.') {
            return None;
        }
        let all = whole.trim_start_matches('0').len() + fraction.len();
        if all > 18 {
            return None;
        }
        let mut digits: u128 = 0;
        for b in whole.bytes().chain(fraction.bytes()) {
            digits = digits * 10 + u128::from(b - b'0');
        }
        let mut exp10 = -i32::try_from(fraction.len()).ok()?;
        let mut exp2 = 0;
        match suffix {
            "" => {}
            "m" => exp10 -= 3,
            "k" => exp10 += 3,
            "M" => exp10 += 6,
            "G" => exp10 += 9,
            "T" => exp10 += 12,
            "P" => exp10 += 15,
            "E" => exp10 += 18,
            "Ki" => exp2 = 10,
            "Mi" => exp2 = 20,
            "Gi" => exp2 = 30,
            "Ti" => exp2 = 40,
            "Pi" => exp2 = 50,
            "Ei" => exp2 = 60,
            _ => {
                let exp = suffix.strip_prefix(['e', 'E'])?;
                let digits_only = exp.strip_prefix(['+', '-']).unwrap_or(exp);
                if digits_only.is_empty()
                    || digits_only.len() > 3
                    || !digits_only.bytes().all(|b| b.is_ascii_digit())
                {
                    return None;
                }
                exp10 += exp.parse::<i32>().ok()?;
            }
        }
        Some(Quantity {
            digits,
            exp10,
            exp2,
        })
    }

    /// The value × 10^`scale`, rounded up to a whole number (as Kubernetes rounds a quantity
    /// to its smallest unit); `None` past `u64`.
    pub fn ceil_scaled(&self, scale: i32) -> Option<u64> {
        let mut value = self.digits.checked_mul(1u128.checked_shl(self.exp2)?)?;
        let exp = self.exp10.checked_add(scale)?;
        if value == 0 {
            return Some(0);
        }
        if exp >= 0 {
            for _ in 0..exp {
                value = value.checked_mul(10)?;
                if value > u128::from(u64::MAX) {
                    return None;
                }
            }
        } else {
            for _ in 0..exp.unsigned_abs() {
                if value == 0 {
                    break;
                }
                value = value.div_ceil(10);
                if value == 1 {
                    break;
                }
            }
        }
        u64::try_from(value).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn annotations_become_the_proxys_variables() {
        let pod = map(&[
            (a::OPAQUE_PORTS, " 7000, 25 "),
            (a::PROXY_LOG_LEVEL, "info, weft_proxy=debug"),
            (a::PROXY_CPU_LIMIT, "500m"),
            (a::PROXY_MEMORY_LIMIT, "64Mi"),
            (a::SKIP_OUTBOUND_CIDRS, "192.0.2.0/24"),
        ]);
        let ns = map(&[(a::MTLS, "strict")]);
        let s = proxy_settings(&pod, &ns).expect("usable annotations");
        assert_eq!(
            s.env,
            vec![
                (ENV_OPAQUE_PORTS, "25,7000".to_string()),
                (ENV_LOG, "info,weft_proxy=debug".to_string()),
                (ENV_INBOUND_MTLS, "strict".to_string()),
            ]
        );
        assert_eq!(s.cpu_limit_millis, Some(500));
        assert_eq!(s.memory_limit_bytes, Some(64 << 20));
        assert_eq!(
            proxy_settings(&map(&[]), &map(&[])),
            Ok(ProxySettings::default())
        );
    }

    #[test]
    fn a_value_that_cannot_be_used_refuses_the_pod_by_name() {
        type Pairs<'a> = &'a [(&'a str, &'a str)];
        let cases: [(Pairs<'_>, Pairs<'_>, &str, On, &str); 8] = [
            (
                &[(a::OPAQUE_PORTS, "25,,587")],
                &[],
                a::OPAQUE_PORTS,
                On::Pod,
                "empty",
            ),
            (
                &[(a::SKIP_INBOUND_PORTS, "70000")],
                &[],
                a::SKIP_INBOUND_PORTS,
                On::Pod,
                "70000",
            ),
            (
                &[(a::SKIP_OUTBOUND_CIDRS, "10.0.0.0/33")],
                &[],
                a::SKIP_OUTBOUND_CIDRS,
                On::Pod,
                "10.0.0.0/33",
            ),
            (
                &[(a::PROXY_LOG_LEVEL, "loud")],
                &[],
                a::PROXY_LOG_LEVEL,
                On::Pod,
                "not a level",
            ),
            (
                &[(a::PROXY_LOG_LEVEL, "a b=info")],
                &[],
                a::PROXY_LOG_LEVEL,
                On::Pod,
                "module path",
            ),
            (
                &[],
                &[(a::MTLS, "STRICT!")],
                a::MTLS,
                On::Namespace,
                "permissive or strict",
            ),
            (
                &[(a::PROXY_CPU_LIMIT, "0")],
                &[],
                a::PROXY_CPU_LIMIT,
                On::Pod,
                "positive CPU",
            ),
            (
                &[(a::PROXY_MEMORY_LIMIT, "12XB")],
                &[],
                a::PROXY_MEMORY_LIMIT,
                On::Pod,
                "memory quantity",
            ),
        ];
        for (pod, ns, annotation, on, says) in cases {
            let e = proxy_settings(&map(pod), &map(ns)).expect_err("refused");
            assert_eq!((e.annotation, e.on), (annotation, on), "{pod:?} {ns:?}");
            assert!(e.to_string().contains(says), "{e} should say {says:?}");
        }
    }

    #[test]
    fn quantities_read_as_kubernetes_reads_them() {
        let cpu = |s: &str| Quantity::parse(s).and_then(|q| q.ceil_scaled(3));
        let bytes = |s: &str| Quantity::parse(s).and_then(|q| q.ceil_scaled(0));
        assert_eq!(cpu("500m"), Some(500));
        assert_eq!(cpu("1"), Some(1000));
        assert_eq!(cpu("1.5"), Some(1500));
        assert_eq!(cpu("0.1"), Some(100));
        assert_eq!(cpu("100u"), None);
        assert_eq!(cpu("1e-4"), Some(1), "rounded up to the smallest unit");
        assert_eq!(bytes("128Mi"), Some(128 << 20));
        assert_eq!(bytes("1G"), Some(1_000_000_000));
        assert_eq!(bytes("1.5Ki"), Some(1536));
        assert_eq!(bytes("1e3"), Some(1000));
        assert_eq!(bytes("+2k"), Some(2000));
        assert_eq!(bytes("16Ei"), None, "past u64");
        for bad in [
            "", ".", "1..2", "-1", "1 Mi", "Mi", "1e", "1e1000", "12XB", "1.2.3",
        ] {
            assert_eq!(
                Quantity::parse(bad).and_then(|q| q.ceil_scaled(0)),
                None,
                "{bad:?}"
            );
        }
    }
}
