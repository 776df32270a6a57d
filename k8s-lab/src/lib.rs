//! The k8s tier: a real single-node Kubernetes for Weft's tests and for `make cluster`.

#![forbid(unsafe_code)]

pub mod crds;
pub mod error;

pub use error::{Error, Result};
