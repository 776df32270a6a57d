//! Whether a pod is meshed: the one decision the CNI (which pods get redirect rules) and the
//! control plane's index (which endpoints are reached over mTLS) must make alike, or traffic is
//! sent as mTLS to a pod whose proxy never sees it, or in plaintext around a proxy that expects
//! mTLS.
//!
//! A pod is meshed when it was injected: it carries the `weft.dev/injected` annotation or runs a
//! container named `weft-proxy`; unless its `weft.dev/inject` annotation is `disabled`, which
//! keeps it out whatever else it carries.

use std::{collections::BTreeMap, fmt};

use crate::{annotations, ids};

/// Whether a pod is meshed, and why not.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    Mesh,
    Skip(SkipReason),
}

/// Why a pod is not meshed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SkipReason {
    /// Its `weft.dev/inject` annotation is `disabled`.
    Disabled,
    /// Neither the `weft.dev/injected` annotation nor a `weft-proxy` container.
    NotInjected,
}

/// Decides from the pod's annotations and the names of its containers.
pub fn decide<'a>(
    annotations: &BTreeMap<String, String>,
    containers: impl IntoIterator<Item = &'a str>,
) -> Decision {
    if annotations.get(annotations::INJECT).map(|v| v.trim()) == Some(annotations::DISABLED) {
        return Decision::Skip(SkipReason::Disabled);
    }
    if annotations.contains_key(annotations::INJECTED)
        || containers.into_iter().any(|c| c == ids::PROXY_CONTAINER)
    {
        Decision::Mesh
    } else {
        Decision::Skip(SkipReason::NotInjected)
    }
}

impl Decision {
    pub fn is_meshed(&self) -> bool {
        *self == Decision::Mesh
    }
}

/// Completes "the pod is not meshed: ...".
impl fmt::Display for SkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SkipReason::Disabled => write!(
                f,
                "its {} annotation is {:?}",
                annotations::INJECT,
                annotations::DISABLED
            ),
            SkipReason::NotInjected => write!(
                f,
                "it was not injected: no {} annotation, no {} container",
                annotations::INJECTED,
                ids::PROXY_CONTAINER
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn annotations(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn injected_pods_are_meshed_unless_disabled() {
        assert_eq!(
            decide(&annotations(&[("weft.dev/injected", "0.1.0")]), []),
            Decision::Mesh
        );
        assert_eq!(
            decide(&annotations(&[]), ["app", "weft-proxy"]),
            Decision::Mesh
        );
        assert_eq!(
            decide(&annotations(&[("weft.dev/inject", "enabled")]), ["app"]),
            Decision::Skip(SkipReason::NotInjected),
            "asking for injection is not being injected"
        );
        for value in ["disabled", " disabled "] {
            assert_eq!(
                decide(
                    &annotations(&[("weft.dev/injected", "0.1.0"), ("weft.dev/inject", value)]),
                    ["app", "weft-proxy"]
                ),
                Decision::Skip(SkipReason::Disabled),
                "{value:?}"
            );
        }
        assert!(decide(
            &annotations(&[("weft.dev/inject", "Disabled")]),
            ["weft-proxy"]
        )
        .is_meshed());
    }

    #[test]
    fn the_reason_reads_as_a_sentence() {
        assert_eq!(
            SkipReason::Disabled.to_string(),
            "its weft.dev/inject annotation is \"disabled\""
        );
        assert_eq!(
            SkipReason::NotInjected.to_string(),
            "it was not injected: no weft.dev/injected annotation, no weft-proxy container"
        );
    }
}
