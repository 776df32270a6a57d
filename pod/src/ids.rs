//! The ports and ids of DESIGN.md's "Ports and ids": what the redirect rules, the proxy, the
//! control plane and the injector must agree on. Each is a default that a flag or a variable can
//! change (for tests that run several proxies on one loopback); these are the values pods get.

/// The proxy's outbound listener: the app's redirected outgoing TCP (bound on loopback).
pub const OUTBOUND_PORT: u16 = 15140;

/// The proxy's redirect check port. Nothing listens on it: the first rule of the `WEFT_OUTPUT`
/// nat chain sends the proxy's own connections to `127.0.0.1` / `::1` on it to
/// [`OUTBOUND_PORT`], so reaching the outbound listener there proves the redirection works.
pub const REDIRECT_CHECK_PORT: u16 = 15141;

/// The proxy's inbound listener: redirected incoming TCP, and where peer proxies connect with
/// mTLS.
pub const INBOUND_PORT: u16 = 15143;

/// The proxy's admin server: `/live`, `/ready`, `/metrics`, `/config`, `POST /shutdown`. Never
/// redirected.
pub const ADMIN_PORT: u16 = 15190;

/// The control plane's gRPC port: identity (CSR in, certificate out) and discovery.
pub const CONTROL_PLANE_GRPC_PORT: u16 = 8443;

/// The control plane's admin port: `/metrics`, `/ready`, `/live`.
pub const CONTROL_PLANE_ADMIN_PORT: u16 = 9990;

/// The injector's HTTPS admission webhook, path `/inject`.
pub const INJECTOR_PORT: u16 = 9443;

/// The injector's admin port: `/metrics`, `/ready`, `/live` (the same number as the control
/// plane's, in its own pod).
pub const INJECTOR_ADMIN_PORT: u16 = 9990;

/// The UID the proxy runs as. The redirect rules never capture this UID's own traffic (but for
/// the redirect check), so the proxy's upstream connections do not loop back into it.
pub const PROXY_UID: u32 = 2121;

/// The name of the proxy's container in a meshed pod; a pod running one is meshed.
pub const PROXY_CONTAINER: &str = "weft-proxy";

/// The name of the init container that installs the redirect rules (when the CNI plugin does
/// not).
pub const INIT_CONTAINER: &str = "weft-init";

/// The name of the proxy container's inbound port; the control plane tells peers to connect
/// there, and to [`INBOUND_PORT`] when the pod names none.
pub const INBOUND_PORT_NAME: &str = "weft-inbound";

/// The ports the proxy forwards as opaque TCP without detecting a protocol, unless configured
/// otherwise: server-speaks-first protocols (SMTP 25 and 587, MySQL 3306, PostgreSQL 5432, Redis
/// 6379, memcached 11211), where waiting for the client's first bytes would only stall.
pub const DEFAULT_OPAQUE_PORTS: &str = "25,587,3306,5432,6379,11211";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::PortList;

    #[test]
    fn the_default_opaque_ports_are_a_valid_list() {
        let list: PortList = DEFAULT_OPAQUE_PORTS.parse().expect("a valid list");
        assert_eq!(list.to_string(), DEFAULT_OPAQUE_PORTS);
    }

    #[test]
    fn the_proxy_ports_are_distinct() {
        let ports = [OUTBOUND_PORT, REDIRECT_CHECK_PORT, INBOUND_PORT, ADMIN_PORT];
        for (i, a) in ports.iter().enumerate() {
            assert!(!ports[i + 1..].contains(a), "{a} twice");
        }
    }
}
