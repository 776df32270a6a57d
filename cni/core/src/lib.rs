//! The pure half of Weft's traffic redirection, shared by `weft-init` (the init container) and
//! `weft-cni` (the chained CNI plugin). Nothing here touches a socket, a file or a process, so
//! every decision is unit-tested, golden-tested and fuzzed; `weft-cni` wires it to
//! `iptables-restore`, network namespaces and the Kubernetes API.
//!
//! What a pod is to Weft (its ports and UID, the annotation names, the port-list and CIDR-list
//! syntax, whether it is meshed) is not here but in `weft-pod`, which the control plane and the
//! proxy use too.
//!
//! # Layout
//! - [`redirect`]: the redirect config and the one rule set it renders, for IPv4 and IPv6.
//! - [`plan`]: reading `iptables-save` output and planning an atomic, idempotent apply, a removal
//!   and a check against what is installed.
//! - `multiport`: port lists in iptables' spelling, split into `multiport` matches of 15 slots.
//! - [`pod`]: a meshed pod's skip annotations applied to a base config.
//! - [`spec`]: the CNI 1.0 wire formats: the plugin's network config, results and errors.
//! - [`chain`]: `weft-cni` added to (and taken out of) a node's CNI configuration, for the
//!   installer of the chart's CNI DaemonSet.

#![forbid(unsafe_code)]

pub mod chain;
mod multiport;
pub mod plan;
pub mod pod;
pub mod redirect;
pub mod spec;

pub use redirect::{Family, Redirect};
