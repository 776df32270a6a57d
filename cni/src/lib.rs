//! Weft's traffic redirection, wired to the system: `iptables-restore` on the nft or legacy
//! backend, network namespaces, and (for the CNI plugin in Kubernetes mode) the API server. The
//! decisions themselves are pure code in `weft-cni-core`.
//!
//! # Layout
//! - [`iptables`]: the backend (nft or legacy) and running `iptables-save`/`iptables-restore`.
//! - [`redirector`]: apply, remove and check the rule set, IPv4 and IPv6, all or nothing.
//! - [`netns`]: entering a pod's network namespace.
//! - [`kube`]: a pod's annotations from the Kubernetes API (the CNI plugin's Kubernetes mode).
//! - [`plugin`]: the CNI commands ADD, DEL, CHECK and VERSION.
//! - [`install`]: the chart's CNI installer: the plugin, its kubeconfig and its entry in the
//!   node's CNI configuration, kept in place and taken away again.
//! - [`logging`]: the plugin's log file (a CNI plugin's stdout and stderr belong to the runtime).
//!
//! The binaries `weft-init` (`src/bin/weft-init.rs`), `weft-cni` (`src/bin/weft-cni.rs`) and
//! `weft-cni-install` (`src/bin/weft-cni-install.rs`) are thin: parse, run, print.

#![forbid(unsafe_code)]

pub mod install;
pub mod iptables;
pub mod kube;
pub mod logging;
pub mod netns;
pub mod plugin;
pub mod redirector;
