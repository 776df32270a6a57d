//! Where the cluster's state comes from: one trait, two sources.
//!
//! - [`crate::local::LocalSource`]: a folder of Kubernetes YAML, polled and compared by
//!   content; the embedded default for running Weft without a cluster.
//! - [`crate::kube_source::KubeSource`]: kube-rs reflectors on Services, EndpointSlices and
//!   Pods.
//!
//! A source publishes only whole, validated [`Snapshot`]s into a `watch` channel: the index
//! reads the latest one, so a burst of changes costs one rebuild, and a refused change simply
//! publishes nothing (the last good snapshot stays in force).

use std::{future::Future, pin::Pin, sync::Arc};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use weft_control_plane_config::model::Snapshot;

/// A future a source runs as.
pub type SourceFuture = Pin<Box<dyn Future<Output = ()> + Send>>;

/// A config source. `run` publishes every new complete state into `out` until `shutdown`.
///
/// The first value in `out` is the state the source held when it was built: the real one if
/// [`ConfigSource::ready_at_start`], else empty, and the index serves no proxy until `run`
/// publishes its first state.
pub trait ConfigSource: Send + 'static {
    /// A short name for logs and metrics (`local`, `kubernetes`).
    fn name(&self) -> &'static str;

    /// Whether the state held when built is the real one (a folder read at start), or the
    /// first real state comes later from `run` (the Kubernetes source, after its first lists).
    fn ready_at_start(&self) -> bool {
        true
    }

    /// Runs the source. It must never publish a partially applied change.
    fn run(
        self: Box<Self>,
        out: watch::Sender<Arc<Snapshot>>,
        shutdown: CancellationToken,
    ) -> SourceFuture;
}
