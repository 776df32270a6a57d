//! What a pod is to Weft, written once: the ports and ids its proxy uses, the names of the labels
//! and annotations that mesh it and tune it, the syntax of the port and CIDR lists those
//! annotations (and the matching flags and variables) hold, and the decision whether a pod is
//! meshed.
//!
//! Every part that reads a pod uses this crate rather than its own copy, so they cannot disagree:
//! the CNI (`weft-cni-core`: which pods get rules, and their skip lists), the control plane's
//! index (`weft-control-plane-config`: which endpoints are reached over mTLS, on which port), the
//! proxy's config (`weft-proxy`: its default ports, `WEFT_OPAQUE_PORTS`) and, next, the injector.
//! Its parsers see untrusted bytes (annotations), so they are fuzzed
//! (`cni/core/fuzz`, target `pod_lists`).
//!
//! No dependencies and no I/O: it builds in a second and cannot pull a runtime into whatever
//! uses it.
//!
//! # Layout
//! - [`ids`]: the well-known ports, the proxy's UID, container and port names, the default
//!   opaque ports (DESIGN.md, "Ports and ids").
//! - [`annotations`]: every `weft.dev/` label and annotation name, with what it means.
//! - [`ports`]: port lists as operators write them (`22, 8000-8100`): [`PortRange`],
//!   [`PortList`] (sorted, merged, printable) and [`PortSet`] (one bit per port, for the data
//!   path).
//! - [`cidr`]: CIDR lists (`10.0.0.0/8, fd00::/8, 192.0.2.7`): [`Cidr`] over `std::net`, and
//!   [`CidrList`].
//! - [`meshed`]: whether a pod is meshed, and why not.
//! - [`settings`]: a meshed pod's proxy settings from its annotations and its namespace's
//!   (`WEFT_*` variables, resource limits), every value checked.

#![forbid(unsafe_code)]

pub mod annotations;
pub mod cidr;
pub mod ids;
pub mod meshed;
pub mod ports;
pub mod settings;

pub use cidr::{Cidr, CidrList, CidrListError};
pub use meshed::{decide, Decision, SkipReason};
pub use ports::{PortList, PortListError, PortRange, PortSet};
pub use settings::{proxy_settings, ProxySettings, Quantity, SettingError};

/// At most this many characters of a refused item are quoted back in an error: annotations may
/// be large, and an error message is a log line.
const QUOTED_ITEM_CHARS: usize = 64;

/// `item`, cut to [`QUOTED_ITEM_CHARS`] characters for an error message.
fn quoted(item: &str) -> String {
    item.chars().take(QUOTED_ITEM_CHARS).collect()
}
