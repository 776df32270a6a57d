//! SMI `TrafficSplit` (`split.smi-spec.io/v1alpha4`, and `v1alpha2`): the traffic sent to a
//! root Service, shared among backend Services of its namespace by weight. The older format
//! of a canary; [`crate::routes`] turns one into the same route as an HTTPRoute with one rule
//! and no match, which also splits opaque TCP per connection.
//!
//! Weights: an integer, or (as SMI's early versions wrote them and some tools still do) a
//! Kubernetes quantity string such as `"900m"` or `"1"`. Only the ratios matter, so every
//! weight is read exactly in thousandths and the set is divided by its greatest common divisor:
//! `900m`/`100m` becomes 9/1, and integer weights such as 90/10 become 9/1 too. Each weight,
//! so reduced, must be at most 1,000,000 (the HTTPRoute bound), which keeps the sum of 256
//! backends within a `u32`.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::{Deserialize, Serialize};

use crate::model::{is_dns_label, problem, Problem};

/// The SMI split API's group.
pub const GROUP: &str = "split.smi-spec.io";
/// Most backends of one split (the CRD's bound).
pub const MAX_BACKENDS: usize = 256;
/// Largest weight after reduction.
pub const MAX_WEIGHT: u64 = 1_000_000;

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TrafficSplit {
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: TrafficSplitSpec,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TrafficSplitSpec {
    /// The root Service clients call: a name in this namespace, or its DNS name.
    #[serde(default)]
    pub service: String,
    #[serde(default)]
    pub backends: Vec<TrafficSplitBackend>,
    /// v1alpha4: only traffic matching these route groups is split. Weft does not read
    /// HTTPRouteGroups; a split with matches is refused (an HTTPRoute says it better).
    #[serde(default)]
    pub matches: Vec<TrafficSplitMatch>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TrafficSplitBackend {
    pub service: String,
    pub weight: Weight,
}

/// A weight as written: an integer, or a quantity string.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Weight {
    Integer(i64),
    Quantity(String),
}

impl Default for Weight {
    fn default() -> Self {
        Weight::Integer(1)
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TrafficSplitMatch {
    pub api_group: Option<String>,
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub name: String,
}

impl k8s_openapi::Resource for TrafficSplit {
    // The storage version; v1alpha2 objects have the same fields but matches.
    const API_VERSION: &'static str = "split.smi-spec.io/v1alpha4";
    const GROUP: &'static str = GROUP;
    const KIND: &'static str = "TrafficSplit";
    const VERSION: &'static str = "v1alpha4";
    const URL_PATH_SEGMENT: &'static str = "trafficsplits";
    type Scope = k8s_openapi::NamespaceResourceScope;
}

impl k8s_openapi::ListableResource for TrafficSplit {
    const LIST_KIND: &'static str = "TrafficSplitList";
}

impl k8s_openapi::Metadata for TrafficSplit {
    type Ty = ObjectMeta;

    fn metadata(&self) -> &ObjectMeta {
        &self.metadata
    }

    fn metadata_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

/// A checked split: the root Service's name and each backend's name and reduced weight.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Split {
    pub root: String,
    pub backends: Vec<(String, u32)>,
}

/// Checks `ts` (in `namespace`) and reads its names and weights.
pub fn read_split(ts: &TrafficSplit, namespace: &str) -> Result<Split, Problem> {
    let spec = &ts.spec;
    if !spec.matches.is_empty() {
        return Err(problem(
            "spec.matches",
            "TrafficSplit matches (HTTPRouteGroup, TCPRoute) are not supported by Weft; \
             split a subset of requests with an HTTPRoute",
        ));
    }
    let root = service_name(&spec.service, namespace, "spec.service")?;
    if spec.backends.is_empty() || spec.backends.len() > MAX_BACKENDS {
        return Err(problem(
            "spec.backends",
            format!(
                "{} backends: 1-{MAX_BACKENDS} expected",
                spec.backends.len()
            ),
        ));
    }
    let mut names = Vec::with_capacity(spec.backends.len());
    let mut milli = Vec::with_capacity(spec.backends.len());
    for (i, b) in spec.backends.iter().enumerate() {
        let at = format!("spec.backends[{i}]");
        names.push(service_name(
            &b.service,
            namespace,
            &format!("{at}.service"),
        )?);
        milli.push(
            weight_milli(&b.weight).map_err(|reason| problem(&format!("{at}.weight"), reason))?,
        );
    }
    let divisor = milli.iter().copied().fold(0, gcd).max(1);
    let mut backends = Vec::with_capacity(names.len());
    for (i, (name, w)) in names.into_iter().zip(milli).enumerate() {
        let w = w / divisor;
        if w > MAX_WEIGHT {
            return Err(problem(
                &format!("spec.backends[{i}].weight"),
                format!(
                    "{w} after reducing the weights by their common divisor: at most {MAX_WEIGHT}"
                ),
            ));
        }
        // Bounded just above.
        backends.push((name, u32::try_from(w).unwrap_or(u32::MAX)));
    }
    Ok(Split { root, backends })
}

/// A Service named in a split: `name`, or `name.<namespace>[.svc[.<domain>]]`.
fn service_name(s: &str, namespace: &str, at: &str) -> Result<String, Problem> {
    let (name, rest) = s.split_once('.').unwrap_or((s, ""));
    let same_namespace = rest.is_empty()
        || rest == namespace
        || rest
            .strip_prefix(namespace)
            .is_some_and(|r| r == ".svc" || r.starts_with(".svc."));
    if !is_dns_label(name) || !same_namespace {
        return Err(problem(
            at,
            format!("{s:?} is not a Service of namespace {namespace} (a name, or name.{namespace}.svc...)"),
        ));
    }
    Ok(name.to_string())
}

/// A weight in thousandths.
fn weight_milli(w: &Weight) -> Result<u64, String> {
    let too_big = || format!("{w:?} is too large");
    match w {
        Weight::Integer(n) => u64::try_from(*n)
            .map_err(|_| format!("{n} is negative"))?
            .checked_mul(1000)
            .ok_or_else(too_big),
        Weight::Quantity(q) => parse_quantity_milli(q).ok_or_else(|| {
            format!("{q:?} is not a weight: an integer, or a quantity such as 900m or 1.5")
        }),
    }
}

/// `digits[.digits][m|k]` in thousandths, exactly, or `None`.
fn parse_quantity_milli(q: &str) -> Option<u64> {
    let (number, scale) = match q.as_bytes().last()? {
        b'm' => (&q[..q.len() - 1], 1u64),
        b'k' => (&q[..q.len() - 1], 1_000_000),
        _ => (q, 1000),
    };
    let (whole, frac) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() || whole.len() > 12 || frac.len() > 6 {
        return None;
    }
    if !whole
        .bytes()
        .chain(frac.bytes())
        .all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let mut value: u64 = whole.parse().ok()?;
    let mut denominator = 1u64;
    for d in frac.bytes() {
        value = value * 10 + u64::from(d - b'0');
        denominator *= 10;
    }
    let scaled = value.checked_mul(scale)?;
    // A fraction finer than one thousandth is not a whole number of thousandths.
    (scaled % denominator == 0).then_some(scaled / denominator)
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(yaml: &str) -> Result<Split, Problem> {
        let ts: TrafficSplit = serde_yaml::from_str(yaml).expect("a TrafficSplit");
        read_split(&ts, "shop")
    }

    #[test]
    fn weights_are_integers_or_quantities_reduced_to_their_ratio() {
        for (weights, want) in [
            ("[90, 10]", vec![9, 1]),
            ("['900m', '100m']", vec![9, 1]),
            ("['1', '500m']", vec![2, 1]),
            ("[1, '1.5']", vec![2, 3]),
            ("[0, 100]", vec![0, 1]),
            ("[0, 0]", vec![0, 0]),
            ("[3, 7]", vec![3, 7]),
            ("['2k', 1000]", vec![2, 1]),
        ] {
            let yaml = format!(
                "spec:\n  service: api\n  backends: [{}]\n",
                serde_yaml::from_str::<Vec<serde_yaml::Value>>(weights)
                    .expect("weights")
                    .iter()
                    .enumerate()
                    .map(|(i, w)| format!(
                        "{{service: v{i}, weight: {}}}",
                        serde_yaml::to_string(w).expect("yaml").trim()
                    ))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            let got = split(&yaml).expect(&yaml);
            assert_eq!(got.root, "api");
            let got: Vec<u32> = got.backends.iter().map(|b| b.1).collect();
            assert_eq!(got, want, "{weights}");
        }
    }

    #[test]
    fn bad_splits_name_the_field() {
        for (yaml, field, reason) in [
            ("spec: {service: api, backends: [{service: v1, weight: -1}]}", "spec.backends[0].weight", "negative"),
            ("spec: {service: api, backends: [{service: v1, weight: '1Ki'}]}", "spec.backends[0].weight", "not a weight"),
            ("spec: {service: api, backends: [{service: v1, weight: '0.5m'}]}", "spec.backends[0].weight", "not a weight"),
            ("spec: {service: api, backends: [{service: v1, weight: 2000001}, {service: v2, weight: 1}]}", "spec.backends[0].weight", "at most 1000000"),
            ("spec: {service: api, backends: []}", "spec.backends", "1-256"),
            ("spec: {service: api.other, backends: [{service: v1, weight: 1}]}", "spec.service", "not a Service of namespace shop"),
            ("spec: {service: api, backends: [{service: V1, weight: 1}]}", "spec.backends[0].service", "not a Service"),
            ("spec: {service: api, backends: [{service: v1, weight: 1}], matches: [{kind: HTTPRouteGroup, name: g}]}", "spec.matches", "not supported"),
        ] {
            let e = split(yaml).expect_err(yaml);
            assert_eq!(e.field, field, "{yaml}: {e}");
            assert!(e.reason.contains(reason), "{yaml}: {e}");
        }
    }

    #[test]
    fn a_service_may_be_named_by_its_dns_name_in_its_own_namespace() {
        for name in [
            "api",
            "api.shop",
            "api.shop.svc",
            "api.shop.svc.cluster.local",
        ] {
            assert_eq!(
                service_name(name, "shop", "f"),
                Ok("api".to_string()),
                "{name}"
            );
        }
        for name in ["api.shopx", "api.other.svc", "", "Api"] {
            assert!(service_name(name, "shop", "f").is_err(), "{name}");
        }
    }
}
