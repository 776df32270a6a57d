//! Weft's test plumbing, each piece once, for every crate's tests (a dev-dependency; never
//! shipped).
//!
//! # Layout
//! - [`prometheus`]: the Prometheus text format parsed into samples, series named as printed,
//!   histograms and their quantiles.
//! - [`wait`]: bounded waiting for a condition instead of sleeping: [`wait::until`] (blocking),
//!   [`wait::eventually`] and [`assert_eventually!`] (async).
//! - [`bins`]: a workspace binary as cargo built it, for a test of another package, or which
//!   `cargo build -p` makes it.
//! - [`addresses`]: the file `weft-control-plane --addresses-file` writes with the ports it got.
//! - [`control_plane`]: the real `weft-control-plane` on loopback port 0 as a child process:
//!   started, ready, stopped and restarted on the same ports, killed by its PID when dropped.
//! - [`kube`]: one fake Kubernetes API server: TokenReview, list/watch with resourceVersion,
//!   bookmarks and 410 Gone, and GET of one object.
//! - [`http`]: a bounded plain HTTP/1.1 request, for admin ports.
//!
//! Everything but [`prometheus`], [`wait::until`], [`bins`] and [`addresses`] needs tokio and
//! is behind the default feature `fixtures`; without it the crate is std and serde_json, light
//! enough for a tool (`weft-bench`) to depend on.
//!
//! Fixtures panic with what went wrong, as an assertion does: they run only in tests. What a
//! tool can use too (the parser, the addresses file, the binary finder, the blocking wait)
//! returns typed errors.

pub mod addresses;
pub mod bins;
#[cfg(feature = "fixtures")]
pub mod control_plane;
#[cfg(feature = "fixtures")]
pub mod http;
#[cfg(feature = "fixtures")]
pub mod kube;
#[cfg(feature = "otlp")]
pub mod otlp;
pub mod procfs;
/// The Prometheus text parser (`weft-metrics-text`), here too for the tests' convenience.
pub use weft_metrics_text as prometheus;
pub mod wait;

pub use addresses::Addresses;
pub use bins::MissingBinary;
#[cfg(feature = "fixtures")]
pub use control_plane::{ControlPlane, ControlPlaneCommand};
#[cfg(feature = "fixtures")]
pub use kube::{FakeKube, Kind, Verdict};
pub use prometheus::{Histogram, Metrics, Sample};

/// What the macros need, under a name callers do not depend on.
#[doc(hidden)]
#[cfg(feature = "fixtures")]
pub mod __private {
    pub use tokio;
}
