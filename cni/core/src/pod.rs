//! Which pods get the rules, and what their annotations change.
//!
//! A pod is meshed when it was injected: it carries `weft.dev/injected` or runs a container named
//! `weft-proxy` (the same test the control plane's index uses), unless `weft.dev/inject` says
//! `disabled`. Its skip annotations add to the plugin's or the flags' own skip lists.

use std::{collections::BTreeMap, net::IpAddr, str::FromStr};

use ipnet::IpNet;

use crate::{
    ports::{merge, parse_port_list, PortListError},
    redirect::Redirect,
};

pub const INJECTED: &str = "weft.dev/injected";
pub const INJECT: &str = "weft.dev/inject";
pub const SKIP_INBOUND_PORTS: &str = "weft.dev/skip-inbound-ports";
pub const SKIP_OUTBOUND_PORTS: &str = "weft.dev/skip-outbound-ports";
pub const SKIP_OUTBOUND_CIDRS: &str = "weft.dev/skip-outbound-cidrs";
/// The injected proxy container's name.
pub const PROXY_CONTAINER: &str = "weft-proxy";

/// Whether a pod gets the rules, and why not.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    Mesh,
    Skip(&'static str),
}

/// A pod annotation that could not be used; the message names it and the bad item.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AnnotationError {
    #[error("annotation {annotation}: {source}")]
    Ports {
        annotation: &'static str,
        source: PortListError,
    },
    #[error("annotation {annotation}: {source}")]
    Cidrs {
        annotation: &'static str,
        source: CidrListError,
    },
}

/// Why a CIDR list was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CidrListError {
    #[error("{item:?} is not a CIDR (like 10.0.0.0/8 or fd00::/8) or an IP address")]
    NotACidr { item: String },
    #[error("the list has an empty item (two commas in a row, or a comma at an end)")]
    EmptyItem,
}

/// Decides from the pod's annotations and its containers' names.
pub fn decide<'a>(
    annotations: &BTreeMap<String, String>,
    mut containers: impl Iterator<Item = &'a str>,
) -> Decision {
    if annotations.get(INJECT).map(|v| v.trim()) == Some("disabled") {
        return Decision::Skip("its weft.dev/inject annotation is \"disabled\"");
    }
    if annotations.contains_key(INJECTED) || containers.any(|c| c == PROXY_CONTAINER) {
        Decision::Mesh
    } else {
        Decision::Skip(
            "it was not injected: no weft.dev/injected annotation, no weft-proxy container",
        )
    }
}

/// `base` with the pod's skip annotations added.
pub fn redirect_for(
    base: &Redirect,
    annotations: &BTreeMap<String, String>,
) -> Result<Redirect, AnnotationError> {
    let mut redirect = base.clone();
    let ports = |annotation: &'static str| -> Result<Vec<_>, AnnotationError> {
        match annotations.get(annotation) {
            None => Ok(Vec::new()),
            Some(v) => {
                parse_port_list(v).map_err(|source| AnnotationError::Ports { annotation, source })
            }
        }
    };
    redirect
        .skip_inbound_ports
        .extend(ports(SKIP_INBOUND_PORTS)?);
    redirect.skip_inbound_ports = merge(redirect.skip_inbound_ports);
    redirect
        .skip_outbound_ports
        .extend(ports(SKIP_OUTBOUND_PORTS)?);
    redirect.skip_outbound_ports = merge(redirect.skip_outbound_ports);
    if let Some(v) = annotations.get(SKIP_OUTBOUND_CIDRS) {
        let cidrs = parse_cidr_list(v).map_err(|source| AnnotationError::Cidrs {
            annotation: SKIP_OUTBOUND_CIDRS,
            source,
        })?;
        for c in cidrs {
            if !redirect.skip_outbound_cidrs.contains(&c) {
                redirect.skip_outbound_cidrs.push(c);
            }
        }
    }
    Ok(redirect)
}

/// Parses `10.0.0.0/8, fd00::/8, 192.0.2.7`; a bare address is a one-address network. Host bits
/// are cleared (`10.1.2.3/8` is `10.0.0.0/8`), as iptables would.
pub fn parse_cidr_list(text: &str) -> Result<Vec<IpNet>, CidrListError> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(Vec::new());
    }
    let mut nets: Vec<IpNet> = Vec::new();
    for item in text.split(',') {
        let item = item.trim();
        if item.is_empty() {
            return Err(CidrListError::EmptyItem);
        }
        let net = IpNet::from_str(item)
            .or_else(|_| IpAddr::from_str(item).map(IpNet::from))
            .map_err(|_| CidrListError::NotACidr {
                item: item.chars().take(64).collect(),
            })?
            .trunc();
        if !nets.contains(&net) {
            nets.push(net);
        }
    }
    Ok(nets)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ports::PortRange;

    fn annotations(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn injected_pods_are_meshed_unless_disabled() {
        let none = std::iter::empty();
        assert_eq!(
            decide(&annotations(&[(INJECTED, "0.1.0")]), none),
            Decision::Mesh
        );
        assert_eq!(
            decide(&annotations(&[]), ["app", "weft-proxy"].into_iter()),
            Decision::Mesh
        );
        assert!(matches!(
            decide(&annotations(&[]), ["app"].into_iter()),
            Decision::Skip(why) if why.contains("not injected")
        ));
        assert!(matches!(
            decide(
                &annotations(&[(INJECTED, "0.1.0"), (INJECT, "disabled")]),
                std::iter::empty()
            ),
            Decision::Skip(why) if why.contains("disabled")
        ));
    }

    #[test]
    fn skip_annotations_add_to_the_base() {
        let base = Redirect {
            skip_inbound_ports: vec![PortRange::single(22).expect("port")],
            ..Redirect::default()
        };
        let pod = annotations(&[
            (SKIP_INBOUND_PORTS, "9000-9001, 23"),
            (SKIP_OUTBOUND_PORTS, "5432"),
            (
                SKIP_OUTBOUND_CIDRS,
                "10.1.2.3/8, fd00::/8, 192.0.2.7, 10.0.0.0/8",
            ),
        ]);
        let r = redirect_for(&base, &pod).expect("valid annotations");
        assert_eq!(
            r.skip_inbound_ports,
            [PortRange::new(22, 23), PortRange::new(9000, 9001)].map(|r| r.expect("range"))
        );
        assert_eq!(
            r.skip_outbound_ports,
            [PortRange::single(5432).expect("port")]
        );
        let cidrs: Vec<String> = r
            .skip_outbound_cidrs
            .iter()
            .map(|c| c.to_string())
            .collect();
        assert_eq!(cidrs, ["10.0.0.0/8", "fd00::/8", "192.0.2.7/32"]);
    }

    #[test]
    fn a_bad_annotation_is_named() {
        let err = redirect_for(
            &Redirect::default(),
            &annotations(&[(SKIP_OUTBOUND_PORTS, "80,x")]),
        )
        .expect_err("x is no port");
        assert_eq!(
            err.to_string(),
            "annotation weft.dev/skip-outbound-ports: \"x\" is not a port: expected a number from 1 to 65535"
        );
        let err = redirect_for(
            &Redirect::default(),
            &annotations(&[(SKIP_OUTBOUND_CIDRS, "10.0.0.0/33")]),
        )
        .expect_err("no /33");
        assert!(
            err.to_string().contains("\"10.0.0.0/33\" is not a CIDR"),
            "{err}"
        );
    }
}
