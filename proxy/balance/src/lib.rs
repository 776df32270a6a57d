//! Load balancing for the Weft proxy: which of a service's endpoints gets the next request.
//!
//! # Layout
//! - [`Settings`] (`settings.rs`): latency decay, the default latency, ejection thresholds.
//! - [`Load`] (`load.rs`): one endpoint's shared state behind `Arc`, with [`Load::start`]
//!   giving a [`Pending`] request that ends in an [`Outcome`], and [`LoadState`] for display.
//! - `ewma.rs`: the peak-EWMA latency estimate (Finagle, Linkerd).
//! - `circuit.rs`: failure accrual: eject after consecutive failures, back off exponentially
//!   with jitter, come back through one half-open probe.
//! - [`pick`] (`pick.rs`): power of two choices over `latency × (in flight + 1) ÷ weight`,
//!   with Envoy-style panic mode when every endpoint is ejected.
//!
//! Pure: no I/O, no runtime and no clock of its own. Every call that needs the time takes
//! `now`, and randomness comes from the caller's `rand::Rng`, so tests are deterministic and the
//! proxy decides where `Instant::now()` is read.
//!
//! ```
//! use std::sync::Arc;
//! use std::time::{Duration, Instant};
//! use weft_proxy_balance::{pick, Load, Outcome, Settings};
//!
//! let settings = Settings::default();
//! let endpoints: Vec<Arc<Load>> = (0..3).map(|_| Arc::new(Load::new(1, &settings))).collect();
//! let mut rng = rand::rng();
//! let now = Instant::now();
//! let chosen = pick(&endpoints, now, &mut rng).expect("three endpoints");
//! let request = endpoints[chosen.index].start(now);
//! // ... send the request; when its response ends:
//! request.finish(now + Duration::from_millis(4), Outcome::Success, &mut rng);
//! ```

#![forbid(unsafe_code)]

mod circuit;
mod ewma;
mod load;
mod pick;
mod settings;

pub use load::{Load, LoadState, Outcome, Pending};
pub use pick::{pick, Pick};
pub use settings::Settings;

#[cfg(test)]
mod tests;
