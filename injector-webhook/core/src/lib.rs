//! Weft's injector (issue 17): whether a pod joins the mesh and the JSON Patch that makes it
//! so, as pure code (a pod and its namespace in, a decision and an RFC 6902 patch out), shared
//! by the admission webhook and `weftctl inject`.
//!
//! - [`decide`]: the namespace label `weft.dev/inject=enabled` or the pod's annotation
//!   `weft.dev/inject: enabled` asks for it; `disabled` on the pod, host-network pods,
//!   Kubernetes' system namespaces, Weft's own namespace and pods injected already are left
//!   alone (a skip is an allow with no patch, never a denial).
//! - [`inject`]: `weft-init` (unless the CNI plugin redirects) and the proxy as a native
//!   sidecar at the front of the init containers, so that the user's own init containers have
//!   a working mesh; a classic first container where nodes are older than Kubernetes 1.29.
//! - [`manifest`]: the same over manifests (Pods, workloads' pod templates, `List`s), for
//!   `weftctl inject` and `uninject`.
//! - [`review`]: an AdmissionReview in, its answer out (a patch, a warning, or a denial naming
//!   the annotation that cannot be honoured).

pub mod decide;
pub mod inject;
pub mod manifest;
pub mod review;
pub mod workload;

pub use decide::{decide, Context, Decision, Skip};
pub use inject::{patch, Config};

/// The proxy's image repository, as `make images` names it (a tag is the version).
pub const DEFAULT_PROXY_IMAGE: &str = "weft.local/weft-proxy";
/// The init container's image repository.
pub const DEFAULT_INIT_IMAGE: &str = "weft.local/weft-init";
/// The namespace the chart installs Weft into unless told otherwise.
pub const DEFAULT_NAMESPACE: &str = "weft";
/// The control plane's gRPC address in that namespace.
pub const DEFAULT_CONTROL_PLANE: &str = "weft-control-plane.weft.svc.cluster.local:8443";
