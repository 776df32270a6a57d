//! The pure half of Weft's traffic redirection, shared by `weft-init` (the init container) and
//! `weft-cni` (the chained CNI plugin). Nothing here touches a socket, a file or a process, so
//! every decision is unit-tested, golden-tested and fuzzed; `weft-cni` wires it to
//! `iptables-restore`, network namespaces and the Kubernetes API.
//!
//! # Layout
//! - [`ports`]: port lists and ranges as annotations and flags spell them (`80,8000-8100`).
//! - [`redirect`]: the redirect config and the one rule set it renders, for IPv4 and IPv6.
//! - [`plan`]: reading `iptables-save` output and planning an atomic, idempotent apply, a removal
//!   and a check against what is installed.
//! - [`pod`]: whether a pod is meshed, and its skip annotations applied to a base config.
//! - [`spec`]: the CNI 1.0 wire formats: the plugin's network config, results and errors.

#![forbid(unsafe_code)]

pub mod plan;
pub mod pod;
pub mod ports;
pub mod redirect;
pub mod spec;

pub use redirect::{Family, Redirect};
