//! The Weft sidecar proxy.
//!
//! # Layout
//! - [`config`]: every `WEFT_*` setting, parsed and validated before a port is bound.
//! - [`app`]: binds the listeners and runs them until drained; a test builds the whole proxy
//!   in-process on port 0 with it.
//! - `accept`: one accept loop per listener, a task and a tracing span per connection.
//! - `outbound`: the app's own connections: original destination -> protocol -> logical
//!   (what the destination is: a Service, a known peer, or as it is) -> concrete (a backend
//!   Service, balanced) -> endpoint (plaintext or the mesh hop).
//! - `inbound`: connections into the pod, and peer proxies' mesh connections (mTLS terminated,
//!   each request handed to the app on the port it was marked for).
//! - `conn`: what both directions share once the destination is known: protocol detection,
//!   then HTTP through a stack of stages (`weft-proxy-http`) or opaque TCP.
//! - `detect`: reads the first bytes with a timeout (the decision is `weft-proxy-detect`'s).
//! - `tcp`: opaque forwarding with half-close, for every kind of target.
//! - [`redirect_check`]: the proxy proves, every few seconds, that the pod's iptables rules send
//!   outbound traffic to it; the outbound listener answers the probe.
//! - [`await_ready`]: `weft-proxy await-ready`, a classic sidecar's `postStart` hook.
//! - [`admin`]: `/live`, `/ready`, `/metrics`, `/log-level`, `/shutdown`, on its own thread.
//! - [`drain`]: the shutdown signal and the connection tasks it waits for.
//! - [`telemetry`]: logging setup and the run-time log filter handle.
//! - [`memcpy`]: on AMD CPUs the proxy starts itself again with glibc's `memcpy` tuned.
//!
//! HTTP serving and upstream pools live in `weft-proxy-http`, sockets in `weft-proxy-transport`,
//! metrics in `weft-proxy-metrics`.

#![forbid(unsafe_code)]

mod accept;
pub mod admin;
pub mod app;
pub mod await_ready;
pub mod config;
mod conn;
mod detect;
pub mod drain;
mod inbound;
pub mod memcpy;
mod outbound;
pub mod redirect_check;
mod tcp;
pub mod telemetry;

pub use app::{build, App};
pub use config::Config;
