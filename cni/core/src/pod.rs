//! What a meshed pod's annotations change in its rules: its skip annotations add to the plugin's
//! (or the flags') own skip lists. Whether a pod is meshed at all, the annotation names and the
//! list syntax are the pod contract, `weft_pod`.

use std::collections::BTreeMap;

use weft_pod::{
    annotations::{SKIP_INBOUND_PORTS, SKIP_OUTBOUND_CIDRS, SKIP_OUTBOUND_PORTS},
    CidrList, CidrListError, PortList, PortListError,
};

use crate::redirect::Redirect;

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

/// `base` with the pod's skip annotations added.
pub fn redirect_for(
    base: &Redirect,
    annotations: &BTreeMap<String, String>,
) -> Result<Redirect, AnnotationError> {
    let mut redirect = base.clone();
    let ports = |annotation: &'static str| -> Result<PortList, AnnotationError> {
        match annotations.get(annotation) {
            None => Ok(PortList::default()),
            Some(v) => {
                PortList::parse(v).map_err(|source| AnnotationError::Ports { annotation, source })
            }
        }
    };
    redirect.skip_inbound_ports = redirect
        .skip_inbound_ports
        .union(&ports(SKIP_INBOUND_PORTS)?);
    redirect.skip_outbound_ports = redirect
        .skip_outbound_ports
        .union(&ports(SKIP_OUTBOUND_PORTS)?);
    if let Some(v) = annotations.get(SKIP_OUTBOUND_CIDRS) {
        let cidrs = CidrList::parse(v).map_err(|source| AnnotationError::Cidrs {
            annotation: SKIP_OUTBOUND_CIDRS,
            source,
        })?;
        redirect.skip_outbound_cidrs.extend(cidrs.iter().copied());
    }
    Ok(redirect)
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
    fn skip_annotations_add_to_the_base() {
        let base = Redirect {
            skip_inbound_ports: "22".parse().expect("port"),
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
        assert_eq!(r.skip_inbound_ports.to_string(), "22-23,9000-9001");
        assert_eq!(r.skip_outbound_ports.to_string(), "5432");
        assert_eq!(
            r.skip_outbound_cidrs.to_string(),
            "10.0.0.0/8,fd00::/8,192.0.2.7/32"
        );
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
            &annotations(&[(SKIP_INBOUND_PORTS, "25,,587")]),
        )
        .expect_err("an empty item");
        assert!(
            err.to_string()
                .starts_with("annotation weft.dev/skip-inbound-ports: item 2 of the list is empty"),
            "{err}"
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
