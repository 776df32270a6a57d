//! The names of Weft's labels and annotations (DESIGN.md, "Labels and annotations"), each once.
//! All carry the `weft.dev/` prefix. Values are read as written (after trimming whitespace); the
//! parts that read a value say which ones they accept.

/// Namespace label `weft.dev/inject=enabled` turns injection on for new pods in the namespace;
/// pod annotation `weft.dev/inject: enabled | disabled` overrides the namespace either way. A pod
/// annotated `disabled` is never meshed, even if it carries a proxy ([`crate::meshed`]).
pub const INJECT: &str = "weft.dev/inject";

/// The value of [`INJECT`] that turns injection on.
pub const ENABLED: &str = "enabled";

/// The value of [`INJECT`] that turns injection off, and keeps a pod out of the mesh.
pub const DISABLED: &str = "disabled";

/// Pod annotation `weft.dev/injected: <version>`, set by the injector on the pods it injected
/// (injecting twice changes nothing). A pod carrying it is meshed.
pub const INJECTED: &str = "weft.dev/injected";

/// Pod annotation: inbound ports that reach the app directly, not through the proxy; a port list
/// ([`crate::PortList`]: `22, 9000-9100`).
pub const SKIP_INBOUND_PORTS: &str = "weft.dev/skip-inbound-ports";

/// Pod annotation: outbound destination ports that bypass the proxy; a port list.
pub const SKIP_OUTBOUND_PORTS: &str = "weft.dev/skip-outbound-ports";

/// Pod annotation: outbound destinations that bypass the proxy; a CIDR list
/// ([`crate::CidrList`]: `10.96.0.0/12, fd00::/8, 192.0.2.7`).
pub const SKIP_OUTBOUND_CIDRS: &str = "weft.dev/skip-outbound-cidrs";

/// Pod annotation: destination ports forwarded as opaque TCP with no protocol detection; a port
/// list, the pod's `WEFT_OPAQUE_PORTS`.
pub const OPAQUE_PORTS: &str = "weft.dev/opaque-ports";

/// Pod annotation: the proxy's log filter (`WEFT_LOG`), e.g. `info,weft_proxy=debug`.
pub const PROXY_LOG_LEVEL: &str = "weft.dev/proxy-log-level";

/// Pod annotation: the proxy container's CPU limit, as a Kubernetes quantity (`500m`).
pub const PROXY_CPU_LIMIT: &str = "weft.dev/proxy-cpu-limit";

/// Pod annotation: the proxy container's memory limit, as a Kubernetes quantity (`128Mi`).
pub const PROXY_MEMORY_LIMIT: &str = "weft.dev/proxy-memory-limit";

/// Namespace annotation `weft.dev/mtls: permissive | strict` (default permissive): whether the
/// proxies of the namespace's pods serve inbound plaintext from unmeshed clients.
pub const MTLS: &str = "weft.dev/mtls";

/// Namespace annotation `weft.dev/default-policy: allow | deny`: what happens to a call no
/// `AuthorizationPolicy` speaks about.
pub const DEFAULT_POLICY: &str = "weft.dev/default-policy";
